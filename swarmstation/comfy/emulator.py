"""A small fake ComfyUI server that speaks the real HTTP and WebSocket API.

Theory of operation (mirrors ComfyUI's ``server.py``, ``execution.py`` and ``main.py`` at
``COMFYUI_VERSION``, first ported from 0.3.64; the protocol is described in docs section 1 of
the shared protocol reference):

* ``POST /prompt`` bumps the counter, validates the graph with the same rules and error shapes as
  ``execution.validate_prompt`` and pushes ``[number, prompt_id, prompt, extra_data, outputs]``
  onto a heap.
* One background task (``_worker``) pops items one at a time, runs the graph in ComfyUI's order
  (``_ExecutionList``), writes the history entry and only then sends the final
  ``executing {node: null}``.
* Every WebSocket message goes through one queue drained by ``_publish_loop``, so the order the
  executor produces is the order clients see. Messages with a ``sid`` go to that socket only;
  without one they are broadcast.
* Node outputs are cached by input signature as ComfyUI's classic cache does: re-running an
  identical graph reports every node in ``execution_cached`` and repeats the old UI outputs.

The node classes and the fake image generation live in ``emulator_nodes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import io
import ipaddress
import itertools
import json
import logging
import mimetypes
import os
import shutil
import socket
import sys
import time
import traceback
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from swarmstation.comfy.emulator_nodes import (
    FOLDER_KEYS,
    NODE_CLASSES,
    SAFETENSORS_EXTENSIONS,
    Dirs,
    Node,
    NodeResult,
    check_safetensors,
)

__all__ = ["EmulatorConfig", "create_emulator_app", "run_emulator", "running_emulator"]

log = logging.getLogger(__name__)

#: The release the emulator follows; the bootstrap and deploy/worker.Dockerfile install the same tag
#: (tests/comfy/test_emulator_fidelity.py checks that the three agree).
COMFYUI_VERSION = "0.8.2"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024  # --max-upload-size default, 100 MB
MAXIMUM_HISTORY_SIZE = 10000
FEATURE_FLAGS = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
_SOCKET_ERRORS = (ConnectionError, RuntimeError, OSError)


@dataclass
class EmulatorConfig:
    """Where the emulated ComfyUI keeps its files, and how slow it pretends to be."""

    base_dir: Path  #: holds models/<folder>/..., input/, output/, temp/
    step_seconds: float = 0.0  #: sleep per sampler step (KSampler steps)
    model_load_seconds: float = 0.0  #: sleep when a checkpoint/unet other than the loaded one is loaded


def create_emulator_app(config: EmulatorConfig) -> web.Application:
    """Build the aiohttp application; its worker task starts and stops with the app."""
    return _Emulator(config).app


def run_emulator(host: str, port: int, config: EmulatorConfig) -> None:
    """Serve the emulator until interrupted (blocking)."""
    web.run_app(create_emulator_app(config), host=host, port=port, access_log=None)


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the emulator inside the current event loop; yields its base URL (port 0 = any free one)."""
    runner = web.AppRunner(create_emulator_app(config), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


class InterruptProcessingException(Exception):
    pass


InterruptProcessingException.__module__ = "comfy.model_management"


def _full_type_name(klass: type) -> str:
    return (
        klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"
    )


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return str(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _input_info(class_inputs: dict[str, Any], name: str) -> tuple[Any, str | None, Any]:
    """``comfy_execution.graph.get_input_info``: (type, category, extra options)."""
    for category in ("required", "optional", "hidden"):
        if name in class_inputs.get(category, {}):
            spec = class_inputs[category][name]
            return spec[0], category, (spec[1] if len(spec) > 1 else {})
    return None, None, None


def _types_compatible(received: Any, expected: Any) -> bool:
    """``comfy_execution.validation.validate_node_input`` (non-strict)."""
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


# ---------------------------------------------------------------- validation

Validated = tuple[bool, list[dict[str, Any]], str]


class _Validator:
    """A port of ``execution.validate_inputs`` / ``validate_prompt``; coerces literals in place."""

    def __init__(self, dirs: Dirs, prompt: dict[str, Any]) -> None:
        self.dirs = dirs
        self.prompt = prompt
        self.validated: dict[str, Validated] = {}
        self._visiting: set[str] = set()
        self._class_inputs: dict[str, dict[str, Any]] = {}  # one directory scan per class and prompt

    def class_inputs(self, class_type: str) -> dict[str, Any]:
        if class_type not in self._class_inputs:
            self._class_inputs[class_type] = NODE_CLASSES[class_type].input_types(self.dirs)
        return self._class_inputs[class_type]

    def validate_prompt(
        self, partial: list[str] | None
    ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        prompt = self.prompt
        outputs: set[str] = set()
        for x in prompt:
            if "class_type" not in prompt[x]:
                return (
                    False,
                    _error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{x}'",
                    ),
                    [],
                    {},
                )
            class_type = prompt[x]["class_type"]
            cls = NODE_CLASSES.get(class_type)
            if cls is None:
                return (
                    False,
                    _error(
                        "invalid_prompt",
                        f"Cannot execute because node {class_type} does not exist.",
                        f"Node ID '#{x}'",
                    ),
                    [],
                    {},
                )
            if cls.OUTPUT_NODE and (partial is None or x in partial):
                outputs.add(x)
        if not outputs:
            return False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}

        good: list[str] = []
        errors: list[tuple[str, list[dict[str, Any]]]] = []
        node_errors: dict[str, dict[str, Any]] = {}
        for o in sorted(outputs):
            try:
                valid, reasons, _ = self.validate_inputs(o)
            except Exception as ex:
                valid, reasons = (
                    False,
                    [
                        {
                            "type": "exception_during_validation",
                            "message": "Exception when validating node",
                            "details": str(ex),
                            "extra_info": {
                                "exception_type": _full_type_name(type(ex)),
                                "traceback": traceback.format_tb(ex.__traceback__),
                            },
                        }
                    ],
                )
                self.validated[o] = (False, reasons, o)
            if valid:
                good.append(o)
                continue
            errors.append((o, reasons))
            # As in ComfyUI: every failing node seen so far gets this output appended.
            for node_id, (ok, node_reasons, _) in self.validated.items():
                if ok or not node_reasons:
                    continue
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(o)
        if not good:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in errors for e in reasons)
            return (
                False,
                _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
                [],
                node_errors,
            )
        return True, None, good, node_errors

    def validate_inputs(self, unique_id: str) -> Validated:
        if unique_id in self.validated:
            return self.validated[unique_id]
        if unique_id in self._visiting:  # 0.3.64 recursed until RecursionError; fail fast instead
            raise Exception(f"Dependency cycle detected at node {unique_id}")
        self._visiting.add(unique_id)
        try:
            result = self._validate_inputs(unique_id)
        finally:
            self._visiting.discard(unique_id)
        earlier = self.validated.get(unique_id)  # set by a dependant that caught our cycle error
        if earlier is not None:
            result = (False, earlier[1] + result[1], unique_id)
        self.validated[unique_id] = result
        return result

    def _validate_inputs(self, unique_id: str) -> Validated:
        inputs = self.prompt[unique_id]["inputs"]
        cls = NODE_CLASSES[self.prompt[unique_id]["class_type"]]
        class_inputs = self.class_inputs(self.prompt[unique_id]["class_type"])
        errors: list[dict[str, Any]] = []
        valid = True
        names = [*class_inputs.get("required", {}), *class_inputs.get("optional", {})]
        for x in names:
            input_type, category, extra = _input_info(class_inputs, x)
            if x not in inputs:
                if category == "required":
                    errors.append(
                        _error("required_input_missing", "Required input is missing", x, {"input_name": x})
                    )
                continue
            val = inputs[x]
            info = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        _error(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            x,
                            {"input_name": x, "input_config": info, "received_value": val},
                        )
                    )
                    continue
                o_id = val[0]
                received = NODE_CLASSES[self.prompt[o_id]["class_type"]].RETURN_TYPES[val[1]]
                if not _types_compatible(received, input_type):
                    errors.append(
                        _error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{x}, received_type({received}) mismatch input_type({input_type})",
                            {
                                "input_name": x,
                                "input_config": info,
                                "received_type": received,
                                "linked_node": val,
                            },
                        )
                    )
                    continue
                try:
                    if self.validate_inputs(o_id)[0] is False:
                        valid = False
                except Exception as ex:
                    valid = False
                    self.validated[o_id] = (
                        False,
                        [
                            _error(
                                "exception_during_inner_validation",
                                "Exception when validating inner node",
                                str(ex),
                                {
                                    "input_name": x,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": _full_type_name(type(ex)),
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": val,
                                },
                            )
                        ],
                        o_id,
                    )
                continue
            error = self._check_literal(cls, inputs, x, val, input_type, extra, info)
            if error is not None:
                errors.append(error)
        for x in cls.VALIDATE_INPUTS:
            if x not in inputs or _is_link(inputs[x]):
                continue
            ret = cls.validate_inputs(self.dirs, **{x: inputs[x]})
            if ret is not True:
                details = x if ret is False else f"{x} - {ret}"
                errors.append(
                    _error(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        details,
                        {"input_name": x},
                    )
                )
        return (not errors and valid), errors, unique_id

    def _check_literal(
        self,
        cls: type[Node],
        inputs: dict[str, Any],
        x: str,
        val: Any,
        input_type: Any,
        extra: dict[str, Any],
        info: list[Any],
    ) -> dict[str, Any] | None:
        try:
            if isinstance(val, dict) and "__value__" in val:
                val = inputs[x] = val["__value__"]
            convert = _CONVERTERS.get(input_type) if isinstance(input_type, str) else None
            if convert is not None:
                val = inputs[x] = convert(val)
        except Exception as ex:
            return _error(
                "invalid_input_type",
                f"Failed to convert an input value to a {input_type} value",
                f"{x}, {val}, {ex}",
                {"input_name": x, "input_config": info, "received_value": val, "exception_message": str(ex)},
            )
        if x in cls.VALIDATE_INPUTS:
            return None
        extra_info = {"input_name": x, "input_config": info, "received_value": val}
        if "min" in extra and val < extra["min"]:
            return _error(
                "value_smaller_than_min", f"Value {val} smaller than min of {extra['min']}", x, extra_info
            )
        if "max" in extra and val > extra["max"]:
            return _error(
                "value_bigger_than_max", f"Value {val} bigger than max of {extra['max']}", x, extra_info
            )
        if isinstance(input_type, list) and val not in input_type:
            if len(input_type) > 20:  # ComfyUI does not echo long model lists
                list_info, extra_info["input_config"] = f"(list of length {len(input_type)})", None
            else:
                list_info = str(input_type)
            return _error(
                "value_not_in_list", "Value not in list", f"{x}: '{val}' not in {list_info}", extra_info
            )
        return None


_CONVERTERS: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _error(kind: str, message: str, details: str, extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}


# ---------------------------------------------------------------- execution


@dataclass
class _CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, list[Any]] | None


@dataclass
class _RunState:
    """Per-prompt bookkeeping of one execution."""

    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    signatures: dict[str, str]
    outputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    messages: list[list[Any]] = field(default_factory=list)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)


class _ExecutionList:
    """``comfy_execution.graph.ExecutionList``: the order in which ComfyUI runs a prompt's nodes.

    Each output is staged depth-first from the output through its uncached inputs (a stack: the
    last input of a node is visited first); then, while nodes remain, one whose inputs are all done
    is picked by ``ux_friendly_pick_node``: an output node first, else a node that feeds an output,
    else one two links from an output, else the first ready node in staging order. Independent
    branches therefore run in this order, not in prompt order, which decides what is cached when
    a run fails half-way. The emulator has no lazy inputs, async nodes or subgraph expansion, so
    nothing is ever returned to the list once staged.
    """

    def __init__(self, prompt: dict[str, Any], is_cached: Callable[[str], bool]) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.pending: dict[str, None] = {}  # insertion-ordered set, as ComfyUI's pendingNodes dict
        self.block_count: dict[str, int] = {}  # how many pending nodes a node still waits for
        self.blocking: dict[str, dict[str, None]] = {}  # node -> the pending nodes that wait for it

    def add_node(self, node_id: str) -> None:
        """``TopologicalSort.add_node``: stage ``node_id`` and every uncached node it needs."""
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = None
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if _is_link(value) and value[0] in self.prompt and not self.is_cached(value[0]):
                    stack.append(value[0])
                    links.append((value[0], unique_id))
        for from_id, to_id in links:  # add_strong_link: one block per (source, dependant) pair
            if to_id not in self.blocking[from_id]:
                self.blocking[from_id][to_id] = None
                self.block_count[to_id] += 1

    def stage_node_execution(self) -> str | None:
        """The next node to run, or None when every staged node has run."""
        ready = [node_id for node_id in self.pending if self.block_count[node_id] == 0]
        if not ready:  # validation rejects cycles, so only an empty list gets here
            return None
        return self._ux_friendly_pick_node(ready)

    def complete_node_execution(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1

    def _is_output(self, node_id: str) -> bool:
        return NODE_CLASSES[self.prompt[node_id]["class_type"]].OUTPUT_NODE

    def _ux_friendly_pick_node(self, ready: list[str]) -> str:
        for node_id in ready:  # an output first (no emulator node is async, ComfyUI's other rule)
            if self._is_output(node_id):
                return node_id
        for node_id in ready:  # the VAEDecode -> PreviewImage case
            if any(self._is_output(blocked) for blocked in self.blocking[node_id]):
                return node_id
        for node_id in ready:  # the VAELoader -> VAEDecode -> PreviewImage case
            for blocked in self.blocking[node_id]:
                if any(self._is_output(next_blocked) for next_blocked in self.blocking[blocked]):
                    return node_id
        return ready[0]


class _NodeContext:
    """The ``ExecContext`` handed to one running node."""

    def __init__(self, emulator: _Emulator, run: _RunState, node_id: str) -> None:
        self.emulator = emulator
        self.run = run
        self.dirs = emulator.dirs
        self.node_id = node_id

    async def progress(self, value: int, total: int) -> None:
        self.emulator.throw_if_interrupted()
        self.emulator.update_progress(self.run, self.node_id, "running", value, total)
        self.emulator.send(
            "progress",
            {"value": value, "max": total, "prompt_id": self.run.prompt_id, "node": self.node_id},
            self.emulator.client_id,
        )

    async def sleep_step(self) -> None:
        await asyncio.sleep(self.emulator.config.step_seconds)

    async def load_model(self, folder: str, name: str, *, main_model: bool = False) -> str:
        path = self.dirs.model_path(folder, name)
        if path is None:
            raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")
        if os.path.splitext(path)[1].lower() in SAFETENSORS_EXTENSIONS:
            check_safetensors(path)  # raises SafetensorError as safe_open does
        if main_model and path != self.emulator.loaded_model:
            await asyncio.sleep(self.emulator.config.model_load_seconds)
            self.emulator.loaded_model = path
        return path

    async def to_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(func, *args)


class _Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.dirs = Dirs(os.path.abspath(config.base_dir))
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_metadata: dict[str, dict[str, Any]] = {}
        self.number = 0
        self.queue: list[tuple[Any, str, int, list[Any]]] = []
        self.currently_running: dict[int, list[Any]] = {}
        self.task_counter = 0
        self.history: dict[str, dict[str, Any]] = {}
        self.flags: dict[str, Any] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.loaded_model: str | None = None
        self.interrupted = False
        self.cache: dict[str, _CacheEntry] = {}
        self.objects: dict[tuple[str, str], Node] = {}
        self._seq = itertools.count()
        self._messages: asyncio.Queue[tuple[str, dict[str, Any], str | None]] = asyncio.Queue()
        self._queue_changed = asyncio.Event()
        self.app = web.Application(client_max_size=MAX_UPLOAD_SIZE, middlewares=[_origin_only_middleware])
        self.app.cleanup_ctx.append(self._lifespan)
        self._add_routes()

    async def _lifespan(self, app: web.Application) -> AsyncIterator[None]:
        for directory in (self.dirs.input, self.dirs.output):
            os.makedirs(directory, exist_ok=True)
        shutil.rmtree(self.dirs.temp, ignore_errors=True)  # ComfyUI wipes temp/ on start-up
        os.makedirs(self.dirs.temp, exist_ok=True)
        tasks = [asyncio.create_task(self._worker()), asyncio.create_task(self._publish_loop())]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for ws in list(self.sockets.values()):
            await ws.close()

    # ---------------------------------------------------------------- messaging

    def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self._messages.put_nowait((event, data, sid))

    async def _send_now(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        targets = (
            list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
        )
        for ws in targets:
            try:
                await ws.send_json({"type": event, "data": data})
            except _SOCKET_ERRORS as exc:
                log.warning("send error: %s", exc)

    async def _publish_loop(self) -> None:
        while True:
            event, data, sid = await self._messages.get()
            try:
                await self._send_now(event, data, sid)
            except Exception:  # one bad message must not silence the server
                log.exception("could not send %s", event)

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.queue) + len(self.currently_running)}}

    def queue_updated(self) -> None:
        self.send("status", {"status": self.queue_info()})
        self._queue_changed.set()

    def add_message(
        self, run: _RunState, event: str, data: dict[str, Any], *, broadcast: bool = False
    ) -> None:
        data = {**data, "timestamp": _now_ms()}
        run.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.send(event, data, self.client_id)

    def update_progress(self, run: _RunState, node_id: str, state: str, value: float, total: float) -> None:
        run.progress[node_id] = {
            "value": value,
            "max": total,
            "state": state,
            "node_id": node_id,
            "prompt_id": run.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        self.send(
            "progress_state",
            {"prompt_id": run.prompt_id, "nodes": copy.deepcopy(run.progress)},
            self.client_id,
        )

    def throw_if_interrupted(self) -> None:
        if self.interrupted:
            self.interrupted = False
            raise InterruptProcessingException()

    # ---------------------------------------------------------------- queue worker

    async def _next_item(self) -> tuple[list[Any], int]:
        while not self.queue:
            self._apply_flags()  # ComfyUI's idle worker wakes up within ~10 s to do this
            self._queue_changed.clear()
            await self._queue_changed.wait()
        item = heapq.heappop(self.queue)[3]
        item_id = self.task_counter
        self.task_counter += 1
        self.currently_running[item_id] = copy.deepcopy(item)
        self.queue_updated()
        return item, item_id

    async def _worker(self) -> None:
        while True:
            item, item_id = await self._next_item()
            prompt_id = item[1]
            try:
                success, result, messages = await self._execute(item[2], prompt_id, item[3], item[4])
            except Exception:  # an emulator bug must not kill the queue
                log.exception("emulator failed while executing %s", prompt_id)
                success, result, messages = False, {"outputs": {}, "meta": {}}, []
            self._task_done(
                item_id,
                result,
                {"status_str": "success" if success else "error", "completed": success, "messages": messages},
            )
            if self.client_id is not None:
                self.send("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)
            self._apply_flags()

    def _apply_flags(self) -> None:
        """``POST /free``: forget the loaded model, and with free_memory the node caches too."""
        free_memory = self.flags.pop("free_memory", False)
        if self.flags.pop("unload_models", free_memory):
            self.loaded_model = None
        if free_memory:
            self.cache.clear()
            self.objects.clear()

    def _task_done(self, item_id: int, result: dict[str, Any], status: dict[str, Any]) -> None:
        prompt = self.currently_running.pop(item_id)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        self.history[prompt[1]] = {"prompt": prompt, "outputs": {}, "status": status, **result}
        self.queue_updated()

    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        """Cache keys: class, IS_CHANGED and inputs, with links replaced by the source's key."""
        memo: dict[str, str] = {}

        def sig(node_id: str, stack: frozenset[str]) -> str:
            if node_id in memo:
                return memo[node_id]
            if node_id in stack or node_id not in prompt:
                return uuid.uuid4().hex
            node = prompt[node_id]
            cls = NODE_CLASSES.get(node.get("class_type", ""))
            try:
                changed = cls.is_changed(self.dirs, node["inputs"]) if cls else None
            except Exception:
                changed = uuid.uuid4().hex  # ComfyUI stores NaN: never equal, never cached
            parts: list[Any] = [node.get("class_type"), changed]
            for key in sorted(node.get("inputs", {})):
                value = node["inputs"][key]
                if _is_link(value):
                    parts.append([key, "link", sig(value[0], stack | {node_id}), value[1]])
                else:
                    parts.append([key, value])
            memo[node_id] = hashlib.sha256(
                json.dumps(parts, sort_keys=True, default=repr).encode()
            ).hexdigest()
            return memo[node_id]

        return {node_id: sig(node_id, frozenset()) for node_id in prompt}

    async def _execute(
        self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any], outputs: list[str]
    ) -> tuple[bool, dict[str, Any], list[list[Any]]]:
        self.interrupted = False
        self.client_id = extra_data.get("client_id")
        run = _RunState(prompt_id, prompt, extra_data, self._signatures(prompt))
        self.add_message(run, "execution_start", {"prompt_id": prompt_id})
        live = set(run.signatures.values())
        self.cache = {k: v for k, v in self.cache.items() if k in live}
        self.objects = {
            k: v for k, v in self.objects.items() if prompt.get(k[0], {}).get("class_type") == k[1]
        }
        cached = [n for n in prompt if run.signatures[n] in self.cache]
        self.add_message(run, "execution_cached", {"nodes": cached, "prompt_id": prompt_id})
        success = True
        # ComfyUI's current_outputs: the output cache's node ids, which after set_prompt are every
        # node of this prompt (cached or not), not only the cached ones.
        current_outputs = list(prompt)
        execution_list = _ExecutionList(prompt, lambda node_id: run.signatures[node_id] in self.cache)
        for output in outputs:
            execution_list.add_node(output)
        while (node_id := execution_list.stage_node_execution()) is not None:
            try:
                await self._execute_node(run, node_id)
                execution_list.complete_node_execution(node_id)
            except InterruptProcessingException:
                success = False
                self.add_message(
                    run,
                    "execution_interrupted",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": prompt[node_id]["class_type"],
                        "executed": list(run.executed),
                    },
                    broadcast=True,
                )
                break
            except _NodeFailure as failure:
                success = False
                self.add_message(
                    run,
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": prompt[node_id]["class_type"],
                        "executed": list(run.executed),
                        "exception_message": f"{failure.error}\n",
                        "exception_type": _full_type_name(type(failure.error)),
                        "traceback": traceback.format_tb(failure.error.__traceback__),
                        "current_inputs": failure.inputs,
                        "current_outputs": current_outputs,
                    },
                )
                break
        if success:
            self.add_message(run, "execution_success", {"prompt_id": prompt_id})
        ui_outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in prompt:
            entry = self.cache.get(run.signatures[node_id])
            if entry is not None and entry.ui:
                ui_outputs[node_id] = entry.ui
                meta[node_id] = {
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": None,
                    "real_node_id": node_id,
                }
        self.last_node_id = None
        return success, {"outputs": ui_outputs, "meta": meta}, run.messages

    async def _execute_node(self, run: _RunState, node_id: str) -> None:
        node = run.prompt[node_id]
        class_type = node["class_type"]
        signature = run.signatures[node_id]
        if signature in self.cache:
            entry = self.cache[signature]
            run.outputs[node_id] = entry.outputs
            if self.client_id is not None:
                self.send(
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": entry.ui,
                        "prompt_id": run.prompt_id,
                    },
                    self.client_id,
                )
            self.update_progress(run, node_id, "finished", 1.0, 1.0)
            return
        self.update_progress(run, node_id, "running", 0.0, 1.0)
        kwargs = self._node_inputs(run, node_id)
        if self.client_id is not None:
            self.last_node_id = node_id
            self.send(
                "executing",
                {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id},
                self.client_id,
            )
        self.throw_if_interrupted()
        obj = self.objects.get((node_id, class_type))
        if obj is None:
            obj = self.objects[(node_id, class_type)] = NODE_CLASSES[class_type]()
        try:
            result: NodeResult = await obj.execute(_NodeContext(self, run, node_id), **kwargs)
        except InterruptProcessingException:
            raise
        except Exception as ex:
            log.error("!!! Exception during processing !!! %s", ex)
            raise _NodeFailure(ex, {k: [_format_value(v)] for k, v in kwargs.items()}) from ex
        self.cache[signature] = _CacheEntry(result.outputs, result.ui or None)
        run.outputs[node_id] = result.outputs
        if result.ui and self.client_id is not None:
            self.send(
                "executed",
                {"node": node_id, "display_node": node_id, "output": result.ui, "prompt_id": run.prompt_id},
                self.client_id,
            )
        self.update_progress(
            run, node_id, "finished", run.progress[node_id]["max"], run.progress[node_id]["max"]
        )
        run.executed.append(node_id)

    def _outputs_of(self, run: _RunState, node_id: str) -> tuple[Any, ...] | None:
        if node_id in run.outputs:
            return run.outputs[node_id]
        entry = self.cache.get(run.signatures.get(node_id, ""))
        return entry.outputs if entry is not None else None

    def _node_inputs(self, run: _RunState, node_id: str) -> dict[str, Any]:
        """``execution.get_input_data``: links resolved, unknown literals dropped, hidden inputs added."""
        node = run.prompt[node_id]
        class_inputs = NODE_CLASSES[node["class_type"]].input_types(self.dirs)
        kwargs: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if _is_link(value):
                source = self._outputs_of(run, value[0])
                kwargs[name] = source[value[1]] if source is not None and value[1] < len(source) else None
            elif _input_info(class_inputs, name)[1] is not None:
                kwargs[name] = value
        for name, kind in class_inputs.get("hidden", {}).items():
            if kind == "PROMPT":
                kwargs[name] = run.prompt
            elif kind == "EXTRA_PNGINFO":
                kwargs[name] = run.extra_data.get("extra_pnginfo")
            elif kind == "UNIQUE_ID":
                kwargs[name] = node_id
        return kwargs

    # ---------------------------------------------------------------- routes

    def _add_routes(self) -> None:
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self.websocket_handler),
            ("GET", "/embeddings", self.get_embeddings),
            ("GET", "/models", self.get_model_types),
            ("GET", "/models/{folder}", self.get_models),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view_image),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/prompt", self.get_prompt),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_node),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/prompt", self.post_prompt),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("POST", "/history", self.post_history),
        ]
        for prefix in ("/api", ""):
            self.app.add_routes(
                [web.route(method, prefix + path, handler) for method, path, handler in routes]
            )
        self.app.add_routes([web.get("/", self.index)])

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html><body>ComfyUI emulator</body></html>", content_type="text/html")

    async def websocket_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        self.sockets.pop(sid, None)  # a reconnect replaces the old socket
        self.sockets[sid] = ws
        self.sockets_metadata[sid] = {"feature_flags": {}}
        try:
            await self._send_now("status", {"status": self.queue_info(), "sid": sid}, sid)
            if self.client_id == sid and self.last_node_id is not None:
                await self._send_now("executing", {"node": self.last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("Invalid JSON received from client %s: %s", sid, msg.data)
                    continue
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    self.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                    await self._send_now("feature_flags", dict(FEATURE_FLAGS), sid)
                first = False
        finally:
            # ComfyUI pops by sid unconditionally; we keep a newer socket that replaced this one.
            if self.sockets.get(sid) is ws:
                self.sockets.pop(sid, None)
                self.sockets_metadata.pop(sid, None)
        return ws

    async def get_embeddings(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([os.path.splitext(name)[0] for name in self.dirs.list_models("embeddings")])

    async def get_model_types(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(FOLDER_KEYS))

    async def get_models(self, request: web.Request) -> web.StreamResponse:
        folder = request.match_info["folder"]
        if folder not in FOLDER_KEYS:
            return web.Response(status=404)
        return web.json_response(self.dirs.list_models(folder))

    async def upload_image(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        kind = post.get("type") or "input"
        upload_dir = self.dirs.by_type(str(kind))
        if upload_dir is None:
            raise ValueError(f"unknown upload type {kind!r}")  # ComfyUI fails with a 500 here too
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        filename = image.filename
        subfolder = str(post.get("subfolder", ""))
        folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        data = image.file.read()
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            i = 1
            while os.path.exists(filepath):
                with open(filepath, "rb") as f:
                    if hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            with open(filepath, "wb") as f:
                f.write(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def view_image(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, output_dir = query["filename"], None
        for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
            if filename.endswith(suffix):
                filename, output_dir = filename[: -len(suffix) - 1], self.dirs.by_type(kind)
                break
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if output_dir is None:
            output_dir = self.dirs.by_type(query.get("type", "output"))
        if output_dir is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full_dir = os.path.join(output_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full_dir), output_dir)) != output_dir:
                return web.Response(status=403)
            output_dir = full_dir
        filename = os.path.basename(filename)
        path = os.path.join(output_dir, filename)
        if not os.path.isfile(path):
            return web.Response(status=404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        channel = query.get("channel", "rgba")
        if "preview" in query or channel in ("rgb", "a"):
            body, content_type = await asyncio.to_thread(_reencode, path, query.get("preview"), channel)
            return web.Response(body=body, content_type=content_type, headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {
            "text/html",
            "text/html-sandboxed",
            "application/xhtml+xml",
            "text/javascript",
            "text/css",
        }:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})

    async def system_stats(self, request: web.Request) -> web.StreamResponse:
        ram_total, ram_free = _memory()
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": ram_total,
                    "ram_free": ram_free,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.8.0+cpu",
                    "embedded_python": False,
                    "argv": ["main.py", "--cpu"],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": ram_total,
                        "vram_free": ram_free,
                        "torch_vram_total": ram_total,
                        "torch_vram_free": ram_free,
                    }
                ],
            }
        )

    async def features(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(FEATURE_FLAGS)

    async def get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.queue_info())

    def node_info(self, name: str) -> dict[str, Any]:
        cls = NODE_CLASSES[name]
        inputs = cls.input_types(self.dirs)
        info: dict[str, Any] = {
            "input": inputs,
            "input_order": {k: list(v) for k, v in inputs.items()},
            "output": list(cls.RETURN_TYPES),
            "output_is_list": [False] * len(cls.RETURN_TYPES),
            "output_name": list(cls.RETURN_NAMES or cls.RETURN_TYPES),
            "name": name,
            "display_name": cls.DISPLAY_NAME or name,
            "description": cls.DESCRIPTION,
            "python_module": cls.PYTHON_MODULE,
            "category": cls.CATEGORY,
            "output_node": cls.OUTPUT_NODE,
        }
        if cls.OUTPUT_TOOLTIPS:
            info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
        return info

    async def object_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({name: self.node_info(name) for name in NODE_CLASSES})

    async def object_info_node(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["node_class"]
        return web.json_response({name: self.node_info(name)} if name in NODE_CLASSES else {})

    async def get_history(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for i, (key, entry) in enumerate(self.history.items()):
            if i >= offset:
                out[key] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return web.json_response(out)

    async def get_history_prompt(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def get_queue(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "queue_running": list(self.currently_running.values()),
                "queue_pending": [entry[3] for entry in self.queue],
            }
        )

    async def post_prompt(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if "number" in json_data:
            number: Any = float(json_data["number"])
        else:
            number = self.number
            if json_data.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in json_data:
            no_prompt = _error("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": no_prompt, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial = json_data.get("partial_execution_targets")
        valid, error, outputs, node_errors = _Validator(self.dirs, prompt).validate_prompt(partial)
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            log.warning("invalid prompt: %s", error)
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        # As 0.8's post_prompt: API keys leave extra_data before it is queued (ComfyUI keeps them in
        # a sixth, never-listed queue field; the emulator has no use for them), and the time the
        # prompt was queued is added, so /queue and /history entries carry create_time (ms).
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
        extra_data["create_time"] = _now_ms()
        item = [number, prompt_id, prompt, extra_data, outputs]
        heapq.heappush(self.queue, (number, prompt_id, next(self._seq), item))
        self.queue_updated()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def post_queue(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("clear"):
            self.queue.clear()
            self.queue_updated()
        for prompt_id in json_data.get("delete", []):
            for i, entry in enumerate(self.queue):
                if entry[1] == prompt_id:
                    self.queue.pop(i)
                    heapq.heapify(self.queue)
                    self.queue_updated()
                    break
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.StreamResponse:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if not prompt_id or any(item[1] == prompt_id for item in self.currently_running.values()):
            self.interrupted = True
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        for flag in ("unload_models", "free_memory"):
            if json_data.get(flag, False):
                self.flags[flag] = json_data[flag]
        self._queue_changed.set()  # let an idle worker act on the flags now
        return web.Response(status=200)

    async def post_history(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("clear"):
            self.history.clear()
        for prompt_id in json_data.get("delete", []):
            self.history.pop(prompt_id, None)
        return web.Response(status=200)


class _NodeFailure(Exception):
    def __init__(self, error: Exception, inputs: dict[str, Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.inputs = inputs


def _reencode(path: str, preview: str | None, channel: str) -> tuple[bytes, str]:
    """``/view`` with ``preview=`` (webp/jpeg) or ``channel=rgb|a``."""
    buffer = io.BytesIO()
    with Image.open(path) as img:
        if preview is not None:
            parts = preview.split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
            out.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            out.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    loopback = False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            for *_, sockaddr in socket.getaddrinfo(host, None, family, socket.SOCK_STREAM):
                if not ipaddress.ip_address(sockaddr[0]).is_loopback:
                    return False
                loopback = True
        except socket.gaierror:
            pass
    return loopback


@web.middleware
async def _origin_only_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """ComfyUI's CSRF guard: 403 when a loopback Host and the Origin name different hosts."""
    if "Host" in request.headers and "Origin" in request.headers:
        host_domain: str | None = request.headers["Host"].lower()
        parsed = urllib.parse.urlparse(request.headers["Origin"])
        origin_domain: str | None = parsed.netloc.lower()
        host_parsed = urllib.parse.urlsplit("//" + (host_domain or ""))
        loopback = _is_loopback(host_parsed.hostname)
        if parsed.port is None:
            host_domain = host_parsed.hostname
        if host_parsed.port is None:
            origin_domain = parsed.hostname
        if loopback and host_domain and origin_domain and host_domain != origin_domain:
            log.warning(
                "request with non matching host and origin %s != %s, returning 403",
                host_domain,
                origin_domain,
            )
            return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)
