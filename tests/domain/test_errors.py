"""The error tree (swarmstation.domain.errors) and the one handler that renders it (api/errors.py):
every error class has a code and a status; the handler answers along the MRO; routers and use
cases raise the tree, never HTTPException; outages of the object store and the provider are 503s
with their codes."""

from __future__ import annotations

import ast
import importlib
import io
import logging
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from moto import server as moto_server
from PIL import Image

import swarmstation
from swarmstation.api.app import build
from swarmstation.api.errors import install_error_handlers
from swarmstation.config import Settings
from swarmstation.domain import errors
from swarmstation.domain.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
    RateLimited,
    SwarmError,
    Unauthorized,
    Unavailable,
)
from tests.conftest import FakeClock

PACKAGE = Path(swarmstation.__file__).parent

# Exceptions that are not errors: the worker's signals to its own loop (and private classes,
# named with a leading underscore, that never leave their module).
CONTROL_FLOW = {
    "swarmstation.worker.agent": {
        "LeaseLost",
        "InstanceStopped",
        "InstanceUnknown",
        "ControlPlaneUnreachable",
    },
}


def _all_modules() -> Iterator[str]:
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="swarmstation."):
        if ".migrations" not in info.name and not info.name.endswith("__main__"):
            yield info.name


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_class_has_a_code_and_a_status() -> None:
    for name in _all_modules():
        importlib.import_module(name)
    classes = [SwarmError, *_subclasses(SwarmError)]
    assert len(classes) > 25
    for cls in classes:
        if cls.__module__.startswith("tests."):
            continue
        assert isinstance(cls.code, str) and cls.code, cls
        assert cls.code == cls.code.lower() and " " not in cls.code, cls
        assert 400 <= cls.status_hint <= 599, cls
    # The families answer what the API always answered.
    assert (errors.InvalidInput.code, errors.InvalidInput.status_hint) == ("invalid_request", 422)
    assert (errors.NotFound.code, errors.NotFound.status_hint) == ("not_found", 404)
    assert (errors.StaleLease.code, errors.StaleLease.status_hint) == ("stale_lease", 409)
    assert (errors.PaymentRequired.code, errors.PaymentRequired.status_hint) == ("payment_required", 402)
    assert errors.ObjectStoreUnavailable.code == "object_store_unavailable"
    assert errors.ProviderUnavailable.status_hint == 503


def _exception_classes(path: Path) -> Iterator[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            yield node.name, [ast.unparse(b) for b in node.bases]


def test_every_exception_of_the_package_is_in_the_tree() -> None:
    """Every class that derives from an exception, anywhere in swarmstation, is a SwarmError
    (apart from a few control-flow signals that never leave their module)."""
    outside: list[str] = []
    for name in _all_modules():
        module = importlib.import_module(name)
        source = Path(str(module.__file__))
        if not source.is_file():
            continue  # a module moved away while its compiled copy lingers
        for cls_name, _ in _exception_classes(source):
            cls = getattr(module, cls_name, None)
            if not isinstance(cls, type) or not issubclass(cls, BaseException):
                continue
            if cls_name.startswith("_") or cls_name in CONTROL_FLOW.get(name, set()):
                continue
            if cls.__module__ != name:
                continue
            if name.startswith("swarmstation.comfy.emulator"):
                continue  # the emulator mimics ComfyUI's own exceptions
            if not issubclass(cls, SwarmError):
                outside.append(f"{name}.{cls_name}")
    assert outside == []


def test_no_router_or_use_case_raises_http_exceptions() -> None:
    offenders = []
    for folder in ("api", "control"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            if path.name == "errors.py" and folder == "api":
                continue  # the one handler renders FastAPI's own HTTPExceptions
            if "HTTPException" in path.read_text(encoding="utf-8"):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


# -- the handler -------------------------------------------------------------------------------------
class _Untold(Conflict):
    """A new error that names neither a code nor a status: it answers as its family does."""


class _Told(NotFound):
    code = "told_not_found"


class _Outage(Unavailable):
    code = "thing_unavailable"
    what = "thing"


def _app() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    raises: dict[str, BaseException] = {
        "untold": _Untold("it clashes"),
        "told": _Told("no such thing"),
        "invalid": InvalidInput("seed: too big", errors=[FieldError("seed", "too big")]),
        "at": InvalidInput.at("inputs.seed", "too big"),
        "unauthorized": Unauthorized("who are you"),
        "limited": RateLimited("slow down", retry_after_seconds=7),
        "outage": _Outage("thing at 10.0.0.7:9000 refused the connection"),
        "root": SwarmError("something of ours"),
    }

    @app.get("/raise/{what}")
    def _raise(what: str) -> None:
        raise raises[what]

    return TestClient(app, raise_server_exceptions=False)


def test_the_handler_answers_along_the_mro(caplog: pytest.LogCaptureFixture) -> None:
    api = _app()
    r = api.get("/raise/untold")
    assert (r.status_code, r.json()) == (409, {"detail": "it clashes", "code": "conflict"})
    r = api.get("/raise/told")
    assert (r.status_code, r.json()) == (404, {"detail": "no such thing", "code": "told_not_found"})
    for path in ("/raise/invalid", "/raise/at"):
        r = api.get(path)
        assert r.status_code == 422
        assert r.json()["code"] == "invalid_request"
        assert r.json()["errors"][0]["reason"] == "too big"
    r = api.get("/raise/unauthorized")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = api.get("/raise/limited")
    assert (r.status_code, r.headers["Retry-After"], r.json()["code"]) == (429, "7", "rate_limited")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        r = api.get("/raise/outage")
    assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
    assert r.json() == {
        "detail": "the thing is unavailable; retry in a few seconds",
        "code": "thing_unavailable",
    }
    # one line, no traceback, and the internal address only in the log
    assert [(rec.exc_info, "10.0.0.7" in rec.getMessage()) for rec in caplog.records] == [(None, True)]
    r = api.get("/raise/root")
    assert (r.status_code, r.json()["code"]) == (500, "internal_error")


def test_module_errors_answer_with_their_family() -> None:
    from swarmstation.comfy.client import ComfyUnavailable
    from swarmstation.control.idempotency import KeyInFlight, KeyReused
    from swarmstation.control.jobs import JobNotFound
    from swarmstation.domain.tools import ToolInputError
    from swarmstation.objectstore.base import BadKey, ObjectStoreError
    from swarmstation.objectstore.base import NotFound as ObjectNotFound
    from swarmstation.providers.base import ProviderError

    app = FastAPI()
    install_error_handlers(app)
    raises: dict[str, BaseException] = {
        "provider": ProviderError("vast.ai answered 502"),
        "store": ObjectStoreError("connection refused"),
        "object": ObjectNotFound("outputs/x.png"),
        "key": BadKey("invalid object key"),
        "comfy": ComfyUnavailable("connection refused"),
        "job": JobNotFound("j1"),
        "input": ToolInputError("seed", "must be an integer"),
        "reused": KeyReused("k"),
        "inflight": KeyInFlight("k"),
    }

    @app.get("/raise/{what}")
    def _raise(what: str) -> None:
        raise raises[what]

    api = TestClient(app, raise_server_exceptions=False)

    def answer(what: str) -> tuple[int, str, str]:
        r = api.get(f"/raise/{what}")
        return r.status_code, r.json()["code"], r.json()["detail"]

    assert answer("provider")[:2] == (503, "provider_unavailable")
    assert answer("store")[:2] == (503, "object_store_unavailable")
    assert answer("object") == (404, "not_found", "object outputs/x.png not found in the object store")
    assert answer("key")[:2] == (400, "bad_object_key")
    assert answer("comfy")[:2] == (503, "comfy_unavailable")
    assert answer("job") == (404, "not_found", "job j1 not found")
    assert answer("input") == (422, "invalid_input", "inputs.seed: must be an integer")
    assert answer("reused")[:2] == (422, "idempotency_key_reused")
    assert answer("inflight")[:2] == (409, "idempotency_key_in_flight")


# -- a real outage ------------------------------------------------------------------------------------
def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def test_an_s3_outage_during_an_upload_answers_503(tmp_path: Path) -> None:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    ).create_bucket(Bucket="gone")
    settings = Settings(
        s3_bucket="gone",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id="a",
        s3_secret_access_key="b",
        data_dir=tmp_path / "data",
        provider="none",
        scheduler_interval_seconds=3600,
        control_interval_seconds=3600,
    )
    cp = build(settings, provider=None, clock=FakeClock())
    stopped = False
    try:
        with TestClient(cp.app, raise_server_exceptions=False) as api:
            admin = {"Authorization": f"Bearer {cp.admin_key}"}
            files = {"file": ("a.png", _png(), "image/png")}
            assert api.post("/v1/uploads", headers=admin, files=files).status_code == 201
            server.stop()
            stopped = True
            r = api.post("/v1/uploads", headers=admin, files=files)
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "object_store_unavailable"
            assert endpoint not in r.text
    finally:
        if not stopped:
            server.stop()
        cp.state.engine.dispose()
