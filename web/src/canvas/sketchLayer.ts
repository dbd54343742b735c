// The moving view: while the canvas pans or zooms, the graph is drawn on one <canvas> (sketch.ts)
// and xyflow's DOM is hidden and left as it was; when the motion settles the DOM takes the view
// (one re-render, the nodes that came on screen mounted) and is shown again.
//
// xyflow runs with a controlled viewport (ReactFlow's `viewport` prop, never changed), so its pan
// and zoom (d3-zoom) report each view here instead of re-rendering the viewport, its nodes and
// wires on every frame. A view reaches xyflow's store
//  - once the motion has settled (no gesture in progress and `idleMs` without a change) when a
//    person pans or zooms: drags on the pane, the wheel, pinches;
//  - at once when the change has no input event behind it (the page opening a graph, the zoom
//    buttons, focusing a node) or while a wire or a node is dragged (xyflow pans under the pointer
//    near the edge, and draws the drag in the DOM).
// While the sketch shows, the cards cannot be pressed (a press there pans), hovered or focused; what
// had the focus gets it back with the DOM.
import { useStoreApi, type Edge, type InternalNode } from '@xyflow/react';
import { useEffect, useMemo, useRef } from 'preact/hooks';
import type { RefObject } from 'preact';
import {
  buildScene,
  cachedMeasure,
  DEFAULT_THEME,
  dotGrid,
  drawScene,
  type DrawStats,
  type FlowNodeLike,
  type Measure,
  type Scene,
  type Theme,
  type View,
} from './sketch';
import type { ToolFlowNode } from './ToolNode';

/** The `viewport` prop that makes xyflow's viewport controlled (one object: it is never changed). */
export const CONTROLLED_VIEWPORT: View = Object.freeze({ x: 0, y: 0, zoom: 1 }) as View;

export interface SketchStats {
  /** frames drawn on the canvas */
  frames: number;
  /** times the DOM took the view back after a motion */
  restores: number;
  last: DrawStats | null;
}

export interface SketchLayer {
  canvas: RefObject<HTMLCanvasElement | null>;
  onViewportChange: (vp: View) => void;
  onMoveStart: (event: unknown) => void;
  onMoveEnd: () => void;
  /** The DOM takes the live view now (before reading positions off the screen). */
  settle: () => void;
  /** The view as the user sees it. */
  view: () => View;
  stats: SketchStats;
}

function flowNode(n: InternalNode<ToolFlowNode>): FlowNodeLike {
  const { data } = n;
  return {
    id: n.id,
    position: n.internals.positionAbsolute,
    selected: n.selected,
    measured: n.measured,
    handles: n.internals.handleBounds,
    title: data.tool?.name ?? data.slug,
    inputs: data.tool?.inputs ?? [],
    outputs: data.tool?.outputs ?? [],
    wired: data.wired ? data.wired.split(',') : [],
    state: data.status?.state,
    progress: data.status?.progress,
    images: data.status?.images.length,
    cost: data.cost,
    unavailable: data.tool?.available === false,
  };
}

function readTheme(el: HTMLElement): Theme {
  const css = getComputedStyle(el);
  const v = (name: string, fallback: string) => css.getPropertyValue(name).trim() || fallback;
  const flow = el.querySelector<HTMLElement>('.react-flow');
  const fcss = flow ? getComputedStyle(flow) : css;
  const f = (name: string, fallback: string) => fcss.getPropertyValue(name).trim() || fallback;
  const d = DEFAULT_THEME;
  return {
    background: css.backgroundColor || v('--panel', d.background),
    dots: f('--xy-background-pattern-dots-color-default', d.dots),
    edge: f('--xy-edge-stroke-default', d.edge),
    card: v('--ss-node-bg', v('--panel', d.card)),
    line: v('--ss-node-line', v('--line', d.line)),
    accent: v('--accent', d.accent),
    accentInk: v('--accent-ink', d.accentInk),
    ink: v('--ink', d.ink),
    muted: v('--muted', d.muted),
    badge: d.badge,
    ok: v('--ok', d.ok),
    warn: v('--warn', d.warn),
    bad: v('--bad', d.bad),
    font: css.fontFamily || d.font,
    mono: v('--mono', d.mono),
  };
}

/** The dot grid of xyflow's <Background />: one opaque tile (the background and a dot) repeated,
 * scaled to the exact period so that the dots stay where the DOM draws them. */
function drawBackground(ctx: CanvasRenderingContext2D, view: View, width: number, height: number, dpr: number, theme: Theme, tiles: Map<string, CanvasPattern>): void {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  const g = dotGrid(view);
  const period = g.period * dpr;
  const size = Math.max(2, Math.round(period));
  const scale = period / size;
  const radius = (g.radius * dpr) / scale;
  const key = `${size}:${radius.toFixed(2)}`;
  let pattern = tiles.get(key);
  if (!pattern) {
    const tile = document.createElement('canvas');
    tile.width = tile.height = size;
    const t = tile.getContext('2d');
    if (!t) return;
    t.fillStyle = theme.background;
    t.fillRect(0, 0, size, size);
    t.fillStyle = theme.dots;
    t.beginPath();
    t.arc(size / 2, size / 2, Math.max(radius, 0.1), 0, 2 * Math.PI);
    t.fill();
    pattern = ctx.createPattern(tile, 'repeat') ?? undefined;
    if (!pattern) return;
    if (tiles.size > 64) tiles.clear();
    tiles.set(key, pattern);
  }
  pattern.setTransform(new DOMMatrix([scale, 0, 0, scale, g.x0 * dpr - (size / 2) * scale, g.y0 * dpr - (size / 2) * scale]));
  ctx.fillStyle = pattern;
  ctx.fillRect(0, 0, width * dpr, height * dpr);
}

/** What the layer needs of xyflow's store (useStoreApi). */
export type FlowStore = Pick<ReturnType<typeof useStoreApi<ToolFlowNode, Edge>>, 'getState' | 'setState'>;

export type SketchController = SketchLayer & { redraw: () => void; dispose: () => void };

/** The layer's state machine, apart from Preact (useSketchLayer wires it to the page). */
export function createSketchLayer(
  store: FlowStore,
  canvas: RefObject<HTMLCanvasElement | null>,
  wrapper: RefObject<HTMLElement | null>,
  idleMs = 200,
): SketchController {
  let live: View = { ...CONTROLLED_VIEWPORT };
  let sketching = false; // the canvas shows the view, the DOM is hidden
  // pans and zooms in progress (d3-zoom's start .. end; they overlap: a drag that starts within
  // 150 ms of the last wheel step is a second gesture, and the wheel's ends during the drag)
  let gestures = 0;
  let byPerson = false; // one of them started by an input event
  let focused: HTMLElement | null = null;
  let frame = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastChange = 0;
  let scene: Scene | null = null;
  let sceneOf: { nodes: unknown; edges: unknown } = { nodes: null, edges: null };
  let theme: Theme = DEFAULT_THEME;
  let size = { width: 0, height: 0, dpr: 1 };
  let measure: Measure = cachedMeasure((t) => t.length * 6.5);
  let measuring = false;
  const tiles = new Map<string, CanvasPattern>();
  // the output previews the cards on screen have loaded, by node
  let previews = new Map<string, HTMLImageElement[]>();
  const stats: SketchStats = { frames: 0, restores: 0, last: null };

  const apply = (vp: View) => store.setState({ transform: [vp.x, vp.y, vp.zoom] });

  const currentScene = (): Scene => {
    const s = store.getState();
    if (!scene || sceneOf.nodes !== s.nodes || sceneOf.edges !== s.edges) {
      const nodes: FlowNodeLike[] = [];
      for (const n of s.nodeLookup.values()) if (!n.hidden) nodes.push(flowNode(n));
      scene = buildScene(nodes, s.edges, measure, theme.font);
      sceneOf = { nodes: s.nodes, edges: s.edges };
    }
    return scene;
  };

  const begin = (): boolean => {
    const el = wrapper.current;
    const c = canvas.current;
    if (!el || !c) return false;
    const dpr = window.devicePixelRatio || 1;
    const width = c.clientWidth;
    const height = c.clientHeight;
    if (width !== size.width || height !== size.height || dpr !== size.dpr) {
      c.width = Math.round(width * dpr);
      c.height = Math.round(height * dpr);
      size = { width, height, dpr };
    }
    previews = new Map();
    for (const img of el.querySelectorAll<HTMLImageElement>('img.tool-node-preview')) {
      const id = img.closest('.react-flow__node')?.getAttribute('data-id');
      if (id && img.complete && img.naturalWidth) previews.set(id, [...(previews.get(id) ?? []), img]);
    }
    const next = readTheme(el);
    if (next.font !== theme.font || next.background !== theme.background) tiles.clear();
    if (next.font !== theme.font) scene = null;
    theme = next;
    const m = measuring ? null : document.createElement('canvas').getContext('2d');
    if (m) {
      measuring = true;
      scene = null;
      measure = cachedMeasure((text, font) => {
        m.font = font;
        return m.measureText(text).width;
      });
    }
    return true;
  };

  const draw = () => {
    frame = 0;
    if (!sketching) return;
    const el = wrapper.current;
    const c = canvas.current;
    const ctx = c?.getContext('2d', { alpha: false });
    if (!el || !c || !ctx) return;
    drawBackground(ctx, live, size.width, size.height, size.dpr, theme, tiles);
    stats.last = drawScene(ctx, currentScene(), live, size, theme, measure, { previews: (id) => previews.get(id) });
    stats.frames++;
    // shown in the frame whose view it draws; what had the focus in the DOM loses it while the
    // DOM is skipped and gets it back when the DOM is shown
    if (!el.classList.contains('sketching')) {
      const f = document.activeElement;
      focused = f instanceof HTMLElement && f.closest('.react-flow__viewport') ? f : null;
    }
    el.classList.add('sketching', 'sketch-shown');
  };

  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(draw);
  };

  const restore = () => {
    clearTimeout(timer);
    timer = undefined;
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    if (!sketching) return;
    sketching = false;
    stats.restores++;
    apply(live);
    const el = wrapper.current;
    // the DOM over the sketch in this frame, the sketch gone in the next (a node that mounts
    // now is measured before xyflow shows it: the sketch shows it until then)
    el?.classList.remove('sketching');
    const f = focused;
    focused = null;
    if (f?.isConnected && (document.activeElement === document.body || !document.activeElement)) f.focus({ preventScroll: true });
    requestAnimationFrame(() => requestAnimationFrame(() => !sketching && el?.classList.remove('sketch-shown')));
  };

  const arm = () => {
    clearTimeout(timer);
    const wait = Math.max(0, lastChange + idleMs - performance.now());
    timer = setTimeout(() => {
      timer = undefined;
      if (!sketching) return;
      if (performance.now() - lastChange < idleMs - 1) return arm();
      // a drag held still keeps the sketch (its end settles it), up to a few seconds
      if (gestures && performance.now() - lastChange < 3000) return arm();
      restore();
    }, wait || idleMs);
  };

  const immediate = (): boolean => {
    if (!byPerson) return true;
    const s = store.getState();
    return s.connection.inProgress || s.nodes.some((n) => n.dragging);
  };

  const onViewportChange = (vp: View) => {
    live = vp;
    lastChange = performance.now();
    if (immediate()) {
      if (sketching) restore();
      apply(vp);
      return;
    }
    if (!sketching) {
      if (!begin()) return apply(vp);
      sketching = true;
    }
    schedule();
    arm();
  };

  // the scene, the text widths and the canvas's size ready before a motion starts (its first frame
  // would otherwise measure every label)
  let idle = 0;
  const prepare = () => {
    idle = 0;
    if (!sketching && begin()) currentScene();
  };
  const later = () => {
    if (idle || sketching) return;
    idle = 'requestIdleCallback' in window ? requestIdleCallback(prepare, { timeout: 1000 }) : -setTimeout(prepare, 300);
  };

  return {
    canvas,
    onViewportChange,
    onMoveStart: (event: unknown) => {
      gestures++;
      byPerson ||= !!event;
    },
    onMoveEnd: () => {
      gestures = Math.max(0, gestures - 1);
      if (!gestures) byPerson = false;
      if (sketching) arm();
    },
    settle: restore,
    view: () => live,
    stats,
    redraw: () => (sketching ? schedule() : later()),
    dispose: () => {
      clearTimeout(timer);
      if (idle > 0) cancelIdleCallback(idle);
      else if (idle < 0) clearTimeout(-idle);
      if (frame) cancelAnimationFrame(frame);
    },
  };
}

export function useSketchLayer(wrapper: RefObject<HTMLElement | null>, options: { idleMs?: number; expose?: boolean } = {}): SketchLayer {
  const store = useStoreApi<ToolFlowNode, Edge>();
  const canvas = useRef<HTMLCanvasElement>(null);
  const layer = useMemo(() => createSketchLayer(store, canvas, wrapper, options.idleMs), [store, canvas, wrapper, options.idleMs]);

  // a run's progress while the view is held still: draw the new state
  useEffect(() => store.subscribe((s, prev) => void ((s.nodes !== prev.nodes || s.edges !== prev.edges) && layer.redraw())), [store, layer]);
  useEffect(() => () => layer.dispose(), [layer]);
  useEffect(() => {
    if (!options.expose) return;
    const w = window as unknown as { __canvasView?: () => View; __canvasSketch?: SketchStats };
    w.__canvasView = layer.view;
    w.__canvasSketch = layer.stats;
  }, [layer, options.expose]);

  return layer;
}
