"""The bootstrap that makes a rented machine a worker: a bash script run as the instance's onstart.

`render_onstart()` returns the script. It runs three stages and reports each one to the control plane
(`POST /worker/v1/bootstrap`; a failed stage makes the instance UNHEALTHY at once instead of after
the provisioning timeout, with the stage, the error and the log's last lines as the reason):

- `install`: a venv over the image's site packages (so its CUDA torch stays the one in use) with
  the swarmstation worker, and in `install` mode ComfyUI at a pinned ref with its requirements.
  Every pip call runs under constraints that pin the torch builds the image already has, so no
  requirement can swap them for other builds. swarmstation is installed at the control plane's
  version (`Settings.worker_install_spec`, `swarmstation==<version>` by default) under the control
  plane's lock as a second constraints file, fetched from `GET /worker/v1/constraints` with the
  token (providers/install.py). `SWARMSTATION_SKIP_INSTALL=1` skips the stage
  (prebuilt images, tests).
- `startup` (only with a `startup_script`, the pool's own): run with bash; a non-zero exit fails it.
- `comfyui`: ComfyUI (`main.py --listen 127.0.0.1 --port P --disable-auto-launch`, or the ComfyUI
  emulator in `emulator` mode), without the worker token in its environment, then a wait for
  `GET /system_stats`; a ComfyUI that exits first, a timeout or a port already taken fail the stage.
- `worker`: `swarmstation worker`, supervised: a worker that crashes is restarted with backoff (five
  quick crashes in a row fail the stage), and so is ComfyUI. A worker that exits 0 was stopped by
  the control plane, and the script ends. SIGTERM stops both children.

Environment: `SWARMSTATION_SERVER_URL` and `SWARMSTATION_WORKER_TOKEN` (required; the provider sets
them, the script text carries no secret and never prints the token, which reaches curl on stdin,
not in its arguments); optional `SWARMSTATION_SKIP_INSTALL=1`, `SWARMSTATION_BIN` (an existing
swarmstation command: `/path/to/swarmstation` or `python -m swarmstation.cli`), `SWARMSTATION_HOME`
(venv folder, default /opt/swarmstation), `SWARMSTATION_BOOTSTRAP_LOG` (default
/var/log/swarmstation-bootstrap.log, else ~/swarmstation-bootstrap.log),
`SWARMSTATION_COMFYUI_DIR` and `SWARMSTATION_COMFYUI_PORT` (over the rendered values: several
"machines" on one host, as in tests), `SWARMSTATION_COMFYUI_LISTEN`, `SWARMSTATION_COMFYUI_ARGS`
(more ComfyUI flags),
`SWARMSTATION_COMFYUI_TIMEOUT` (seconds, default 600), `SWARMSTATION_COMFYUI_REPO`. On Vast,
`PUBLIC_IPADDR` and `VAST_TCP_PORT_<port>` go into the comfyui stage's report.

Vast wants a short onstart: `compact_onstart()` gives the one-line gzip+base64 form
(`compress_onstart()`) when the script is long.
"""

from __future__ import annotations

import base64
import gzip
import re
import shlex
from typing import Literal

from swarmstation.providers.install import default_install_spec

ComfyMode = Literal["install", "existing", "emulator"]
MODES: tuple[ComfyMode, ...] = ("install", "existing", "emulator")
#: The ComfyUI release `install` mode fetches; deploy/worker.Dockerfile's COMFYUI_REF and the emulator's
#: COMFYUI_VERSION follow it (tests/comfy/test_emulator_fidelity.py checks that the three agree).
COMFYUI_REF = "v0.8.2"
ONSTART_MAX_BYTES = 4000  # Vast is reported to refuse an onstart over 4048 characters

_BODY = r"""
VENV=$HOME_DIR/venv LISTEN=${SWARMSTATION_COMFYUI_LISTEN:-127.0.0.1} STAGE=setup
COMFY_ARGS=${SWARMSTATION_COMFYUI_ARGS:-} COMFY_TIMEOUT=${SWARMSTATION_COMFYUI_TIMEOUT:-600}

log() { printf '%s bootstrap: %s\n' "$(date -u +%T)" "$*"; }

http() {  # URL [JSON]: GET, or POST with the token (never traced, never in an argv)
  local x=${-//[^x]/} rc=0
  set +x
  if ! command -v curl >/dev/null; then
    "$PYTHON" -c 'import os, sys, urllib.request as u
h = {"Content-Type": "application/json"}
if len(sys.argv) > 2: h["Authorization"] = "Bearer " + os.environ["SWARMSTATION_WORKER_TOKEN"]
u.urlopen(u.Request(sys.argv[1], sys.argv[2].encode() if len(sys.argv) > 2 else None, h), timeout=20)
' "$@" || rc=$?
  elif [ $# = 1 ]; then
    curl -fs --max-time 5 -o /dev/null "$1" || rc=$?
  else
    printf 'header = "Authorization: Bearer %s"\n' "$SWARMSTATION_WORKER_TOKEN" |
      curl -fsS --max-time 20 -K - -H 'Content-Type: application/json' -d "$2" -o /dev/null "$1" || rc=$?
  fi
  [ -z "$x" ] || set -x
  return $rc
}

fetch() {  # URL FILE: GET with the token into FILE (never traced, never in an argv)
  local x=${-//[^x]/} rc=0
  set +x
  if command -v curl >/dev/null; then
    printf 'header = "Authorization: Bearer %s"\n' "$SWARMSTATION_WORKER_TOKEN" |
      curl -fsS --max-time 60 --retry 3 -K - -o "$2" "$1" || rc=$?
  else
    "$PYTHON" -c 'import os, sys, urllib.request as u
h = {"Authorization": "Bearer " + os.environ["SWARMSTATION_WORKER_TOKEN"]}
open(sys.argv[2], "wb").write(u.urlopen(u.Request(sys.argv[1], None, h), timeout=60).read())
' "$@" || rc=$?
  fi
  [ -z "$x" ] || set -x
  return $rc
}

report() {  # STAGE OK MESSAGE
  local i body
  body=$("$PYTHON" -c 'import json, sys; print(json.dumps(dict(stage=sys.argv[1], ok=sys.argv[2] == "true",
    message=sys.argv[3][:3500])))' "$@")
  log "stage $1: ok=$2: ${3%%$'\n'*}"
  # `return 0`: in the ERR trap a bare `return` passes the failed status on, and set -e exits with it
  for i in 1 2 3 4; do
    http "${SWARMSTATION_SERVER_URL%/}/worker/v1/bootstrap" "$body" && return 0
    sleep $i
  done
  log "could not report stage $1"
}

fail() {
  trap - ERR
  report "$STAGE" false "$1"$'\n'"$(tail -n 15 "$LOG" | cut -c1-200)"
  exit 1
}

install() {
  local pins=$HOME_DIR/torch-constraints.txt lock=$HOME_DIR/constraints.txt
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "$("$PYTHON" -V 2>&1) is too old: swarmstation needs Python >= 3.11"
  mkdir -p "$HOME_DIR"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
  # pin the image's CUDA torch so that no requirement can swap it for another build
  "$VENV/bin/python" -c 'import importlib.metadata as m
for d in "torch", "torchvision", "torchaudio":
    try: print(d + "==" + m.version(d))
    except m.PackageNotFoundError: pass' >"$pins"
  log "pinned: $(tr '\n' ' ' <"$pins")"
  if [ "$MODE" = install ]; then
    if [ -f "$COMFY_DIR/main.py" ]; then :
    elif command -v git >/dev/null; then
      git clone -q --depth 1 --branch "$COMFY_REF" "$COMFY_REPO" "$COMFY_DIR"
    else
      mkdir -p "$COMFY_DIR"
      "$PYTHON" -c 'import sys, urllib.request as u; u.urlretrieve(*sys.argv[1:])' \
        "$COMFY_REPO/archive/$COMFY_REF.tar.gz" "$HOME_DIR/comfyui.tgz"
      tar -xzf "$HOME_DIR/comfyui.tgz" -C "$COMFY_DIR" --strip-components=1
    fi
    "$VENV/bin/python" -m pip install $PIP_ARGS -c "$pins" -r "$COMFY_DIR/requirements.txt" requests
  fi
  # the control plane's lock: the worker gets the dependency versions the control plane runs
  fetch "${SWARMSTATION_SERVER_URL%/}/worker/v1/constraints" "$lock"
  "$VENV/bin/python" -m pip install $PIP_ARGS -c "$pins" -c "$lock" "$SPEC"
}

start_comfyui() {  # no token for ComfyUI: custom nodes are third-party code
  if [ "$MODE" = emulator ]; then
    mkdir -p "$COMFY_DIR"/{models,input,output,temp}
    (unset SWARMSTATION_WORKER_TOKEN; exec "${SS[@]}" comfy-emulator --host "$LISTEN" --port "$PORT" \
      --base-dir "$COMFY_DIR") &
  else
    local py=$PYTHON
    if [ -x "$VENV/bin/python" ]; then py=$VENV/bin/python; fi
    (unset SWARMSTATION_WORKER_TOKEN; cd "$COMFY_DIR"; exec "$py" main.py --listen "$LISTEN" \
      --port "$PORT" --disable-auto-launch $COMFY_ARGS) &
  fi
  COMFY_PID=$!
  log "ComfyUI ($MODE) starting, pid $COMFY_PID"
  local deadline=$((SECONDS + COMFY_TIMEOUT)) rc
  until http "http://127.0.0.1:$PORT/system_stats" 2>/dev/null; do
    if ! kill -0 $COMFY_PID 2>/dev/null; then
      wait $COMFY_PID && rc=0 || rc=$?
      fail "ComfyUI exited (code $rc) before it answered /system_stats"
    fi
    [ $SECONDS -lt $deadline ] || fail "ComfyUI did not answer /system_stats within ${COMFY_TIMEOUT}s"
    sleep 1
  done
}

start_worker() {
  "${SS[@]}" worker --server "$SWARMSTATION_SERVER_URL" --comfyui "http://127.0.0.1:$PORT" \
    --comfy-dir "$COMFY_DIR" &
  WORKER_PID=$! WORKER_STARTED=$SECONDS
  log "worker started, pid $WORKER_PID"
}

main() {
  LOG=${SWARMSTATION_BOOTSTRAP_LOG:-/var/log/swarmstation-bootstrap.log}
  { mkdir -p "$(dirname "$LOG")" && touch "$LOG"; } 2>/dev/null || LOG=~/swarmstation-bootstrap.log
  exec > >(tee -a "$LOG") 2>&1
  if [ -z "${SWARMSTATION_SERVER_URL:-}" ] || [ -z "${SWARMSTATION_WORKER_TOKEN:-}" ]; then
    log "SWARMSTATION_SERVER_URL and SWARMSTATION_WORKER_TOKEN must be set"; exit 2
  fi
  export SWARMSTATION_WORKER_TOKEN
  trap 'fail "exit code $? at line $LINENO: $BASH_COMMAND"' ERR
  trap 'kill ${WORKER_PID:-} ${COMFY_PID:-} 2>/dev/null || true' EXIT
  trap 'exit 143' TERM INT
  log "mode $MODE, ComfyUI dir $COMFY_DIR, port $PORT, log $LOG"

  STAGE=install
  if [ "${SWARMSTATION_SKIP_INSTALL:-}" = 1 ]; then
    report install true "skipped (SWARMSTATION_SKIP_INSTALL=1)"
  else
    install
    report install true "installed $SPEC (mode $MODE, ComfyUI $COMFY_REF)"
  fi

  if [ -n "$STARTUP" ]; then  # the pool's own script: extra packages, custom nodes, mounts
    STAGE=startup
    (unset SWARMSTATION_WORKER_TOKEN; export COMFYUI_DIR=$COMFY_DIR; exec bash -c "$STARTUP")
    report startup true "the pool's startup script ran"
  fi

  STAGE=comfyui
  if [ -n "${SWARMSTATION_BIN:-}" ]; then read -r -a SS <<<"$SWARMSTATION_BIN"
  elif [ -x "$VENV/bin/swarmstation" ]; then SS=("$VENV/bin/swarmstation")
  else SS=(swarmstation); fi
  command -v "${SS[0]}" >/dev/null || fail "no swarmstation command '${SS[0]}' (set SWARMSTATION_BIN?)"
  [ "$MODE" = emulator ] || [ -f "$COMFY_DIR/main.py" ] || fail "no ComfyUI in $COMFY_DIR (no main.py)"
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then fail "port $PORT is already in use"; fi
  start_comfyui
  local public=VAST_TCP_PORT_$PORT
  report comfyui true "ComfyUI answers on 127.0.0.1:$PORT (public ${PUBLIC_IPADDR:-?}:${!public:-?})"

  STAGE=worker
  report worker true "starting the worker"
  start_worker
  local rc quick=0  # supervise: restart what exits; 5 quick worker crashes in a row fail
  while sleep 2; do
    if ! kill -0 $COMFY_PID 2>/dev/null; then
      STAGE=comfyui; log "ComfyUI exited; restarting it"; start_comfyui; STAGE=worker
    fi
    if ! kill -0 $WORKER_PID 2>/dev/null; then
      wait $WORKER_PID && rc=0 || rc=$?
      if [ $rc = 0 ]; then log "the control plane stopped this instance"; return 0; fi
      if [ $((SECONDS - WORKER_STARTED)) -lt 60 ]; then quick=$((quick + 1)); else quick=1; fi
      [ $quick -lt 5 ] || fail "the worker crashed $quick times in a row (exit code $rc)"
      log "the worker exited with code $rc; restarting it in $((2 ** quick))s"
      sleep $((2 ** quick))
      start_worker
    fi
  done
}

main </dev/null  # children must not read the rest of a script piped into bash
"""


def _without_comments(body: str) -> str:
    """The comments stay readable here and are left out of the script: Vast's limit is tight."""
    kept = (re.sub(r"  # .*$", "", line) for line in body.splitlines() if not line.lstrip().startswith("#"))
    return "\n".join(kept) + "\n"


_SCRIPT_BODY = _without_comments(_BODY)


def render_onstart(
    *,
    swarmstation_spec: str | None = None,
    comfyui_mode: ComfyMode = "install",
    comfyui_dir: str = "/workspace/ComfyUI",
    comfyui_ref: str = COMFYUI_REF,
    port: int = 8188,
    python: str = "python3",
    extra_pip_args: str = "",
    startup_script: str = "",
) -> str:
    """The bootstrap script (bash) for one instance; it holds no secret.

    `comfyui_mode`: `install` fetches ComfyUI at `comfyui_ref` into `comfyui_dir` and installs its
    requirements; `existing` runs the ComfyUI already in `comfyui_dir` (a prebuilt image);
    `emulator` runs swarmstation's ComfyUI emulator there instead (tests, CPU machines).
    `swarmstation_spec` is what `pip install` gets (a version, a wheel URL, a git URL), by default
    this control plane's version (`swarmstation==<version>`);
    `extra_pip_args` is added to every pip install (e.g. `--index-url ...`).
    `startup_script` (a pool's own, e.g. custom nodes) runs with bash after the install stage as a
    stage of its own, `startup`, with `COMFYUI_DIR` set and without the worker token.
    """
    if swarmstation_spec is None:
        swarmstation_spec = default_install_spec()
    if comfyui_mode not in MODES:
        raise ValueError(f"comfyui_mode must be one of {', '.join(MODES)}, not {comfyui_mode!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, not {port}")
    for name, value in (
        ("swarmstation_spec", swarmstation_spec),
        ("comfyui_dir", comfyui_dir),
        ("comfyui_ref", comfyui_ref),
        ("python", python),
    ):
        if not value.strip() or "\n" in value:
            raise ValueError(f"{name} must be one non-empty line")
    if "\n" in extra_pip_args:
        raise ValueError("extra_pip_args must be one line")
    q = shlex.quote
    header = f"""#!/usr/bin/env bash
# swarmstation bootstrap, {comfyui_mode} mode (swarmstation/providers/bootstrap.py says more)
set -Eeuo pipefail
MODE={q(comfyui_mode)} SPEC={q(swarmstation_spec)} PIP_ARGS={q(extra_pip_args)} PYTHON={q(python)}
COMFY_DIR=${{SWARMSTATION_COMFYUI_DIR:-{q(comfyui_dir)}}} PORT=${{SWARMSTATION_COMFYUI_PORT:-{int(port)}}}
COMFY_REF={q(comfyui_ref)}
COMFY_REPO=${{SWARMSTATION_COMFYUI_REPO:-https://github.com/Comfy-Org/ComfyUI}}
HOME_DIR=${{SWARMSTATION_HOME:-/opt/swarmstation}} STARTUP={q(startup_script)}
"""
    return header + _SCRIPT_BODY


def compress_onstart(script: str) -> str:
    """The script as one line, `echo <base64 gzip> | base64 -d | gunzip | bash`."""
    payload = base64.b64encode(gzip.compress(script.encode(), mtime=0)).decode("ascii")
    return f"echo {payload} | base64 -d | gunzip | bash"


def compact_onstart(script: str, max_bytes: int = ONSTART_MAX_BYTES) -> str:
    """What to send as a provider's onstart: the script itself when short, else compressed; a
    ValueError when even that is too long, rather than a create call that the provider refuses."""
    if len(script.encode()) <= max_bytes:
        return script
    line = compress_onstart(script)
    if len(line) > max_bytes:
        raise ValueError(f"the onstart script is {len(line)} bytes even compressed (at most {max_bytes})")
    return line
