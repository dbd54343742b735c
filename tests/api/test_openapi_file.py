"""The studio's typed client is generated from web/openapi.json; that file must be the app's."""

from __future__ import annotations

from pathlib import Path

from swarmstation.api.openapi_file import current_spec, render

COMMITTED = Path(__file__).resolve().parents[2] / "web" / "openapi.json"


def test_the_committed_openapi_document_is_the_apps() -> None:
    assert COMMITTED.read_text() == render(current_spec()), (
        "web/openapi.json is stale: run `make openapi` and commit it with web/src/api/schema.d.ts"
    )
