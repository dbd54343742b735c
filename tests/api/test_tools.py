"""The tools API (issue 14): kinds, typed outputs and availability, and admin-added tools checked
with their outputs."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.api.views import tool_detail, tool_summary, unavailable_reason
from swarmstation.config import Settings
from swarmstation.domain.tools import InputSpec, OutputSpec, ToolSpec, tool_to_dict
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_user


@pytest.fixture
def alice(plane: ControlPlane, clock: FakeClock) -> dict[str, str]:
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), "alice")
    return {"Authorization": f"Bearer {key}"}


def custom_tool(**changes: Any) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "slug": "invert",
        "name": "Invert an image",
        "description": "EmptyImage then ImageInvert",
        "category": "utility",
        "base_model": "other",
        "workflow": {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
            },
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        },
        "inputs": [
            {"name": "width", "type": "integer", "bindings": ["1.width"], "minimum": 16, "maximum": 512}
        ],
        "outputs": [{"name": "inverted", "type": "image", "node_id": "3", "description": "The inverse"}],
    }
    tool.update(changes)
    return tool


def test_tools_list_kind_outputs_and_availability(api: TestClient, alice: dict[str, str]) -> None:
    tools = {t["slug"]: t for t in api.get("/v1/tools", headers=alice).json()}
    for slug in ("sd15-txt2img", "sdxl-txt2img", "flux-txt2img", "sd15-img2img", "upscale-4x"):
        t = tools[slug]
        assert t["kind"] == "comfyui"
        assert [(o["name"], o["type"], o["many"]) for o in t["outputs"]] == [("image", "image", False)]
        assert t["outputs"][0]["description"]
        assert t["available"] is True and t["unavailable_reason"] is None
    detail = api.get("/v1/tools/sdxl-txt2img", headers=alice).json()
    assert detail["kind"] == "comfyui"
    assert detail["outputs"] == tools["sdxl-txt2img"]["outputs"]
    assert "prompt" in detail["input_schema"]["properties"]


def test_openapi_documents_tool_outputs(api: TestClient) -> None:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    summary = schemas["ToolSummary"]["properties"]
    assert {"kind", "outputs", "available", "unavailable_reason"} <= set(summary)
    assert set(schemas["ToolOutputOut"]["properties"]) == {"name", "type", "many", "description"}


def test_admin_tool_with_declared_outputs(
    api: TestClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    r = api.post("/v1/admin/tools", headers=admin, json=custom_tool())
    assert r.status_code == 201, r.text
    assert r.json()["outputs"] == [
        {"name": "inverted", "type": "image", "many": False, "description": "The inverse"}
    ]
    listed = api.get("/v1/tools/invert", headers=alice).json()
    assert listed["kind"] == "comfyui" and listed["outputs"][0]["name"] == "inverted"


def test_admin_tool_without_outputs_gets_derived_ones(api: TestClient, admin: dict[str, str]) -> None:
    body = custom_tool()
    del body["outputs"]
    r = api.post("/v1/admin/tools", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert [(o["name"], o["type"]) for o in r.json()["outputs"]] == [
        ("image_3", "image"),
        ("image_4", "image"),
    ]


@pytest.mark.parametrize(
    ("outputs", "field", "fragment"),
    [
        ([{"name": "image", "type": "image", "node_id": "99"}], "outputs[0].node_id", "'99' does not exist"),
        ([{"name": "image", "type": "image", "node_id": "2"}], "outputs[0].node_id", "not an output node"),
        ([{"name": "image", "type": "image"}], "outputs[0].node_id", "names its output node"),
        (
            [{"name": "caption", "type": "text", "node_id": "3"}],
            "outputs[0].type",
            "produces image, not text",
        ),
        (
            [{"name": "image", "type": "picture", "node_id": "3"}],
            "outputs[0].type",
            "'picture' is not one of",
        ),
        (
            [{"name": "a", "type": "image", "node_id": "3"}, {"name": "a", "type": "image", "node_id": "4"}],
            "outputs[1].name",
            "defined twice",
        ),
        ([], "outputs", "at least one output"),
        ({"image": "3"}, "outputs", "must be a list"),
    ],
)
def test_admin_tool_outputs_checked(
    api: TestClient, admin: dict[str, str], outputs: Any, field: str, fragment: str
) -> None:
    r = api.post("/v1/admin/tools", headers=admin, json=custom_tool(outputs=outputs))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_tool"
    assert body["errors"][0]["field"] == field
    assert fragment in body["errors"][0]["reason"]
    assert "Traceback" not in r.text and "OutputSpec(" not in r.text
    assert api.get("/v1/tools/invert", headers=admin).status_code == 404


def test_admin_cannot_add_a_local_tool(api: TestClient, admin: dict[str, str]) -> None:
    body = {
        "slug": "my-caption",
        "name": "Caption",
        "category": "text",
        "base_model": "other",
        "kind": "llm",
        "inputs": [{"name": "image", "type": "image", "required": True}],
        "outputs": [{"name": "text", "type": "text"}],
    }
    r = api.post("/v1/admin/tools", headers=admin, json=body)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "kind"
    assert api.get("/v1/tools/my-caption", headers=admin).status_code == 404


# ------------------------------------------------------------------ views with settings


def local_row(slug: str) -> Any:
    from swarmstation.store.models import Tool

    spec = ToolSpec(
        slug=slug,
        name="Enhance a prompt",
        description="An idea into a prompt",
        category="text",
        base_model="other",
        workflow={},
        inputs=(InputSpec("idea", "string", (), required=True),),
        pool="control",
        accepts_loras=False,
        kind="llm",
        outputs=(OutputSpec("prompt", "text", description="The prompt"),),
    )
    now = datetime(2025, 1, 1)
    return Tool(
        slug=slug,
        name=spec.name,
        category=spec.category,
        base_model=spec.base_model,
        pool=spec.pool,
        spec=copy.deepcopy(tool_to_dict(spec)),
        builtin=True,
        created_at=now,
        updated_at=now,
    )


def test_local_tool_view_without_settings_is_available() -> None:
    summary = tool_summary(local_row("prompt-enhance"))
    assert summary.kind == "llm"
    assert [(o.name, o.type, o.many) for o in summary.outputs] == [("prompt", "text", False)]
    assert summary.available is True and summary.unavailable_reason is None
    detail = tool_detail(local_row("prompt-enhance"))
    assert detail.workflow == {} and detail.required_models == []
    assert detail.input_schema["required"] == ["idea"]


def test_llm_tool_unavailable_without_an_endpoint(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path / "data", provider="none", llm_base_url=None)
    reason = unavailable_reason("prompt-enhance", settings)
    assert reason is not None and "SWARMSTATION_LLM_BASE_URL" in reason
    summary = tool_summary(local_row("prompt-enhance"), settings=settings)
    assert summary.available is False and summary.unavailable_reason == reason
    assert unavailable_reason("sdxl-txt2img", settings) is None
    configured = Settings(data_dir=tmp_path / "data", provider="none", llm_base_url="http://127.0.0.1:9/v1")
    assert tool_summary(local_row("prompt-enhance"), settings=configured).available is True


def test_local_tools_listed_with_kind_and_outputs(api: TestClient, alice: dict[str, str]) -> None:
    tools = {t["slug"]: t for t in api.get("/v1/tools", headers=alice).json()}
    assert tools["prompt-enhance"]["kind"] == "llm"
    assert [(o["name"], o["type"]) for o in tools["prompt-enhance"]["outputs"]] == [("prompt", "text")]
    assert [(o["name"], o["type"]) for o in tools["caption"]["outputs"]] == [("text", "text")]
    for slug in ("image-resize", "image-crop", "image-pad", "image-convert", "contact-sheet"):
        assert tools[slug]["kind"] == "image" and tools[slug]["pool"] == "control"
        assert [(o["name"], o["type"]) for o in tools[slug]["outputs"]] == [("image", "image")]
    sheet = api.get("/v1/tools/contact-sheet", headers=alice).json()
    assert sheet["workflow"] == {} and sheet["required_models"] == []
    images = sheet["input_schema"]["properties"]["images"]
    assert images["type"] == "array" and images["x-input-type"] == "image" and images["minItems"] == 1
    # the test plane has no LLM endpoint: the LLM tools are listed, as unavailable, with the reason
    for slug in ("prompt-enhance", "caption"):
        assert tools[slug]["available"] is False
        assert "SWARMSTATION_LLM_BASE_URL" in tools[slug]["unavailable_reason"]
    assert api.get("/v1/tools/caption", headers=alice).json()["available"] is False
    assert tools["image-resize"]["available"] is True
