"""The saved-pipeline API (api/pipelines.py) through the app: save, show, list and search, versions,
edits and deletion, who sees what, and bad bodies refused with the field named and nothing saved."""

from __future__ import annotations

import copy
from typing import Any

from fastapi.testclient import TestClient

from swarmstation.api.app import ControlPlane
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_user

PIPELINE: dict[str, Any] = {
    "inputs": {
        "idea": {"type": "string", "label": "Idea"},
        "negative": {"type": "string", "required": False, "default": "blurry"},
    },
    "steps": {
        "gen": {
            "tool": "sd15-txt2img",
            "inputs": {"prompt": {"input": "idea"}, "negative_prompt": {"input": "negative"}, "seed": 7},
        }
    },
}
MISSING = "00000000-0000-0000-0000-000000000000"


def _user(plane: ControlPlane, clock: FakeClock) -> tuple[str, dict[str, str]]:
    with transaction(plane.state.sessions) as s:
        user, key = add_user(s, clock())
        return user.name, {"Authorization": f"Bearer {key}"}


def _body(**change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Storm portrait",
        "description": "an idea, generated",
        "pipeline": copy.deepcopy(PIPELINE),
        "exposed": [{"name": "idea", "label": "Your idea", "default": "a quiet harbour"}],
        "visibility": "public",
    }
    return {**body, **change}


def _save(api: TestClient, who: dict[str, str], **change: Any) -> dict[str, Any]:
    r = api.post("/v1/pipelines", json=_body(**change), headers=who)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def test_save_answers_the_pipeline_with_its_exposed_inputs(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    author_name, author = _user(plane, clock)
    saved = _save(api, author)
    assert saved["name"] == "Storm portrait" and saved["visibility"] == "public"
    assert saved["owner"]["name"] == author_name
    assert (saved["version"], saved["versions"], saved["latest_version"], saved["run_count"]) == (
        1,
        [1],
        1,
        0,
    )
    assert saved["pipeline"]["steps"]["gen"]["inputs"]["prompt"] == {"input": "idea"}
    assert saved["exposed"] == [
        {"name": "idea", "label": "Your idea", "default": "a quiet harbour", "description": ""}
    ]
    assert saved["inputs"] == [
        {
            "name": "idea",
            "type": "string",
            "required": False,  # the exposed default fills it
            "label": "Your idea",
            "default": "a quiet harbour",
            "description": "",
        }
    ]
    _, other = _user(plane, clock)
    shown = api.get(f"/v1/pipelines/{saved['id']}", headers=other)
    assert shown.status_code == 200 and shown.json() == saved


def test_private_is_404_to_others_like_a_missing_one_and_unlisted_is_never_listed(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, author = _user(plane, clock)
    _, other = _user(plane, clock)
    private = _save(api, author, name="storm private", visibility="private")
    unlisted = _save(api, author, name="storm unlisted", visibility="unlisted")
    public = _save(api, author, name="Storm public")
    hidden = api.get(f"/v1/pipelines/{private['id']}", headers=other)
    missing = api.get(f"/v1/pipelines/{MISSING}", headers=other)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["code"] == missing.json()["code"] == "not_found"
    assert hidden.json()["detail"].replace(private["id"], "ID") == missing.json()["detail"].replace(
        MISSING, "ID"
    )
    assert api.get(f"/v1/pipelines/{unlisted['id']}", headers=other).status_code == 200
    theirs = api.get("/v1/pipelines", params={"q": "STORM"}, headers=other).json()
    assert [p["id"] for p in theirs["pipelines"]] == [public["id"]] and theirs["total"] == 1
    mine = api.get("/v1/pipelines", params={"mine": "true"}, headers=author).json()
    assert {p["id"] for p in mine["pipelines"]} == {private["id"], unlisted["id"], public["id"]}
    assert api.get("/v1/pipelines", params={"mine": "true"}, headers=other).json() == {
        "pipelines": [],
        "total": 0,
    }
    described = api.get("/v1/pipelines", params={"q": "IDEA, GEN"}, headers=other).json()
    assert [p["id"] for p in described["pipelines"]] == [public["id"]]  # the description matches
    # others cannot change what they can see, nor learn of what they cannot
    assert api.patch(f"/v1/pipelines/{public['id']}", json={"name": "x"}, headers=other).status_code == 403
    assert api.delete(f"/v1/pipelines/{private['id']}", headers=other).status_code == 404
    assert (
        api.post(
            f"/v1/pipelines/{private['id']}/versions", json={"pipeline": PIPELINE}, headers=other
        ).status_code
        == 404
    )


def test_bad_bodies_are_refused_naming_the_field_and_nothing_is_saved(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, author = _user(plane, clock)
    mistyped = copy.deepcopy(PIPELINE)
    mistyped["steps"]["gen"]["inputs"]["steps"] = {"input": "idea"}  # a string into an integer
    cycle = {
        "steps": {
            "a": {
                "tool": "sd15-img2img",
                "inputs": {"prompt": "x", "image": {"from": "b", "output": "image"}},
            },
            "b": {
                "tool": "sd15-img2img",
                "inputs": {"prompt": "x", "image": {"from": "a", "output": "image"}},
            },
        }
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"surprise": 1}, "surprise"),
        ({"visibility": "secret"}, "visibility"),
        ({"name": ""}, "name"),
        ({"exposed": [{"name": "nope"}]}, "exposed[0].name"),
        ({"exposed": [{"name": "idea", "default": 5}]}, "exposed[0].default"),
        ({"exposed": [{"name": "idea", "colour": "red"}]}, "exposed.0.colour"),
        ({"pipeline": mistyped}, "steps.gen.inputs.steps"),
    ]
    for change, field in cases:
        r = api.post("/v1/pipelines", json=_body(**change), headers=author)
        assert r.status_code == 422, (change, r.text)
        assert field in [e["field"] for e in r.json()["errors"]], (field, r.json())
        assert "Traceback" not in r.text and "<" not in r.json()["detail"]
    refused = api.post("/v1/pipelines", json=_body(pipeline=cycle, exposed=[]), headers=author)
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_pipeline"
    assert "cycle" in refused.json()["detail"] and "a → b" in refused.json()["detail"]  # the steps on it
    assert api.get("/v1/pipelines", params={"mine": "true"}, headers=author).json()["total"] == 0


def test_versions_are_immutable_and_each_can_be_shown(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, author = _user(plane, clock)
    _, other = _user(plane, clock)
    first = _save(api, author)
    changed = copy.deepcopy(PIPELINE)
    changed["steps"]["gen"]["tool"] = "sdxl-txt2img"
    clock.advance(10)
    r = api.post(f"/v1/pipelines/{first['id']}/versions", json={"pipeline": changed}, headers=author)
    assert r.status_code == 201, r.text
    second = r.json()
    assert (second["version"], second["versions"], second["latest_version"]) == (2, [1, 2], 2)
    assert second["exposed"] == first["exposed"]  # kept from version 1
    assert second["updated_at"] > first["updated_at"]
    assert api.get(f"/v1/pipelines/{first['id']}", headers=other).json()["pipeline"] == second["pipeline"]
    old = api.get(f"/v1/pipelines/{first['id']}", params={"version": 1}, headers=other).json()
    assert old["pipeline"] == first["pipeline"] and old["version"] == 1 and old["latest_version"] == 2
    assert api.get(f"/v1/pipelines/{first['id']}", params={"version": 3}, headers=other).status_code == 404
    denied = api.post(f"/v1/pipelines/{first['id']}/versions", json={"pipeline": changed}, headers=other)
    assert denied.status_code == 403
    unknown_field = api.post(
        f"/v1/pipelines/{first['id']}/versions", json={"pipeline": changed, "name": "x"}, headers=author
    )
    assert unknown_field.status_code == 422


def test_the_owner_edits_and_deletes(api: TestClient, plane: ControlPlane, clock: FakeClock) -> None:
    _, author = _user(plane, clock)
    _, other = _user(plane, clock)
    saved = _save(api, author, visibility="private")
    r = api.patch(
        f"/v1/pipelines/{saved['id']}",
        json={"visibility": "public", "description": "now shared"},
        headers=author,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["visibility"], r.json()["description"], r.json()["name"]) == (
        "public",
        "now shared",
        "Storm portrait",
    )
    assert api.get(f"/v1/pipelines/{saved['id']}", headers=other).status_code == 200
    assert api.patch(f"/v1/pipelines/{saved['id']}", json={"pipeline": {}}, headers=author).status_code == 422
    assert api.delete(f"/v1/pipelines/{saved['id']}", headers=other).status_code == 403
    assert api.delete(f"/v1/pipelines/{saved['id']}", headers=author).status_code == 204
    assert api.get(f"/v1/pipelines/{saved['id']}", headers=author).status_code == 404

# -- running saved pipelines (POST /v1/runs with pipeline_id) -------------------------------------
def _runs(api: TestClient, who: dict[str, str]) -> list[dict[str, Any]]:
    r = api.get("/v1/runs", headers=who)
    assert r.status_code == 200, r.text
    body = r.json()
    runs: list[dict[str, Any]] = body["runs"] if isinstance(body, dict) else body
    return runs


def test_another_user_runs_a_public_pipeline_with_only_its_exposed_input(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, author = _user(plane, clock)
    _, other = _user(plane, clock)
    saved = _save(api, author)
    r = api.post(
        "/v1/runs", json={"pipeline_id": saved["id"], "inputs": {"idea": "a red fox"}}, headers=other
    )
    assert r.status_code == 201, r.text
    run = r.json()
    assert (run["pipeline_id"], run["pipeline_version"]) == (saved["id"], 1)
    assert run["inputs"]["idea"] == "a red fox"
    defaulted = api.post("/v1/runs", json={"pipeline_id": saved["id"], "inputs": {}}, headers=other)
    assert defaulted.status_code == 201, defaulted.text
    assert defaulted.json()["inputs"]["idea"] == "a quiet harbour"  # the exposed default
    hidden = api.post(
        "/v1/runs", json={"pipeline_id": saved["id"], "inputs": {"idea": "x", "negative": "y"}}, headers=other
    )
    assert hidden.status_code == 422 and "negative" in [
        e["field"].split(".")[-1] for e in hidden.json()["errors"]
    ]
    assert len(_runs(api, other)) == 2  # the refused one was never written
    # the owner may give any input
    mine = api.post(
        "/v1/runs",
        json={"pipeline_id": saved["id"], "inputs": {"idea": "x", "negative": "y"}},
        headers=author,
    )
    assert mine.status_code == 201, mine.text
    assert mine.json()["inputs"]["negative"] == "y"


def test_private_is_not_runnable_by_others_unlisted_is_by_id(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, author = _user(plane, clock)
    _, other = _user(plane, clock)
    private = _save(api, author, visibility="private")
    unlisted = _save(api, author, visibility="unlisted")
    refused = api.post("/v1/runs", json={"pipeline_id": private["id"], "inputs": {}}, headers=other)
    missing = api.post("/v1/runs", json={"pipeline_id": MISSING, "inputs": {}}, headers=other)
    assert refused.status_code == missing.status_code == 404
    assert _runs(api, other) == []
    assert unlisted["id"] not in {
        p["id"] for p in api.get("/v1/pipelines", headers=other).json()["pipelines"]
    }
    ran = api.post("/v1/runs", json={"pipeline_id": unlisted["id"], "inputs": {}}, headers=other)
    assert ran.status_code == 201, ran.text


def test_a_run_of_version_one_after_version_two_uses_version_ones_graph(
    api: TestClient, plane: ControlPlane, clock: FakeClock
) -> None:
    _, author = _user(plane, clock)
    _, other = _user(plane, clock)
    saved = _save(api, author)
    changed = copy.deepcopy(PIPELINE)
    changed["steps"]["gen"]["tool"] = "sdxl-txt2img"
    assert (
        api.post(
            f"/v1/pipelines/{saved['id']}/versions", json={"pipeline": changed}, headers=author
        ).status_code
        == 201
    )
    old = api.post("/v1/runs", json={"pipeline_id": saved["id"], "version": 1, "inputs": {}}, headers=other)
    new = api.post("/v1/runs", json={"pipeline_id": saved["id"], "inputs": {}}, headers=other)
    assert old.status_code == new.status_code == 201, (old.text, new.text)
    assert old.json()["pipeline_version"] == 1 and new.json()["pipeline_version"] == 2
    shown_old = api.get(f"/v1/runs/{old.json()['id']}", headers=other).json()
    shown_new = api.get(f"/v1/runs/{new.json()['id']}", headers=other).json()
    assert [s["tool"] for s in shown_old["steps"]] == ["sd15-txt2img"]
    assert [s["tool"] for s in shown_new["steps"]] == ["sdxl-txt2img"]
    missing = api.post(
        "/v1/runs", json={"pipeline_id": saved["id"], "version": 3, "inputs": {}}, headers=other
    )
    assert missing.status_code == 404
