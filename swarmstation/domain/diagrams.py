"""State diagrams drawn from the lifecycle tables, so that the documentation cannot drift from them.

`render()` is pure: it turns every registered lifecycle (`domain.states.ALL_TABLES`, after
importing every module of `swarmstation.domain`, where lifecycles register themselves) into
Markdown with a Mermaid diagram and the table of rules. `python -m swarmstation.domain.diagrams`
writes it to docs/states.md (`--check` only compares); tests/domain/test_states.py fails when the
file and the tables differ.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Any

import swarmstation.domain
from swarmstation.domain.states import ALL_TABLES, INSTANCE, JOB, Lifecycle

__all__ = ["DOC_PATH", "load_all_lifecycles", "render", "render_lifecycle"]

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "states.md"

_HEADER = """# States

<!-- Generated from the tables in swarmstation/domain/ by
     `python -m swarmstation.domain.diagrams`: edit the tables, not this file. -->

Every lifecycle is a table `(state, trigger) -> next state`; a pair that is not in the table is
refused (`IllegalTransition`, 409 `illegal_transition`) and changes nothing. The trigger of each
change is recorded with it (a job's `state` events, an instance's transitions), so a job that goes
back to the queue says why.
"""


def load_all_lifecycles() -> list[Lifecycle[Any, Any]]:
    """Every lifecycle: those of domain/states.py first, the others by name; importing
    `swarmstation.domain`'s modules is what registers them."""
    for module in pkgutil.iter_modules(swarmstation.domain.__path__):
        importlib.import_module(f"swarmstation.domain.{module.name}")
    # Not in registration order: that depends on which module happened to be imported first.
    own: list[Lifecycle[Any, Any]] = [JOB, INSTANCE]
    return own + sorted((lc for lc in ALL_TABLES.values() if lc not in own), key=lambda lc: lc.kind)


def _edges(lifecycle: Lifecycle[Any, Any]) -> dict[tuple[str, str], list[str]]:
    """(from, to) -> the triggers that make that move, in the order of the rules."""
    edges: dict[tuple[str, str], list[str]] = {}
    for rule in lifecycle.rules:
        for source in rule.sources:
            edges.setdefault((str(source), str(rule.target)), []).append(str(rule.trigger))
    return edges


def render_lifecycle(lifecycle: Lifecycle[Any, Any]) -> str:
    lines = [f"## {lifecycle.kind}", ""]
    if lifecycle.about:
        lines += [lifecycle.about, ""]
    lines += ["```mermaid", "stateDiagram-v2", f"    [*] --> {lifecycle.initial}"]
    for (source, target), triggers in _edges(lifecycle).items():
        lines.append(f"    {source} --> {target}: {'<br/>'.join(triggers)}")
    for state in sorted(lifecycle.terminal, key=lifecycle.states.index):
        lines.append(f"    {state} --> [*]")
    lines += ["```", "", "| trigger | from | to | when |", "|---|---|---|---|"]
    for rule in lifecycle.rules:
        sources = ", ".join(str(s) for s in rule.sources)
        lines.append(f"| `{rule.trigger}` | {sources} | {rule.target} | {rule.why} |")
    return "\n".join(lines) + "\n"


def render(lifecycles: list[Lifecycle[Any, Any]] | None = None) -> str:
    chosen = load_all_lifecycles() if lifecycles is None else lifecycles
    return "\n".join([_HEADER, *(render_lifecycle(lc) for lc in chosen)])


def main(argv: list[str]) -> int:
    # The one place here that touches a file: the script entry, not the functions above.
    text = render()
    if "--check" in argv:
        same = DOC_PATH.exists() and DOC_PATH.read_text(encoding="utf-8") == text
        print(f"{DOC_PATH}: {'up to date' if same else 'out of date'}")
        return 0 if same else 1
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
