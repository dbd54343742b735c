"""The chat page in a real browser, against `swarmstation up` with its emulated GPU instances and
no LLM configured (the offline planner): the fox story (a plan of text to image → 4x upscale with
its price, approved with a double click that runs once, its progress and its image in the card,
"more vibrant" as a new plan, a song politely declined with what the platform can do), branching
from an earlier message and switching between the branches, an image attached with the file
button, a balance too small for the plan, renaming and deleting conversations, and no serious or
critical axe violations at 1280 and 375 px; and the fox story again with the agent's LLM mode
against a fake OpenAI-compatible endpoint scripted with tool calls (tests/fake_openai.py)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Up, make_up
from tests.fake_openai import FakeOpenAI, call
from tests.web.conftest import axe_violations, new_user, open_page, shot, sign_in_with_key

FOX = "a watercolor fox in the snow, then make it 4x bigger"
# a 2x2 PNG (what the emulator upscales is not looked at)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)


# Records each text the plan card's progress line shows, in order.
WATCH_PROGRESS = """
() => {
  const seen = [];
  window.__planProgress = seen;
  const record = () => {
    const el = document.querySelector('[data-testid=plan-progress-text]');
    const text = el ? el.textContent : null;
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  };
  new MutationObserver(record).observe(
    document.body, { subtree: true, childList: true, characterData: true }
  );
}
"""


def api(up: Up, key: str, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(method, f"{up.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30, **kw)
    assert r.status_code < 400, r.text
    return r.json() if r.content else None


def conversation_id(page: Any) -> str:
    page.wait_for_url(re.compile(r"/chat\?c="))
    found = re.search(r"[?&]c=([\w-]+)", page.url)
    assert found, page.url
    return found.group(1)


def send(page: Any, text: str) -> None:
    page.get_by_label("Your message").fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def open_chat(page: Any) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Chat").click()
    page.get_by_role("heading", name="Chat", level=1).wait_for()


def test_the_fox_story_in_the_browser(studio_up: Up, page: Any) -> None:
    up = studio_up
    _, key = new_user(up, "chat-fox", credits=2000)
    sign_in_with_key(page, up, key)
    open_chat(page)
    persona = api(up, key, "GET", "/v1/agent/persona")
    page.get_by_text(persona["greeting"]).first.wait_for()
    assert page.locator("img.avatar").first.is_visible()

    send(page, FOX)
    conv = conversation_id(page)
    card = page.get_by_test_id("plan-card").first
    card.wait_for()
    heading = card.get_by_role("heading").inner_text()
    assert re.search(r"txt2img → upscale-4x", heading), heading
    assert "a watercolor fox in the snow" in card.inner_text()
    price_text = card.get_by_test_id("plan-price").inner_text()
    plan = next(i for i in api(up, key, "GET", f"/v1/conversations/{conv}")["items"] if i["type"] == "plan")
    assert f"{plan['quote']['total']:,} cr" in price_text, price_text
    assert plan["quote"]["total"] > 0
    # the conversation is listed, named after the first message
    listed = page.get_by_role("navigation", name="Conversations")
    listed.get_by_role("link", name=re.compile("watercolor fox")).wait_for()

    before = api(up, key, "GET", "/v1/account")["available"]
    approve = card.get_by_role("button", name=re.compile(r"^Approve"))
    page.evaluate(WATCH_PROGRESS)
    approve.dblclick()  # twice: one Idempotency-Key per card, one run
    card.get_by_role("progressbar", name="Plan progress").wait_for()
    result = card.get_by_test_id("plan-result").get_by_role("img", name=re.compile("Result of step"))
    result.wait_for(timeout=90_000)
    assert card.get_by_test_id("plan-progress-text").inner_text() == "Done"
    seen = page.evaluate("() => window.__planProgress")
    # the run's `run` events reached the card: its steps, one after the other, then done
    assert any(t.startswith("Step 1 of 2 · ") for t in seen), seen
    assert any(t.startswith("Step 2 of 2 · upscale-4x") for t in seen), seen
    assert seen[-1] == "Done", seen
    assert (
        card.get_by_role("link", name="Open in canvas")
        .get_attribute("href", timeout=1000)
        .startswith("/sandbox?from_run=")
    )
    items = api(up, key, "GET", f"/v1/conversations/{conv}")["items"]
    assert [i["type"] for i in items].count("approval") == 1
    assert [i["type"] for i in items].count("run") == 1
    runs = api(up, key, "GET", "/v1/runs")
    assert len(runs["runs"] if isinstance(runs, dict) else runs) == 1
    after = api(up, key, "GET", "/v1/account")["available"]
    assert 0 < before - after <= plan["quote"]["total"]

    send(page, "more vibrant")
    page.get_by_test_id("plan-card").nth(1).wait_for()
    second = page.get_by_test_id("plan-card").nth(1)
    assert "vibrant" in second.inner_text()
    assert second.get_by_role("button", name=re.compile(r"^Approve")).is_enabled()

    send(page, "make a song about it")
    declined = page.get_by_test_id("agent-message").last
    declined.get_by_text(re.compile("can't help|cannot help|sorry", re.I)).first.wait_for()
    assert declined.get_by_role("link").count() >= 1  # what the platform can do instead
    # (never "networkidle": the conversation's event stream stays open)
    page.wait_for_function("() => [...document.images].every((i) => i.complete)")
    shot(page, "chat")
    assert axe_violations(page) == []

    # open in canvas: the plan's pipeline on the sandbox, and back to the conversation
    card.get_by_role("link", name="Open in canvas").click()
    page.wait_for_url(re.compile(r"/sandbox\?from_run="))
    page.locator(".react-flow__node").first.wait_for()
    assert page.locator(".react-flow__node").count() == 2
    page.go_back()
    page.get_by_test_id("plan-result").first.get_by_role("img").first.wait_for()


def test_branching_from_an_earlier_message(studio_up: Up, page: Any) -> None:
    up = studio_up
    _, key = new_user(up, "chat-branch", credits=2000)
    sign_in_with_key(page, up, key)
    page.goto(f"{up.url}/chat")
    send(page, "a red fox in a forest")
    conv = conversation_id(page)
    page.get_by_test_id("plan-card").first.wait_for()
    send(page, "make it 4x bigger")
    page.get_by_test_id("plan-card").nth(1).wait_for()

    first = page.get_by_test_id("user-message").first
    first.get_by_role("button", name="Edit / branch from here").click()
    page.get_by_label("Edit into a new branch").fill("a blue whale in the ocean")
    page.get_by_role("button", name="Send as a new branch").click()
    page.get_by_test_id("branch-position").get_by_text("Branch 2 of 2").wait_for()
    # the new branch: its own plan, and the later message of the first branch is not shown
    assert page.get_by_test_id("user-message").count() == 1
    page.get_by_test_id("plan-card").filter(has_text="whale").wait_for()
    assert page.get_by_test_id("plan-card").filter(has_text="red fox").count() == 0

    page.get_by_role("button", name="Previous branch").click()
    page.get_by_test_id("branch-position").get_by_text("Branch 1 of 2").wait_for()
    assert page.get_by_test_id("user-message").count() == 2
    page.get_by_test_id("plan-card").filter(has_text="red fox").first.wait_for()
    assert page.get_by_test_id("plan-card").filter(has_text="whale").count() == 0

    items = api(up, key, "GET", f"/v1/conversations/{conv}")["items"]
    users = [i for i in items if i["type"] == "user_message"]
    red = next(i for i in users if "red fox" in i["text"])
    whale = next(i for i in users if "whale" in i["text"])
    assert red["parent_id"] == whale["parent_id"]

    # a message on the first branch goes under its own last item, not the other branch
    send(page, "same but at night")
    page.get_by_test_id("user-message").nth(2).wait_for()
    items = api(up, key, "GET", f"/v1/conversations/{conv}")["items"]
    night = next(i for i in items if i["type"] == "user_message" and "night" in i["text"])
    bigger = next(i for i in items if i["type"] == "user_message" and "bigger" in i["text"])
    parent = next(i for i in items if i["id"] == night["parent_id"])
    assert parent["parent_id"] == bigger["id"] or parent["id"] == bigger["id"]
    page.get_by_role("button", name="Next branch").first.wait_for()


def test_an_image_attached_with_the_file_button(studio_up: Up, page: Any) -> None:
    up = studio_up
    _, key = new_user(up, "chat-attach", credits=2000)
    sign_in_with_key(page, up, key)
    page.goto(f"{up.url}/chat")
    page.get_by_label("Your message").wait_for()
    page.get_by_test_id("attach-input").set_input_files(
        files=[{"name": "cat.png", "mimeType": "image/png", "buffer": PNG}]
    )
    page.get_by_role("list", name="Images to send").get_by_role("img", name="cat.png").wait_for()
    send(page, "make it 4x bigger")
    conv = conversation_id(page)
    card = page.get_by_test_id("plan-card").first
    card.wait_for()
    assert "upscale-4x" in card.get_by_role("heading").inner_text()
    assert "your attachment" in card.inner_text()
    # the sent message shows the picture (this page uploaded it: its local preview)
    page.get_by_role("list", name="Attached images").first.get_by_role("img").wait_for()
    message = next(
        i for i in api(up, key, "GET", f"/v1/conversations/{conv}")["items"] if i["type"] == "user_message"
    )
    assert len(message["images"]) == 1 and message["images"][0].startswith("upload:")


# A file handed to the page as a paste on the message box, or a drop on the composer.
HAND_OVER = """
([how, b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type: 'image/png' }));
  const init = { bubbles: true, cancelable: true };
  if (how === 'paste') {
    const box = document.getElementById('chat-message');
    box.dispatchEvent(new ClipboardEvent('paste', { ...init, clipboardData: data }));
  } else {
    const composer = document.querySelector('[data-testid=composer]');
    composer.dispatchEvent(new DragEvent('drop', { ...init, dataTransfer: data }));
  }
}
"""


def test_images_pasted_and_dropped_and_a_plan_rejected_from_the_keyboard(studio_up: Up, page: Any) -> None:
    up = studio_up
    _, key = new_user(up, "chat-paste", credits=2000)
    sign_in_with_key(page, up, key)
    page.goto(f"{up.url}/chat")
    page.get_by_label("Your message").wait_for()
    b64 = base64.b64encode(PNG).decode()
    page.evaluate(HAND_OVER, ["paste", b64, "pasted.png"])
    page.evaluate(HAND_OVER, ["drop", b64, "dropped.png"])
    thumbs = page.get_by_role("list", name="Images to send")
    thumbs.get_by_role("img", name="pasted.png").wait_for()
    thumbs.get_by_role("img", name="dropped.png").wait_for()
    thumbs.get_by_role("button", name="Remove dropped.png").click()
    assert thumbs.get_by_role("img").count() == 1

    box = page.get_by_label("Your message")
    box.fill("make it 4x bigger")
    box.press("Enter")  # Enter sends
    conv = conversation_id(page)
    card = page.get_by_test_id("plan-card").first
    card.wait_for()
    message = next(
        i for i in api(up, key, "GET", f"/v1/conversations/{conv}")["items"] if i["type"] == "user_message"
    )
    assert len(message["images"]) == 1

    reject = card.get_by_role("button", name="Reject")
    reject.focus()
    page.keyboard.press("Enter")
    card.get_by_text("rejected", exact=True).wait_for()
    page.get_by_text("nothing will run").wait_for()
    assert card.get_by_role("button", name=re.compile("^Approve")).count() == 0
    assert api(up, key, "GET", "/v1/account")["held"] == 0


def test_a_plan_the_balance_does_not_cover_shows_the_shortfall(studio_up: Up, page: Any) -> None:
    up = studio_up
    _, key = new_user(up, "chat-poor", credits=0)
    sign_in_with_key(page, up, key)
    page.goto(f"{up.url}/chat")
    send(page, FOX)
    card = page.get_by_test_id("plan-card").first
    card.wait_for()
    shortfall = card.get_by_test_id("shortfall")
    assert "more" in shortfall.inner_text()
    assert shortfall.get_by_role("link", name="Add credits").get_attribute("href") == "/account"
    assert card.get_by_role("button", name=re.compile(r"^Approve")).is_disabled()
    assert api(up, key, "GET", "/v1/account")["held"] == 0


def test_conversations_are_renamed_and_deleted_and_the_page_fits_375_px(studio_up: Up, browser: Any) -> None:
    up = studio_up
    _, key = new_user(up, "chat-narrow", credits=2000)
    context, page, problems = open_page(browser, width=375, height=800)
    try:
        sign_in_with_key(page, up, key)
        page.goto(f"{up.url}/chat")
        send(page, "a lighthouse at dawn")
        conv = conversation_id(page)
        page.get_by_test_id("plan-card").first.wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert axe_violations(page) == []
        shot(page, "chat-375")

        row = page.get_by_test_id("conversation-row").first
        row.get_by_role("button", name=re.compile("^Rename")).click()
        row.get_by_label("New title").fill("Lighthouses")
        row.get_by_role("button", name="Save").click()
        page.get_by_role("link", name="Lighthouses").wait_for()
        assert api(up, key, "GET", f"/v1/conversations/{conv}")["title"] == "Lighthouses"

        row = page.get_by_test_id("conversation-row").first
        row.get_by_role("button", name="Delete Lighthouses").click()
        row.get_by_role("button", name="Delete", exact=True).click()
        page.wait_for_url(re.compile(r"/chat$"))
        page.get_by_text("None yet").wait_for()
        assert api(up, key, "GET", "/v1/conversations")["conversations"] == []
    finally:
        context.close()
    problems.check()


def test_signed_out_the_chat_asks_to_sign_in_and_an_unknown_conversation_is_a_message(
    studio_up: Up, page: Any
) -> None:
    page.goto(f"{studio_up.url}/chat")
    page.wait_for_url(re.compile(r"/signin\?next=%2Fchat$"))
    _, key = new_user(studio_up, "chat-lost")
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/chat?c=00000000-0000-0000-0000-000000000000")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "404" in alert.inner_text() and "not found" in alert.inner_text()
    page.get_by_role("link", name="Back to the chat").click()
    page.get_by_label("Your message").wait_for()


# -- the same story with an LLM: a fake OpenAI-compatible endpoint scripted with tool calls ----------
FOX_PIPELINE = {
    "inputs": {},
    "steps": {
        "gen": {"tool": "sdxl-txt2img", "inputs": {"prompt": "a watercolor fox in the snow", "seed": 7}},
        "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
    },
}


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def llm_up(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeOpenAI) -> Iterator[Up]:
    """`swarmstation up` whose chat agent calls the fake endpoint's functions."""
    up = make_up(
        tmp_path_factory.mktemp("chat-llm"),
        llm_base_url=fake_llm.base_url,
        llm_api_key=fake_llm.api_key,
        llm_model="fake-model",
    )
    up.start()
    yield up
    up.cleanup()


def test_the_fox_story_in_the_browser_with_a_scripted_llm(
    llm_up: Up, fake_llm: FakeOpenAI, page: Any
) -> None:
    up = llm_up
    _, key = new_user(up, "chat-llm", credits=2000)
    sign_in_with_key(page, up, key)
    page.goto(f"{up.url}/chat")
    said = "Here is a plan: a watercolor fox, then 4x bigger. Approve it to run it."
    fake_llm.script(
        call("search_tools", {"query": "watercolor picture from text"}),
        call("search_tools", {"query": "make an image 4x bigger"}),
        call("propose_plan", {"pipeline": FOX_PIPELINE, "explanation": "fox, then upscale"}),
        said,
    )
    send(page, FOX)
    card = page.get_by_test_id("plan-card").first
    card.wait_for()
    assert "sdxl-txt2img → upscale-4x" in card.get_by_role("heading").inner_text()
    card.get_by_text(said).wait_for()
    assert any(r.tool_names for r in fake_llm.requests)  # the page's message went to the model
    card.get_by_role("button", name=re.compile(r"^Approve")).click()
    card.get_by_test_id("plan-result").get_by_role("img").first.wait_for(timeout=90_000)

    vibrant = {
        "inputs": {},
        "steps": {
            "gen": {
                "tool": "sdxl-txt2img",
                "inputs": {"prompt": "a watercolor fox in the snow, vibrant", "seed": 8},
            },
            "big": FOX_PIPELINE["steps"]["big"],
        },
    }
    fake_llm.script(
        call("propose_plan", {"pipeline": vibrant, "explanation": "more vibrant"}), "More vibrant."
    )
    send(page, "more vibrant")
    page.get_by_test_id("plan-card").nth(1).get_by_text("vibrant", exact=False).first.wait_for()

    fake_llm.script(
        "I can't make songs here: I make, rework and upscale images. Shall I draw the fox singing?"
    )
    send(page, "make a song about it")
    page.get_by_test_id("agent-message").last.get_by_text(re.compile("can't make songs")).wait_for()
    assert axe_violations(page) == []
