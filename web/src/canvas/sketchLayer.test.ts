import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createSketchLayer, type FlowStore } from './sketchLayer';

// jsdom has no 2D canvas: a context that draws nothing
function stubContext(): unknown {
  return new Proxy(
    {},
    {
      get: (_, key) =>
        key === 'measureText'
          ? (t: string) => ({ width: t.length * 6 })
          : key === 'createPattern'
            ? () => ({ setTransform() {} })
            : () => undefined,
      set: () => true,
    },
  );
}

interface Fake {
  transforms: number[][];
  connecting: boolean;
}

function setup(idleMs = 200) {
  const fake: Fake = { transforms: [], connecting: false };
  const store = {
    getState: () => ({ connection: { inProgress: fake.connecting }, nodes: [], edges: [], nodeLookup: new Map() }),
    setState: (s: { transform: number[] }) => void fake.transforms.push(s.transform),
  } as unknown as FlowStore;
  const wrapper = document.createElement('div');
  wrapper.className = 'sandbox-canvas';
  const flow = document.createElement('div');
  flow.className = 'react-flow';
  const canvas = document.createElement('canvas');
  flow.append(canvas);
  wrapper.append(flow);
  document.body.append(wrapper);
  const layer = createSketchLayer(store, { current: canvas }, { current: wrapper }, idleMs);
  return { fake, layer, wrapper, frame: () => vi.advanceTimersToNextFrame() };
}

const wheel = new Event('wheel');
const mousedown = new Event('mousedown');

describe('the sketch layer', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'requestAnimationFrame', 'cancelAnimationFrame', 'performance'] });
    vi.spyOn(HTMLCanvasElement.prototype, 'getContext').mockImplementation(stubContext as never);
    if (!('DOMMatrix' in globalThis)) vi.stubGlobal('DOMMatrix', class {});
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
    vi.unstubAllGlobals();
    document.body.replaceChildren();
  });

  it("draws a person's pan and hands the view to the DOM once it has settled", () => {
    const { fake, layer, wrapper, frame } = setup();
    layer.onMoveStart(mousedown);
    for (let i = 1; i <= 5; i++) {
      layer.onViewportChange({ x: 10 * i, y: 0, zoom: 1 });
      frame();
    }
    expect(layer.stats.frames).toBe(5);
    expect(wrapper.classList.contains('sketching')).toBe(true);
    expect(fake.transforms).toEqual([]);
    layer.onMoveEnd();
    vi.advanceTimersByTime(150);
    expect(fake.transforms).toEqual([]);
    // 200 ms after the last change (one frame and 150 ms ago)
    let waited = 150;
    while (!fake.transforms.length && waited < 400) vi.advanceTimersByTime(1), waited++;
    expect(waited).toBeGreaterThanOrEqual(184);
    expect(waited).toBeLessThanOrEqual(186);
    expect(fake.transforms).toEqual([[50, 0, 1]]);
    expect(wrapper.classList.contains('sketching')).toBe(false);
    expect(layer.stats.restores).toBe(1);
    // the sketch stays under the DOM for two frames while new cards are measured
    expect(wrapper.classList.contains('sketch-shown')).toBe(true);
    frame();
    frame();
    expect(wrapper.classList.contains('sketch-shown')).toBe(false);
  });

  it('keeps sketching through overlapping gestures: a drag begun while the wheel gesture ends', () => {
    const { fake, layer, frame } = setup();
    layer.onMoveStart(wheel);
    layer.onViewportChange({ x: 0, y: 0, zoom: 0.8 });
    frame();
    layer.onMoveStart(mousedown); // d3 starts a second gesture for the drag
    vi.advanceTimersByTime(150);
    layer.onMoveEnd(); // the wheel's end, 150 ms after its last step
    layer.onViewportChange({ x: 5, y: 0, zoom: 0.8 });
    frame();
    // the drag held still for a while: no hand-over while the button is down
    vi.advanceTimersByTime(1000);
    expect(fake.transforms).toEqual([]);
    layer.onMoveEnd();
    vi.advanceTimersByTime(250);
    expect(fake.transforms).toEqual([[5, 0, 0.8]]);
  });

  it('hands changes without an input event straight to the DOM', () => {
    const { fake, layer, wrapper, frame } = setup();
    layer.onMoveStart(null); // the page setting the view, the zoom buttons
    layer.onViewportChange({ x: 1, y: 2, zoom: 0.5 });
    layer.onMoveEnd();
    frame();
    expect(fake.transforms).toEqual([[1, 2, 0.5]]);
    expect(layer.stats.frames).toBe(0);
    expect(wrapper.classList.contains('sketching')).toBe(false);
  });

  it('leaves the view to the DOM while a wire is dragged', () => {
    const { fake, layer } = setup();
    fake.connecting = true;
    layer.onMoveStart(mousedown);
    layer.onViewportChange({ x: 3, y: 0, zoom: 1 });
    expect(fake.transforms).toEqual([[3, 0, 1]]);
  });

  it('settles at once when asked (before a position is read off the screen)', () => {
    const { fake, layer, wrapper, frame } = setup();
    layer.onMoveStart(wheel);
    layer.onViewportChange({ x: 0, y: 0, zoom: 2 });
    frame();
    layer.settle();
    expect(fake.transforms).toEqual([[0, 0, 2]]);
    expect(wrapper.classList.contains('sketching')).toBe(false);
    expect(layer.view()).toEqual({ x: 0, y: 0, zoom: 2 });
  });

  it('gives the focus back to the card that had it', () => {
    const { layer, wrapper, frame } = setup();
    const viewport = document.createElement('div');
    viewport.className = 'react-flow__viewport';
    const button = document.createElement('button');
    viewport.append(button);
    wrapper.append(viewport);
    button.focus();
    layer.onMoveStart(wheel);
    layer.onViewportChange({ x: 0, y: 0, zoom: 0.7 });
    frame();
    button.blur(); // what content-visibility: hidden does to it
    layer.onMoveEnd();
    vi.advanceTimersByTime(250);
    expect(document.activeElement).toBe(button);
  });
});
