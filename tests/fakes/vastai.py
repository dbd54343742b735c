"""A fake Vast.ai: a real HTTP server on 127.0.0.1 that speaks the endpoints the `vastai` provider
uses, with the real API's shapes and quirks (protocol reference §2), and that injects faults.

Endpoints (all need `Authorization: Bearer <api_key>`; a bad key gets 401
`{"success": false, "error": "auth_error", "msg": "Invalid user key"}`):

- `POST /api/v0/bundles/` — search: evaluates the query's `{field: {op: value}}` filters (eq, neq,
  gt, gte, lt, lte, in, notin), `order` and `limit`; answers `{"offers": [...]}` with `gpu_ram` in
  MB and string fields carrying trailing whitespace.
- `PUT /api/v0/asks/{offer_id}/` — create: `{"success": true, "new_contract": <instance id>}`;
  404 `no_such_ask` for an unknown or rented offer; 400 `invalid_args` without an image or with
  a non-dict env. With `price` it is an interruptible (bid) rental: the instance reports
  `is_bid: true` and its bid as `dph_total`; a `price` under the offer's `min_bid` gets 400
  `invalid_price`, and one on an offer without `min_bid` 400 `invalid_args`.
- `GET /api/v0/instances/` — `{"instances": [...]}`, or `{"instances": null}` when there are none.
- `GET /api/v0/instances/{id}/` — `{"instances": {...}}` (an object), `{"instances": null}` for an
  unknown id.
- `DELETE /api/v0/instances/{id}/` — `{"success": true}`; 404 `not_found` for an unknown id.
- `PUT /api/v0/instances/{id}/` with `{"state": "stopped" | "running"}` — stop / start (§2.6):
  `{"success": true}`; 404 `not_found` for an unknown id, 400 `invalid_args` for another state.
- `GET /api/v0/users/current/` — `{id, email, credit}`.

An instance's `actual_status` is null for `provision_seconds`, then "loading" for `load_seconds`,
then "running" (times on `clock`). `ports` (docker style, `HostPort` a string) is present only
while running. `kill()` makes it "exited", `vanish()` makes it disappear, `outbid()` stops it as
Vast stops an outbid interruptible instance.

Search honours `"type": "bid"`: only offers that carry a `min_bid` (interruptible rentals are
possible on them); `"on-demand"` (or no type) returns every offer.

Stop and start: a stop makes the instance `actual_status` and `intended_status` "stopped", kills
its processes and keeps its folder (its disk). A start makes it go through the same progression
again (null, "loading", "running", on new host ports) and, with `run_onstart`, runs its onstart
again in the same folder, as Vast runs onstart on every container start. `fail_next_start()`
makes a start answer success while the instance never comes up: its GPU was rented out meanwhile,
so it stays `actual_status` "stopped" (or another status) with `intended_status` "running".

With `run_onstart=True`, an instance that reaches running executes its create request's `onstart`
text with `bash` in a fresh folder, as a local process group, with the create's plain `env`
entries as environment variables plus `VAST_TCP_PORT_<port>` (a free local port per requested
`-p` port), `PUBLIC_IPADDR=127.0.0.1`, `CONTAINER_ID` and `VAST_CONTAINERLABEL`; the instance's
`ports` and `public_ipaddr` then point at that local port. The process environment also inherits
this process's, with the running Python's folder first on PATH (a stock image has `python`).
Destroying, killing or vanishing the instance kills the process group.

    with FakeVastAI(offers=[make_offer(1)]) as fake:   # or fake = FakeVastAI(...).start(); fake.stop()
        provider = VastAIProvider(fake.api_key, base_url=fake.url)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ENDPOINTS = ("search", "create", "list", "show", "destroy", "user", "manage")
LOSE_MODES = ("drop", "500", "no_contract", "hang")
CONTROL_KEYS = {"type", "order", "limit", "allocated_storage", "select_cols"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_offer(
    offer_id: int,
    gpu_name: str = "RTX 4090",
    *,
    gpu_ram: float = 24564,  # MB
    dph_total: float = 0.40,
    reliability: float = 0.99,
    verified: bool = True,
    cuda_max_good: float = 12.4,
    geolocation: str = "California, US",
    dlperf: float = 60.0,
    num_gpus: int = 1,
    inet_down: float = 800.0,
    **extra: Any,
) -> dict[str, Any]:
    """An offer with the fields Vast reports (clean; the server adds its whitespace quirks)."""
    offer: dict[str, Any] = {
        "id": offer_id,
        "ask_contract_id": offer_id,
        "machine_id": 50000 + offer_id,
        "host_id": 7000 + offer_id,
        "num_gpus": num_gpus,
        "gpu_name": gpu_name,
        "gpu_ram": gpu_ram,
        "gpu_total_ram": gpu_ram * num_gpus,
        "gpu_frac": 1.0,
        "gpu_arch": "nvidia",
        "compute_cap": 890,
        "cuda_max_good": cuda_max_good,
        "driver_version": "550.54.14",
        "cpu_cores_effective": 16.0,
        "cpu_ram": 64000,
        "disk_space": 500.0,
        "disk_bw": 2000.0,
        "inet_down": inet_down,
        "inet_up": inet_down / 2,
        "direct_port_count": 100,
        "public_ipaddr": f"203.0.113.{offer_id % 250 + 1}",
        "static_ip": True,
        "dph_base": round(dph_total * 0.95, 4),
        "dph_total": dph_total,
        "min_bid": round(dph_total / 2, 4),
        "storage_cost": 0.15,
        "dlperf": dlperf,
        "dlperf_per_dphtotal": dlperf / dph_total if dph_total else 0.0,
        "score": dlperf,
        "reliability": reliability,
        "reliability2": reliability,
        "verification": "verified" if verified else "unverified",
        "verified": verified,
        "rentable": True,
        "rented": False,
        "is_bid": False,
        "external": False,
        "geolocation": geolocation,
        "hosting_type": 0,
    }
    offer.update(extra)
    return offer


def _sort_key(column: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    return lambda offer: (offer.get(column) is None, offer.get(column) or 0)


def _env_of(body: dict[str, Any]) -> dict[str, Any]:
    env = body.get("env")
    return env if isinstance(env, dict) else {}


@dataclass
class Call:
    method: str
    path: str
    endpoint: str  # one of ENDPOINTS, or "other"
    status: int | None  # None: the connection was dropped without an answer


@dataclass
class FakeInstance:
    id: int
    offer_id: int
    body: dict[str, Any]
    created_at: float
    start_date: float
    host_ports: dict[int, int]  # container port → host port
    machine_id: int
    gpu_name: str
    num_gpus: int
    dph_total: float
    status_override: str | None = None  # frozen actual_status ("exited", "unknown", ...)
    status_msg: str = ""
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    log_file: Any = None
    intended: str = "running"  # intended_status
    stopped: bool = False  # stopped (disk kept), or a start that cannot happen (`stuck_status`)
    stuck_status: str = "stopped"  # actual_status while stopped
    run_since: float = 0.0  # the status progression counts from here: creation, or the last start
    boot_pending: bool = True  # run onstart once it is running (again, after a start)
    starts: int = 0
    is_bid: bool = False  # an interruptible rental (created with a `price`)

    @property
    def label(self) -> str:
        return str(self.body.get("label") or "")


@dataclass
class _Reply:
    status: int
    body: Any  # dict/list → JSON, str → text/plain
    drop: bool = False  # close the connection without an answer
    hang: float = 0.0  # seconds to wait before dropping


def _matches(value: Any, op: str, operand: Any) -> bool:
    if isinstance(value, str):
        value = value.strip()
    try:
        if op == "eq":
            return bool(value == operand)
        if op == "neq":
            return bool(value != operand)
        if op == "in":
            return value in operand
        if op == "notin":
            return value not in operand
        if value is None:
            return False
        if op == "gt":
            return bool(value > operand)
        if op == "gte":
            return bool(value >= operand)
        if op == "lt":
            return bool(value < operand)
        if op == "lte":
            return bool(value <= operand)
    except TypeError:
        return False
    raise ValueError(op)


@dataclass
class FakeVastAI:
    api_key: str = "fake-vast-key-0123456789abcdef"
    offers: Iterable[dict[str, Any]] = ()
    provision_seconds: float = 0.0  # actual_status null for this long
    load_seconds: float = 0.0  # then "loading" for this long, then "running"
    run_onstart: bool = False
    consume_offers: bool = True  # a rented offer leaves the market until its instance is destroyed
    null_when_empty: bool = True  # `{"instances": null}` rather than `[]` when there are none
    whitespace_quirk: bool = True  # trailing whitespace on some string fields
    echo_key_in_errors: bool = False  # a hostile 401 that repeats the presented key
    listing_lag_seconds: float = 0.0  # a new instance shows in the listing only after this long
    clock: Callable[[], float] = time.monotonic
    onstart_env: dict[str, str] = field(default_factory=dict)  # extra env for onstart processes
    workdir: Path | None = None  # where onstart folders go (default: a temp folder, removed on stop)
    first_instance_id: int = 1000001

    calls: list[Call] = field(default_factory=list, init=False)
    create_bodies: list[dict[str, Any]] = field(default_factory=list, init=False)
    search_queries: list[dict[str, Any]] = field(default_factory=list, init=False)
    quota_exceeded: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._offers: dict[int, dict[str, Any]] = {}
        for offer in self.offers:
            self.add_offer(offer)
        self._instances: dict[int, FakeInstance] = {}
        self._next_id = self.first_instance_id
        self._faults: dict[str, list[tuple[int, str]]] = {name: [] for name in ENDPOINTS}
        self._taken: set[int] = set()
        self._rejects: dict[int, list[tuple[int, Any]]] = {}
        self._lost: list[tuple[str, float]] = []
        self._start_failures: list[str] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._ticker: threading.Thread | None = None
        self._root: Path | None = None
        self._own_root = False

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeVastAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                reply = fake._handle(self.command, self.path, self.headers.get("Authorization"), raw)
                if reply.drop:
                    if reply.hang:
                        time.sleep(reply.hang)
                    self.close_connection = True
                    return
                if isinstance(reply.body, str):
                    data, kind = reply.body.encode(), "text/plain; charset=utf-8"
                else:
                    data, kind = json.dumps(reply.body).encode(), "application/json"
                self.send_response(reply.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        if self.workdir is None:
            self._root = Path(tempfile.mkdtemp(prefix="fake-vastai-"))
            self._own_root = True
        else:
            self._root = self.workdir
            self._root.mkdir(parents=True, exist_ok=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        self._ticker = threading.Thread(target=self._tick_forever, daemon=True)
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            instances = list(self._instances.values())
        for inst in instances:
            self._stop_process(inst)
        if self._own_root and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> FakeVastAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fixtures and faults ---------------------------------------------------------------------
    def add_offer(self, offer: dict[str, Any]) -> None:
        self._offers[int(offer["id"])] = dict(offer)

    def remove_offer(self, offer_id: int) -> None:
        with self._lock:
            self._offers.pop(offer_id, None)

    def fail(self, endpoint: str, status: int = 429, times: int = 1, body: str = "text") -> None:
        """The next `times` calls to `endpoint` (one of ENDPOINTS) answer `status` before doing
        anything. `body`: "text" (plain text), "json" (`{"success": false, "error": ...}`) or
        "detail" (`{"detail": ...}`)."""
        assert endpoint in ENDPOINTS and body in ("text", "json", "detail")
        with self._lock:
            self._faults[endpoint].extend([(status, body)] * times)

    def take_offer(self, offer_id: int) -> None:
        """Someone else rents this offer between our search and our create: it still shows in
        search, and the create gets 404 `no_such_ask`."""
        with self._lock:
            self._taken.add(offer_id)

    def reject_create(self, offer_id: int, status: int = 200, body: Any = None) -> None:
        """The next create on this offer answers `status` with `body` (default a 200 with
        `success: false`) and creates nothing."""
        if body is None:
            body = {"success": False, "error": "invalid_args", "msg": "machine is not available right now"}
        with self._lock:
            self._rejects.setdefault(offer_id, []).append((status, body))

    def lose_create_answer(self, times: int = 1, mode: str = "drop", hang_seconds: float = 1.0) -> None:
        """The next `times` creates make their instance but the answer is lost: "drop" closes the
        connection without a response, "500" answers 500, "no_contract" answers 200
        `{"success": true}` without `new_contract`, "hang" waits `hang_seconds` then drops."""
        assert mode in LOSE_MODES
        with self._lock:
            self._lost.extend([(mode, hang_seconds)] * times)

    def exceed_search_quota(self, exceeded: bool = True) -> None:
        """Searches answer 429 `{"error": "search_quota_exceeded"}` until cleared."""
        self.quota_exceeded = exceeded

    def add_instance(
        self,
        label: str,
        *,
        actual_status: str | None = None,
        status_msg: str = "",
        offer_id: int = 0,
        dph_total: float = 0.5,
        gpu_name: str = "RTX 4090",
        onstart: str = "",
    ) -> int:
        """An instance that exists without our create (an orphan, someone else's machine, a
        frozen state). `actual_status` None follows the usual progression."""
        with self._lock:
            body = {"label": label, "image": "fake/image:latest", "onstart": onstart, "env": {}, "disk": 10}
            inst = self._new_instance(offer_id, body, gpu_name, 1, dph_total)
            inst.status_override = actual_status
            inst.status_msg = status_msg
            return inst.id

    def set_status(self, instance_id: int, actual_status: str | None, status_msg: str = "") -> None:
        """Freeze an instance's `actual_status` (None: back to the time-based progression)."""
        with self._lock:
            inst = self._instances[instance_id]
            inst.status_override = actual_status
            inst.status_msg = status_msg
        if actual_status not in (None, "running", "loading", "created"):
            self._stop_process(inst)

    def fail_next_start(self, times: int = 1, status: str = "stopped") -> None:
        """The next `times` starts answer success but the instance never comes up (its GPU was
        rented out while it was stopped): `actual_status` stays `status`, `intended_status` is
        "running", and no onstart runs."""
        with self._lock:
            self._start_failures.extend([status] * times)

    def outbid(self, instance_id: int) -> None:
        """Someone outbids this interruptible instance: Vast stops it, it is not destroyed (§2.6).
        Its processes are killed, `actual_status` becomes "stopped" and `intended_status` stays
        "running" (we asked for it to run; the market took the GPU). Assumption: protocols.md
        says only that outbid instances go to `stopped`; which status fields Vast sets, and
        whether a `status_msg` explains it, is not documented."""
        with self._lock:
            inst = self._instances[instance_id]
            inst.stopped, inst.stuck_status, inst.boot_pending = True, "stopped", False
        self._stop_process(inst)
        with self._lock:
            inst.process = None

    def kill(self, instance_id: int) -> None:
        """The container exits: `actual_status` "exited" for good, its processes killed."""
        self.set_status(instance_id, "exited", "container exited with code 137")

    def vanish(self, instance_id: int) -> None:
        """The instance disappears from Vast's records (listing, show and destroy)."""
        with self._lock:
            inst = self._instances.pop(instance_id, None)
            if inst is not None:
                self._release_offer(inst.offer_id)
        if inst is not None:
            self._stop_process(inst)

    # -- inspection ------------------------------------------------------------------------------
    def instances(self) -> list[dict[str, Any]]:
        """Every instance as the API would show it, without the whitespace quirks."""
        with self._lock:
            now = self.clock()
            return [self._instance_json(inst, now, quirks=False) for inst in self._instances.values()]

    def instance(self, instance_id: int) -> dict[str, Any] | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return self._instance_json(inst, self.clock(), quirks=False) if inst else None

    def count(self, endpoint: str, status: int | str | None = "any") -> int:
        """How many calls reached `endpoint` (optionally: answered with `status`; None = dropped)."""
        with self._lock:
            return sum(
                1 for c in self.calls if c.endpoint == endpoint and (status == "any" or c.status == status)
            )

    def host_port(self, instance_id: int, container_port: int = 8188) -> int | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return inst.host_ports.get(container_port) if inst else None

    def instance_workdir(self, instance_id: int) -> Path | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return inst.workdir if inst else None

    def starts(self, instance_id: int) -> int:
        """How many start calls the instance got (after a stop)."""
        with self._lock:
            inst = self._instances.get(instance_id)
            return inst.starts if inst else 0

    def process(self, instance_id: int) -> subprocess.Popen[bytes] | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return inst.process if inst else None

    def dump_logs(self) -> str:
        """The tails of the rented machines' logs (bootstrap, worker, ComfyUI), for a failing test."""
        if self._root is None or not self._root.exists():
            return ""
        return "\n".join(
            f"== {log.parent.name}/{log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted(self._root.glob("*/*.log"))
        )

    # -- state -----------------------------------------------------------------------------------
    def _new_instance(
        self, offer_id: int, body: dict[str, Any], gpu_name: str, num_gpus: int, dph_total: float
    ) -> FakeInstance:
        instance_id = self._next_id
        self._next_id += 1
        wanted = [22] if str(body.get("runtype", "ssh")).startswith("ssh") else []
        env = _env_of(body)
        for key in env:
            if key.startswith("-p "):
                try:
                    wanted.append(int(key[3:].split(":")[-1].split("/")[0]))
                except ValueError:
                    continue
        ports = {
            port: free_port() if self.run_onstart else 20000 + (instance_id * 7 + port) % 40000
            for port in wanted
        }
        created = self.clock()
        inst = FakeInstance(
            id=instance_id,
            offer_id=offer_id,
            body=body,
            created_at=created,
            run_since=created,
            start_date=time.time(),
            host_ports=ports,
            machine_id=50000 + offer_id,
            gpu_name=gpu_name,
            num_gpus=num_gpus,
            dph_total=dph_total,
        )
        self._instances[instance_id] = inst
        return inst

    def _status(self, inst: FakeInstance, now: float) -> str | None:
        if inst.status_override is not None:
            return inst.status_override
        if inst.stopped:
            return inst.stuck_status
        age = now - inst.run_since
        if age < self.provision_seconds:
            return None
        if age < self.provision_seconds + self.load_seconds:
            return "loading"
        return "running"

    def _instance_json(self, inst: FakeInstance, now: float, *, quirks: bool) -> dict[str, Any]:
        status = self._status(inst, now)
        tail = " \n" if quirks and self.whitespace_quirk else ""

        def pad(text: str) -> str:
            return text + tail

        env = _env_of(inst.body)
        ip = "127.0.0.1" if self.run_onstart else f"203.0.113.{inst.offer_id % 250 + 1}"
        data: dict[str, Any] = {
            "id": inst.id,
            "label": pad(inst.label) if inst.label else None,
            "machine_id": inst.machine_id,
            "host_id": 7000 + inst.offer_id,
            "actual_status": status,
            "intended_status": inst.intended,
            "cur_state": "running" if status not in ("exited", "stopped") else "stopped",
            "next_state": inst.intended,
            "status_msg": pad(inst.status_msg) if inst.status_msg else None,
            "image_uuid": inst.body.get("image"),
            "image_runtype": inst.body.get("runtype", "ssh"),
            "image_args": [],
            "extra_env": [[k, v] for k, v in env.items()],
            "onstart": inst.body.get("onstart"),
            "public_ipaddr": pad(ip),
            "ssh_host": "ssh5.vast.ai",
            "ssh_port": 30000 + inst.id % 10000,
            "direct_port_start": -1,
            "direct_port_end": -1,
            "gpu_name": pad(inst.gpu_name),
            "num_gpus": inst.num_gpus,
            "gpu_util": 0.0,
            "disk_space": inst.body.get("disk"),
            "dph_total": inst.dph_total,
            "is_bid": inst.is_bid,
            "start_date": inst.start_date,
            "end_date": None,
            "uptime_mins": max(0.0, (now - inst.created_at) / 60),
            "template_hash_id": None,
            "jupyter_token": "0123456789abcdef",
        }
        if status == "running":
            data["ports"] = {
                f"{port}/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": str(host)},
                    {"HostIp": "::", "HostPort": str(host)},
                ]
                for port, host in inst.host_ports.items()
            }
        return data

    def _release_offer(self, offer_id: int) -> None:
        offer = self._offers.get(offer_id)
        if offer is not None and self.consume_offers:
            offer["rented"] = False

    # -- onstart processes -----------------------------------------------------------------------
    def _tick_forever(self) -> None:
        while not self._stopping.wait(0.05):
            self._tick()

    def _tick(self) -> None:
        if not self.run_onstart:
            return
        with self._lock:
            now = self.clock()
            due = [
                inst
                for inst in self._instances.values()
                if inst.boot_pending and self._status(inst, now) == "running"
            ]
            for inst in due:
                inst.boot_pending = False
                self._start_process(inst)

    def _start_process(self, inst: FakeInstance) -> None:
        assert self._root is not None
        # a restarted container finds its disk as it left it
        folder = inst.workdir or Path(tempfile.mkdtemp(prefix=f"instance-{inst.id}-", dir=self._root))
        inst.workdir = folder
        script = folder / "onstart.sh"
        script.write_text(str(inst.body.get("onstart") or ""))
        body_env = _env_of(inst.body)
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.update(self.onstart_env)
        env.update({k: str(v) for k, v in body_env.items() if not k.startswith("-")})
        env.update({f"VAST_TCP_PORT_{port}": str(host) for port, host in inst.host_ports.items()})
        # Each real container has its own network namespace and filesystem; on one host the fake
        # stands them in with the bootstrap's overrides: ComfyUI on the mapped port itself, and
        # a folder of the instance's own.
        if 8188 in inst.host_ports:
            env["SWARMSTATION_COMFYUI_PORT"] = str(inst.host_ports[8188])
        env.update(
            {
                "SWARMSTATION_COMFYUI_DIR": str(folder / "ComfyUI"),
                "SWARMSTATION_HOME": str(folder / "home"),
                "SWARMSTATION_BOOTSTRAP_LOG": str(folder / "bootstrap.log"),
            }
        )
        env.update(
            {
                "PUBLIC_IPADDR": "127.0.0.1",
                "CONTAINER_ID": str(inst.id),
                "VAST_CONTAINERLABEL": f"C.{inst.id}",
                "CONTAINER_API_KEY": f"instance-key-{inst.id}",
            }
        )
        inst.log_file = open(folder / "onstart.log", "ab")  # noqa: SIM115 - closed with the process
        inst.process = subprocess.Popen(
            ["bash", str(script)],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=inst.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _stop_process(self, inst: FakeInstance, grace: float = 3.0) -> None:
        proc = inst.process
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:  # the group may outlive its leader
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        if inst.log_file is not None:
            inst.log_file.close()
            inst.log_file = None

    # -- HTTP ------------------------------------------------------------------------------------
    @staticmethod
    def _route(method: str, path: str) -> tuple[str, int | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["api", "v0"]:
            return "other", None
        rest = parts[2:]
        number = int(rest[1]) if len(rest) == 2 and rest[1].isdigit() else None
        if method == "POST" and rest == ["bundles"]:
            return "search", None
        if method == "PUT" and len(rest) == 2 and rest[0] == "asks" and number is not None:
            return "create", number
        if method == "GET" and rest == ["instances"]:
            return "list", None
        if rest[:1] == ["instances"] and number is not None:
            return {"GET": "show", "DELETE": "destroy", "PUT": "manage"}.get(method, "other"), number
        if method == "GET" and rest == ["users", "current"]:
            return "user", None
        return "other", None

    def _handle(self, method: str, raw_path: str, auth: str | None, raw: bytes) -> _Reply:
        url = urlparse(raw_path)
        endpoint, number = self._route(method, url.path)
        reply = self._answer(endpoint, number, auth, raw)
        with self._lock:
            self.calls.append(Call(method, url.path, endpoint, None if reply.drop else reply.status))
        return reply

    def _answer(self, endpoint: str, number: int | None, auth: str | None, raw: bytes) -> _Reply:
        presented = (auth or "").removeprefix("Bearer ").strip()
        if presented != self.api_key:
            msg = f"Invalid user key {presented}" if self.echo_key_in_errors else "Invalid user key"
            return _Reply(401, {"success": False, "error": "auth_error", "msg": msg})
        if endpoint == "other":
            return _Reply(404, {"detail": "Not Found"})
        with self._lock:
            if self._faults[endpoint]:
                status, kind = self._faults[endpoint].pop(0)
                return _Reply(status, self._fault_body(status, kind))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return _Reply(400, {"success": False, "error": "invalid_args", "msg": "body is not JSON"})
        self._tick()
        if endpoint == "search":
            return self._search(body)
        if endpoint == "user":
            return _Reply(200, {"id": 4242, "email": "owner@example.com", "credit": 100.0, "ssh_key": None})
        if endpoint == "list":
            with self._lock:
                now = self.clock()
                found = [
                    self._instance_json(i, now, quirks=True)
                    for i in self._instances.values()
                    if now - i.created_at >= self.listing_lag_seconds
                ]
            return _Reply(200, {"instances": found or (None if self.null_when_empty else [])})
        assert number is not None
        if endpoint == "create":
            return self._create(number, body)
        if endpoint == "manage":
            return self._manage(number, body)
        with self._lock:
            if endpoint == "show":
                inst = self._instances.get(number)
                shown = self._instance_json(inst, self.clock(), quirks=True) if inst else None
                return _Reply(200, {"instances": shown})
            inst = self._instances.pop(number, None)  # destroy
            if inst is None:
                return _Reply(
                    404, {"success": False, "error": "not_found", "msg": f"Instance {number} not found"}
                )
            self._release_offer(inst.offer_id)
        self._stop_process(inst)
        return _Reply(200, {"success": True})

    def _manage(self, instance_id: int, body: Any) -> _Reply:
        """Stop or start an instance (`{"state": ...}`); other changes (a label) are accepted."""
        state = body.get("state") if isinstance(body, dict) else None
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return _Reply(
                    404, {"success": False, "error": "not_found", "msg": f"Instance {instance_id} not found"}
                )
            if state is None:
                return _Reply(200, {"success": True})
            if state not in ("stopped", "running"):
                return _Reply(400, {"success": False, "error": "invalid_args", "msg": f"bad state {state!r}"})
            if state == "stopped":
                inst.intended, inst.stopped, inst.stuck_status = "stopped", True, "stopped"
                inst.boot_pending = False
            elif inst.stopped or inst.intended != "running":  # a start of a running one changes nothing
                inst.intended = "running"
                inst.starts += 1
                if self._start_failures:
                    inst.stopped, inst.stuck_status = True, self._start_failures.pop(0)
                else:
                    inst.stopped, inst.boot_pending = False, True
                    inst.run_since = self.clock()
                    if self.run_onstart:  # a restarted container gets new public ports
                        inst.host_ports = {port: free_port() for port in inst.host_ports}
        if state == "stopped":
            self._stop_process(inst)
            with self._lock:
                inst.process = None
        return _Reply(200, {"success": True})

    @staticmethod
    def _fault_body(status: int, kind: str) -> Any:
        if status == 429:
            text = "API requests too frequent endpoint threshold=2.0"
            if kind == "text":
                return text
            if kind == "detail":
                return {"detail": text}
            return {"success": False, "error": "rate_limit_exceeded", "msg": text}
        if kind == "text":
            return "Internal Server Error" if status == 500 else f"{status} Bad Gateway"
        if kind == "detail":
            return {"detail": "server error"}
        return {"success": False, "error": "server_error", "msg": "something went wrong"}

    def _search(self, query: dict[str, Any]) -> _Reply:
        if self.quota_exceeded:
            return _Reply(
                429,
                {"success": False, "error": "search_quota_exceeded", "msg": "Daily search quota exceeded"},
            )
        if not isinstance(query, dict):
            return _Reply(400, {"success": False, "error": "invalid_args", "msg": "query must be an object"})
        with self._lock:
            self.search_queries.append(query)
            offers = [dict(o) for o in self._offers.values()]
        if query.get("type") == "bid":  # interruptible: only offers that can be bid on
            offers = [o for o in offers if o.get("min_bid") is not None]
        for key, condition in query.items():
            if key in CONTROL_KEYS or not isinstance(condition, dict):
                continue
            for op, operand in condition.items():
                try:
                    offers = [o for o in offers if key in o and _matches(o[key], op, operand)]
                except ValueError:
                    return _Reply(
                        400, {"success": False, "error": "invalid_args", "msg": f"bad operator {op}"}
                    )
        for column, direction in reversed(query.get("order") or []):
            offers.sort(key=_sort_key(column), reverse=direction == "desc")
        offers = offers[: int(query.get("limit") or 64)]
        if self.whitespace_quirk:
            for offer in offers:
                offer["gpu_name"] = offer["gpu_name"] + " "
                offer["geolocation"] = str(offer.get("geolocation") or "") + "\n"
        return _Reply(200, {"offers": offers})

    @staticmethod
    def _bad_bid(offer: dict[str, Any], price: Any) -> _Reply | None:
        """The answer to a create whose bid Vast would refuse, or None when the bid is good.
        Assumption: protocols.md lists 400 `invalid_price` among create errors and says to use
        `min_bid` as the floor of `price`, but not the exact answer to a bid under the floor;
        this body follows the usual `{"success": false, "error", "msg"}` shape."""
        min_bid = offer.get("min_bid")
        if min_bid is None:
            msg = f"offer {offer['id']} cannot be rented interruptible (no min_bid)"
            return _Reply(400, {"success": False, "error": "invalid_args", "msg": msg})
        if isinstance(price, bool) or not isinstance(price, int | float) or price <= 0:
            return _Reply(400, {"success": False, "error": "invalid_price", "msg": f"bad price {price!r}"})
        if price < float(min_bid):
            msg = f"error 400/3467: Invalid price: bid {price} is below the minimum bid {min_bid}"
            body = {"success": False, "error": "invalid_price", "msg": msg, "ask_id": offer["id"]}
            return _Reply(400, body)
        return None

    def _create(self, offer_id: int, body: dict[str, Any]) -> _Reply:
        with self._lock:
            self.create_bodies.append(body)
            if self._rejects.get(offer_id):
                status, answer = self._rejects[offer_id].pop(0)
                return _Reply(status, answer)
            gone = {
                "success": False,
                "error": "no_such_ask",
                "msg": f"error 404/3603: no_such_ask  Instance type by id {offer_id} is not available.",
                "ask_id": offer_id,
            }
            if offer_id in self._taken:
                self._taken.discard(offer_id)
                self._offers.pop(offer_id, None)
                return _Reply(404, gone)
            offer = self._offers.get(offer_id)
            if offer is None or offer.get("rented"):
                return _Reply(404, gone)
            if not isinstance(body, dict) or not isinstance(body.get("image"), str) or not body["image"]:
                return _Reply(400, {"success": False, "error": "invalid_args", "msg": "image is required"})
            if not isinstance(body.get("env", {}), dict):
                return _Reply(400, {"success": False, "error": "invalid_args", "msg": "env must be a dict"})
            price = float(offer["dph_total"])
            if "price" in body:
                bad_bid = self._bad_bid(offer, body["price"])
                if bad_bid is not None:
                    return bad_bid
                price = float(body["price"])
            inst = self._new_instance(offer_id, body, str(offer["gpu_name"]), int(offer["num_gpus"]), price)
            inst.is_bid = "price" in body
            if self.consume_offers:
                offer["rented"] = True
            lost = self._lost.pop(0) if self._lost else None
        if lost is None:
            return _Reply(200, {"success": True, "new_contract": inst.id})
        mode, hang = lost
        if mode == "500":
            return _Reply(500, "Internal Server Error")
        if mode == "no_contract":
            return _Reply(200, {"success": True})
        return _Reply(0, None, drop=True, hang=hang if mode == "hang" else 0.0)
