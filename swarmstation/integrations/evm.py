"""A small EVM JSON-RPC client (httpx) that reads what deposits need: the head, transactions
with their receipts, blocks, and ERC-20 `Transfer` logs (decoded with eth-abi).

Errors enter the error tree here: an unreachable node, an HTTP error or a JSON-RPC error is
`ChainUnavailable` (502). Messages never carry the RPC URL, which often embeds an API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak

from swarmstation.domain.deposits import ChainTransaction, TokenTransfer
from swarmstation.domain.errors import Conflict, UpstreamError

__all__ = ["TRANSFER_TOPIC", "ChainUnavailable", "EvmClient", "NotMined", "decode_transfer"]

# topic0 of ERC-20 (and ERC-721) `Transfer(address indexed from, address indexed to, uint256)`.
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


class ChainUnavailable(UpstreamError):
    code = "chain_unavailable"


class NotMined(Conflict):
    """The transaction is known to the node but not in a block yet."""

    code = "transaction_not_mined"


def _int(value: Any) -> int:
    return int(str(value), 16)


def _address_topic(address: str) -> str:
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")


def _topic_address(topic: str) -> str:
    return "0x" + topic.lower()[-40:]


def decode_transfer(log: dict[str, Any]) -> TokenTransfer | None:
    """An ERC-20 `Transfer` log as a TokenTransfer; None for any other log (an ERC-721 Transfer
    has the same topic0 but its token id indexed as a fourth topic, and no data)."""
    topics = [str(t).lower() for t in log.get("topics", [])]
    if len(topics) != 3 or topics[0] != TRANSFER_TOPIC:
        return None
    data = bytes.fromhex(str(log.get("data", "0x")).removeprefix("0x"))
    if len(data) != 32:
        return None
    (amount,) = abi_decode(["uint256"], data)
    return TokenTransfer(
        log_index=_int(log["logIndex"]),
        token=str(log["address"]).lower(),
        sender=_topic_address(topics[1]),
        recipient=_topic_address(topics[2]),
        amount=int(amount),
    )


class EvmClient:
    """One chain's JSON-RPC endpoint. `label` names the chain in errors (never the URL)."""

    def __init__(self, rpc_url: str, *, label: str, timeout: float = 15.0) -> None:
        self.label = label
        self._rpc_url = rpc_url
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)
        self._next_id = 0

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        self._next_id += 1
        payload = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": list(params)}
        try:
            response = self._http.post(self._rpc_url, json=payload)
        except httpx.HTTPError as exc:
            raise ChainUnavailable(
                f"{self.label}: the JSON-RPC node did not answer ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise ChainUnavailable(f"{self.label}: the JSON-RPC node answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise ChainUnavailable(f"{self.label}: the JSON-RPC node sent no JSON") from None
        if not isinstance(body, dict):
            raise ChainUnavailable(f"{self.label}: unexpected JSON-RPC answer to {method}")
        if body.get("error") is not None:
            error = body["error"]
            message = error.get("message", "error") if isinstance(error, dict) else str(error)
            raise ChainUnavailable(f"{self.label}: {method} failed: {str(message)[:200]}")
        return body.get("result")

    # -- reads -----------------------------------------------------------------------------------
    def chain_id(self) -> int:
        return _int(self.call("eth_chainId"))

    def block_number(self) -> int:
        return _int(self.call("eth_blockNumber"))

    def block(self, number: int) -> dict[str, Any] | None:
        """A block with its full transactions."""
        result = self.call("eth_getBlockByNumber", [hex(number), True])
        return result if isinstance(result, dict) else None

    def transfer_logs_to(self, recipient: str, from_block: int, to_block: int) -> list[dict[str, Any]]:
        """`Transfer` logs of any contract whose `to` is `recipient`, in the block range."""
        result = self.call(
            "eth_getLogs",
            [
                {
                    "fromBlock": hex(from_block),
                    "toBlock": hex(to_block),
                    "topics": [TRANSFER_TOPIC, None, _address_topic(recipient)],
                }
            ],
        )
        return [log for log in result or [] if isinstance(log, dict) and not log.get("removed")]

    def transaction(self, tx_hash: str) -> ChainTransaction | None:
        """The mined transaction with its receipt; None when the node does not know it. Raises
        NotMined when it is known but not in a block yet."""
        tx = self.call("eth_getTransactionByHash", [tx_hash])
        if not isinstance(tx, dict):
            return None
        if tx.get("blockNumber") is None:
            raise NotMined(f"{self.label}: transaction {tx_hash} is not mined yet; report it again later")
        receipt = self.call("eth_getTransactionReceipt", [tx_hash])
        if not isinstance(receipt, dict):
            # Mined a moment ago (or dropped by a reorganisation in between): not readable yet.
            raise NotMined(f"{self.label}: transaction {tx_hash} has no receipt yet; report it again later")
        transfers = [decode_transfer(log) for log in receipt.get("logs", []) if not log.get("removed")]
        return ChainTransaction(
            tx_hash=str(tx["hash"]).lower(),
            block_number=_int(receipt["blockNumber"]),
            block_hash=str(receipt["blockHash"]).lower(),
            sender=str(tx["from"]).lower(),
            to=str(tx["to"]).lower() if tx.get("to") else None,
            value=_int(tx.get("value", "0x0")),
            succeeded=_int(receipt.get("status", "0x0")) == 1,
            transfers=tuple(t for t in transfers if t is not None),
        )
