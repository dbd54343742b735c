"""The API's OpenAPI document as a file: `python -m swarmstation.api.openapi_file PATH`.

The studio's typed client (web/src/api/schema.d.ts) is generated from it (`make openapi`); the
tests compare the committed web/openapi.json with the running app's, so the two cannot drift."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def current_spec() -> dict[str, Any]:
    from swarmstation.api.app import build
    from swarmstation.config import Settings

    with tempfile.TemporaryDirectory() as folder:
        plane = build(Settings(data_dir=Path(folder)), provider=None)
        try:
            return plane.app.openapi()
        finally:
            plane.state.engine.dispose()


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=1, sort_keys=True) + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("web/openapi.json")
    target.write_text(render(current_spec()))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
