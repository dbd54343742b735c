// The canvas model: pure functions over CanvasGraph (no DOM, no Preact). The renderer calls
// these; every edit returns a new graph so that undo can keep snapshots.
import type {
  CanvasEdge,
  CanvasGraph,
  CanvasNode,
  ExposedInput,
  InputPort,
  OutputPort,
  PipelineWire,
  ToolInfo,
} from './types';

/** Tools by slug. */
export type Tools = Record<string, ToolInfo>;

export type Verdict = { ok: true } | { ok: false; reason: string };

/** GET /v1/tools/{slug}'s answer (the fields the canvas reads). */
export interface ToolDetailLike {
  slug: string;
  name: string;
  category: string;
  kind: string;
  available: boolean;
  description: string;
  inputs: Record<string, unknown>[];
  outputs: { name: string; type: string; many?: boolean | null; description?: string }[];
}

const num = (v: unknown): number | null => (typeof v === 'number' ? v : null);

export function toolInfo(detail: ToolDetailLike): ToolInfo {
  const inputs: InputPort[] = detail.inputs.map((raw) => ({
    name: String(raw.name),
    type: String(raw.type),
    required: raw.required === true,
    many: raw.many === true,
    default: raw.default ?? undefined,
    description: typeof raw.description === 'string' ? raw.description : undefined,
    choices: Array.isArray(raw.choices) ? raw.choices : null,
    minimum: num(raw.minimum),
    maximum: num(raw.maximum),
  }));
  const outputs: OutputPort[] = detail.outputs.map((o) => ({
    name: o.name,
    type: o.type,
    many: o.many === true,
    description: o.description,
  }));
  return {
    slug: detail.slug,
    name: detail.name,
    category: detail.category,
    kind: detail.kind,
    available: detail.available,
    description: detail.description,
    inputs,
    outputs,
  };
}

/** The server's rule (domain/tools/ports.py): the same type, or text into string. */
export function compatible(outputType: string, inputType: string): boolean {
  return outputType === inputType || (outputType === 'text' && inputType === 'string');
}

export function edgeId(e: Omit<CanvasEdge, 'id'>): string {
  return `${e.source}.${e.sourcePort}->${e.target}.${e.targetPort}`;
}

function nodeOf(graph: CanvasGraph, id: string): CanvasNode | undefined {
  return graph.nodes.find((n) => n.id === id);
}

/** Whether `from` is reachable from `start` following wires downstream. */
function reaches(graph: CanvasGraph, start: string, goal: string): boolean {
  const seen = new Set<string>();
  const todo = [start];
  while (todo.length) {
    const id = todo.pop()!;
    if (id === goal) return true;
    if (seen.has(id)) continue;
    seen.add(id);
    for (const e of graph.edges) if (e.source === id) todo.push(e.target);
  }
  return false;
}

/** Whether a wire may go from an output port to an input port, and why not. */
export function canConnect(graph: CanvasGraph, tools: Tools, edge: Omit<CanvasEdge, 'id'>): Verdict {
  if (edge.source === edge.target) return { ok: false, reason: 'a node cannot feed itself' };
  const src = nodeOf(graph, edge.source);
  const dst = nodeOf(graph, edge.target);
  if (!src || !dst) return { ok: false, reason: 'no such node' };
  const out = tools[src.tool]?.outputs.find((o) => o.name === edge.sourcePort);
  const inp = tools[dst.tool]?.inputs.find((i) => i.name === edge.targetPort);
  if (!out) return { ok: false, reason: `${src.tool} has no output '${edge.sourcePort}'` };
  if (!inp) return { ok: false, reason: `${dst.tool} has no input '${edge.targetPort}'` };
  if (!compatible(out.type, inp.type))
    return { ok: false, reason: `type mismatch: ${out.type} cannot feed ${inp.name} (${inp.type})` };
  if (out.many && !inp.many) return { ok: false, reason: `a list of ${out.type} cannot feed a single ${inp.name}` };
  // The wire form gives each input one source (a `many` input gathers a fanned-out step's
  // items through one wire), so a second wire into any input is refused.
  if (graph.edges.some((e) => e.target === edge.target && e.targetPort === edge.targetPort))
    return { ok: false, reason: `input '${inp.name}' is already wired` };
  if (reaches(graph, edge.target, edge.source)) return { ok: false, reason: 'the wire would make a cycle' };
  return { ok: true };
}

/** A fresh step id for a node of `tool` (a pipeline step id: letters, digits, _ and -). */
export function newNodeId(graph: CanvasGraph, tool: string): string {
  let base = tool.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 56);
  if (!/^[A-Za-z_]/.test(base)) base = `n_${base}`;
  const used = new Set(graph.nodes.map((n) => n.id));
  for (let i = 1; ; i++) if (!used.has(`${base}-${i}`)) return `${base}-${i}`;
}

export function addNode(
  graph: CanvasGraph,
  tool: string,
  position: { x: number; y: number },
  id: string = newNodeId(graph, tool),
): { graph: CanvasGraph; id: string } {
  const node: CanvasNode = { id, tool, position: { ...position }, values: {} };
  return { graph: { ...graph, nodes: [...graph.nodes, node] }, id };
}

export function removeNodes(graph: CanvasGraph, ids: Iterable<string>): CanvasGraph {
  const gone = new Set(ids);
  if (!gone.size) return graph;
  return {
    ...graph,
    nodes: graph.nodes.filter((n) => !gone.has(n.id)),
    edges: graph.edges.filter((e) => !gone.has(e.source) && !gone.has(e.target)),
    exposed: graph.exposed.filter((x) => !gone.has(x.node)),
  };
}

/** Add a wire if canConnect allows it; the graph unchanged (and the reason) otherwise. A wired
 * input stops being an exposed pipeline input. */
export function connect(
  graph: CanvasGraph,
  tools: Tools,
  edge: Omit<CanvasEdge, 'id'>,
): { graph: CanvasGraph; verdict: Verdict } {
  const verdict = canConnect(graph, tools, edge);
  if (!verdict.ok) return { graph, verdict };
  return {
    verdict,
    graph: {
      ...graph,
      edges: [...graph.edges, { ...edge, id: edgeId(edge) }],
      exposed: graph.exposed.filter((x) => !(x.node === edge.target && x.port === edge.targetPort)),
    },
  };
}

export function disconnect(graph: CanvasGraph, edgeIds: Iterable<string>): CanvasGraph {
  const gone = new Set(edgeIds);
  if (!gone.size) return graph;
  return { ...graph, edges: graph.edges.filter((e) => !gone.has(e.id)) };
}

/** Set (or, with undefined, clear) a node's literal value for an input port. */
export function setValue(graph: CanvasGraph, nodeId: string, port: string, value: unknown): CanvasGraph {
  return {
    ...graph,
    nodes: graph.nodes.map((n) => {
      if (n.id !== nodeId) return n;
      const values = { ...n.values };
      if (value === undefined) delete values[port];
      else values[port] = value;
      return { ...n, values };
    }),
  };
}

export function moveNodes(graph: CanvasGraph, moves: Record<string, { x: number; y: number }>): CanvasGraph {
  return {
    ...graph,
    nodes: graph.nodes.map((n) => (moves[n.id] ? { ...n, position: { ...moves[n.id] } } : n)),
  };
}

/** Expose an open input port as a pipeline input (named after the node and port), or stop. */
export function setExposed(graph: CanvasGraph, tools: Tools, nodeId: string, port: string, on: boolean): CanvasGraph {
  const rest = graph.exposed.filter((x) => !(x.node === nodeId && x.port === port));
  if (!on) return { ...graph, exposed: rest };
  const node = nodeOf(graph, nodeId);
  const inp = node && tools[node.tool]?.inputs.find((i) => i.name === port);
  if (!node || !inp) return graph;
  const used = new Set(rest.map((x) => x.name));
  let name = port;
  for (let i = 2; used.has(name); i++) name = `${port}_${i}`;
  const exposed: ExposedInput = { name, node: nodeId, port, type: inp.type };
  return { ...graph, exposed: [...rest, exposed] };
}

/** The tools (and their first input port) that a wire of `type` may feed: what a wire dropped
 * on empty canvas offers. */
export function toolsAccepting(type: string, tools: Tools, many = false): { tool: ToolInfo; port: InputPort }[] {
  const found: { tool: ToolInfo; port: InputPort }[] = [];
  for (const tool of Object.values(tools)) {
    const port = tool.inputs.find((i) => compatible(type, i.type) && (!many || i.many));
    if (port) found.push({ tool, port });
  }
  return found.sort((a, b) => a.tool.name.localeCompare(b.tool.name));
}

/** The node and every node upstream of it (what "run up to here" runs). */
export function upstreamOf(graph: CanvasGraph, nodeId: string): Set<string> {
  const seen = new Set<string>();
  const todo = [nodeId];
  while (todo.length) {
    const id = todo.pop()!;
    if (seen.has(id)) continue;
    seen.add(id);
    for (const e of graph.edges) if (e.target === id) todo.push(e.source);
  }
  return seen;
}

function isEmptyLiteral(v: unknown): boolean {
  return v === undefined || v === null || v === '';
}

/** The pipeline wire form of the graph (or of the nodes in `only`): literals from the nodes'
 * values, wires as {from, output}, exposed ports as {input} with the node's value as default. */
export function graphToPipeline(graph: CanvasGraph, tools: Tools, only?: Set<string>): PipelineWire {
  const keep = (id: string) => !only || only.has(id);
  const wire: PipelineWire = { inputs: {}, steps: {} };
  for (const node of graph.nodes) {
    if (!keep(node.id)) continue;
    const inputs: Record<string, unknown> = {};
    for (const [port, value] of Object.entries(node.values)) if (!isEmptyLiteral(value)) inputs[port] = value;
    wire.steps[node.id] = { tool: node.tool, inputs };
  }
  for (const e of graph.edges) {
    if (!keep(e.source) || !keep(e.target)) continue;
    wire.steps[e.target].inputs[e.targetPort] = { from: e.source, output: e.sourcePort };
  }
  for (const x of graph.exposed) {
    if (!keep(x.node)) continue;
    const step = wire.steps[x.node];
    const node = nodeOf(graph, x.node)!;
    const inp = tools[node.tool]?.inputs.find((i) => i.name === x.port);
    const value = node.values[x.port];
    const decl: PipelineWire['inputs'][string] & { required?: boolean; label?: string } = { type: x.type };
    if (!isEmptyLiteral(value)) decl.default = value;
    decl.required = inp ? inp.required : true;
    if (x.label) decl.label = x.label;
    wire.inputs[x.name] = decl;
    step.inputs[x.port] = { input: x.name };
  }
  return wire;
}

const isRef = (v: unknown): v is { from: string; output: string } =>
  typeof v === 'object' && v !== null && 'from' in v && 'output' in v;
const isInput = (v: unknown): v is { input: string } => typeof v === 'object' && v !== null && 'input' in v;

/** Steps by topological depth (0 for a step fed by no other step); cycles are cut. */
export function depths(wire: PipelineWire): Record<string, number> {
  const depth: Record<string, number> = {};
  const visiting = new Set<string>();
  const visit = (id: string): number => {
    if (id in depth) return depth[id];
    if (visiting.has(id) || !wire.steps[id]) return 0;
    visiting.add(id);
    let d = 0;
    for (const v of Object.values(wire.steps[id].inputs)) if (isRef(v)) d = Math.max(d, visit(v.from) + 1);
    visiting.delete(id);
    return (depth[id] = d);
  };
  for (const id of Object.keys(wire.steps)) visit(id);
  return depth;
}

export const LAYOUT = { columnWidth: 320, rowHeight: 220 };

/** A graph from the wire form, laid out in columns by topological depth. */
export function pipelineToGraph(wire: PipelineWire, tools: Tools): CanvasGraph {
  const depth = depths(wire);
  const rows: Record<number, number> = {};
  const nodes: CanvasNode[] = [];
  const edges: CanvasEdge[] = [];
  const exposed: ExposedInput[] = [];
  for (const [id, step] of Object.entries(wire.steps)) {
    const d = depth[id] ?? 0;
    const row = (rows[d] = (rows[d] ?? -1) + 1);
    const values: Record<string, unknown> = {};
    for (const [port, v] of Object.entries(step.inputs ?? {})) {
      if (isRef(v)) {
        const e = { source: v.from, sourcePort: v.output, target: id, targetPort: port };
        edges.push({ ...e, id: edgeId(e) });
      } else if (isInput(v)) {
        const decl = wire.inputs[v.input] as (PipelineWire['inputs'][string] & { label?: string }) | undefined;
        const type = decl?.type ?? tools[step.tool]?.inputs.find((i) => i.name === port)?.type ?? 'string';
        exposed.push({ name: v.input, node: id, port, type, ...(decl?.label ? { label: decl.label } : {}) });
        if (decl?.default !== undefined && decl.default !== null) values[port] = decl.default;
      } else values[port] = v;
    }
    nodes.push({ id, tool: step.tool, position: { x: d * LAYOUT.columnWidth, y: row * LAYOUT.rowHeight }, values });
  }
  return { version: 1, nodes, edges, exposed, viewport: { x: 0, y: 0, zoom: 1 } };
}

/** Per-node and total cost from a pipeline quote's steps (POST /v1/quotes). */
export function costTotals(steps: { step: string; credits: number }[]): { byNode: Record<string, number>; total: number } {
  const byNode: Record<string, number> = {};
  let total = 0;
  for (const s of steps) {
    byNode[s.step] = (byNode[s.step] ?? 0) + s.credits;
    total += s.credits;
  }
  return { byNode, total };
}

/** Whether a parsed JSON value looks like a CanvasGraph (for import and stored workspaces). */
export function isGraph(v: unknown): v is CanvasGraph {
  const g = v as CanvasGraph;
  return (
    typeof g === 'object' &&
    g !== null &&
    Array.isArray(g.nodes) &&
    Array.isArray(g.edges) &&
    g.nodes.every((n) => typeof n?.id === 'string' && typeof n?.tool === 'string' && typeof n?.position?.x === 'number')
  );
}

/** A stored or imported graph with missing optional parts filled in. */
export function normalise(g: CanvasGraph): CanvasGraph {
  return {
    version: 1,
    nodes: g.nodes.map((n) => ({ ...n, values: n.values ?? {} })),
    edges: g.edges.map((e) => ({ ...e, id: e.id ?? edgeId(e) })),
    exposed: Array.isArray(g.exposed) ? g.exposed : [],
    viewport: g.viewport ?? { x: 0, y: 0, zoom: 1 },
  };
}

/** A deterministic synthetic graph of real tools for the frame-time benchmark: `nodes` nodes in
 * a grid and up to `edges` valid wires, each from an earlier node (so there is no cycle). */
export function benchGraph(tools: Tools, nodes: number, edges: number): CanvasGraph {
  const list = Object.values(tools).sort((a, b) => a.slug.localeCompare(b.slug));
  let graph: CanvasGraph = { version: 1, nodes: [], edges: [], exposed: [], viewport: { x: 0, y: 0, zoom: 0.5 } };
  if (!list.length) return graph;
  // Prefer tools with wirable inputs, so that enough wires fit.
  const withInputs = list.filter((t) => t.inputs.some((i) => list.some((s) => s.outputs.some((o) => compatible(o.type, i.type)))));
  const pool = withInputs.length ? withInputs : list;
  const sources = list.filter((t) => t.outputs.length && !t.inputs.some((i) => i.type === 'image'));
  const cols = Math.ceil(Math.sqrt(nodes * 2));
  for (let i = 0; i < nodes; i++) {
    const t = i < cols ? (sources[i % Math.max(sources.length, 1)] ?? pool[0]) : pool[(i * 7) % pool.length];
    const pos = { x: (i % cols) * LAYOUT.columnWidth, y: Math.floor(i / cols) * LAYOUT.rowHeight };
    graph = addNode(graph, t.slug, pos, `n${i}`).graph;
  }
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const wired = new Set<string>();
  const out: CanvasEdge[] = [];
  for (let pass = 0; pass < 4 && out.length < edges; pass++) {
    for (let j = 1; j < nodes && out.length < edges; j++) {
      const dst = graph.nodes[j];
      for (const inp of tools[dst.tool].inputs) {
        if (out.length >= edges || wired.has(`${dst.id}.${inp.name}`)) continue;
        for (let tries = 0; tries < 12; tries++) {
          const i = Math.max(0, j - 1 - Math.floor(rand() * Math.min(j, 3 * cols)));
          const src = graph.nodes[i];
          const o = tools[src.tool].outputs.find((p) => compatible(p.type, inp.type) && (!p.many || inp.many));
          if (!o) continue;
          const e = { source: src.id, sourcePort: o.name, target: dst.id, targetPort: inp.name };
          out.push({ ...e, id: edgeId(e) });
          wired.add(`${dst.id}.${inp.name}`);
          break;
        }
      }
    }
  }
  return { ...graph, edges: out };
}
