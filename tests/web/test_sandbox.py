"""The sandbox in a real browser: build a three-step pipeline on the canvas by dragging wires
with the mouse, have an invalid wire refused, run it and watch every node finish, undo and redo,
and find the graph again after a reload (autosaved to the workspace)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.e2e.conftest import Up
from tests.web.bench_canvas import FIND_PANE, MEASURED
from tests.web.conftest import axe_violations, new_user, open_page, shot, sign_in_with_key


def _tools(up: Up) -> dict[str, dict[str, Any]]:
    with up.client() as http:
        return {t["slug"]: http.get(f"/v1/tools/{t['slug']}").json() for t in http.get("/v1/tools").json()}


def _balance(up: Up, key: str) -> int:
    answer = httpx.get(f"{up.url}/v1/account", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["balance"])


def _centre(page: Any, test_id: str) -> tuple[float, float]:
    box = page.get_by_test_id(test_id).bounding_box()
    assert box, f"{test_id} is not on screen"
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=8)
    page.mouse.move(*end, steps=8)
    page.mouse.up()


def _drop_on_canvas(page: Any, handle: str, dx: float, dy: float) -> None:
    """Drag a wire from `handle` to a point of empty canvas (relative to the canvas's corner)."""
    canvas = page.get_by_test_id("canvas").bounding_box()
    _drag(page, _centre(page, handle), (canvas["x"] + dx, canvas["y"] + dy))


def _select(page: Any, node: str) -> None:
    """Click a node's title: it becomes the selected node, whose inputs the side panel shows."""
    card = page.locator(".react-flow__node", has=page.get_by_test_id(f"status-{node}"))
    card.locator(".tool-node-name").click()


def test_a_user_builds_runs_and_keeps_a_three_step_pipeline(studio_up: Up, browser: Any) -> None:
    tools = _tools(studio_up)
    name = {slug: t["name"] for slug, t in tools.items()}
    takes_image = {t["name"] for t in tools.values() if any(i["type"] == "image" for i in t["inputs"])}
    _, key = new_user(studio_up, "canvas-builder", credits=5000)
    before = _balance(studio_up, key)

    context, page, problems = open_page(browser, width=1600, height=1000)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/sandbox")
    page.get_by_role("button", name=f"Add {name['sdxl-txt2img']}").click()
    gen = "sdxl-txt2img-1"
    page.get_by_test_id(f"status-{gen}").wait_for()

    # its prompt, in the side panel of the selected node
    _select(page, gen)
    page.get_by_label("prompt (string, required)").fill("a red fox in the snow")

    # a wire dropped on empty canvas offers only the tools that take an image
    _drop_on_canvas(page, f"out-{gen}-image", 360, 330)
    picker = page.get_by_role("dialog", name="Tools that take image")
    picker.wait_for()
    options = picker.get_by_test_id("picker-options").get_by_role("button").all()
    offered = {re.sub(r"\s*·.*$", "", b.inner_text()).strip() for b in options}
    assert offered == takes_image
    assert name["sdxl-txt2img"] not in offered
    picker.get_by_role("button", name=re.compile("^" + re.escape(name["upscale-4x"]))).click()
    big = "upscale-4x-1"
    page.get_by_test_id(f"status-{big}").wait_for()
    assert page.locator(".react-flow__edge").count() == 1

    _drop_on_canvas(page, f"out-{big}-image", 700, 60)
    picker.wait_for()
    picker.get_by_role("button", name=re.compile("^" + re.escape(name["image-resize"]))).click()
    small = "image-resize-1"
    page.get_by_test_id(f"status-{small}").wait_for()
    assert page.locator(".react-flow__edge").count() == 2

    # an image cannot feed a seed: the wire is refused while dragging and not made
    _drag(page, _centre(page, f"out-{small}-image"), _centre(page, f"in-{gen}-seed"))
    page.wait_for_timeout(300)
    assert page.locator(".react-flow__edge").count() == 2
    assert page.get_by_role("dialog").count() == 0

    # undo takes the last step (the resize node and its wire) away; redo brings it back
    page.get_by_test_id("canvas").locator(".react-flow__pane").click(position={"x": 1000, "y": 640})
    page.keyboard.press("Control+z")
    page.get_by_test_id(f"status-{small}").wait_for(state="detached")
    assert page.locator(".react-flow__edge").count() == 1
    page.keyboard.press("Control+Shift+z")
    page.get_by_test_id(f"status-{small}").wait_for()
    page.get_by_role("button", name="Undo").click()
    page.get_by_test_id(f"status-{small}").wait_for(state="detached")
    page.get_by_role("button", name="Redo").click()
    page.get_by_test_id(f"status-{small}").wait_for()
    assert page.locator(".react-flow__edge").count() == 2

    # the resize needs a size: typed into the selected node's side panel
    _select(page, small)
    page.get_by_label("width (integer)").fill("256")

    # run it: each node reaches completed, the last shows its image, the balance drops
    page.get_by_role("toolbar", name="Canvas").get_by_role("button", name="Run", exact=True).click()
    page.get_by_test_id("total-cost").filter(has_text=re.compile(r"total \d")).wait_for()
    for node in (gen, big, small):
        page.get_by_test_id(f"status-{node}").filter(has_text="completed").wait_for(timeout=90_000)
    page.get_by_role("img", name=f"output 1 of {small}").wait_for(timeout=20_000)
    page.get_by_test_id("run-state").filter(has_text="completed").wait_for()
    after = _balance(studio_up, key)
    assert after < before

    # the graph is autosaved to the workspace and comes back after a reload
    page.get_by_test_id("save-state").filter(has_text="Saved").wait_for()
    shot(page, "sandbox")
    assert axe_violations(page) == []
    page.reload()
    page.get_by_test_id(f"status-{small}").wait_for()
    assert page.locator(".react-flow__node").count() == 3
    assert page.locator(".react-flow__edge").count() == 2
    context.close()
    problems.check()


def _card(page: Any, node: str) -> dict[str, float]:
    box = page.locator(".react-flow__node", has=page.get_by_test_id(f"status-{node}")).bounding_box()
    assert box, f"{node} is not on screen"
    return dict(box)


# what the page shows while the view moves: the sketch canvas and xyflow's DOM viewport (skipped),
# the DOM's transform, and the sketch's pixel at a screen point
SKETCH_STATE = """([x, y]) => {
  const c = document.querySelector('.sketch-layer');
  const r = c.getBoundingClientRect();
  const d = devicePixelRatio;
  const at = [Math.round((x - r.left) * d), Math.round((y - r.top) * d)];
  const px = c.getContext('2d').getImageData(at[0], at[1], 1, 1).data;
  const viewport = document.querySelector('.react-flow__viewport');
  return { canvas: getComputedStyle(c).visibility, dom: getComputedStyle(viewport).contentVisibility,
           transform: viewport.style.transform, pixel: [...px].slice(0, 3) };
}"""
SETTLED = "() => !document.querySelector('.sandbox-canvas').classList.contains('sketching')"


def test_panning_and_zooming_draw_the_graph_and_give_the_cards_back(studio_up: Up, browser: Any) -> None:
    """While a person pans or zooms, the graph is drawn on one canvas (the cards are left as they
    were, hidden); when the view stops, the cards are back, moved and scaled with it, and work."""
    _, key = new_user(studio_up, "canvas-mover", credits=0)
    context, page, problems = open_page(browser, width=1600, height=1000)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/sandbox?bench=40x30")
    page.wait_for_function("() => window.__canvasReady === true")
    page.wait_for_function(MEASURED)
    pane = page.evaluate(FIND_PANE, page.get_by_test_id("canvas").bounding_box())
    assert pane, "no empty point on the canvas"
    card = _card(page, "n0")
    transform = page.evaluate("() => document.querySelector('.react-flow__viewport').style.transform")

    # a drag on empty canvas, held: the sketch shows the card moved with the pointer, the DOM is
    # skipped and not re-rendered
    page.mouse.move(*pane)
    page.mouse.down()
    page.mouse.move(pane[0] + 150, pane[1] + 80, steps=6)
    page.wait_for_function(
        "() => document.querySelector('.sandbox-canvas').classList.contains('sketch-shown')"
    )
    # the middle of n0's "run up to here" button (7..102 px across, 41..5 px above the card's
    # bottom, at zoom 0.5), where the card is now
    button = (card["x"] + 150 + 27, card["y"] + 80 + card["height"] - 11.5)
    state = page.evaluate(SKETCH_STATE, button)
    assert state["canvas"] == "visible"
    assert state["dom"] == "hidden"
    assert state["transform"] == transform
    assert all(abs(a - b) <= 12 for a, b in zip(state["pixel"], (0x4B, 0x3F, 0xD6), strict=True)), state[
        "pixel"
    ]
    page.mouse.up()
    page.wait_for_function(SETTLED)
    moved = _card(page, "n0")
    assert abs(moved["x"] - card["x"] - 150) < 1.5 and abs(moved["y"] - card["y"] - 80) < 1.5, (card, moved)

    # two wheel steps in: the cards come back larger, about the point under the pointer; what had
    # the focus in a card has it again
    run = page.locator(".react-flow__node", has=page.get_by_test_id("status-n0")).locator(".tool-node-run")
    run.focus()
    page.mouse.move(pane[0] + 150, pane[1] + 80)
    page.mouse.wheel(0, -120)
    page.wait_for_timeout(30)
    page.mouse.wheel(0, -120)
    page.wait_for_function(SETTLED)
    page.wait_for_timeout(100)
    zoomed = _card(page, "n0")
    assert abs(zoomed["width"] / moved["width"] - 2**0.48) < 0.01, (moved, zoomed)
    assert page.locator(".sketch-layer").evaluate("c => getComputedStyle(c).visibility") == "hidden"
    assert run.evaluate("b => document.activeElement === b")

    # and the cards work as before: select one, drag a wire from it onto empty canvas
    _select(page, "n0")
    page.get_by_label("prompt (string, required)").wait_for()
    canvas = page.get_by_test_id("canvas").bounding_box()
    _drop_on_canvas(page, "out-n0-image", pane[0] + 150 - canvas["x"], pane[1] + 80 - canvas["y"])
    page.get_by_role("dialog", name="Tools that take image").wait_for()
    context.close()
    problems.check()


def test_the_sandbox_at_375_px_and_signed_out(studio_up: Up, browser: Any) -> None:
    context, page, problems = open_page(browser, width=375, height=800)
    page.goto(f"{studio_up.url}/sandbox")
    page.get_by_role("link", name="Sign in").first.wait_for()
    page.get_by_role("navigation", name="Tool palette").get_by_role("button").first.click()
    page.locator(".react-flow__node").first.wait_for()
    assert page.locator(".react-flow__node").count() == 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("alert").filter(has_text="Sign in to run").wait_for()
    assert axe_violations(page) == []
    context.close()
    problems.check()


def test_open_in_canvas_from_a_job_and_from_a_run(studio_up: Up, browser: Any) -> None:
    """The generate page's "open in canvas" and the run page's "tweak in the canvas" links."""
    _, key = new_user(studio_up, "canvas-opener", credits=5000)
    auth = {"Authorization": f"Bearer {key}"}
    job = httpx.post(
        f"{studio_up.url}/v1/jobs",
        json={"tool": "sdxl-txt2img", "inputs": {"prompt": "a lighthouse at dusk", "seed": 7}},
        headers={**auth, "Idempotency-Key": "open-in-canvas-job"},
        timeout=30,
    )
    assert job.status_code in (200, 201, 202), job.text
    pipeline = {
        "inputs": {"idea": {"type": "string"}},
        "steps": {
            "gen": {"tool": "sdxl-txt2img", "inputs": {"prompt": {"input": "idea"}, "seed": 3}},
            "big": {"tool": "upscale-4x", "inputs": {"image": {"from": "gen", "output": "image"}}},
        },
    }
    run = httpx.post(
        f"{studio_up.url}/v1/runs",
        json={"pipeline": pipeline, "inputs": {"idea": "a fox"}},
        headers={**auth, "Idempotency-Key": "open-in-canvas-run"},
        timeout=30,
    )
    assert run.status_code in (200, 201, 202), run.text

    context, page, problems = open_page(browser, width=1600, height=1000)
    sign_in_with_key(page, studio_up, key)
    page.goto(f"{studio_up.url}/sandbox?from_job={job.json()['id']}")
    page.get_by_test_id("status-sdxl_txt2img").wait_for()
    assert page.locator(".react-flow__node").count() == 1
    page.goto(f"{studio_up.url}/sandbox?from_run={run.json()['id']}")
    page.get_by_test_id("status-big").wait_for()
    assert page.locator(".react-flow__node").count() == 2
    assert page.locator(".react-flow__edge").count() == 1
    context.close()
    problems.check()
