// One tool on the canvas: a header (name, status, cost, "run up to here"), a handle per input
// port on the left and per output port on the right, and the latest output's preview.
import { Handle, Position, type Node, type NodeProps } from '@xyflow/react';
import { memo } from 'preact/compat';
import { OutputPreview } from './OutputPreview';
import type { NodeStatus } from './run';
import type { ToolInfo } from './types';

export interface ToolNodeData extends Record<string, unknown> {
  slug: string;
  tool: ToolInfo | undefined;
  wired: string; // the wired input ports, joined (a string keeps shallow comparison cheap)
  status: NodeStatus | undefined;
  cost: number | undefined;
  runTo: (nodeId: string) => void;
}

export type ToolFlowNode = Node<ToolNodeData, 'tool'>;

export const IN = 'in:';
export const OUT = 'out:';

function ToolNodeView({ id, data }: NodeProps<ToolFlowNode>) {
  const { tool, status } = data;
  const wired = new Set(data.wired.split(','));
  return (
    <div class={`tool-node state-${status?.state ?? 'idle'}${tool?.available === false ? ' unavailable' : ''}`}>
      <div class="tool-node-head">
        <strong class="tool-node-name" title={tool?.description}>
          {tool?.name ?? data.slug}
        </strong>
        <span class="tool-node-id">{id}</span>
        <span class="badge" data-testid={`status-${id}`}>
          {status?.state ?? (tool?.available === false ? 'unavailable' : 'idle')}
        </span>
        {data.cost !== undefined && <span class="tool-node-cost">{data.cost} cr</span>}
      </div>
      {status && status.state === 'running' && (
        <progress class="tool-node-progress" max={1} value={status.progress} aria-label={`${id} progress`} />
      )}
      <div class="tool-node-ports">
        <ul class="ports in">
          {tool?.inputs.map((p) => (
            <li key={p.name} class={wired.has(p.name) ? 'wired' : ''}>
              <Handle
                type="target"
                position={Position.Left}
                id={IN + p.name}
                data-testid={`in-${id}-${p.name}`}
              />
              <span>
                {p.name}
                {p.required ? '*' : ''}: <em>{p.type}</em>
              </span>
            </li>
          ))}
        </ul>
        <ul class="ports out">
          {tool?.outputs.map((p) => (
            <li key={p.name}>
              <span>
                {p.name}: <em>{p.type}</em>
              </span>
              <Handle
                type="source"
                position={Position.Right}
                id={OUT + p.name}
                data-testid={`out-${id}-${p.name}`}
              />
            </li>
          ))}
        </ul>
      </div>
      {status?.error && <p class="tool-node-error">{status.error}</p>}
      {status?.text && <p class="tool-node-text">{status.text}</p>}
      {status?.images.length ? (
        <div class="tool-node-previews">
          {status.images.slice(0, 4).map((url, i) => (
            <OutputPreview key={url} url={url} alt={`output ${i + 1} of ${id}`} />
          ))}
        </div>
      ) : null}
      <button type="button" class="nodrag tool-node-run" onClick={() => data.runTo(id)}>
        Run up to here
      </button>
    </div>
  );
}

export const ToolNode = memo(ToolNodeView);
