"""The canvas frame-time benchmark: `python -m tests.web.bench_canvas` (after building the studio).

Starts `swarmstation up` and Debian's Chromium, opens /sandbox?bench=200x250 (200 nodes and 250
wires of the real tools, signed in with the admin key so that the tools' inputs are known), pans
with mouse drags and zooms with the wheel for about 5 s while the page records
requestAnimationFrame timestamps, and prints JSON with the frame-time percentiles."""

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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(seconds: float = 5.0) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    up = make_up(Path(tempfile.mkdtemp(prefix="bench-canvas-")))
    up.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            key = json.dumps(up.admin_key)
            context.add_init_script(f"localStorage.setItem('swarmstation.api_key', {key})")
            page = context.new_page()
            page.goto(f"{up.url}/sandbox?bench=200x250")
            page.wait_for_function("() => window.__canvasReady === true", timeout=60_000)
            nodes = page.locator(".react-flow__node").count()
            edges = page.locator(".react-flow__edge").count()
            box = page.get_by_test_id("canvas").bounding_box()
            assert box
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.evaluate(RECORD)
            end = time.monotonic() + seconds
            step = 0
            while time.monotonic() < end:
                page.mouse.move(cx, cy)
                page.mouse.down()
                page.mouse.move(cx + (120 if step % 2 else -120), cy + 60, steps=12)
                page.mouse.up()
                page.mouse.move(cx, cy)
                for _ in range(4):
                    page.mouse.wheel(0, -120 if step % 2 else 120)
                    page.wait_for_timeout(16)
                step += 1
            page.evaluate("() => { window.__stopFrames = true; }")
            frames: list[float] = page.evaluate("() => window.__frames")
            browser.close()
    finally:
        up.cleanup()
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    return {
        "nodes": 200,
        "edges": 250,
        # only what is on screen is in the DOM (onlyRenderVisibleElements): at the start of the run
        "rendered_nodes": nodes,
        "rendered_edges": edges,
        "frames": len(gaps),
        "frame_ms_p50": round(statistics.median(gaps), 2),
        "frame_ms_p95": round(_percentile(gaps, 0.95), 2),
        "frame_ms_max": round(max(gaps), 2),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"headless Chromium (software rendering)",
    }


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)))
