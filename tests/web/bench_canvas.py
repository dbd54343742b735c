"""The canvas frame-time benchmark: `python -m tests.web.bench_canvas` (after building the studio).

Starts `swarmstation up` and Debian's Chromium, opens /sandbox?bench=200x250 (200 nodes and 250
wires of the real tools, signed in with the admin key so that the tools' inputs are known), pans
with mouse drags and zooms with the wheel for about 5 s while the page records
requestAnimationFrame timestamps, and prints JSON with the frame-time percentiles.

Arguments: seconds (5) and extra query parameters for the page (e.g. `&bench=200x1`... appended).
While the view moves the page draws it on a canvas and hands it to xyflow's DOM once it settles
(web/src/canvas/sketchLayer.ts); the JSON says how many recorded frames drew the canvas and how
many times the DOM took the view back.

For looking into a result: BENCH_MODE=pan|zoom does only one of the two; BENCH_PROFILE=FILE writes a
V8 CPU profile (or a Chromium trace of BENCH_TRACE_CATEGORIES when FILE ends in .trace.json);
BENCH_CSS adds a style sheet to the page (trying a CSS change without a build); BENCH_PAUSE_MS=300
rests that long after each drag and each burst of wheel steps, as a person would between gestures
(a rest over 200 ms hands the view back to the DOM, and those frames are recorded too)."""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.conftest import make_up
from tests.web.conftest import CHROMIUM_ARGS, chromium_path

RECORD = """() => { window.__frames = []; const tick = (t) => { window.__frames.push(t);
  if (!window.__stopFrames) requestAnimationFrame(tick); }; requestAnimationFrame(tick); }"""


# A point of the canvas with no node or wire under it: a drag that starts there pans the canvas
# (a drag that starts on a node moves the node instead).
FIND_PANE = """(box) => {
  const at = (x, y) => document.elementFromPoint(x, y)?.classList.contains('react-flow__pane');
  // with a margin: zooming keeps the point under the cursor only to a pixel or two
  const pane = (x, y) => [-8, 0, 8].every((dx) => [-8, 0, 8].every((dy) => at(x + dx, y + dy)));
  for (let y = box.y + 20; y < box.y + box.height - 20; y += 10)
    for (let x = box.x + 20; x < box.x + box.width - 160; x += 10)
      if (pane(x, y) && pane(x + 120, y + 60)) return [x, y];
  return null;
}"""
# the graph the page opened (the bench parameter is a request: 0 means the default)
GRAPH_SIZE = "() => window.__canvasGraph"
PROFILE = os.environ.get("BENCH_PROFILE")
PAUSE_MS = float(os.environ.get("BENCH_PAUSE_MS", "0"))
TRACE_CATEGORIES = os.environ.get(
    "BENCH_TRACE_CATEGORIES", "devtools.timeline,disabled-by-default-devtools.timeline"
)
MEASURED = """() => [...document.querySelectorAll('.react-flow__node')]
  .every((n) => getComputedStyle(n).visibility === 'visible')"""
# the view on screen: the page's live view (drawn on the sketch canvas while it moves, handed to
# xyflow's DOM once it settles), else the DOM viewport's transform
VIEWPORT = """() => window.__canvasView ? JSON.stringify(window.__canvasView())
  : document.querySelector('.react-flow__viewport').style.transform"""
# frames drawn on the sketch canvas and times the DOM took the view back (canvas/sketchLayer.ts)
SKETCH = "() => window.__canvasSketch ? { ...window.__canvasSketch } : null"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(seconds: float = 5.0, query: str = "") -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    up = make_up(Path(tempfile.mkdtemp(prefix="bench-canvas-")))
    up.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(
                viewport={"width": 1600, "height": 1000}, bypass_csp=bool(os.environ.get("BENCH_CSS"))
            )
            key = json.dumps(up.admin_key)
            context.add_init_script(f"localStorage.setItem('swarmstation.api_key', {key})")
            page = context.new_page()
            page.goto(f"{up.url}/sandbox?bench=200x250{query}")
            page.wait_for_function("() => window.__canvasReady === true", timeout=60_000)
            if os.environ.get("BENCH_CSS"):
                page.add_style_tag(content=os.environ["BENCH_CSS"])
            # nodes are hidden until measured, and a hidden node is not under the cursor
            page.wait_for_function(MEASURED, timeout=60_000)
            graph = page.evaluate(GRAPH_SIZE)
            nodes = page.locator(".react-flow__node").count()
            edges = page.locator(".react-flow__edge").count()
            box = page.get_by_test_id("canvas").bounding_box()
            assert box
            pane = page.evaluate(FIND_PANE, box)
            assert pane, "no empty point on the canvas to pan from"
            # Drags go back and forth between two points: a pan carries what was under the cursor
            # along with it, and a wheel zoom keeps the point under the cursor fixed, so every drag
            # starts on the same empty spot of the canvas (no search while frames are recorded).
            here, there = (pane[0], pane[1]), (pane[0] + 120, pane[1] + 60)
            before = page.evaluate(VIEWPORT)
            cdp = context.new_cdp_session(page) if PROFILE else None
            if cdp and PROFILE.endswith(".trace.json"):
                events: list[dict] = []
                cdp.on("Tracing.dataCollected", lambda e: events.extend(e["value"]))
                cdp.send("Tracing.start", {"categories": TRACE_CATEGORIES, "transferMode": "ReportEvents"})
            elif cdp:
                cdp.send("Profiler.enable")
                cdp.send("Profiler.start")
            sketch_before = page.evaluate(SKETCH)
            page.evaluate(RECORD)
            end = time.monotonic() + seconds
            step = pans = 0
            while time.monotonic() < end:
                page.mouse.move(*here)
                if os.environ.get("BENCH_MODE") != "zoom":
                    page.mouse.down()
                    page.mouse.move(*there, steps=12)
                    page.mouse.up()
                else:
                    pans += 1
                moved = page.evaluate(VIEWPORT)
                pans += moved != before
                before = moved
                if PAUSE_MS:
                    page.wait_for_timeout(PAUSE_MS)
                for _ in range(4 if os.environ.get("BENCH_MODE") != "pan" else 0):
                    page.mouse.wheel(0, -120 if step % 2 else 120)
                    page.wait_for_timeout(16)
                before = page.evaluate(VIEWPORT)
                if PAUSE_MS:
                    page.wait_for_timeout(PAUSE_MS)
                here, there = there, here
                step += 1
            page.evaluate("() => { window.__stopFrames = true; }")
            assert pans == step, f"only {pans} of {step} drags panned the canvas"
            frames: list[float] = page.evaluate("() => window.__frames")
            sketch_after = page.evaluate(SKETCH)
            if cdp and PROFILE.endswith(".trace.json"):
                done = []
                cdp.on("Tracing.tracingComplete", lambda e: done.append(1))
                cdp.send("Tracing.end")
                while not done:
                    page.wait_for_timeout(100)
                Path(PROFILE).write_text(json.dumps(events))
            elif cdp:
                Path(PROFILE).write_text(json.dumps(cdp.send("Profiler.stop")["profile"]))
            browser.close()
    finally:
        up.cleanup()
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    return {
        "nodes": graph["nodes"],
        "edges": graph["edges"],
        # only what is on screen is in the DOM (onlyRenderVisibleElements): at the start of the run
        "rendered_nodes": nodes,
        "rendered_edges": edges,
        "pans": pans,
        "zoom_steps": 4 * step,
        "frames": len(gaps),
        "frame_ms_p50": round(statistics.median(gaps), 2),
        "frame_ms_p95": round(_percentile(gaps, 0.95), 2),
        "frame_ms_max": round(max(gaps), 2),
        # of the frames recorded: how many drew the sketch canvas, and how many times the DOM took
        # the view back in between (each such frame is among the recorded ones)
        "sketch_frames": sketch_after["frames"] - sketch_before["frames"] if sketch_after else None,
        "dom_restores": sketch_after["restores"] - sketch_before["restores"] if sketch_after else None,
        "pause_ms": PAUSE_MS,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"headless Chromium (software rendering)",
    }


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0, *sys.argv[2:3])))
