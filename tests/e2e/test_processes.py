"""`swarmstation up` and the processes it starts (issue 11, items 3, 16 and 21): what the children
inherit, that they end with it even when it is killed, and that it stops at once on SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.e2e.conftest import Up, wait_for, wait_idle

SECRETS = {
    "SWARMSTATION_SECRET_KEY": "secret-key-0123456789abcdef",
    "SWARMSTATION_CIVITAI_TOKEN": "civitai-token-0123456789",
    "SWARMSTATION_HUGGINGFACE_TOKEN": "hf-token-0123456789",
    "SWARMSTATION_S3_SECRET_ACCESS_KEY": "s3-secret-0123456789",
    "SWARMSTATION_METRICS_TOKEN": "metrics-token-0123456789",
    "VASTAI_API_KEY": "vastai-key-0123456789",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789",
    "COMFY_DEPLOY_API_KEY": "comfydeploy-key-0123456789",
}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] == "Z"  # a zombie waiting for its reaper is gone
    except OSError:
        return True


def _pids(up: Up) -> list[int]:
    return [int(st[key]) for st in up.instance_state_files() for key in ("worker_pid", "emulator_pid")]  # type: ignore[call-overload]


def test_children_get_no_secrets_and_die_with_a_killed_up(up_factory) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(pool_min_instances=1, pool_max_instances=1)
    up.env.update(SECRETS)
    up.env["VASTAI_BASE_URL"] = "http://127.0.0.1:9"  # the vastai provider comes up; nothing answers
    up.env["LANG"] = "C.UTF-8"
    up.start()
    http = up.client()
    wait_idle(http, 1)
    pids = _pids(up)
    assert len(pids) == 2
    for pid in pids:
        env = _environ(pid)
        leaked = {k for k, v in env.items() if k in SECRETS or v in SECRETS.values()}
        assert not leaked, f"process {pid} inherited {sorted(leaked)}"
        assert env.get("PATH") and env.get("LANG") == "C.UTF-8"
    worker_env = _environ(pids[0])
    assert worker_env.get("SWARMSTATION_WORKER_TOKEN", "").startswith("sst_")
    assert "SWARMSTATION_WORKER_TOKEN" not in _environ(pids[1])  # the emulator has no use for it
    http.close()

    up.kill()  # SIGKILL: no shutdown runs
    wait_for(lambda: all(map(_gone, pids)), 5, "the worker and the emulator to end with up")


def test_sigterm_stops_up_at_once_with_workers_polling(up_factory) -> None:  # type: ignore[no-untyped-def]
    up: Up = up_factory(pool_min_instances=2, pool_max_instances=2)
    up.start()
    http = up.client()
    wait_idle(http, 2)
    http.close()
    time.sleep(1.0)  # the workers are in their 20 s long polls
    pids = _pids(up)
    assert len(pids) == 4 and up.proc is not None
    started = time.monotonic()
    up.proc.send_signal(signal.SIGTERM)
    up.proc.wait(timeout=30)
    took = time.monotonic() - started
    assert took < 5.0, f"up took {took:.1f}s to stop"
    assert all(map(_gone, pids)), "instances left running"
