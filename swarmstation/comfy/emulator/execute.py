"""The emulator's execution: its prompt queue and history, the order in which a prompt's nodes
run (``_ExecutionList``), the node-output cache and the WebSocket messages a run sends.

Mirrors ComfyUI's ``execution.py`` (``PromptExecutor``, ``PromptQueue``) and
``comfy_execution/graph.py`` at ``COMFYUI_VERSION`` (swarmstation/comfy/emulator/server.py).

* One background task (``_worker``) pops items one at a time, runs the graph in ComfyUI's order,
  writes the history entry and only then sends the final ``executing {node: null}``.
* Every WebSocket message goes through one queue drained by ``_publish_loop``, so the order the
  executor produces is the order clients see. Messages with a ``sid`` go to that socket only;
  without one they are broadcast.
* Node outputs are cached by input signature as ComfyUI's classic cache does: re-running an
  identical graph reports every node in ``execution_cached`` and repeats the old UI outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import itertools
import json
import logging
import os
import shutil
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from swarmstation.comfy.emulator.nodes import (
    NODE_CLASSES,
    SAFETENSORS_EXTENSIONS,
    Dirs,
    Node,
    NodeResult,
    check_safetensors,
)
from swarmstation.comfy.emulator.validate import format_value, full_type_name, input_info, is_link

log = logging.getLogger(__name__)

MAXIMUM_HISTORY_SIZE = 10000
_SOCKET_ERRORS = (ConnectionError, RuntimeError, OSError)


@dataclass
class EmulatorConfig:
    """Where the emulated ComfyUI keeps its files, and how slow it pretends to be."""

    base_dir: Path  #: holds models/<folder>/..., input/, output/, temp/
    step_seconds: float = 0.0  #: sleep per sampler step (KSampler steps)
    model_load_seconds: float = 0.0  #: sleep when a checkpoint/unet other than the loaded one is loaded


def now_ms() -> int:
    return int(time.time() * 1000)


class InterruptProcessingException(Exception):
    pass


InterruptProcessingException.__module__ = "comfy.model_management"


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
                if is_link(value) and value[0] in self.prompt and not self.is_cached(value[0]):
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

    def __init__(self, emulator: Executor, run: _RunState, node_id: str) -> None:
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


class Executor:
    """The emulated ComfyUI behind the HTTP routes: its prompt queue, history, node caches and
    WebSocket clients, and the one task that runs queued prompts (``PromptQueue`` and
    ``PromptExecutor`` in ComfyUI)."""

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

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the queue worker and the message publisher for as long as the server runs."""
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

    def enqueue(self, item: list[Any]) -> None:
        """Queue ``[number, prompt_id, prompt, extra_data, outputs]``: lowest number first, then FIFO."""
        heapq.heappush(self.queue, (item[0], item[1], next(self._seq), item))
        self.queue_updated()

    def wake(self) -> None:
        """Let an idle worker act on new ``/free`` flags now."""
        self._queue_changed.set()

    # ---------------------------------------------------------------- messaging

    def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self._messages.put_nowait((event, data, sid))

    async def send_now(self, event: str, data: dict[str, Any], sid: str | None) -> None:
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
                await self.send_now(event, data, sid)
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
        data = {**data, "timestamp": now_ms()}
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
                if is_link(value):
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
                        "exception_type": full_type_name(type(failure.error)),
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
            raise _NodeFailure(ex, {k: [format_value(v)] for k, v in kwargs.items()}) from ex
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
            if is_link(value):
                source = self._outputs_of(run, value[0])
                kwargs[name] = source[value[1]] if source is not None and value[1] < len(source) else None
            elif input_info(class_inputs, name)[1] is not None:
                kwargs[name] = value
        for name, kind in class_inputs.get("hidden", {}).items():
            if kind == "PROMPT":
                kwargs[name] = run.prompt
            elif kind == "EXTRA_PNGINFO":
                kwargs[name] = run.extra_data.get("extra_pnginfo")
            elif kind == "UNIQUE_ID":
                kwargs[name] = node_id
        return kwargs


class _NodeFailure(Exception):
    def __init__(self, error: Exception, inputs: dict[str, Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.inputs = inputs
