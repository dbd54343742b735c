// The canvas's data, apart from rendering: what a workspace stores (PUT /v1/workspaces/{name})
// and what converts to and from the pipeline wire form (POST /v1/runs, /v1/pipelines).

/** An input port of a tool, as GET /v1/tools/{slug} describes it (`inputs[]`). */
export interface InputPort {
  name: string;
  type: string; // string, integer, number, boolean, seed, image
  required: boolean;
  many: boolean; // takes a list (of images)
  default?: unknown;
  description?: string;
  choices?: unknown[] | null;
  minimum?: number | null;
  maximum?: number | null;
}

/** An output port (`outputs[]`): image, text, integer, number, boolean, seed (video, audio, mask, latent reserved). */
export interface OutputPort {
  name: string;
  type: string;
  many: boolean; // yields a list (a batch)
  description?: string;
}

/** What the canvas needs of a tool. */
export interface ToolInfo {
  slug: string;
  name: string;
  category: string;
  kind: string; // comfyui | llm | image
  available: boolean;
  description: string;
  inputs: InputPort[];
  outputs: OutputPort[];
}

export interface CanvasNode {
  id: string; // becomes the pipeline step id
  tool: string; // slug
  position: { x: number; y: number };
  /** Literal values typed into the node's form, by input port name. */
  values: Record<string, unknown>;
}

export interface CanvasEdge {
  id: string;
  source: string; // node id
  sourcePort: string; // output port name
  target: string; // node id
  targetPort: string; // input port name
}

/** An input port left open and exposed as a pipeline input (`{"input": name}`). */
export interface ExposedInput {
  name: string;
  node: string;
  port: string;
  type: string;
  label?: string;
}

export interface CanvasGraph {
  version: 1;
  nodes: CanvasNode[];
  edges: CanvasEdge[];
  exposed: ExposedInput[];
  viewport: { x: number; y: number; zoom: number };
}

/** The pipeline wire form: a plain JSON value is a literal, {input} a pipeline input,
 * {from, output} another step's output port. */
export type InputValue = unknown | { input: string } | { from: string; output: string };
export interface PipelineWire {
  inputs: Record<string, { type: string; default?: unknown; description?: string }>;
  steps: Record<string, { tool: string; inputs: Record<string, InputValue> }>;
}

export const EMPTY_GRAPH: CanvasGraph = { version: 1, nodes: [], edges: [], exposed: [], viewport: { x: 0, y: 0, zoom: 1 } };
