"""The studio's routes in the app: the fallback never shadows the API, and the docs it shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from swarmstation.api.errors import install_error_handlers
from swarmstation.api.studio import content_security_policy, is_reserved, mount_studio
from swarmstation.config import Settings


def make(tmp_path: Path, built: bool = True) -> TestClient:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    if built:
        (dist / "index.html").write_text('<!doctype html><script type="module" src="/assets/a.js"></script>')
    (dist / "assets" / "a-1234.js").write_text("export {}")
    (dist / "favicon.svg").write_text("<svg/>")
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/thing")
    def thing() -> dict[str, bool]:
        return {"ok": True}

    mount_studio(app, Settings(data_dir=tmp_path / "data"), dist=dist)
    return TestClient(app)


def test_reserved_prefixes() -> None:
    assert (
        is_reserved("/v1") and is_reserved("/v1/tools") and is_reserved("/docs") and is_reserved("/healthz")
    )
    assert not is_reserved("/v1x") and not is_reserved("/") and not is_reserved("/guide/readme")


def test_fallback_serves_the_app_and_assets_are_immutable(tmp_path: Path) -> None:
    client = make(tmp_path)
    for path in ("/", "/sandbox", "/history/job/42"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assert "unsafe-eval" not in page.headers["content-security-policy"]
    assert client.get("/v1/thing").json() == {"ok": True}
    assert client.get("/v1/unknown").status_code == 404
    assert client.put("/v1/unknown/x").status_code == 404  # not a 405 from the fallback
    asset = client.get("/assets/a-1234.js")
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/assets/..%2Findex.html").status_code == 404
    assert client.get("/favicon.svg").text == "<svg/>"


def test_an_unbuilt_studio_says_how_to_build_it(tmp_path: Path) -> None:
    page = make(tmp_path, built=False).get("/")
    assert page.status_code == 503 and "make run" in page.text


def test_the_policy_allows_the_object_store_for_images_and_fetches_only() -> None:
    policy = content_security_policy(Settings(s3_bucket="b", s3_endpoint_url="https://acc.r2.example.com"))
    images = next(p for p in policy.split("; ") if p.startswith("img-src"))
    assert "https://acc.r2.example.com" in images
    fetches = next(p for p in policy.split("; ") if p.startswith("connect-src"))
    assert "https://acc.r2.example.com" in fetches
    assert "r2.example.com" not in policy.replace(images, "").replace(fetches, "")
    assert "script-src 'self';" in policy


def test_docs_pages_render_the_readme_without_raw_html(api: Any) -> None:
    listed = api.get("/v1/docs").json()["docs"]
    assert {"slug": "readme", "title": "swarmstation"} in listed or any(d["slug"] == "readme" for d in listed)
    page = api.get("/v1/docs/readme").json()
    assert "<h1>" in page["html"]
    assert api.get("/v1/docs/nope").status_code == 404
    assert api.get("/v1/docs/files/../../pyproject.toml").status_code == 404


def test_workspaces_round_trip_per_user(api: Any, admin: dict[str, str]) -> None:
    graph = {
        "nodes": [{"id": "n1", "tool": "sdxl-txt2img"}],
        "edges": [],
        "viewport": {"x": 0, "y": 0, "zoom": 1},
    }
    put = api.put("/v1/workspaces/main", json={"graph": graph}, headers=admin)
    assert put.status_code == 200, put.text
    assert api.get("/v1/workspaces/main", headers=admin).json()["graph"] == graph
    assert [w["name"] for w in api.get("/v1/workspaces", headers=admin).json()["workspaces"]] == ["main"]
    assert api.put("/v1/workspaces/bad%2Fname", json={"graph": {}}, headers=admin).status_code in (404, 422)
    assert api.get("/v1/workspaces/main").status_code == 401
    assert api.delete("/v1/workspaces/main", headers=admin).status_code == 204
    assert api.get("/v1/workspaces/main", headers=admin).status_code == 404
