"""Deposit chains in Settings: from SWARMSTATION_CHAINS (JSON), checked, the RPC URL a secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from swarmstation.config import ConfigError, load_settings

TREASURY = "0x" + "AB" * 20


def chain(**overrides: object) -> dict[str, object]:
    return {
        "chain_id": 8453,
        "name": "Base",
        "rpc_url": "https://rpc.example/v2/SECRETKEY",
        "treasury": TREASURY,
        "assets": [{"symbol": "USDC", "contract": "0x" + "c" * 40, "decimals": 6, "credits_per_unit": 1000}],
        **overrides,
    }


def test_chains_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("SWARMSTATION_CHAINS", json.dumps([chain()]))
    monkeypatch.setenv("SWARMSTATION_DATA_DIR", str(tmp_path))
    settings = load_settings()
    (config,) = [c.config() for c in settings.chains]
    assert (config.chain_id, config.treasury, config.confirmations) == (8453, TREASURY.lower(), 12)
    assert "SECRETKEY" not in repr(settings)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ([chain(), chain()], "chain_id is configured twice"),
        ([chain(treasury="0x1234")], "treasury"),
        ([chain(assets=[])], "assets"),
        ([chain(assets=[{"symbol": "ETH", "decimals": 18, "credits_per_unit": 1.5}])], "credits_per_unit"),
        ([chain(assets=[{"symbol": "ETH", "decimals": 18, "credits_per_unit": 1}] * 2)], "listed twice"),
        ([chain(confirmations=0)], "confirmations"),
    ],
)
def test_bad_chains_stop_the_server_with_a_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, bad: list[dict[str, object]], words: str
) -> None:
    monkeypatch.setenv("SWARMSTATION_CHAINS", json.dumps(bad))
    monkeypatch.setenv("SWARMSTATION_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=words) as caught:
        load_settings()
    assert "SECRETKEY" not in str(caught.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PLANE_SETTINGS = {
    "chains": [chain(chain_id=1337, rpc_url=f"http://127.0.0.1:{_closed_port()}/v2/SECRETKEY")],
}


def test_an_unreachable_node_is_a_502_that_does_not_name_the_url(api: Any, admin: dict[str, str]) -> None:
    answer = api.post(
        "/v1/account/deposits", json={"chain_id": 1337, "tx_hash": "0x" + "ab" * 32}, headers=admin
    )
    assert answer.status_code == 502, answer.text
    assert answer.json()["code"] == "chain_unavailable"
    assert "did not answer" in answer.json()["detail"]
    assert "SECRETKEY" not in answer.text and "127.0.0.1" not in answer.text
    assert api.get("/v1/account/deposits", headers=admin).json() == {"deposits": []}
