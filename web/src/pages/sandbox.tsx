// The sandbox: tools as nodes on a canvas (@xyflow/react under preact/compat), wired by typed
// ports and run as a pipeline. The graph itself is a plain CanvasGraph edited by canvas/model.ts;
// xyflow only draws it (and keeps what it measured and what is selected).
import {
  applyEdgeChanges,
  applyNodeChanges,
  Background,
  Controls,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  type Connection,
  type Edge,
  type EdgeChange,
  type FinalConnectionState,
  type NodeChange,
} from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, ApiError, must } from '../api/client';
import type { PageProps } from '../app';
import { createHistory, type History } from '../canvas/history';
import {
  addNode,
  benchGraph,
  connect,
  disconnect,
  graphToPipeline,
  isGraph,
  moveNodes,
  normalise,
  pipelineToGraph,
  removeNodes,
  setExposed,
  setValue,
  upstreamOf,
  type Tools,
} from '../canvas/model';
import { Inspector, Palette, Picker, type PickerRequest } from '../canvas/panels';
import { createAutosave, loadWorkspace, type SaveState } from '../canvas/persist';
import { runPipeline, type NodeStatus } from '../canvas/run';
import { CONTROLLED_VIEWPORT, useSketchLayer } from '../canvas/sketchLayer';
import { IN, OUT, ToolNode, type ToolFlowNode } from '../canvas/ToolNode';
import { loadTools } from '../canvas/tools';
import { EMPTY_GRAPH, type CanvasEdge, type CanvasGraph, type PipelineWire } from '../canvas/types';
import { query } from '../router';
import { me, refreshBalance, sessionKnown } from '../session';
import { credits, ErrorMessage, Loading, Notice, PageTitle } from '../ui';
import './sandbox.css';

const NODE_TYPES = { tool: ToolNode };

function toEdge(c: Connection | Edge): Omit<CanvasEdge, 'id'> | null {
  if (!c.source || !c.target || !c.sourceHandle?.startsWith(OUT) || !c.targetHandle?.startsWith(IN)) return null;
  return { source: c.source, sourcePort: c.sourceHandle.slice(OUT.length), target: c.target, targetPort: c.targetHandle.slice(IN.length) };
}

/** xyflow nodes for the graph, reusing the previous objects that did not change (memoised node
 * components then skip rendering) and keeping what xyflow measured and selected. */
function syncNodes(
  prev: ToolFlowNode[],
  graph: CanvasGraph,
  tools: Tools,
  statuses: Record<string, NodeStatus>,
  costs: Record<string, number>,
  runTo: (id: string) => void,
): ToolFlowNode[] {
  const byId = new Map(prev.map((n) => [n.id, n]));
  const wiredBy = new Map<string, string[]>();
  for (const e of graph.edges) wiredBy.set(e.target, [...(wiredBy.get(e.target) ?? []), e.targetPort]);
  return graph.nodes.map((n) => {
    const old = byId.get(n.id);
    const data = {
      slug: n.tool,
      tool: tools[n.tool],
      wired: (wiredBy.get(n.id) ?? []).join(','),
      status: statuses[n.id],
      cost: costs[n.id],
      runTo,
    };
    const same =
      old &&
      old.position.x === n.position.x &&
      old.position.y === n.position.y &&
      (Object.keys(data) as (keyof typeof data)[]).every((k) => old.data[k] === data[k]);
    if (same) return old;
    return { ...(old ?? {}), id: n.id, type: 'tool' as const, position: n.position, data };
  });
}

function syncEdges(prev: Edge[], graph: CanvasGraph): Edge[] {
  const byId = new Map(prev.map((e) => [e.id, e]));
  return graph.edges.map(
    (e) =>
      byId.get(e.id) ?? {
        id: e.id,
        source: e.source,
        sourceHandle: OUT + e.sourcePort,
        target: e.target,
        targetHandle: IN + e.targetPort,
      },
  );
}

function download(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function Sandbox() {
  const rf = useReactFlow();
  const known = sessionKnown.value;
  const signedIn = me.value !== null;
  const params = query.value;
  const bench = params.get('bench');
  const pipelineId = params.get('pipeline');
  // "Open in canvas" from a job (one node with its inputs) or a run (its pipeline).
  const fromJob = params.get('from_job');
  const fromRun = params.get('from_run');

  const [tools, setTools] = useState<Tools>({});
  const [toolsComplete, setToolsComplete] = useState(false);
  const [graph, setGraph] = useState<CanvasGraph>(EMPTY_GRAPH);
  const [loaded, setLoaded] = useState(false);
  const [nodes, setNodes] = useState<ToolFlowNode[]>([]);
  const [edges, setEdges] = useState<Edge[]>([]);
  const [statuses, setStatuses] = useState<Record<string, NodeStatus>>({});
  const [costs, setCosts] = useState<Record<string, number>>({});
  const [total, setTotal] = useState<number | null>(null);
  const [running, setRunning] = useState(false);
  const [runState, setRunState] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [refusal, setRefusal] = useState<string | null>(null);
  const [picker, setPicker] = useState<(PickerRequest & { from: string; port: string; at: { x: number; y: number } }) | null>(null);
  const [saveState, setSaveState] = useState<SaveState>('idle');
  const [saved, setSaved] = useState<{ id: string; name: string } | null>(null);
  const [, setTick] = useState(0);

  const history = useRef<History>(createHistory(EMPTY_GRAPH));
  const graphRef = useRef(graph);
  const toolsRef = useRef(tools);
  const viewport = useRef(EMPTY_GRAPH.viewport);
  const dragSession = useRef(0);
  const wrapper = useRef<HTMLDivElement>(null);
  const abort = useRef<AbortController | null>(null);
  // pans and zooms are drawn on a canvas and reach xyflow's DOM once they settle
  const sketch = useSketchLayer(wrapper, { expose: !!bench });
  graphRef.current = graph;
  toolsRef.current = tools;

  const autosave = useMemo(() => createAutosave((s) => setSaveState(s)), []);

  /** Every edit goes through here: a new present for undo (coalesced when a key is given). */
  const commit = useCallback((next: CanvasGraph, coalesce?: string) => {
    if (next === graphRef.current) return;
    history.current.push(next, coalesce);
    graphRef.current = next;
    setGraph(next);
    setTick((t) => t + 1);
  }, []);

  const replace = useCallback(
    (next: CanvasGraph) => {
      history.current = createHistory(next);
      graphRef.current = next;
      viewport.current = next.viewport;
      setGraph(next);
      setStatuses({});
      setCosts({});
      setTotal(null);
      void rf.setViewport(next.viewport);
    },
    [rf],
  );

  // Tools, then the graph to open: a shared pipeline, the benchmark, or the autosaved workspace.
  useEffect(() => {
    if (!known) return;
    let live = true;
    setLoaded(false);
    (async () => {
      const found = await loadTools(signedIn);
      if (!live) return;
      setTools(found.tools);
      setToolsComplete(found.complete);
      toolsRef.current = found.tools;
      let g: CanvasGraph | null = null;
      if (bench) {
        const [n, e] = bench.split('x').map((x) => Number.parseInt(x, 10));
        g = benchGraph(found.tools, n || 200, e || 250);
      } else if (pipelineId) {
        const p = await must(api.GET('/v1/pipelines/{pipeline_id}', { params: { path: { pipeline_id: pipelineId } } }));
        g = pipelineToGraph(p.pipeline as unknown as PipelineWire, found.tools);
        setSaved({ id: p.id, name: p.name });
      } else if (fromRun) {
        const r = await must(api.GET('/v1/runs/{run_id}', { params: { path: { run_id: fromRun } } }));
        g = pipelineToGraph(r.pipeline as unknown as PipelineWire, found.tools);
      } else if (fromJob) {
        const j = await must(api.GET('/v1/jobs/{job_id}', { params: { path: { job_id: fromJob } } }));
        const step = { tool: j.tool, inputs: (j.inputs ?? {}) as Record<string, unknown> };
        g = pipelineToGraph({ inputs: {}, steps: { [j.tool.replace(/[^A-Za-z0-9_]/g, '_')]: step } }, found.tools);
      } else g = await loadWorkspace(signedIn);
      if (!live) return;
      replace(g ?? EMPTY_GRAPH);
      setLoaded(true);
    })().catch((err) => live && (setError(err), setLoaded(true)));
    return () => {
      live = false;
    };
  }, [known, signedIn, bench, pipelineId, fromJob, fromRun, replace]);

  const runTo = useCallback((id: string) => void start(upstreamOf(graphRef.current, id)), []);

  useEffect(() => setNodes((prev) => syncNodes(prev, graph, tools, statuses, costs, runTo)), [graph, tools, statuses, costs, runTo]);
  useEffect(() => setEdges((prev) => syncEdges(prev, graph)), [graph]);

  // Autosave (never for the benchmark's synthetic graph).
  useEffect(() => {
    if (!loaded || bench || !known) return;
    if (graph === EMPTY_GRAPH) return;
    autosave.schedule({ ...graph, viewport: viewport.current }, signedIn);
  }, [graph, loaded]);
  useEffect(() => () => void autosave.flush(), [autosave]);

  // The benchmark waits for the nodes to be on screen.
  useEffect(() => {
    if (!bench || !loaded || nodes.length === 0) return;
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        const w = window as unknown as { __canvasReady?: boolean; __canvasGraph?: { nodes: number; edges: number } };
        w.__canvasGraph = { nodes: graph.nodes.length, edges: graph.edges.length };
        w.__canvasReady = true;
      }),
    );
  }, [bench, loaded, nodes.length]);

  const undo = useCallback(() => {
    const g = history.current.undo();
    if (g) (graphRef.current = g), setGraph(g);
  }, []);
  const redo = useCallback(() => {
    const g = history.current.redo();
    if (g) (graphRef.current = g), setGraph(g);
  }, []);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement | null;
      if (t && (t.closest('input, textarea, select') || t.isContentEditable)) return;
      if (!(e.ctrlKey || e.metaKey)) return;
      const k = e.key.toLowerCase();
      if (k === 'z' && !e.shiftKey) (e.preventDefault(), undo());
      else if ((k === 'z' && e.shiftKey) || k === 'y') (e.preventDefault(), redo());
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [undo, redo]);

  const onNodesChange = useCallback(
    (changes: NodeChange<ToolFlowNode>[]) => {
      setNodes((ns) => applyNodeChanges(changes, ns));
      const moves: Record<string, { x: number; y: number }> = {};
      for (const c of changes) if (c.type === 'position' && c.position) moves[c.id] = c.position;
      if (Object.keys(moves).length) commit(moveNodes(graphRef.current, moves), `drag-${dragSession.current}`);
    },
    [commit],
  );
  const onEdgesChange = useCallback((changes: EdgeChange[]) => setEdges((es) => applyEdgeChanges(changes, es)), []);

  const onDelete = useCallback(
    ({ nodes: ns, edges: es }: { nodes: { id: string }[]; edges: { id: string }[] }) => {
      commit(removeNodes(disconnect(graphRef.current, es.map((e) => e.id)), ns.map((n) => n.id)));
    },
    [commit],
  );

  const isValidConnection = useCallback((c: Connection | Edge) => {
    const e = toEdge(c);
    if (!e) return false;
    const r = connect(graphRef.current, toolsRef.current, e);
    return r.verdict.ok;
  }, []);

  const onConnect = useCallback(
    (c: Connection) => {
      const e = toEdge(c);
      if (!e) return;
      const r = connect(graphRef.current, toolsRef.current, e);
      if (r.verdict.ok) (commit(r.graph), setRefusal(null));
      else setRefusal(r.verdict.reason);
    },
    [commit],
  );

  const onConnectEnd = useCallback(
    (event: MouseEvent | TouchEvent, state: FinalConnectionState) => {
      if (state.isValid || state.toNode || !state.fromHandle || state.fromHandle.type !== 'source' || !state.fromNode) {
        if (!state.isValid && state.toHandle && state.fromHandle) {
          const e = toEdge({
            source: state.fromNode?.id ?? '',
            sourceHandle: state.fromHandle.id ?? '',
            target: state.toNode?.id ?? '',
            targetHandle: state.toHandle.id ?? '',
          });
          const r = e && connect(graphRef.current, toolsRef.current, e);
          if (r && !r.verdict.ok) setRefusal(r.verdict.reason);
        }
        return;
      }
      const from = state.fromNode.id;
      const port = (state.fromHandle.id ?? '').slice(OUT.length);
      const node = graphRef.current.nodes.find((n) => n.id === from);
      const out = node && toolsRef.current[node.tool]?.outputs.find((o) => o.name === port);
      if (!out) return;
      const point = 'changedTouches' in event ? event.changedTouches[0] : event;
      sketch.settle();
      const box = wrapper.current?.getBoundingClientRect();
      const at = rf.screenToFlowPosition({ x: point.clientX, y: point.clientY });
      const x = Math.max(0, Math.min(point.clientX - (box?.left ?? 0), (box?.width ?? 400) - 260));
      const y = Math.max(0, Math.min(point.clientY - (box?.top ?? 0), (box?.height ?? 400) - 240));
      setPicker({ type: out.type, many: out.many, screen: { x, y }, from, port, at });
    },
    [rf, sketch],
  );

  const pick = (slug: string, inputPort: string) => {
    if (!picker) return;
    const added = addNode(graphRef.current, slug, picker.at);
    const r = connect(added.graph, toolsRef.current, { source: picker.from, sourcePort: picker.port, target: added.id, targetPort: inputPort });
    commit(r.graph);
    setPicker(null);
  };

  const addFromPalette = (slug: string) => {
    // Near the top left of what is on screen, cascading, so a new node never lands off screen.
    sketch.settle();
    const box = wrapper.current?.getBoundingClientRect();
    const k = graphRef.current.nodes.length % 6;
    const at = rf.screenToFlowPosition({ x: (box?.left ?? 0) + 40 + k * 30, y: (box?.top ?? 0) + 40 + k * 30 });
    commit(addNode(graphRef.current, slug, at).graph);
  };

  async function start(only?: Set<string>) {
    setError(null);
    if (!me.value) {
      setError(new Error('Sign in to run the graph (it stays here).'));
      return;
    }
    if (!graphRef.current.nodes.length) return;
    abort.current?.abort();
    const ctl = new AbortController();
    abort.current = ctl;
    setRunning(true);
    setRunState('checking');
    setStatuses((s) => {
      const next = { ...s };
      for (const id of only ?? graphRef.current.nodes.map((n) => n.id)) delete next[id];
      return next;
    });
    try {
      await runPipeline(
        graphToPipeline(graphRef.current, toolsRef.current, only),
        {
          quoted(c, t) {
            setCosts(c);
            setTotal(t);
          },
          started() {
            setRunState('running');
          },
          status(step, patch) {
            setStatuses((s) => ({
              ...s,
              [step]: { ...(s[step] ?? { state: 'queued', progress: 0, images: [] }), ...patch },
            }));
          },
          finished(state, err) {
            setRunState(state);
            if (err) setError(new Error(`the run ${state}: ${err}`));
          },
        },
        ctl.signal,
      );
    } catch (err) {
      setRunState(null);
      setError(err);
    } finally {
      setRunning(false);
      void refreshBalance();
    }
  }

  const selected = nodes.filter((n) => n.selected);
  const selectedId = selected.length === 1 ? selected[0].id : null;

  const importFile = async (file: File) => {
    try {
      const parsed: unknown = JSON.parse(await file.text());
      if (isGraph(parsed)) return commit(normalise(parsed));
      const wire = parsed as PipelineWire;
      if (wire && typeof wire === 'object' && wire.steps) return commit(pipelineToGraph(wire, toolsRef.current));
      setError(new Error('that file is neither a canvas nor a pipeline'));
    } catch {
      setError(new Error('that file is not JSON'));
    }
  };

  const saveAsPipeline = async (form: HTMLFormElement) => {
    const data = new FormData(form);
    setError(null);
    try {
      const p = await must(
        api.POST('/v1/pipelines', {
          body: {
            name: String(data.get('name') ?? ''),
            description: '',
            visibility: String(data.get('visibility') ?? 'private') as 'private' | 'unlisted' | 'public',
            pipeline: graphToPipeline(graphRef.current, toolsRef.current) as unknown as Record<string, unknown>,
            exposed: graphRef.current.exposed.map((x) => ({ name: x.name, label: x.label ?? null, description: '' })),
          },
        }),
      );
      setSaved({ id: p.id, name: p.name });
    } catch (err) {
      setError(err);
    }
  };

  if (!known) return <Loading />;
  const hist = history.current;
  return (
    <div class="sandbox-page">
      <PageTitle>Sandbox</PageTitle>
      {!signedIn && (
        <Notice>
          You can build here signed out (kept in this browser). <a href="/signin?next=%2Fsandbox">Sign in</a> to see
          every tool's inputs, run the graph and save it.
        </Notice>
      )}
      {signedIn && !toolsComplete && loaded && <Notice>Some tools could not be loaded.</Notice>}
      <div class="sandbox-toolbar" role="toolbar" aria-label="Canvas">
        <button type="button" onClick={() => void start()} disabled={running || !graph.nodes.length}>
          Run
        </button>
        <button type="button" class="secondary" onClick={undo} disabled={!hist.canUndo} aria-keyshortcuts="Control+Z">
          Undo
        </button>
        <button type="button" class="secondary" onClick={redo} disabled={!hist.canRedo} aria-keyshortcuts="Control+Shift+Z">
          Redo
        </button>
        <button
          type="button"
          class="secondary"
          onClick={() => download('canvas.json', JSON.stringify({ ...graph, viewport: viewport.current }, null, 2))}
        >
          Export JSON
        </button>
        <label class="file-button">
          Import JSON
          <input
            type="file"
            accept="application/json,.json"
            onChange={(e) => {
              const f = e.currentTarget.files?.[0];
              if (f) void importFile(f);
              e.currentTarget.value = '';
            }}
          />
        </label>
        <span class="sandbox-total" data-testid="total-cost">
          {total !== null ? `total ${credits(total)}` : ''}
        </span>
        <span class="sandbox-run-state" data-testid="run-state" aria-live="polite">
          {runState ? `run: ${runState}` : ''}
        </span>
        <span class="muted" data-testid="save-state" aria-live="polite">
          {bench ? 'benchmark (not saved)' : saveState === 'saved' ? 'Saved' : saveState === 'error' ? 'Not saved' : saveState === 'idle' ? '' : 'Saving…'}
        </span>
      </div>
      <ErrorMessage error={error} />
      {error instanceof ApiError && error.status === 402 && (
        <p>
          <a href="/account">Add credits on your account page</a>
        </p>
      )}
      {refusal && (
        <p class="message info" role="status" data-testid="refusal">
          Not connected: {refusal}
        </p>
      )}
      <div class="sandbox">
        <Palette tools={tools} onAdd={addFromPalette} />
        <div class="sandbox-canvas" ref={wrapper} data-testid="canvas">
          <ReactFlow<ToolFlowNode, Edge>
            nodes={nodes}
            edges={edges}
            nodeTypes={NODE_TYPES}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onConnectEnd={onConnectEnd}
            isValidConnection={isValidConnection}
            onDelete={onDelete}
            onNodeDragStart={() => void dragSession.current++}
            viewport={CONTROLLED_VIEWPORT}
            onViewportChange={sketch.onViewportChange}
            onMoveStart={sketch.onMoveStart}
            onMoveEnd={(_, vp) => {
              viewport.current = vp;
              sketch.onMoveEnd();
            }}
            deleteKeyCode={['Delete', 'Backspace']}
            minZoom={0.1}
            // Off-screen nodes and wires are left out of the DOM: less to lay out and draw per frame.
            onlyRenderVisibleElements
            proOptions={{ hideAttribution: true }}
          >
            <Background />
            <Controls showInteractive={false} />
            <canvas ref={sketch.canvas} class="sketch-layer" aria-hidden="true" />
          </ReactFlow>
          {picker && <Picker tools={tools} request={picker} onPick={pick} onClose={() => setPicker(null)} />}
        </div>
        <Inspector
          graph={graph}
          tools={tools}
          nodeId={selectedId}
          onValue={(n, p, v) => commit(setValue(graphRef.current, n, p, v), `value-${n}-${p}`)}
          onExpose={(n, p, on) => commit(setExposed(graphRef.current, toolsRef.current, n, p, on))}
        />
      </div>
      {signedIn && (
        <form
          class="sandbox-save card"
          onSubmit={(e) => {
            e.preventDefault();
            void saveAsPipeline(e.currentTarget);
          }}
        >
          <h2>Save as a pipeline</h2>
          <div class="row">
            <label>
              Name
              <input name="name" required maxLength={200} />
            </label>
            <label>
              Visibility
              <select name="visibility">
                <option value="private">private</option>
                <option value="unlisted">unlisted (anyone with the link)</option>
                <option value="public">public</option>
              </select>
            </label>
            <button type="submit" disabled={!graph.nodes.length}>
              Save as pipeline
            </button>
          </div>
          {graph.exposed.length > 0 && <p class="muted">Exposed inputs: {graph.exposed.map((x) => x.name).join(', ')}</p>}
          {saved && (
            <p role="status">
              Saved “{saved.name}”. Share: <a href={`/sandbox?pipeline=${encodeURIComponent(saved.id)}`}>/sandbox?pipeline={saved.id}</a>
            </p>
          )}
        </form>
      )}
    </div>
  );
}

export default function Page(_: PageProps) {
  return (
    <ReactFlowProvider>
      <Sandbox />
    </ReactFlowProvider>
  );
}
