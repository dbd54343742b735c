# ruff: noqa: RUF001  (the size presets are labelled with a multiplication sign, as the page shows them)
"""Generate and history in a real browser, against `swarmstation up` with its emulated GPU
instances: a user with credits generates an image, watches the progress bar move, sees the image
and the charge in the header, runs it again with another seed, and finds both in history with
thumbnails and details; a user without credits is told why and where to add them.

The time from the Generate click to the first progress on screen is measured in the page
(performance.now, with a MutationObserver on the progress bar) and written to
test-output/generate-first-progress.json."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Up, make_up, wait_for
from tests.fakes.model_hubs import FakeHubs
from tests.web.conftest import REPO, axe_violations, new_user, open_page, shot, sign_in_with_key

PROGRESS_JSON = REPO / "test-output" / "generate-first-progress.json"


@pytest.fixture(scope="module")
def hubs() -> Iterator[FakeHubs]:
    fake = FakeHubs().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def studio_up(tmp_path_factory: pytest.TempPathFactory, hubs: FakeHubs) -> Iterator[Up]:
    """`swarmstation up` (the emulator at its default pace) that imports LoRAs from a fake Civitai."""
    up = make_up(tmp_path_factory.mktemp("generate"), civitai_base_url=hubs.url)
    up.start()
    yield up
    up.cleanup()


# Records what the progress bar shows, with the time, from the click on Generate on.
WATCH_PROGRESS = """
() => {
  const w = { click: null, log: [] };
  window.__gen = w;
  document.addEventListener('click', (e) => {
    if (e.target.closest && e.target.closest('button[type=submit]')) {
      w.click = performance.now();
      w.log = [];
    }
  }, true);
  const record = () => {
    const bar = document.querySelector('progress[aria-label="Generation progress"]');
    if (!bar) return;
    const value = bar.hasAttribute('value') ? bar.value : null;
    const text = document.querySelector('[data-testid=progress-text]')?.textContent ?? '';
    const last = w.log[w.log.length - 1];
    if (!last || last.value !== value || last.text !== text) {
      w.log.push({ t: performance.now(), value, text });
    }
  };
  new MutationObserver(record).observe(
    document.body, { subtree: true, childList: true, attributes: true, characterData: true }
  );
}
"""


def balance(page: Any) -> int:
    text = page.get_by_test_id("balance").inner_text()
    return int(re.sub(r"[^\d]", "", text))


def charged(api_key: str, url: str, job_id: str) -> int:
    entries = httpx.get(
        f"{url}/v1/account/ledger", params={"limit": 500}, headers={"Authorization": f"Bearer {api_key}"}
    ).json()["entries"]
    return -sum(e["amount"] for e in entries if e["ref_id"] == job_id and e["kind"] == "capture")


def job(api_key: str, url: str, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {api_key}"}).json()


def wait_done(page: Any, job_id: str) -> None:
    panel = page.locator(f"[data-job-id='{job_id}']")
    panel.get_by_role("img", name=re.compile("Generated: a red fox")).wait_for(timeout=60_000)


def test_a_user_generates_an_image_runs_it_again_and_finds_both_in_history(studio_up: Any, page: Any) -> None:
    up = studio_up
    _, key = new_user(up, "gen-alice", credits=50)
    sign_in_with_key(page, up, key)

    page.get_by_role("link", name="Generate").first.click()
    page.get_by_role("heading", name="Generate").wait_for()
    page.get_by_role("link", name="Stable Diffusion XL: text to image").click()
    page.get_by_role("heading", name="Stable Diffusion XL: text to image").wait_for()
    assert page.get_by_role("button", name="Roll a random seed").is_visible()
    assert page.get_by_role("button", name="Square 1024×1024").get_attribute("aria-pressed") == "true"
    page.get_by_role("button", name="Portrait 832×1216").click()
    assert page.get_by_label("Width", exact=True).input_value() == "832"
    assert page.get_by_label("Height", exact=True).input_value() == "1216"

    quote = page.get_by_test_id("quote")
    assert "Fill in the prompt" in quote.inner_text()
    page.get_by_label("Prompt", exact=True).fill("a red fox")
    page.get_by_label("Steps", exact=True).fill("20")
    page.wait_for_function(
        "() => /costs up to \\d+ cr/.test(document.querySelector('[data-testid=quote]').textContent)"
    )
    quoted = int(re.search(r"costs up to (\d+) cr", quote.inner_text()).group(1))  # type: ignore[union-attr]
    assert quoted > 0
    before = balance(page)
    assert before == 50

    page.evaluate(WATCH_PROGRESS)
    page.get_by_role("button", name="Generate").click()
    bar = page.get_by_role("progressbar", name="Generation progress")
    bar.wait_for()
    first = page.locator("[data-testid=job-panel]").first
    first_id = first.get_attribute("data-job-id")
    assert first_id
    wait_done(page, first_id)

    watched = page.evaluate("() => window.__gen")
    log, click = watched["log"], watched["click"]
    values = [e["value"] for e in log if e["value"] is not None]
    assert any(b > a for a, b in itertools.pairwise(values)), f"the bar never moved: {log}"
    assert any(0 < v < 1 for v in values), f"no intermediate progress: {log}"
    assert any("Sampling: step" in e["text"] for e in log), log
    first_status = log[0]["t"] - click
    first_progress = next(e["t"] for e in log if e["value"] and e["value"] > 0) - click
    PROGRESS_JSON.parent.mkdir(parents=True, exist_ok=True)
    PROGRESS_JSON.write_text(
        json.dumps(
            {
                "first_progress_ms": round(first_progress, 1),
                "first_status_ms": round(first_status, 1),
                "what": "click on Generate -> the progress bar's first value above 0 (a sampling step) / its "
                "first status line (queued), in the page, on swarmstation up with the emulator",
                "log": log,
            },
            indent=2,
        )
        + "\n"
    )

    # the header shows the balance after the charge
    cost = charged(key, up.url, first_id)
    assert 0 < cost <= quoted
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=balance]').textContent.startsWith('{before - cost} ')"
    )
    assert page.get_by_role("link", name="Download").first.get_attribute("download")
    assert page.get_by_role("button", name="Upscale this").is_visible()
    assert (
        page.get_by_role("link", name="Open in canvas").get_attribute("href")
        == f"/sandbox?from_job={first_id}"
    )
    shot(page, "generate")
    assert axe_violations(page) == []

    # again: a new job, same inputs, another seed
    page.get_by_role("button", name="Again").click()
    page.wait_for_function(
        "(first) => { const p = document.querySelector('[data-testid=job-panel]'); "
        "return p && p.dataset.jobId !== first; }",
        arg=first_id,
    )
    second_id = page.locator("[data-testid=job-panel]").first.get_attribute("data-job-id")
    assert second_id and second_id != first_id
    wait_done(page, second_id)
    one, two = job(key, up.url, first_id), job(key, up.url, second_id)
    assert (
        two["inputs"]["prompt"] == "a red fox"
        and two["inputs"]["steps"] == 20
        and two["inputs"]["width"] == 832
    )
    assert one["inputs"]["seed"] != two["inputs"]["seed"]

    # tweak: back to the form with the job's inputs, its seed included (exactly: 63-bit seeds)
    page.get_by_role("button", name="Tweak").click()
    assert page.get_by_label("Seed", exact=True).input_value() == str(two["inputs"]["seed"])

    # history: both, newest first, with thumbnails
    page.get_by_role("navigation", name="Main").get_by_role("link", name="History").click()
    page.get_by_role("heading", name="History").wait_for()
    cards = page.get_by_test_id("history-job")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=history-job] img')]"
        ".filter((i) => i.complete && i.naturalWidth > 0).length >= 2"
    )
    assert [cards.nth(i).get_attribute("data-job-id") for i in range(cards.count())] == [second_id, first_id]
    assert page.get_by_role("img", name="Thumbnail: a red fox").count() == 2
    shot(page, "history")
    assert axe_violations(page) == []

    # filters: by state (in the address, so a reload keeps them) and by tool
    page.get_by_label("State").select_option("FAILED")
    page.get_by_text("No jobs match these filters").wait_for()
    assert "state=FAILED" in page.url
    page.get_by_label("State").select_option("")
    page.get_by_label("Tool").select_option("sdxl-txt2img")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=history-job]').length === 2")

    # the detail page: inputs, timings, cost, LoRAs
    page.get_by_role("link", name=re.compile("Details of sdxl-txt2img job")).first.click()
    page.get_by_role("heading", name=f"Job {second_id[:8]}").wait_for()
    inputs = page.get_by_test_id("job-inputs")
    assert "a red fox" in inputs.inner_text()
    assert str(two["inputs"]["seed"]) in inputs.inner_text()
    page.wait_for_function(
        "() => /charged/.test(document.querySelector('[data-testid=job-cost]').textContent)"
    )
    assert page.get_by_test_id("job-cost").inner_text() == f"{charged(key, up.url, second_id)} cr charged"
    assert page.get_by_test_id("job-state").inner_text() == "completed"
    assert page.get_by_test_id("applied-loras").inner_text() == "None."
    assert page.get_by_role("img", name="Output: a red fox").is_visible()
    tweak = page.get_by_role("link", name="Tweak").get_attribute("href")
    assert tweak and tweak.startswith("/generate/sdxl-txt2img?inputs=")
    assert axe_violations(page) == []


def test_a_user_without_enough_credits_sees_why_and_where_to_add_them(studio_up: Any, page: Any) -> None:
    up = studio_up
    _, key = new_user(up, "gen-bob", credits=0)
    sign_in_with_key(page, up, key)
    page.goto(f"{up.url}/generate/sdxl-txt2img")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse")
    page.get_by_test_id("quote").get_by_text(re.compile("costs up to")).wait_for()
    page.get_by_role("button", name="Generate").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "402" in alert.inner_text()
    assert "insufficient credits" in alert.inner_text()
    link = page.get_by_role("link", name="Add credits")
    assert link.get_attribute("href") == "/account#deposit"
    assert page.locator("[data-testid=job-panel]").count() == 0
    link.click()
    page.wait_for_url(re.compile(r"/account#deposit$"))


def test_tweak_links_prefill_the_form_and_narrow_screens_do_not_scroll_sideways(
    studio_up: Any, browser: Any
) -> None:
    up = studio_up
    _, key = new_user(up, "gen-carol", credits=5)
    context, page, problems = open_page(browser, width=375, height=800)
    try:
        sign_in_with_key(page, up, key)
        inputs = '{"prompt":"a blue whale","seed":1879501611239828158,"steps":12}'
        page.goto(f"{up.url}/generate/sdxl-txt2img?inputs={httpx.QueryParams({'x': inputs})['x']}")
        page.get_by_label("Prompt", exact=True).wait_for()
        assert page.get_by_label("Prompt", exact=True).input_value() == "a blue whale"
        # exact, not rounded to a double
        assert page.get_by_label("Seed", exact=True).input_value() == "1879501611239828158"
        assert page.get_by_label("Steps", exact=True).input_value() == "12"
        page.get_by_role("button", name="Roll a random seed").click()
        assert page.get_by_label("Seed", exact=True).input_value() != "1879501611239828158"
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.get_by_role("button", name="Generate").click()
        page.get_by_role("img", name="Generated: a blue whale").wait_for(timeout=60_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        shot(page, "generate-375")
        page.get_by_role("link", name="Details").click()
        page.get_by_test_id("job-inputs").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.goto(f"{up.url}/history")
        page.get_by_role("heading", name="History").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.goto(f"{up.url}/generate")
        page.get_by_role("link", name="Stable Diffusion XL: text to image").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        context.close()
    problems.check()


def test_signed_out_visitors_are_sent_to_sign_in(studio_up: Any, page: Any) -> None:
    page.goto(f"{studio_up.url}/generate/sdxl-txt2img")
    page.wait_for_url(re.compile(r"/signin\?next=%2Fgenerate%2Fsdxl-txt2img"))
    page.goto(f"{studio_up.url}/history")
    page.wait_for_url(re.compile(r"/signin\?next=%2Fhistory"))


def png_bytes(size: int = 96) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


# A file dropped on an element, as a person dragging it from their desktop would.
DROP_FILE = """
([selector, name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type: 'image/png' }));
  const target = document.querySelector(selector);
  target.dispatchEvent(new DragEvent('dragover', { dataTransfer: data, bubbles: true, cancelable: true }));
  target.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
}
"""


def test_an_image_dropped_on_the_field_is_uploaded_and_redrawn(studio_up: Up, page: Any) -> None:
    _, key = new_user(studio_up, "gen-dora", credits=20)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/generate/sd15-img2img")
    page.get_by_label("Prompt", exact=True).fill("a red fox in the snow")
    assert "Fill in the image" in page.get_by_test_id("quote").inner_text()
    page.evaluate(DROP_FILE, ["[data-testid=drop-image]", "fox.png", base64.b64encode(png_bytes()).decode()])
    chosen = page.get_by_role("list", name="Image: chosen")
    chosen.get_by_text("fox.png").wait_for()
    assert chosen.get_by_role("img", name="fox.png").is_visible()
    page.get_by_test_id("quote").get_by_text(re.compile("costs up to")).wait_for()
    page.get_by_role("button", name="Generate").click()
    page.get_by_role("img", name="Generated: a red fox in the snow").wait_for(timeout=60_000)
    job_id = page.locator("[data-testid=job-panel]").first.get_attribute("data-job-id")
    ran = job(key, studio_up.url, str(job_id))
    assert ran["state"] == "COMPLETED" and str(ran["inputs"]["image"]).startswith("upload:")

    # an undecodable file is refused with the server's message
    page.evaluate(
        DROP_FILE, ["[data-testid=drop-image]", "broken.png", base64.b64encode(b"not a png").decode()]
    )
    page.get_by_role("alert").filter(has_text="not a readable image").wait_for()


def test_upscale_this_opens_the_upscaler_with_the_output_as_its_image(studio_up: Up, page: Any) -> None:
    _, key = new_user(studio_up, "gen-erin", credits=20)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/generate/sd15-txt2img")
    page.get_by_label("Prompt", exact=True).fill("a small boat")
    page.get_by_role("button", name="Generate").click()
    page.get_by_role("img", name="Generated: a small boat").wait_for(timeout=60_000)
    source = job(
        key, studio_up.url, str(page.locator("[data-testid=job-panel]").first.get_attribute("data-job-id"))
    )
    page.get_by_role("button", name="Upscale this").click()
    page.get_by_role("heading", name="4x upscale (UltraSharp)").wait_for()
    chosen = page.get_by_role("list", name="Image: chosen")
    chosen.get_by_role("img", name="an earlier output").wait_for()
    page.get_by_role("button", name="Generate").click()
    page.locator("[data-testid=job-panel]").get_by_text("Done").wait_for(timeout=60_000)
    upscaled = job(
        key, studio_up.url, str(page.locator("[data-testid=job-panel]").first.get_attribute("data-job-id"))
    )
    assert upscaled["tool"] == "upscale-4x" and upscaled["state"] == "COMPLETED"
    assert upscaled["inputs"]["image"] == f"output:{source['outputs'][0]['id']}"


def test_the_prompt_shows_lora_triggers_and_which_loras_will_apply(
    studio_up: Up, hubs: FakeHubs, page: Any
) -> None:
    hubs.add_civitai_lora(7, 70, name="Ink Wash", trained_words=["ink wash painting"], base_model="SDXL 1.0")
    with studio_up.client() as http:
        imported = http.post("/v1/loras/import", json={"url": f"{hubs.url}/models/7"})
        assert imported.status_code == 201, imported.text
        slug = imported.json()["slug"]
        approved = http.post(f"/v1/admin/loras/{slug}/approve", json={"visibility": "public"})
        assert approved.status_code in (200, 202), approved.text
        wait_for(
            lambda: http.get(f"/v1/loras/{slug}").json()["moderation_status"] == "approved", 30, "approval"
        )
    _, key = new_user(studio_up, "gen-fay", credits=20)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/generate/sdxl-txt2img")
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("mountains at dawn")
    preview = page.get_by_test_id("lora-preview")
    preview.get_by_text("No LoRAs apply to this prompt.").wait_for()
    page.get_by_role("button", name=re.compile("Add the trigger “ink wash painting”")).click()
    assert prompt.input_value() == "mountains at dawn, ink wash painting"
    preview.get_by_text(f"Applies: {slug}", exact=False).wait_for()
    page.get_by_role("button", name="Generate").click()
    page.get_by_role("img", name=re.compile("Generated: mountains at dawn")).wait_for(timeout=60_000)
    page.get_by_role("link", name="Details").click()
    page.get_by_test_id("applied-loras").get_by_text(slug).wait_for()


def test_history_follows_a_pipeline_run_live_and_reruns_it(studio_up: Up, page: Any) -> None:
    _, key = new_user(studio_up, "gen-gus", credits=50)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/history")
    page.get_by_text("No runs yet.").wait_for()
    pipeline = {
        "inputs": {"idea": {"type": "string"}},
        "steps": {
            "gen": {"tool": "sd15-txt2img", "inputs": {"prompt": {"input": "idea"}, "steps": 100}},
            "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
        },
    }
    made = httpx.post(
        f"{studio_up.url}/v1/runs",
        json={"pipeline": pipeline, "inputs": {"idea": "a castle on a hill"}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert made.status_code == 201, made.text
    run_id = made.json()["id"]
    # the list picks up the run and its step job without a reload
    link = page.get_by_role("link", name=f"Run {run_id[:8]}")
    link.wait_for(timeout=15_000)
    page.get_by_test_id("history-job").first.wait_for()
    link.click()
    page.get_by_role("heading", name=f"Run {run_id[:8]}").wait_for()
    page.get_by_text("updating live").wait_for()
    page.get_by_text("completed", exact=True).first.wait_for(timeout=60_000)
    page.wait_for_function("() => !document.body.textContent.includes('updating live')", timeout=60_000)
    assert page.get_by_role("img", name="Step gen output 1").is_visible()
    assert page.get_by_role("img", name="Step big output 1").is_visible()
    assert "a castle on a hill" in page.locator("pre").inner_text()
    assert axe_violations(page) == []
    page.get_by_role("button", name="Rerun").click()
    page.wait_for_url(re.compile(r"/history/run/(?!" + run_id + r")[\w-]+$"))
    page.get_by_role("heading", name=re.compile(r"^Run ")).wait_for()


def test_the_quote_follows_the_inputs(studio_up: Up, page: Any) -> None:
    with studio_up.client() as http:
        priced = http.put(
            "/v1/admin/tools/flux-txt2img/price", json={"model": "per_megapixel", "credits": 10}
        )
        assert priced.status_code == 200, priced.text
    _, key = new_user(studio_up, "gen-hal", credits=100)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/generate/flux-txt2img")
    page.get_by_label("Prompt", exact=True).fill("a lantern")
    quote = page.get_by_test_id("quote")

    def quoted() -> int:
        page.wait_for_function(
            "() => /costs up to \\d+ cr/.test(document.querySelector('[data-testid=quote]').textContent)"
        )
        return int(re.search(r"costs up to (\d+) cr", quote.inner_text()).group(1))  # type: ignore[union-attr]

    def expected(width: int, height: int) -> int:
        body = {"tool": "flux-txt2img", "inputs": {"prompt": "a lantern", "width": width, "height": height}}
        answer = httpx.post(
            f"{studio_up.url}/v1/quotes", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        return int(answer.json()["total"])

    page.get_by_label("Width", exact=True).fill("512")
    page.get_by_label("Height", exact=True).fill("512")
    assert page.get_by_role("button", name="Square 1024×1024").get_attribute("aria-pressed") == "false"
    small = expected(512, 512)
    page.wait_for_function(
        "(n) => document.querySelector('[data-testid=quote]').textContent.includes(`up to ${n} cr`)",
        arg=small,
    )
    page.get_by_role("button", name="Square 1024×1024").click()
    big = expected(1024, 1024)
    assert big > small
    page.wait_for_function(
        "(n) => document.querySelector('[data-testid=quote]').textContent.includes(`up to ${n} cr`)", arg=big
    )
    assert quoted() == big
    page.get_by_label("Width", exact=True).fill("5000")
    page.get_by_text("Check the width to see the price.").wait_for()


def test_a_cancelled_job_is_not_charged_and_unknown_things_are_explained(studio_up: Up, page: Any) -> None:
    _, key = new_user(studio_up, "gen-ivy", credits=10)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/generate/sdxl-txt2img")
    page.get_by_label("Prompt", exact=True).fill("a long exposure of the sea")
    page.get_by_label("Steps", exact=True).fill("150")
    page.get_by_role("button", name="Generate").click()
    page.get_by_test_id("progress-text").get_by_text(re.compile("Sampling: step")).wait_for(timeout=30_000)
    page.get_by_role("button", name="Cancel").click()
    page.get_by_test_id("progress-text").get_by_text("Cancelled").wait_for()
    assert page.get_by_role("heading", name="It did not finish").is_visible()
    job_id = str(page.locator("[data-testid=job-panel]").first.get_attribute("data-job-id"))
    assert job(key, studio_up.url, job_id)["state"] == "CANCELLED"
    assert charged(key, studio_up.url, job_id) == 0
    page.wait_for_function(
        "() => document.querySelector('[data-testid=balance]').textContent.startsWith('10 ')"
    )

    page.goto(f"{studio_up.url}/generate/no-such-tool")
    page.get_by_role("alert").filter(has_text="404").wait_for()
    page.goto(f"{studio_up.url}/history/job/00000000-0000-0000-0000-000000000000")
    page.get_by_role("alert").filter(has_text="404").wait_for()
    assert page.get_by_role("link", name="Back to history").is_visible()
