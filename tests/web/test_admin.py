"""The admin pages as user stories, in a real browser against `swarmstation up` (emulated local
instances, a fake Civitai for LoRA imports): an admin approves a LoRA and watches it stage,
attaches a machine and sees it in the pool view, grants credits, reads the P&L chart; a normal
user gets the admins-only page and the API's 403."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Up, make_up, wait_for
from tests.fakes.model_hubs import FakeHubs
from tests.web.conftest import axe_violations, new_user, open_page, shot, sign_in_with_key

SECTIONS = ["overview", "pools", "costs", "loras", "users", "tools", "attach"]


@pytest.fixture(scope="module")
def hubs() -> Iterator[FakeHubs]:
    fake = FakeHubs().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def studio_up(tmp_path_factory: pytest.TempPathFactory, hubs: FakeHubs) -> Iterator[Up]:
    """`swarmstation up` that imports LoRAs from the fake Civitai."""
    up = make_up(tmp_path_factory.mktemp("admin"), civitai_base_url=hubs.url, emulator_step_seconds=0.01)
    up.start()
    yield up
    up.cleanup()


def as_admin(page: Any, up: Up, section: str = "overview") -> None:
    sign_in_with_key(page, up, up.admin_key)
    page.goto(f"{up.url}/admin/{section}")


def dollars(value: str) -> str:
    """Dollars as the admin pages write them (admin/format.ts usd): four decimals under a cent."""
    n = float(value)
    return f"${n:.4f}" if n and abs(n) < 0.01 else f"${n:.2f}"


def no_horizontal_scroll(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_an_admin_approves_a_lora_awaiting_moderation_and_watches_it_stage(
    studio_up: Up, hubs: FakeHubs, page: Any
) -> None:
    content = hubs.add_civitai_lora(41, 410, name="Paper Cut", trained_words=["paper cut style"])
    with studio_up.client() as http:
        imported = http.post("/v1/loras/import", json={"url": f"{hubs.url}/models/41"})
        assert imported.status_code == 201, imported.text
        lora = imported.json()
    slug = lora["slug"]
    assert lora["moderation_status"] == "pending_review"

    as_admin(page, studio_up, "loras")
    card = page.get_by_test_id("admin-loras").locator(f"[data-testid=lora-card][data-slug='{slug}']").first
    card.wait_for()
    # where the file comes from is in front of the admin before approving
    assert card.get_by_test_id("lora-source-url").inner_text() == lora["source_url"]
    assert "pending_review" in card.get_by_test_id("lora-status").inner_text()
    shot(page, "admin-loras")
    assert axe_violations(page) == []

    card.get_by_role("button", name="Approve Paper Cut").click()
    decided = page.get_by_test_id("lora-decisions").locator(f"[data-slug='{slug}']")
    decided.get_by_test_id("lora-status").filter(has_text="approved").wait_for(timeout=30_000)
    staged = decided.get_by_test_id("staging-bytes").inner_text()
    assert staged.startswith(f"{len(content) / 1024:.1f} KiB of"), staged
    with studio_up.client() as http:
        shown = http.get(f"/v1/loras/{slug}").json()
    assert shown["moderation_status"] == "approved" and shown["staging_bytes_done"] == len(content)

    # approved LoRAs are listed under their filter, with the final URL the file was fetched from
    page.get_by_label("Show").select_option("approved")
    listed = page.get_by_test_id("admin-loras").locator(f"[data-testid=lora-card][data-slug='{slug}']").last
    listed.get_by_test_id("lora-final-url").filter(has_text="http").wait_for()
    assert listed.get_by_test_id("lora-final-url").inner_text() == shown["final_url"]


def test_an_admin_rejects_a_lora_with_a_reason(studio_up: Up, hubs: FakeHubs, page: Any) -> None:
    hubs.add_civitai_lora(42, 420, name="Spam Thing", trained_words=["spam"])
    with studio_up.client() as http:
        slug = http.post("/v1/loras/import", json={"url": f"{hubs.url}/models/42"}).json()["slug"]
    as_admin(page, studio_up, "loras")
    card = page.locator(f"[data-testid=lora-card][data-slug='{slug}']").first
    card.get_by_label("Reason for rejecting Spam Thing").fill("not our kind of thing")
    card.get_by_role("button", name="Reject Spam Thing").click()
    decided = page.get_by_test_id("lora-decisions").locator(f"[data-slug='{slug}']")
    decided.get_by_test_id("lora-status").filter(has_text="rejected").wait_for()
    with studio_up.client() as http:
        shown = http.get(f"/v1/loras/{slug}").json()
    assert shown["moderation_status"] == "rejected" and shown["moderation_reason"] == "not our kind of thing"


def test_an_admin_attaches_a_machine_and_sees_it_appear_in_the_pool_view(studio_up: Up, page: Any) -> None:
    as_admin(page, studio_up, "attach")
    page.get_by_label("Machine name").fill("desk-4090")
    page.get_by_label("Price per hour (USD)").fill("0.25")
    page.get_by_role("button", name="Attach machine").click()
    command = page.get_by_test_id("worker-command-text").inner_text()
    assert command.startswith(f"swarmstation worker --server {studio_up.url} --token sst_"), command

    with studio_up.client() as http:
        instances = http.get("/v1/admin/instances").json()
    attached = [i for i in instances if (i["info"] or {}).get("name") == "desk-4090"]
    assert len(attached) == 1 and attached[0]["state"] == "PROVISIONING"

    # the pools view (live) lists it under its pool, with its state and why
    page.get_by_role("link", name="Pools & instances").click()
    row = page.get_by_test_id("instance-row").filter(has_text="desk-4090")
    row.wait_for()
    assert row.get_by_test_id("instance-state").inner_text() == "PROVISIONING"
    assert "waiting for its worker" in row.inner_text()
    row.get_by_role("button", name="Show history of desk-4090").click()
    page.get_by_test_id("instance-history").filter(has_text="No transitions recorded").wait_for()
    shot(page, "admin-pools")
    assert axe_violations(page) == []

    # detached through the API: the live view follows without a reload
    with studio_up.client() as http:
        assert http.post(f"/v1/admin/instances/{attached[0]['id']}/detach").status_code == 200
    wait_for(lambda: row.count() == 0, 10, "the detached machine to leave the pool view")
    # and a machine attached elsewhere (the CLI, another admin) appears in it, no reload either
    with studio_up.client() as http:
        other = http.post("/v1/admin/instances", json={"pool": "default", "name": "rack-a100"})
        assert other.status_code == 201, other.text
    page.get_by_test_id("instance-row").filter(has_text="rack-a100").wait_for(timeout=10_000)
    with studio_up.client() as http:
        http.post(f"/v1/admin/instances/{other.json()['instance_id']}/detach")
    # the worker command was shown once: coming back to the form does not show it again
    page.get_by_role("link", name="Attach a machine").click()
    page.get_by_role("button", name="Attach machine").wait_for()
    assert page.get_by_test_id("worker-command").count() == 0

    page.get_by_role("link", name="Overview").click()
    page.get_by_test_id("admin-overview").wait_for()
    shot(page, "admin-overview")
    assert axe_violations(page) == []


def test_an_admin_grants_credits_to_a_user_and_sees_the_balance(studio_up: Up, page: Any) -> None:
    user_id, _ = new_user(studio_up, "grantee-ada", credits=100)
    as_admin(page, studio_up, "users")
    page.get_by_role("button", name="Open the account of grantee-ada").click()
    account = page.get_by_test_id("user-account")
    assert account.get_by_test_id("user-balance").inner_text() == "100 cr"
    account.get_by_label("Credits to grant").fill("250")
    account.get_by_label("Reason").fill("conference voucher")
    account.get_by_role("button", name="Grant credits").click()
    account.get_by_test_id("user-balance").filter(has_text="350 cr").wait_for()
    account.get_by_test_id("user-ledger").get_by_text("conference voucher").wait_for()
    with studio_up.client() as http:
        assert http.get(f"/v1/admin/users/{user_id}/account").json()["balance"] == 350
        entries = http.get(f"/v1/admin/users/{user_id}/ledger").json()["entries"]
    assert [e["amount"] for e in entries if e["reason"] == "conference voucher"] == [250]
    assert axe_violations(page) == []


def test_an_admin_reads_revenue_and_cost_over_time_on_a_chart(studio_up: Up, page: Any) -> None:
    _, key = new_user(studio_up, "payer-bo", credits=10_000)
    with httpx.Client(base_url=studio_up.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        job = http.post("/v1/jobs", json={"tool": "sd15-txt2img", "inputs": {"prompt": "a fox", "steps": 4}})
        assert job.status_code in (200, 201, 202), job.text
        job_id = job.json()["id"]
        wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["state"] == "COMPLETED", 120, "the job")
    with studio_up.client() as http:

        def settled() -> dict[str, Any] | None:
            report: dict[str, Any] = http.get("/v1/admin/costs/pnl", params={"group_by": "day"}).json()
            return report if report["revenue_credits"] > 0 else None

        pnl = wait_for(settled, 30, "the charge to settle")

    as_admin(page, studio_up, "costs")
    page.get_by_test_id("pnl-revenue").wait_for()
    # the totals are the P&L report's, as the page writes dollars
    assert page.get_by_test_id("pnl-revenue").inner_text() == dollars(pnl["revenue_usd"])
    chart = page.get_by_role("img", name=re.compile("Revenue, cost and margin per hour over 49 hours"))
    chart.locator("canvas").wait_for()
    hours = page.get_by_role("table", name="Profit and loss per hour, where there was any")
    assert hours.locator("tbody tr").count() >= 1  # the hour the job ran in
    assert dollars(pnl["revenue_usd"]) in hours.inner_text()
    assert page.get_by_role("table", name="Profit and loss per tool").get_by_text("sd15-txt2img").count() == 1
    shot(page, "admin-costs")
    assert axe_violations(page) == []


def test_every_admin_section_fits_a_phone_and_passes_axe(studio_up: Up, browser: Any) -> None:
    context, page, problems = open_page(browser, width=375, height=800)
    try:
        as_admin(page, studio_up)
        for section in SECTIONS:
            page.goto(f"{studio_up.url}/admin/{section}")
            page.get_by_test_id(f"admin-{section}").wait_for()
            time.sleep(0.2)  # a chart sizes itself to its box after the first frame
            no_horizontal_scroll(page)
            assert axe_violations(page) == [], section
    finally:
        context.close()
    problems.check()


def test_a_normal_user_opening_admin_gets_the_admins_only_page_and_no_data(studio_up: Up, page: Any) -> None:
    _, key = new_user(studio_up, "curious-cy")
    # the API itself refuses: the page's message is not the only guard
    for path in ("/v1/admin/status", "/v1/admin/users", "/v1/admin/loras", "/v1/admin/costs/pnl"):
        assert httpx.get(studio_up.url + path, headers={"Authorization": f"Bearer {key}"}).status_code == 403
    sign_in_with_key(page, studio_up, key)
    admin_calls: list[str] = []
    page.on("request", lambda r: admin_calls.append(r.url) if "/v1/admin/" in r.url else None)
    for section in ("overview", "pools", "users"):
        page.goto(f"{studio_up.url}/admin/{section}")
        page.get_by_test_id("admins-only").wait_for()
        assert "Admins only" in page.get_by_test_id("admins-only").inner_text()
        assert page.get_by_test_id(f"admin-{section}").count() == 0
        assert page.get_by_role("navigation", name="Admin sections").count() == 0
    assert page.get_by_role("link", name="Admin").count() == 0  # not offered in the header either
    assert admin_calls == []
    assert axe_violations(page) == []


def test_a_signed_out_visitor_is_sent_to_sign_in_and_comes_back(studio_up: Up, page: Any) -> None:
    page.goto(f"{studio_up.url}/admin/users")
    page.wait_for_url("**/signin?next=%2Fadmin%2Fusers")
    page.get_by_label("API key").fill(studio_up.admin_key)
    page.get_by_role("button", name="Sign in with API key").click()
    page.wait_for_url("**/admin/users")
    page.get_by_test_id("admin-users").wait_for()


def test_an_admin_sets_a_tool_price_and_sees_the_api_refuse_a_split_it_cannot_serve(
    studio_up: Up, page: Any
) -> None:
    tool = "sdxl-txt2img"
    as_admin(page, studio_up, "tools")
    card = page.get_by_role("region", name=re.compile(tool))
    card.get_by_text("Price and traffic split of").click()
    card.get_by_label("Price model").select_option("per_run")
    card.get_by_label("Credits", exact=True).fill("7")
    card.get_by_role("button", name="Set price").click()
    card.get_by_test_id(f"price-{tool}").filter(has_text="7 cr per run").wait_for()
    with studio_up.client() as http:
        price = next(t for t in http.get("/v1/tools").json() if t["slug"] == tool)["price"]
    assert (price["model"], price["credits"]) == ("per_run", 7)

    # no ComfyUI Deploy here: the server's reason is shown, not a blank
    card.get_by_label("Share to ComfyUI Deploy (%)").fill("50")
    card.get_by_role("button", name="Set traffic split").click()
    assert "ComfyUI Deploy is not configured" in card.get_by_role("alert").inner_text()

    card.get_by_role("button", name="Use the derived price").click()
    card.get_by_test_id(f"price-{tool}").filter(has_text="derived from our cost").wait_for()


def test_an_admin_changes_a_pool_setting_and_creates_a_user_whose_key_is_shown_once(
    studio_up: Up, page: Any
) -> None:
    with studio_up.client() as http:
        before = http.get("/v1/admin/pools/default").json()["max_instances"]
    as_admin(page, studio_up, "pools")
    page.get_by_text("Settings of pool default").click()
    page.get_by_label("Max instances").fill(str(before + 1))
    page.get_by_role("button", name="Save pool settings").click()
    page.get_by_text("Saved.").wait_for()
    with studio_up.client() as http:
        assert http.get("/v1/admin/pools/default").json()["max_instances"] == before + 1
        http.patch("/v1/admin/pools/default", json={"max_instances": before})

    page.get_by_role("link", name="Users & credits").click()
    page.get_by_text("Create a user").click()
    page.get_by_label("Name", exact=True).fill("new-dee")
    page.get_by_role("button", name="Create user").click()
    key = page.get_by_test_id("new-user-key").inner_text()
    theirs = httpx.get(f"{studio_up.url}/v1/account", headers={"Authorization": f"Bearer {key}"})
    assert theirs.status_code == 200 and theirs.json()["user"]["name"] == "new-dee"
    page.get_by_test_id("user-account").get_by_role("heading", name="Account of new-dee").wait_for()
    page.reload()
    page.get_by_test_id("admin-users").wait_for()
    assert page.get_by_test_id("new-user-key").count() == 0
