// The sketch: the graph drawn on one <canvas> while the view pans and zooms (sketchLayer.ts swaps
// it in for xyflow's DOM during the motion and back when it settles). Plain TypeScript: the scene
// (node boxes, titles, ports, wires) in flow coordinates, the transform math, what is on screen
// and the drawing through a 2D context, apart from the page.

export interface View {
  x: number;
  y: number;
  zoom: number;
}

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** A port's label and where its handle's centre is, relative to the node's top left. */
export interface SketchPort {
  name: string;
  type: string;
  required: boolean;
  wired: boolean;
  y: number;
  /** the label does not fit its column: the name on one line, the type on the next */
  split: boolean;
}

export interface SketchNode {
  id: string;
  x: number;
  y: number;
  width: number;
  height: number;
  title: string[]; // lines, wrapped as the DOM wraps them
  badge: string;
  state: string; // idle | queued | running | completed | failed ...
  cost: string | null;
  selected: boolean;
  unavailable: boolean;
  progress: number | null; // while running
  images: number; // output previews shown (at most 4, two to a row)
  inputs: SketchPort[];
  outputs: SketchPort[];
  /** Whether the geometry is what xyflow measured in the DOM (else estimated from the tool). */
  measured: boolean;
}

/** A wire from an output handle's right edge to an input handle's left edge, in flow coordinates. */
export interface SketchEdge {
  id: string;
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface Scene {
  nodes: SketchNode[];
  edges: SketchEdge[];
}

/** The node card's box model (sandbox.css and styles.css), in flow pixels. */
export const CARD = {
  width: 240,
  border: 1,
  headPadding: 4,
  line: 18, // 12px text, line-height 1.5
  rowGap: 4,
  textLeft: 7, // border + head padding
  nameWidth: 226,
  portsMargin: 4,
  portRow: 20, // one line of 16px and 2px padding above and below; a wrapped label takes 36
  portLine: 16,
  portPadding: 10, // the li's left and right padding
  portsGap: 6,
  portText: 11, // border + li padding
  handle: 12,
  button: { height: 36, width: 95.4, margin: 4 },
  paddingBottom: 4,
  progress: 10, // 6px bar and its margins
  preview: 96, // thumbnails, 4px apart, two to a row, in 2px of padding
} as const;

export type Measure = (text: string, font: string) => number;

/** Text widths per font, measured once (a scene is rebuilt often, its labels rarely change). */
export function cachedMeasure(measure: Measure): Measure {
  const cache = new Map<string, number>();
  return (text, font) => {
    const key = font + '\u0000' + text;
    let w = cache.get(key);
    if (w === undefined) cache.set(key, (w = measure(text, font)));
    return w;
  };
}

/** Greedy word wrap within `width` (a word longer than the line stays whole). */
export function wrap(text: string, width: number, font: string, measure: Measure): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const next = line ? `${line} ${word}` : word;
    if (line && measure(next, font) > width) {
      lines.push(line);
      line = word;
    } else line = next;
  }
  if (line || !lines.length) lines.push(line);
  return lines;
}

/** What the scene needs of a port. */
export interface PortInfo {
  name: string;
  type: string;
  required?: boolean;
}

/** A handle as xyflow measured it (relative to its node). */
export interface HandleBox {
  id?: string | null;
  x: number;
  y: number;
  width: number;
  height: number;
}

/** A node as the scene reads it from xyflow: position, what it shows, what was measured. */
export interface FlowNodeLike {
  id: string;
  position: { x: number; y: number };
  selected?: boolean;
  measured?: { width?: number; height?: number };
  handles?: { source?: HandleBox[] | null; target?: HandleBox[] | null };
  title: string;
  inputs: PortInfo[];
  outputs: PortInfo[];
  wired: string[];
  state?: string;
  progress?: number;
  images?: number;
  cost?: number;
  unavailable?: boolean;
}

export interface FlowEdgeLike {
  id: string;
  source: string;
  sourceHandle?: string | null;
  target: string;
  targetHandle?: string | null;
}

export const FONTS = { title: 'bold 12px', text: '12px', badge: '10.2px', button: '11px' } as const;

/** Where the ports of an unmeasured node are: the DOM's layout, each port's row 20px high (36
 * when its label wraps). Returns the first row's top, each row's centre and the card's height. */
export function estimateLayout(
  titleLines: number,
  inputs: boolean[],
  outputs: boolean[],
  extra = 0,
): { portsTop: number; inputs: number[]; outputs: number[]; height: number } {
  const headBottom = CARD.border + 2 * CARD.headPadding + CARD.line * (titleLines + 1) + CARD.rowGap + CARD.border;
  const portsTop = headBottom + CARD.portsMargin;
  const rows = (split: boolean[]) => {
    let y = portsTop;
    const centres = split.map((two) => {
      const h = CARD.portRow + (two ? CARD.portLine : 0);
      y += h;
      return y - h / 2;
    });
    return { centres, height: y - portsTop };
  };
  const ins = rows(inputs);
  const outs = rows(outputs);
  const buttonTop = portsTop + Math.max(ins.height, outs.height) + CARD.portsMargin + extra + CARD.button.margin;
  return { portsTop, inputs: ins.centres, outputs: outs.centres, height: buttonTop + CARD.button.height + CARD.paddingBottom + CARD.border };
}

/** Which port labels wrap: the two port lists share the card's width as flex items do (each
 * as wide as its longest label, both shrunk in proportion when they do not fit together). */
export function splitLabels(inputs: string[], outputs: string[], font: string, measure: Measure): { inputs: boolean[]; outputs: boolean[] } {
  const pad = 2 * CARD.portPadding;
  const widths = (labels: string[]) => labels.map((l) => measure(l, font));
  const iw = widths(inputs);
  const ow = widths(outputs);
  const ib = iw.length ? pad + Math.max(...iw) : 0;
  const ob = ow.length ? pad + Math.max(...ow) : 0;
  const room = CARD.width - 2 * CARD.border - CARD.portsGap;
  const k = ib + ob > room ? room / (ib + ob) : 1;
  const fits = (w: number, basis: number) => w <= basis * k - pad + 0.5;
  return { inputs: iw.map((w) => !fits(w, ib)), outputs: ow.map((w) => !fits(w, ob)) };
}

/** The previews' block: rows of two 96px thumbnails, 4px apart, in 2px of padding. */
export function previewsHeight(images: number): number {
  const rows = Math.ceil(images / 2);
  return rows ? 4 + rows * CARD.preview + (rows - 1) * 4 : 0;
}

/** Where the i-th of `images` previews is in a card of `height` (they sit right above the button). */
export function previewBox(height: number, images: number, i: number): { x: number; y: number } {
  const top = height - CARD.border - CARD.paddingBottom - CARD.button.height - CARD.button.margin - previewsHeight(images) + 2;
  return { x: CARD.border + 6 + (i % 2) * (CARD.preview + 4), y: top + Math.floor(i / 2) * (CARD.preview + 4) };
}

/** A port's label as ToolNode writes it: "name*: " and the type. */
function inputLabel(p: PortInfo): [string, string] {
  return [`${p.name}${p.required ? '*' : ''}: `, p.type];
}

const IN = 'in:';
const OUT = 'out:';

/** The scene for a graph as xyflow holds it; `font` is the page's font family. */
export function buildScene(nodes: Iterable<FlowNodeLike>, edges: Iterable<FlowEdgeLike>, measure: Measure, font = 'sans-serif'): Scene {
  const out: SketchNode[] = [];
  const byId = new Map<string, SketchNode>();
  for (const n of nodes) {
    const title = wrap(n.title, CARD.nameWidth, `${FONTS.title} ${font}`, measure);
    const running = n.state === 'running';
    const images = Math.min(4, n.images ?? 0);
    const extra = (running ? CARD.progress : 0) + previewsHeight(images);
    const labelFont = `${FONTS.text} ${font}`;
    const split = splitLabels(n.inputs.map(inputLabel).map((l) => l.join('')), n.outputs.map((p) => `${p.name}: ${p.type}`), labelFont, measure);
    const est = estimateLayout(title.length, split.inputs, split.outputs, extra);
    const width = n.measured?.width ?? CARD.width;
    const height = n.measured?.height ?? est.height;
    const measured = !!(n.measured?.height && n.handles);
    const handleY = (list: HandleBox[] | null | undefined, id: string, estimate: number): number => {
      const h = list?.find((b) => b.id === id);
      return h ? h.y + h.height / 2 : estimate;
    };
    const wired = new Set(n.wired);
    const node: SketchNode = {
      id: n.id,
      x: n.position.x,
      y: n.position.y,
      width,
      height,
      title,
      badge: n.state ?? (n.unavailable ? 'unavailable' : 'idle'),
      state: n.state ?? 'idle',
      cost: n.cost !== undefined ? `${n.cost} cr` : null,
      selected: !!n.selected,
      unavailable: !!n.unavailable,
      progress: running ? (n.progress ?? 0) : null,
      images,
      inputs: n.inputs.map((p, i) => ({
        name: p.name,
        type: p.type,
        required: !!p.required,
        wired: wired.has(p.name),
        y: handleY(n.handles?.target, IN + p.name, est.inputs[i]),
        split: split.inputs[i],
      })),
      outputs: n.outputs.map((p, i) => ({
        name: p.name,
        type: p.type,
        required: false,
        wired: false,
        y: handleY(n.handles?.source, OUT + p.name, est.outputs[i]),
        split: split.outputs[i],
      })),
      measured,
    };
    out.push(node);
    byId.set(n.id, node);
  }
  const wires: SketchEdge[] = [];
  const half = CARD.handle / 2;
  for (const e of edges) {
    const s = byId.get(e.source);
    const t = byId.get(e.target);
    const sp = s?.outputs.find((p) => OUT + p.name === e.sourceHandle);
    const tp = t?.inputs.find((p) => IN + p.name === e.targetHandle);
    if (!s || !t || !sp || !tp) continue;
    // xyflow's handles stick out half their width past the card's border
    wires.push({ id: e.id, x1: s.x + s.width + half - CARD.border, y1: s.y + sp.y, x2: t.x - half + CARD.border, y2: t.y + tp.y });
  }
  return { nodes: out, edges: wires };
}

/** The flow rectangle a view of `width` x `height` screen pixels shows. */
export function visibleRect(view: View, width: number, height: number): Rect {
  return { x: -view.x / view.zoom, y: -view.y / view.zoom, width: width / view.zoom, height: height / view.zoom };
}

export function toScreen(view: View, p: { x: number; y: number }): { x: number; y: number } {
  return { x: p.x * view.zoom + view.x, y: p.y * view.zoom + view.y };
}

export function toFlow(view: View, p: { x: number; y: number }): { x: number; y: number } {
  return { x: (p.x - view.x) / view.zoom, y: (p.y - view.y) / view.zoom };
}

/** The 2D context's transform for a view: flow coordinates to device pixels. */
export function viewMatrix(view: View, dpr: number): [number, number, number, number, number, number] {
  return [view.zoom * dpr, 0, 0, view.zoom * dpr, view.x * dpr, view.y * dpr];
}

/** xyflow's default bezier (curvature 0.25) from a right-side handle to a left-side one: its two
 * control points. */
export function bezierControls(e: Pick<SketchEdge, 'x1' | 'y1' | 'x2' | 'y2'>): [number, number, number, number] {
  const d = e.x2 - e.x1;
  const offset = d >= 0 ? 0.5 * d : 0.25 * 25 * Math.sqrt(-d);
  return [e.x1 + offset, e.y1, e.x2 - offset, e.y2];
}

/** A box holding the whole curve (a bezier lies within its control points' hull). */
export function edgeBounds(e: SketchEdge): Rect {
  const [c1x, , c2x] = bezierControls(e);
  const x = Math.min(e.x1, e.x2, c1x, c2x);
  const y = Math.min(e.y1, e.y2);
  return { x, y, width: Math.max(e.x1, e.x2, c1x, c2x) - x, height: Math.max(e.y1, e.y2) - y };
}

export function intersects(a: Rect, b: Rect): boolean {
  return a.x <= b.x + b.width && b.x <= a.x + a.width && a.y <= b.y + b.height && b.y <= a.y + a.height;
}

/** What of the scene is on screen (the handles stick out of a card by half their width). */
export function cull(scene: Scene, rect: Rect): Scene {
  const m = CARD.handle;
  return {
    nodes: scene.nodes.filter((n) => intersects(rect, { x: n.x - m, y: n.y - m, width: n.width + 2 * m, height: n.height + 2 * m })),
    edges: scene.edges.filter((e) => intersects(rect, edgeBounds(e))),
  };
}

/** How much to draw at a zoom: text when its 12px reach `minTextPx` on screen, else grey bars where
 * the text is (as unreadable as the DOM's text would be, and a fraction of its cost). */
export function detail(zoom: number, minTextPx = 5): 'text' | 'bars' {
  return 12 * zoom >= minTextPx ? 'text' : 'bars';
}

/** xyflow's <Background /> (dots, gap 20, size 1): where the first dot is on screen, the period and
 * the dot's radius, in CSS pixels. */
export function dotGrid(view: View, gap = 20, size = 1): { x0: number; y0: number; period: number; radius: number } {
  const period = gap * view.zoom || 1;
  const radius = (size * view.zoom) / 2;
  const mod = (a: number, b: number) => ((a % b) + b) % b;
  // the pattern starts at x % period, shifted back by half a period, with the dot at its radius
  return { x0: mod(view.x - period / 2 + radius, period), y0: mod(view.y - period / 2 + radius, period), period, radius };
}

export interface Theme {
  background: string;
  dots: string;
  edge: string;
  card: string;
  line: string;
  accent: string;
  accentInk: string;
  ink: string;
  muted: string;
  badge: string;
  ok: string;
  warn: string;
  bad: string;
  font: string;
  mono: string;
}

export const DEFAULT_THEME: Theme = {
  background: '#ffffff',
  dots: '#91919a',
  edge: '#b1b1b7',
  card: '#ffffff',
  line: '#d9dae3',
  accent: '#4b3fd6',
  accentInk: '#ffffff',
  ink: '#1b1b29',
  muted: '#55586b',
  badge: '#e6e7f2',
  ok: '#16704f',
  warn: '#8a5200',
  bad: '#b3261e',
  font: 'system-ui, sans-serif',
  mono: 'monospace',
};

/** The part of CanvasRenderingContext2D the sketch uses (a test can record the calls). */
export type Ctx = Pick<
  CanvasRenderingContext2D,
  | 'setTransform'
  | 'fillRect'
  | 'beginPath'
  | 'moveTo'
  | 'lineTo'
  | 'bezierCurveTo'
  | 'rect'
  | 'roundRect'
  | 'arc'
  | 'fill'
  | 'stroke'
  | 'fillText'
  | 'drawImage'
  | 'measureText'
> & {
  fillStyle: CanvasRenderingContext2D['fillStyle'];
  strokeStyle: CanvasRenderingContext2D['strokeStyle'];
  lineWidth: number;
  font: string;
  textAlign: CanvasTextAlign;
  textBaseline: CanvasTextBaseline;
  globalAlpha: number;
};

export interface DrawStats {
  nodes: number;
  edges: number;
  detail: 'text' | 'bars';
}

const stateColour = (t: Theme, state: string): string | null =>
  state === 'completed' ? t.ok : state === 'failed' ? t.bad : state === 'running' ? t.warn : null;

/** Draws what of `scene` is on screen at `view` onto a canvas of `width` x `height` CSS pixels:
 * the wires, then card after card in the DOM's order (a later card covers an earlier one where they
 * overlap). The background is left to the caller (drawn first, e.g. with `dotGrid`). */
export function drawScene(
  ctx: Ctx,
  scene: Scene,
  view: View,
  size: { width: number; height: number; dpr: number },
  theme: Theme,
  measure: Measure,
  options: { minTextPx?: number; previews?: (nodeId: string) => CanvasImageSource[] | undefined } = {},
): DrawStats {
  const seen = cull(scene, visibleRect(view, size.width, size.height));
  const level = detail(view.zoom, options.minTextPx);
  ctx.setTransform(...viewMatrix(view, size.dpr));

  // wires under the cards, in one path (xyflow's strokes are 1 flow pixel: they scale with the view)
  ctx.beginPath();
  for (const e of seen.edges) {
    const [c1x, c1y, c2x, c2y] = bezierControls(e);
    ctx.moveTo(e.x1, e.y1);
    ctx.bezierCurveTo(c1x, c1y, c2x, c2y, e.x2, e.y2);
  }
  ctx.strokeStyle = theme.edge;
  ctx.lineWidth = 1;
  ctx.stroke();

  const fonts = fontsOf(theme);
  for (const n of seen.nodes) {
    ctx.globalAlpha = n.unavailable ? 0.75 : 1;
    drawCard(ctx, n, theme);
    if (n.images) drawPreviews(ctx, n, options.previews?.(n.id));
    if (level === 'text') drawText(ctx, n, theme, fonts, measure);
    else drawBars(ctx, n, theme, fonts, measure);
  }
  ctx.globalAlpha = 1;
  return { nodes: seen.nodes.length, edges: seen.edges.length, detail: level };
}

function headBottom(n: SketchNode): number {
  return CARD.border + 2 * CARD.headPadding + CARD.line * (n.title.length + 1) + CARD.rowGap + CARD.border;
}

function buttonTop(n: SketchNode): number {
  return n.height - CARD.border - CARD.paddingBottom - CARD.button.height;
}

function portLabel(p: SketchPort): [string, string] {
  return inputLabel(p);
}

interface Fonts {
  title: string;
  text: string;
  mono: string;
  badge: string;
  cost: string;
  button: string;
}

function fontsOf(t: Theme): Fonts {
  return {
    title: `${FONTS.title} ${t.font}`,
    text: `${FONTS.text} ${t.font}`,
    mono: `${FONTS.text} ${t.mono}`,
    badge: `${FONTS.badge} ${t.font}`,
    cost: `bold ${FONTS.text} ${t.font}`,
    button: `${FONTS.button} ${t.font}`,
  };
}

const RADIUS = 8;

/** The card: its box and border (by state, or the selection ring), the head's rule, the progress
 * bar, the "run up to here" button and the port handles. */
function drawCard(ctx: Ctx, n: SketchNode, t: Theme): void {
  ctx.beginPath();
  ctx.roundRect(n.x, n.y, n.width, n.height, RADIUS);
  ctx.fillStyle = t.card;
  ctx.fill();
  ctx.beginPath();
  ctx.roundRect(n.x + 0.5, n.y + 0.5, n.width - 1, n.height - 1, RADIUS);
  ctx.strokeStyle = n.selected ? t.accent : (stateColour(t, n.state) ?? t.line);
  ctx.lineWidth = n.selected ? 3 : 1;
  ctx.stroke();
  ctx.lineWidth = 1;
  ctx.beginPath();
  const rule = n.y + headBottom(n) - 0.5;
  ctx.moveTo(n.x + 1, rule);
  ctx.lineTo(n.x + n.width - 1, rule);
  ctx.strokeStyle = t.line;
  ctx.stroke();
  if (n.progress !== null) {
    ctx.fillStyle = t.warn;
    ctx.fillRect(n.x + 6, n.y + headBottom(n) + 2, (n.width - 12) * n.progress, 6);
  }
  ctx.beginPath();
  ctx.roundRect(n.x + CARD.textLeft, n.y + buttonTop(n), CARD.button.width, CARD.button.height, RADIUS);
  ctx.fillStyle = t.accent;
  ctx.fill();
  // handles, centred on the card's border as the DOM's are
  const r = CARD.handle / 2;
  ctx.fillStyle = t.accent;
  ctx.beginPath();
  for (const p of n.inputs) {
    ctx.moveTo(n.x + CARD.border + r, n.y + p.y);
    ctx.arc(n.x + CARD.border, n.y + p.y, r, 0, 2 * Math.PI);
  }
  for (const p of n.outputs) {
    ctx.moveTo(n.x + n.width - CARD.border + r, n.y + p.y);
    ctx.arc(n.x + n.width - CARD.border, n.y + p.y, r, 0, 2 * Math.PI);
  }
  ctx.fill();
}

/** The output previews: the DOM's thumbnails where they are loaded (cropped to a square as
 * object-fit: cover does), else grey squares. */
function drawPreviews(ctx: Ctx, n: SketchNode, images: CanvasImageSource[] | undefined): void {
  const side = CARD.preview;
  for (let i = 0; i < n.images; i++) {
    const at = previewBox(n.height, n.images, i);
    const img = images?.[i];
    const w = img ? Number((img as HTMLImageElement).naturalWidth ?? (img as { width?: number }).width ?? 0) : 0;
    const h = img ? Number((img as HTMLImageElement).naturalHeight ?? (img as { height?: number }).height ?? 0) : 0;
    if (img && w > 0 && h > 0) {
      const crop = Math.min(w, h);
      ctx.drawImage(img, (w - crop) / 2, (h - crop) / 2, crop, crop, n.x + at.x, n.y + at.y, side, side);
    } else {
      ctx.fillStyle = '#eef0f6';
      ctx.fillRect(n.x + at.x, n.y + at.y, side, side);
    }
  }
}

/** The text a card shows, in the same places as the DOM. */
function drawText(ctx: Ctx, n: SketchNode, t: Theme, f: Fonts, measure: Measure): void {
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'left';
  ctx.font = f.title;
  ctx.fillStyle = t.ink;
  n.title.forEach((line, i) => ctx.fillText(line, n.x + CARD.textLeft, n.y + 5 + CARD.line * i + CARD.line / 2));
  // the id, the state badge and the cost on the row below the title
  const row = n.y + 5 + CARD.line * n.title.length + CARD.rowGap + CARD.line / 2;
  ctx.font = f.mono;
  ctx.fillStyle = t.muted;
  ctx.fillText(n.id, n.x + CARD.textLeft, row);
  const badgeX = n.x + CARD.textLeft + measure(n.id, f.mono) + 4;
  ctx.beginPath();
  ctx.roundRect(badgeX, row - 7.65, measure(n.badge, f.badge) + 17, 15.3, 7.65);
  ctx.fillStyle = t.badge;
  ctx.fill();
  ctx.font = f.badge;
  ctx.fillStyle = t.ink;
  ctx.fillText(n.badge, badgeX + 8.5, row);
  if (n.cost) {
    ctx.font = f.cost;
    ctx.textAlign = 'right';
    ctx.fillText(n.cost, n.x + n.width - CARD.textLeft, row);
    ctx.textAlign = 'left';
  }
  // ports: "name*: " then the type, muted; the outputs against the right edge
  ctx.font = f.text;
  const half = CARD.portLine / 2;
  for (const p of n.inputs) {
    const [name, type] = portLabel(p);
    const x = n.x + CARD.portText;
    const y = n.y + p.y;
    ctx.fillStyle = p.wired ? t.accent : t.ink;
    ctx.fillText(p.split ? name.trimEnd() : name, x, p.split ? y - half : y);
    ctx.fillStyle = t.muted;
    ctx.fillText(type, p.split ? x : x + measure(name, f.text), p.split ? y + half : y);
  }
  ctx.textAlign = 'right';
  for (const p of n.outputs) {
    const name = `${p.name}: `;
    const right = n.x + n.width - CARD.portText;
    const y = n.y + p.y;
    ctx.fillStyle = t.muted;
    ctx.fillText(p.type, right, p.split ? y + half : y);
    ctx.fillStyle = t.ink;
    ctx.fillText(p.split ? name.trimEnd() : name, p.split ? right : right - measure(p.type, f.text), p.split ? y - half : y);
  }
  ctx.textAlign = 'left';
  ctx.font = f.button;
  ctx.fillStyle = t.accentInk;
  ctx.fillText('Run up to here', n.x + CARD.textLeft + 8, n.y + buttonTop(n) + CARD.button.height / 2);
}

/** Where the text would be, as bars (one path, one fill). */
function drawBars(ctx: Ctx, n: SketchNode, t: Theme, f: Fonts, measure: Measure): void {
  ctx.beginPath();
  n.title.forEach((line, i) => ctx.rect(n.x + CARD.textLeft, n.y + 9 + CARD.line * i, Math.min(measure(line, f.title), CARD.nameWidth), 9));
  ctx.rect(n.x + CARD.textLeft, n.y + 9 + CARD.line * n.title.length + CARD.rowGap, measure(n.id, f.mono) + measure(n.badge, f.badge) + 21, 9);
  const bar = (left: boolean, p: SketchPort, label: [string, string]) => {
    const lines = p.split ? [label[0].trimEnd(), label[1]] : [label.join('')];
    lines.forEach((l, i) => {
      const w = measure(l, f.text);
      const y = n.y + p.y - 4 + (p.split ? (i ? 1 : -1) * (CARD.portLine / 2) : 0);
      ctx.rect(left ? n.x + CARD.portText : n.x + n.width - CARD.portText - w, y, w, 8);
    });
  };
  for (const p of n.inputs) bar(true, p, portLabel(p));
  for (const p of n.outputs) bar(false, p, [`${p.name}: `, p.type]);
  const alpha = ctx.globalAlpha;
  ctx.fillStyle = t.muted;
  ctx.globalAlpha = alpha * 0.45;
  ctx.fill();
  ctx.globalAlpha = alpha;
}
