"""The local chain itself: accounts are funded, blocks mine on demand, a revert drops blocks,
and a contract compiled at test time deploys and emits real logs."""

from __future__ import annotations

from tests.chain.harness import Chain, token_contract


def test_accounts_are_funded_and_blocks_mine_on_demand(chain: Chain) -> None:
    assert int(chain.rpc("eth_chainId"), 16) == 1337
    assert chain.w3.eth.get_balance(chain.accounts[0].address) > 0
    start = chain.block_number()
    chain.mine(3)
    assert chain.block_number() == start + 3


def test_eth_transfer_and_revert_drops_it(chain: Chain) -> None:
    to = chain.new_address()
    snap = chain.snapshot()
    tx_hash = chain.send_eth(chain.accounts[1].key, to, 12345)
    assert chain.receipt(tx_hash)["status"] == 1
    assert chain.w3.eth.get_balance(chain.w3.to_checksum_address(to)) == 12345
    chain.revert(snap)
    assert chain.rpc("eth_getTransactionReceipt", [tx_hash]) is None


def test_token_deploys_mints_and_logs_transfers(chain: Chain) -> None:
    token = token_contract()
    owner = chain.accounts[0]
    address = chain.deploy(token, ["Test USD", "TUSD"], owner.key)
    chain.receipt(chain.transact(address, token.abi, "mint", [owner.address, 5_000_000], owner.key))
    to = chain.new_address()
    receipt = chain.receipt(
        chain.transact(
            address, token.abi, "transfer", [chain.w3.to_checksum_address(to), 1_500_000], owner.key
        )
    )
    assert receipt["status"] == 1
    assert len(receipt["logs"]) == 1
    # More than the balance, with a gas limit so it is mined: a reverted transaction.
    reverted = chain.receipt(
        chain.transact(
            address, token.abi, "transfer", [chain.w3.to_checksum_address(to), 10**12], owner.key, gas=100_000
        )
    )
    assert reverted["status"] == 0
