"""The LoRA registry end to end in process: import from fake Civitai / Hugging Face servers,
moderation and staging, access and grants, and resolution when jobs are submitted."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.fakes.model_hubs import FakeHubs
from tests.helpers import add_user


@pytest.fixture
def civitai() -> Iterator[FakeHubs]:
    hubs = FakeHubs().start()
    hubs.add_civitai_lora(
        101,
        1001,
        name="Disney Style",
        trained_words=["disney style", "dsny"],
        base_model="Pony",
        tags=["style", "cartoon"],
    )
    hubs.add_civitai_lora(102, 1002, name="Neon Glow", trained_words=["neon glow"], base_model="SD 1.5")
    hubs.add_civitai_lora(103, 1003, name="Some Checkpoint", trained_words=[], model_type="Checkpoint")
    hubs.add_civitai_lora(104, 1004, name="Tampered", trained_words=["tampered"], declared_sha256="ab" * 32)
    hubs.add_civitai_lora(105, 1005, name="Private Ink", trained_words=["ink wash"])
    yield hubs
    hubs.stop()


@pytest.fixture
def hf() -> Iterator[FakeHubs]:
    hubs = FakeHubs().start()
    hubs.add_hf_lora(
        "alice/pixel-lora",
        filename="pixel.safetensors",
        base_model="stabilityai/stable-diffusion-xl-base-1.0",
        instance_prompt="pixel art",
    )
    yield hubs
    hubs.stop()


@pytest.fixture
def plane(tmp_path: Path, clock: FakeClock, civitai: FakeHubs, hf: FakeHubs) -> Iterator[ControlPlane]:
    settings = Settings(
        data_dir=tmp_path / "data",
        provider="none",
        civitai_base_url=civitai.url,
        huggingface_base_url=hf.url,
        scheduler_interval_seconds=60,
        control_interval_seconds=60,
        lora_staging_poll_seconds=0.05,
    )
    cp = build(settings, provider=None, clock=clock)
    yield cp
    cp.state.engine.dispose()


def _user(plane: ControlPlane, clock: FakeClock, name: str) -> dict[str, str]:
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), name)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def alice(plane: ControlPlane, clock: FakeClock) -> dict[str, str]:
    return _user(plane, clock, "alice")


@pytest.fixture
def bob(plane: ControlPlane, clock: FakeClock) -> dict[str, str]:
    return _user(plane, clock, "bob")


def _import(api: TestClient, who: dict[str, str], url: str, **extra: str) -> dict:  # type: ignore[type-arg]
    r = api.post("/v1/loras/import", headers=who, json={"url": url, **extra})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _approve(api: TestClient, admin: dict[str, str], slug: str, **body: str) -> dict:  # type: ignore[type-arg]
    """Approval answers at once with the LoRA staging; the leader stages it in the background."""
    r = api.post(f"/v1/admin/loras/{slug}/approve", headers=admin, json=body)
    assert r.status_code == 202, r.text
    assert r.json()["moderation_status"] == "staging", r.text
    return _staged(api, admin, slug)


def _staged(api: TestClient, who: dict[str, str], slug: str, timeout: float = 15.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        lora = api.get(f"/v1/loras/{slug}", headers=who).json()
        if lora["moderation_status"] != "staging":
            return lora  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"still staging: {lora}"
        time.sleep(0.02)


def test_import_from_civitai_keeps_metadata_and_waits_for_review(api, alice, civitai) -> None:  # type: ignore[no-untyped-def]
    lora = _import(api, alice, f"{civitai.url}/models/101?modelVersionId=1001")
    assert lora["moderation_status"] == "pending_review" and not lora["staged"]
    assert lora["triggers"] == ["disney style", "dsny"]  # as written, phrases kept whole
    assert lora["base_model"] == "Pony" and lora["source_base_model"] == "Pony"
    assert lora["file_sha256"] == hashlib.sha256(civitai.files["v1001.safetensors"]).hexdigest()
    assert lora["original_author"] == "someone" and "cartoon" in lora["tags"]
    # Pending LoRAs are not in anyone else's list, nor in the trigger map.
    assert lora["slug"] in [x["slug"] for x in api.get("/v1/loras?mine=true", headers=alice).json()["loras"]]
    assert api.get("/v1/loras/trigger-map", headers=alice).json() == {}
    # The same version again is a conflict, not a duplicate.
    r = api.post("/v1/loras/import", headers=alice, json={"url": f"{civitai.url}/api/v1/model-versions/1001"})
    assert r.status_code == 409


def test_import_from_hugging_face(api, alice, hf) -> None:  # type: ignore[no-untyped-def]
    lora = _import(api, alice, f"{hf.url}/alice/pixel-lora")
    assert lora["base_model"] == "SDXL" and lora["triggers"] == ["pixel art"]
    assert lora["source_kind"] == "huggingface" and lora["file_sha256"]


@pytest.mark.parametrize(
    ("url", "status", "fragment"),
    [
        ("https://example.com/models/1", 422, "neither Civitai nor Hugging Face"),
        ("ftp://civitai.com/models/1", 422, "not an http(s) URL"),
        ("CIVITAI/models/103", 422, "not a LoRA"),
        ("CIVITAI/models/999", 422, "not found"),
        ("CIVITAI/images/5", 422, "must name a model"),
        ("HF/nobody/nothing", 422, "access denied"),
    ],
)
def test_bad_import_urls_get_clear_errors(api, alice, civitai, hf, url, status, fragment) -> None:  # type: ignore[no-untyped-def]
    url = url.replace("CIVITAI", civitai.url).replace("HF", hf.url)
    r = api.post("/v1/loras/import", headers=alice, json={"url": url})
    assert r.status_code == status and fragment in r.json()["detail"], r.text


def test_approval_stages_and_verifies_the_file(api, plane, admin, alice, civitai) -> None:  # type: ignore[no-untyped-def]
    slug = _import(api, alice, f"{civitai.url}/models/101")["slug"]
    assert api.post(f"/v1/admin/loras/{slug}/approve", headers=alice, json={}).status_code == 403
    lora = _approve(api, admin, slug)
    assert lora["moderation_status"] == "approved" and lora["staged"]
    assert (
        lora["staging_bytes_done"] == lora["staging_bytes_total"] == len(civitai.files["v1001.safetensors"])
    )
    # Approving an approved LoRA again changes nothing: 200, still approved, nothing staged again.
    again = api.post(f"/v1/admin/loras/{slug}/approve", headers=admin, json={})
    assert again.status_code == 200 and again.json()["moderation_status"] == "approved", again.text
    stored = plane.state.store.get_bytes(f"models/loras/{lora['file_sha256']}.safetensors")
    assert stored == civitai.files["v1001.safetensors"]
    # A file whose bytes do not match the declared SHA-256 fails staging, with the reason.
    bad = _import(api, alice, f"{civitai.url}/models/104")["slug"]
    failed = _approve(api, admin, bad)
    assert failed["moderation_status"] == "deployment_failed" and not failed["staged"]
    assert "sha256 mismatch" in failed["failure_reason"] and failed["moderation_reason"] == ""
    rejected = api.post(f"/v1/admin/loras/{bad}/reject", headers=admin, json={"reason": "not ours"}).json()
    assert rejected["moderation_status"] == "rejected" and rejected["moderation_reason"] == "not ours"
    r = api.post(f"/v1/admin/loras/{bad}/approve", headers=admin, json={})
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition", r.text
    assert "rejected" in r.json()["detail"]
    assert api.post("/v1/admin/loras/no-such-lora/approve", headers=admin, json={}).status_code == 404


def test_trigger_in_prompt_applies_the_lora_to_the_job(api, admin, alice, civitai) -> None:  # type: ignore[no-untyped-def]
    slug = _import(api, alice, f"{civitai.url}/models/101")["slug"]
    _approve(api, admin, slug)
    r = api.post(
        "/v1/jobs",
        headers=alice,
        json={"tool": "sdxl-txt2img", "inputs": {"prompt": "Portrait of a woman in Disney Style."}},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert [a["slug"] for a in job["applied_loras"]] == [slug]
    applied = job["applied_loras"][0]
    assert applied["weight"] == 1.0 and applied["source"] == "trigger" and applied["owner_id"]
    assert job["inputs"]["prompt"] == "Portrait of a woman in Disney Style."  # kept as written
    lora_model = next(m for m in job["required_models"] if m["folder"] == "loras")
    assert lora_model["name"] == f"{slug}.safetensors" and lora_model["sha256"] and "key" not in lora_model
    assert api.get(f"/v1/loras/{slug}", headers=alice).json()["usage_count"] == 1
    # An SD1.5 tool never applies an SDXL-family LoRA.
    job = api.post(
        "/v1/jobs", headers=alice, json={"tool": "sd15-txt2img", "inputs": {"prompt": "in disney style"}}
    ).json()
    assert job["applied_loras"] == []


def test_tags_and_weights(api, admin, alice, civitai) -> None:  # type: ignore[no-untyped-def]
    slug = _import(api, alice, f"{civitai.url}/models/101")["slug"]
    _approve(api, admin, slug)
    job = api.post(
        "/v1/jobs",
        headers=alice,
        json={
            "tool": "sdxl-txt2img",
            "inputs": {"prompt": f"a castle <lora:{slug}:0.6> at dusk <lora:no-such-lora:1>"},
        },
    ).json()
    assert job["inputs"]["prompt"].split() == ["a", "castle", "at", "dusk"]  # tags gone, words kept
    assert job["applied_loras"][0]["strength_model"] == 0.6
    assert any("no-such-lora" in w for w in job["warnings"])
    preview = api.post(
        "/v1/loras/resolve", headers=alice, json={"prompt": "dsny:0.4 hero", "tool": "sdxl-txt2img"}
    ).json()
    assert preview["loras"][0]["weight"] == 0.4 and preview["prompt"] == "dsny:0.4 hero"
    # Tools that take no LoRAs get the tags removed, with a warning.
    r = api.post("/v1/jobs", headers=alice, json={"tool": "upscale-4x", "inputs": {"image": "upload:x"}})
    assert r.status_code == 422  # (the upload does not exist; the point is: no 500)


def test_private_lora_grants_and_revocation(api, admin, alice, bob, civitai) -> None:  # type: ignore[no-untyped-def]
    slug = _import(api, alice, f"{civitai.url}/models/105", visibility="private")["slug"]
    _approve(api, admin, slug)

    def bob_applies() -> list[str]:
        job = api.post(
            "/v1/jobs",
            headers=bob,
            json={"tool": "sdxl-txt2img", "inputs": {"prompt": f"<lora:{slug}:1> ink wash sea"}},
        ).json()
        return [a["slug"] for a in job["applied_loras"]]

    assert bob_applies() == []
    assert api.get(f"/v1/loras/{slug}", headers=bob).status_code == 404
    assert api.post(f"/v1/loras/{slug}/grants", headers=bob, json={"user": "bob"}).status_code == 404
    assert api.post(f"/v1/loras/{slug}/grants", headers=alice, json={"user": "nobody"}).status_code == 404
    r = api.post(f"/v1/loras/{slug}/grants", headers=alice, json={"user": "bob"})
    assert r.status_code == 201, r.text
    assert bob_applies() == [slug]
    assert "ink wash" in api.get("/v1/loras/trigger-map", headers=bob).json()
    assert api.delete(f"/v1/loras/{slug}/grants/bob", headers=alice).status_code == 204
    assert bob_applies() == []
    assert api.delete(f"/v1/loras/{slug}/grants/bob", headers=alice).status_code == 404
    r = api.post(
        f"/v1/loras/{slug}/grants", headers=alice, json={"user": "bob", "expires_at": "2000-01-01T00:00:00Z"}
    )
    assert r.status_code == 422


def test_list_search_and_filter(api, admin, alice, civitai, hf) -> None:  # type: ignore[no-untyped-def]
    for url in (f"{civitai.url}/models/101", f"{civitai.url}/models/102", f"{hf.url}/alice/pixel-lora"):
        _approve(api, admin, _import(api, alice, url)["slug"])

    def slugs(query: str) -> set[str]:
        return {x["name"] for x in api.get(f"/v1/loras{query}", headers=alice).json()["loras"]}

    assert slugs("?base_model=SDXL") == {"Disney Style v1.0", "pixel-lora"}  # Pony is SDXL-family
    assert slugs("?base_model=SD1.5") == {"Neon Glow v1.0"}
    assert slugs("?tag=cartoon") == {"Disney Style v1.0"}
    assert slugs("?q=neon") == {"Neon Glow v1.0"}
    assert api.get("/v1/loras?limit=0", headers=alice).status_code == 422
    assert api.get("/v1/loras/nope", headers=alice).status_code == 404


def test_tool_that_takes_no_loras_gets_tags_removed(api, admin, alice, civitai) -> None:  # type: ignore[no-untyped-def]
    slug = _import(api, alice, f"{civitai.url}/models/101")["slug"]
    _approve(api, admin, slug)
    tool = api.get("/v1/tools/sdxl-txt2img", headers=admin).json()
    body = {k: tool[k] for k in ("name", "description", "category", "base_model", "workflow", "inputs")}
    r = api.post(
        "/v1/admin/tools", headers=admin, json={**body, "slug": "sdxl-plain", "accepts_loras": False}
    )
    assert r.status_code == 201, r.text
    job = api.post(
        "/v1/jobs",
        headers=alice,
        json={"tool": "sdxl-plain", "inputs": {"prompt": f"<lora:{slug}:0.8> a dsny castle"}},
    ).json()
    assert job["applied_loras"] == [] and job["inputs"]["prompt"].split() == ["a", "dsny", "castle"]
    assert job["warnings"] and not any(m["folder"] == "loras" for m in job["required_models"])
