import { describe, expect, it } from 'vitest';
import {
  addNode,
  benchGraph,
  canConnect,
  connect,
  costTotals,
  disconnect,
  graphToPipeline,
  pipelineToGraph,
  removeNodes,
  setExposed,
  setValue,
  toolInfo,
  toolsAccepting,
  upstreamOf,
  type Tools,
} from './model';
import { EMPTY_GRAPH, type CanvasGraph } from './types';

const port = (name: string, type: string, required = false, many = false) => ({ name, type, required, many });
const tool = (slug: string, inputs: ReturnType<typeof port>[], outputs: { name: string; type: string; many?: boolean }[]) =>
  toolInfo({ slug, name: slug, category: 'c', kind: 'image', available: true, description: '', inputs, outputs });

const TOOLS: Tools = Object.fromEntries(
  [
    tool('sdxl-txt2img', [port('prompt', 'string', true), port('seed', 'seed'), port('steps', 'integer')], [{ name: 'image', type: 'image' }]),
    tool('upscale-4x', [port('image', 'image', true)], [{ name: 'image', type: 'image' }]),
    tool('image-resize', [port('image', 'image', true), port('width', 'integer')], [{ name: 'image', type: 'image' }]),
    tool('contact-sheet', [port('images', 'image', true, true)], [{ name: 'image', type: 'image' }]),
    tool('prompt-enhance', [port('idea', 'string', true)], [{ name: 'prompt', type: 'text' }]),
    tool('caption', [port('image', 'image', true)], [{ name: 'text', type: 'text' }]),
  ].map((t) => [t.slug, t]),
);

function three(): CanvasGraph {
  let g = addNode(EMPTY_GRAPH, 'sdxl-txt2img', { x: 0, y: 0 }, 'gen').graph;
  g = addNode(g, 'upscale-4x', { x: 300, y: 0 }, 'big').graph;
  g = addNode(g, 'image-resize', { x: 600, y: 0 }, 'small').graph;
  g = connect(g, TOOLS, { source: 'gen', sourcePort: 'image', target: 'big', targetPort: 'image' }).graph;
  g = connect(g, TOOLS, { source: 'big', sourcePort: 'image', target: 'small', targetPort: 'image' }).graph;
  return g;
}

describe('toolInfo', () => {
  it('reads ports, defaulting many to false', () => {
    const t = toolInfo({
      slug: 's', name: 'S', category: 'c', kind: 'comfyui', available: true, description: '',
      inputs: [{ name: 'seed', type: 'seed', required: false, many: null, default: 5, minimum: 0 }],
      outputs: [{ name: 'image', type: 'image', many: false }],
    });
    expect(t.inputs[0]).toMatchObject({ name: 'seed', type: 'seed', many: false, default: 5, minimum: 0, maximum: null });
  });
});

describe('canConnect', () => {
  const g = three();
  it('accepts the same type and text into string', () => {
    let h = addNode(g, 'prompt-enhance', { x: 0, y: 0 }, 'pe').graph;
    h = addNode(h, 'sdxl-txt2img', { x: 0, y: 0 }, 'gen2').graph;
    expect(canConnect(h, TOOLS, { source: 'pe', sourcePort: 'prompt', target: 'gen2', targetPort: 'prompt' })).toEqual({ ok: true });
  });
  it('refuses a type mismatch (image into a seed)', () => {
    const h = addNode(g, 'sdxl-txt2img', { x: 0, y: 0 }, 'gen2').graph;
    const v = canConnect(h, TOOLS, { source: 'small', sourcePort: 'image', target: 'gen2', targetPort: 'seed' });
    expect(v.ok).toBe(false);
    expect(!v.ok && v.reason).toMatch(/type mismatch/);
  });
  it('refuses the same node, a cycle and a wired input', () => {
    expect(canConnect(g, TOOLS, { source: 'big', sourcePort: 'image', target: 'big', targetPort: 'image' }).ok).toBe(false);
    const cyc = canConnect(removeEdgeInto(g, 'big'), TOOLS, { source: 'small', sourcePort: 'image', target: 'big', targetPort: 'image' });
    expect(!cyc.ok && cyc.reason).toMatch(/cycle/);
    const wired = canConnect(g, TOOLS, { source: 'gen', sourcePort: 'image', target: 'small', targetPort: 'image' });
    expect(!wired.ok && wired.reason).toMatch(/already wired/);
  });
  it('connect leaves the graph as it was when refused', () => {
    const r = connect(g, TOOLS, { source: 'gen', sourcePort: 'image', target: 'gen', targetPort: 'prompt' });
    expect(r.graph).toBe(g);
    expect(r.verdict.ok).toBe(false);
  });
});

function removeEdgeInto(g: CanvasGraph, target: string): CanvasGraph {
  return disconnect(g, g.edges.filter((e) => e.target === target).map((e) => e.id));
}

describe('edits', () => {
  it('removing nodes removes their wires and exposed inputs', () => {
    let g = three();
    g = setExposed(g, TOOLS, 'gen', 'prompt', true);
    g = removeNodes(g, ['gen']);
    expect(g.nodes.map((n) => n.id)).toEqual(['big', 'small']);
    expect(g.edges).toHaveLength(1);
    expect(g.exposed).toHaveLength(0);
  });
  it('setValue sets and clears', () => {
    let g = setValue(three(), 'gen', 'prompt', 'a fox');
    expect(g.nodes[0].values.prompt).toBe('a fox');
    g = setValue(g, 'gen', 'prompt', undefined);
    expect('prompt' in g.nodes[0].values).toBe(false);
  });
});

describe('toolsAccepting', () => {
  it('lists only tools with an input the type can feed', () => {
    expect(toolsAccepting('image', TOOLS).map((x) => x.tool.slug)).toEqual(['caption', 'contact-sheet', 'image-resize', 'upscale-4x']);
    expect(toolsAccepting('text', TOOLS).map((x) => x.tool.slug)).toEqual(['prompt-enhance', 'sdxl-txt2img']);
    expect(toolsAccepting('seed', TOOLS).map((x) => x.tool.slug)).toEqual(['sdxl-txt2img']);
  });
});

describe('pipeline wire form', () => {
  it('converts literals, wires and exposed inputs, and back', () => {
    let g = setValue(three(), 'gen', 'prompt', 'a fox');
    g = setValue(g, 'gen', 'steps', '');
    g = setValue(g, 'small', 'width', 256);
    g = setExposed(g, TOOLS, 'gen', 'prompt', true);
    const wire = graphToPipeline(g, TOOLS);
    expect(wire).toEqual({
      inputs: { prompt: { type: 'string', default: 'a fox', required: true } },
      steps: {
        gen: { tool: 'sdxl-txt2img', inputs: { prompt: { input: 'prompt' } } },
        big: { tool: 'upscale-4x', inputs: { image: { from: 'gen', output: 'image' } } },
        small: { tool: 'image-resize', inputs: { width: 256, image: { from: 'big', output: 'image' } } },
      },
    });
    const back = pipelineToGraph(wire, TOOLS);
    expect(back.nodes.map((n) => [n.id, n.position.x])).toEqual([['gen', 0], ['big', 320], ['small', 640]]);
    expect(back.edges.map((e) => e.id).sort()).toEqual(g.edges.map((e) => e.id).sort());
    expect(back.exposed).toEqual([{ name: 'prompt', node: 'gen', port: 'prompt', type: 'string' }]);
    expect(back.nodes[0].values).toEqual({ prompt: 'a fox' });
    expect(graphToPipeline(back, TOOLS)).toEqual(wire);
  });
  it('a subset keeps only its steps (run up to here)', () => {
    const g = three();
    const up = upstreamOf(g, 'big');
    expect([...up].sort()).toEqual(['big', 'gen']);
    expect(Object.keys(graphToPipeline(g, TOOLS, up).steps)).toEqual(['gen', 'big']);
  });
  it('stacks steps of the same depth in rows', () => {
    const g = pipelineToGraph(
      { inputs: {}, steps: { a: { tool: 'sdxl-txt2img', inputs: {} }, b: { tool: 'sdxl-txt2img', inputs: {} } } },
      TOOLS,
    );
    expect(g.nodes.map((n) => n.position)).toEqual([{ x: 0, y: 0 }, { x: 0, y: 220 }]);
  });
});

describe('costs and the bench graph', () => {
  it('totals per-step quotes', () => {
    expect(costTotals([{ step: 'a', credits: 3 }, { step: 'b', credits: 4 }])).toEqual({ byNode: { a: 3, b: 4 }, total: 7 });
  });
  it('makes a big acyclic graph of valid wires', () => {
    const g = benchGraph(TOOLS, 200, 250);
    expect(g.nodes).toHaveLength(200);
    expect(g.edges.length).toBeGreaterThan(150);
    // every wire would be accepted on its own graph minus itself
    for (const e of g.edges.slice(0, 40)) {
      const without = disconnect(g, [e.id]);
      expect(canConnect(without, TOOLS, e)).toEqual({ ok: true });
    }
  });
});
