"""The web studio (web/, built by Vite into swarmstation/studio_dist): served at `/`.

Hashed assets (`/assets/*`) are cached for a year; every other GET that no API route answers gets
index.html (the single-page app routes on the client), except under the API's own prefixes, which
keep their JSON 404. Documents carry a strict Content-Security-Policy: scripts only from this
origin, no eval, no inline scripts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from swarmstation.config import Settings
from swarmstation.domain.errors import NotFound

# STUDIO_DIST_DIR: a build elsewhere (front-end work that builds into a folder of its own).
DIST = Path(os.environ.get("STUDIO_DIST_DIR") or Path(__file__).resolve().parent.parent / "studio_dist")

# Paths the studio never shadows: the APIs, the API reference, operations, stored objects.
RESERVED = ("/v1", "/worker/v1", "/docs", "/redoc", "/openapi.json", "/metrics", "/healthz", "/objects")

IMMUTABLE = "public, max-age=31536000, immutable"

NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>swarmstation</title></head>
<body><h1>swarmstation</h1><p>The web studio is not built. Run <code>make run</code> (it builds
it), or <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>.
The API is at <a href="/docs">/docs</a>.</p>
</body></html>"""


def content_security_policy(settings: Settings) -> str:
    """Scripts and styles from this origin only. Images and fetches also from the object store,
    where an output's address redirects to a presigned URL (an API-key session fetches outputs
    with its key), and images from data:/blob: (previews of files a person drops in)."""
    store: list[str] = []
    if settings.s3_bucket:
        parts = urlsplit(settings.s3_endpoint_url or "https://s3.amazonaws.com")
        if parts.scheme and parts.netloc:
            store.append(f"{parts.scheme}://{parts.netloc}")
            store.append(f"{parts.scheme}://*.{parts.netloc}")  # virtual-hosted bucket addresses
    images = ["'self'", "data:", "blob:", *store]
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            # style attributes: the canvas positions nodes with them (no scripts can come this way)
            "style-src 'self' 'unsafe-inline'",
            "img-src " + " ".join(images),
            "connect-src " + " ".join(["'self'", *store]),
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def is_reserved(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in RESERVED)


class StudioPath(Convertor[str]):
    """A path outside the reserved prefixes. The fallback matches only these, so that a request
    under /v1 that no route takes keeps its 404 (or 405) instead of meeting the studio."""

    _prefixes = "|".join(re.escape(p.lstrip("/")) for p in RESERVED)
    regex = rf"(?!(?:{_prefixes})(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("studio", StudioPath())


def mount_studio(app: FastAPI, settings: Settings, dist: Path = DIST) -> None:
    """Register the studio's routes; call after every API router (the fallback matches anything)."""
    csp = content_security_policy(settings)
    document_headers = {
        "Content-Security-Policy": csp,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    root = dist.resolve()

    def index() -> Response:
        page = root / "index.html"
        if not page.is_file():
            return HTMLResponse(NOT_BUILT, status_code=503, headers=document_headers)
        return FileResponse(page, media_type="text/html", headers=document_headers)

    @app.get("/assets/{name:path}", include_in_schema=False)
    def asset(name: str) -> Response:
        path = (root / "assets" / name).resolve()
        if not path.is_file() or not path.is_relative_to(root / "assets"):
            raise NotFound(f"no asset {name!r}")
        return FileResponse(path, headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"})

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return index()

    @app.get("/{path:studio}", include_in_schema=False)
    def fallback(path: str) -> Response:
        # A file the build put at the top (favicon, robots.txt) is served as it is.
        if path and "/" not in path:
            candidate = (root / path).resolve()
            if candidate.is_file() and candidate.parent == root and candidate.name != "index.html":
                return FileResponse(candidate, headers={"Cache-Control": "public, max-age=3600"})
        return index()
