"""What a rented instance installs: swarmstation at the control plane's own version, under the
control plane's lock file as pip constraints, so a worker runs the code and the dependency builds
that the control plane was tested with.

The lock (`requirements.lock`, pinned with hashes, made by `make lock`) lives beside the package
in a source checkout; `Settings.worker_constraints_file` names another one (a wheel install has
none beside it). The worker receives the pins without the hashes: constraints only pick versions,
and hashes there would put the whole install in pip's hash-checking mode, which the image's own
packages (its CUDA torch) and ComfyUI's requirements would fail.
"""

from __future__ import annotations

import re
from pathlib import Path

from swarmstation import __version__

#: `requirements.lock` at the root of a source checkout (and of an editable install).
CHECKOUT_LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"

# A requirement line of a pip-compile lock: `name==version` with optional extras and markers,
# then ` \` before its hashes.
_PIN = re.compile(r"^(?P<pin>[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==[^\s;\\]+(\s*;[^\\]*)?)")


def default_install_spec() -> str:
    """`swarmstation==<this version>`: instances run what the control plane runs."""
    return f"swarmstation=={__version__}"


def lock_path(configured: Path | None) -> Path | None:
    """The lock file to serve: the configured one, else the checkout's when it exists."""
    if configured is not None:
        return configured
    return CHECKOUT_LOCK if CHECKOUT_LOCK.is_file() else None


def constraints_from_lock(text: str) -> str:
    """The pins of a pip-compile lock as a constraints file: one `name==version[; markers]` a line,
    without hashes, comments or options."""
    pins = []
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            pins.append(match.group("pin").strip())
    return "".join(f"{pin}\n" for pin in pins)
