"""A real local Ethereum node for tests: ganache from npm, Solidity compiled by solc-js.

`chain` (a session fixture, exported by tests/conftest.py) starts one ganache process on a free
port with chain id 1337 and ten funded accounts whose private keys the test knows. Blocks are
mined at once for each transaction ("eager" instamine), and `Chain.mine(n)` adds empty blocks on
demand, so a test decides when a transaction has its confirmations. `snapshot`/`revert` drop
blocks, which is how a test stages a reorganisation.

The npm packages are pinned in tests/chain/package-lock.json and installed by `make test`
(`npm ci` into tests/chain/node_modules). Tests skip only when `node` is not installed at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
GANACHE = NODE_MODULES / ".bin" / "ganache"
CHAIN_ID = 1337
ACCOUNT_COUNT = 10
ACCOUNT_BALANCE_WEI = 1000 * 10**18


@dataclass(frozen=True)
class FundedAccount:
    """A funded account on the local chain: its checksummed address and private key (0x hex)."""

    address: str
    key: str


@dataclass(frozen=True)
class Compiled:
    abi: list[dict[str, Any]]
    bytecode: str


def _account(index: int) -> FundedAccount:
    # Keys derived from a label, so every run has the same accounts without a mnemonic.
    key = "0x" + hashlib.sha256(f"swarmstation test account {index}".encode()).hexdigest()
    return FundedAccount(address=Account.from_key(key).address, key=key)


@dataclass
class Chain:
    rpc_url: str
    chain_id: int
    accounts: list[FundedAccount]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # -- raw JSON-RPC -----------------------------------------------------------------------
    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        response = httpx.post(
            self.rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks (confirmations for what is already mined)."""
        for _ in range(blocks):
            self.rpc("evm_mine")

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        """Drop every block mined since the snapshot (a reorganisation, as far as readers see)."""
        if not self.rpc("evm_revert", [snapshot_id]):
            raise RuntimeError(f"evm_revert {snapshot_id} refused")

    # -- transactions -----------------------------------------------------------------------
    @property
    def w3(self) -> Any:
        return _web3(self.rpc_url)

    def new_address(self) -> str:
        """A fresh, unfunded address (lowercase), e.g. a treasury of its own for one test."""
        return str(Account.create().address).lower()

    def send_raw(self, tx: dict[str, Any], from_key: str) -> str:
        """Sign `tx` with `from_key` (nonce, gas price and chain id filled in) and send it.
        Returns the transaction hash (0x hex). With an explicit `gas` a failing call is still
        mined, as a reverted transaction."""
        w3 = self.w3
        sender = Account.from_key(from_key).address
        full = {
            "chainId": self.chain_id,
            "nonce": w3.eth.get_transaction_count(sender, "pending"),
            "gasPrice": w3.eth.gas_price,
            **tx,
        }
        if "gas" not in full:
            full["gas"] = w3.eth.estimate_gas({**full, "from": sender})
        signed = Account.sign_transaction(full, from_key)
        return "0x" + bytes(w3.eth.send_raw_transaction(signed.raw_transaction)).hex()

    def send_eth(self, from_key: str, to: str, value_wei: int) -> str:
        return self.send_raw({"to": _checksum(to), "value": value_wei, "gas": 21000}, from_key)

    def transact(
        self,
        address: str,
        abi: list[dict[str, Any]],
        function: str,
        args: Sequence[Any],
        from_key: str,
        *,
        gas: int | None = None,
    ) -> str:
        """Call a contract function in a transaction; returns its hash."""
        contract = self.w3.eth.contract(address=_checksum(address), abi=abi)
        data = contract.encode_abi(function, args=list(args))
        tx: dict[str, Any] = {"to": _checksum(address), "data": data, "value": 0}
        if gas is not None:
            tx["gas"] = gas
        return self.send_raw(tx, from_key)

    def receipt(self, tx_hash: str) -> Any:
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)

    def deploy(self, compiled: Compiled, args: Sequence[Any], from_key: str) -> str:
        """Deploy a compiled contract; returns its address (lowercase)."""
        contract = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        data = contract.constructor(*args).build_transaction({"from": Account.from_key(from_key).address})[
            "data"
        ]
        tx_hash = self.send_raw({"data": data, "value": 0}, from_key)
        receipt = self.receipt(tx_hash)
        if receipt["status"] != 1:
            raise RuntimeError("contract deployment reverted")
        return str(receipt["contractAddress"]).lower()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@cache
def _web3(rpc_url: str) -> Any:
    from web3 import Web3

    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))


def _checksum(address: str) -> str:
    from web3 import Web3

    return str(Web3.to_checksum_address(address))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_chain(log_path: Path | None = None) -> Chain:
    """Start ganache and wait until it answers JSON-RPC."""
    if not GANACHE.exists():
        raise RuntimeError(
            f"{GANACHE} is missing: install the pinned test packages with "
            "`cd tests/chain && npm ci --no-audit --no-fund` (make test does it)"
        )
    accounts = [_account(i) for i in range(ACCOUNT_COUNT)]
    port = _free_port()
    command = [
        str(GANACHE),
        "--server.host", "127.0.0.1",
        "--server.port", str(port),
        "--chain.chainId", str(CHAIN_ID),
        "--miner.instamine", "eager",
        "--logging.quiet",
    ]  # fmt: skip
    for account in accounts:
        command += ["--wallet.accounts", f"{account.key},{ACCOUNT_BALANCE_WEI}"]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the node
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=HERE)
    chain = Chain(rpc_url=f"http://127.0.0.1:{port}", chain_id=CHAIN_ID, accounts=accounts, process=process)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"ganache exited with {process.returncode} (log: {log_path})")
        try:
            if int(chain.rpc("eth_chainId"), 16) == CHAIN_ID:
                return chain
        except (httpx.HTTPError, RuntimeError):
            pass
        if time.monotonic() > deadline:
            chain.stop()
            raise RuntimeError("ganache did not answer within 60 s")
        time.sleep(0.2)


def compile_solidity(sources: dict[str, str]) -> dict[str, Compiled]:
    """Compile Solidity sources ({file name: source}) with solc-js; returns every contract by
    name. Raises with the compiler's messages on an error."""
    result = subprocess.run(
        ["node", str(HERE / "compile.js")],
        input=json.dumps({"sources": sources}).encode(),
        capture_output=True,
        cwd=HERE,
        timeout=120,
        check=True,
    )
    output = json.loads(result.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("solc: " + "\n".join(e.get("formattedMessage", e["message"]) for e in errors))
    return {
        name: Compiled(abi=contract["abi"], bytecode="0x" + contract["evm"]["bytecode"]["object"])
        for file_contracts in output["contracts"].values()
        for name, contract in file_contracts.items()
    }


@cache
def token_contract() -> Compiled:
    """tests/chain/TestToken.sol compiled: an ERC-20 with 6 decimals and an open `mint`."""
    return compile_solidity({"TestToken.sol": (HERE / "TestToken.sol").read_text()})["TestToken"]


@pytest.fixture(scope="session")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """One local Ethereum node for the session. Tests share it: give each test its own treasury
    (`chain.new_address()`) and contracts rather than relying on the chain being empty."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the local-chain tests need Node.js (ganache, solc-js)")
    node = start_chain(tmp_path_factory.mktemp("ganache") / "ganache.log")
    try:
        yield node
    finally:
        node.stop()
