// The panels around the canvas: the tool palette, the picker a wire dropped on empty canvas
// opens, and the selected node's inputs.
import { useEffect, useRef, useState } from 'preact/hooks';
import { toolsAccepting, type Tools } from './model';
import type { CanvasGraph, CanvasNode, InputPort, ToolInfo } from './types';

function matches(t: ToolInfo, q: string): boolean {
  const s = q.trim().toLowerCase();
  return !s || t.name.toLowerCase().includes(s) || t.slug.includes(s) || t.category.toLowerCase().includes(s);
}

export function Palette({ tools, onAdd }: { tools: Tools; onAdd: (slug: string) => void }) {
  const [q, setQ] = useState('');
  const byCategory = new Map<string, ToolInfo[]>();
  for (const t of Object.values(tools).sort((a, b) => a.name.localeCompare(b.name))) {
    if (!matches(t, q)) continue;
    byCategory.set(t.category, [...(byCategory.get(t.category) ?? []), t]);
  }
  return (
    <nav class="palette" aria-label="Tool palette">
      <label>
        Search tools
        <input type="search" value={q} onInput={(e) => setQ(e.currentTarget.value)} />
      </label>
      {[...byCategory.entries()].map(([cat, list]) => (
        <section key={cat}>
          <h2>{cat}</h2>
          <ul>
            {list.map((t) => (
              <li key={t.slug}>
                <button type="button" onClick={() => onAdd(t.slug)} title={t.description} aria-label={`Add ${t.name}`}>
                  {t.name}
                  {!t.available && <span class="muted"> (unavailable)</span>}
                </button>
              </li>
            ))}
          </ul>
        </section>
      ))}
      {byCategory.size === 0 && <p class="muted">No tool matches.</p>}
    </nav>
  );
}

export interface PickerRequest {
  type: string;
  many: boolean;
  screen: { x: number; y: number }; // within the canvas box
}

export function Picker({
  tools,
  request,
  onPick,
  onClose,
}: {
  tools: Tools;
  request: PickerRequest;
  onPick: (slug: string, port: string) => void;
  onClose: () => void;
}) {
  const [q, setQ] = useState('');
  const ref = useRef<HTMLInputElement>(null);
  useEffect(() => ref.current?.focus(), []);
  const options = toolsAccepting(request.type, tools).filter((x) => matches(x.tool, q));
  return (
    <div
      class="picker"
      role="dialog"
      aria-label={`Tools that take ${request.type}`}
      style={{ left: `${request.screen.x}px`, top: `${request.screen.y}px` }}
      onKeyDown={(e) => e.key === 'Escape' && onClose()}
    >
      <p>
        Connect <strong>{request.type}</strong> to…
      </p>
      <input ref={ref} type="search" aria-label="Filter tools" value={q} onInput={(e) => setQ(e.currentTarget.value)} />
      <ul data-testid="picker-options">
        {options.map(({ tool, port }) => (
          <li key={tool.slug}>
            <button type="button" onClick={() => onPick(tool.slug, port.name)}>
              {tool.name} <span class="muted">· {port.name}</span>
            </button>
          </li>
        ))}
      </ul>
      {options.length === 0 && <p class="muted">No tool takes {request.type}.</p>}
      <button type="button" class="secondary" onClick={onClose}>
        Cancel
      </button>
    </div>
  );
}

function parseValue(port: InputPort, raw: string): unknown {
  if (raw === '') return undefined;
  if (port.type === 'integer' || port.type === 'seed') {
    const n = Number.parseInt(raw, 10);
    return Number.isFinite(n) ? n : raw;
  }
  if (port.type === 'number') {
    const n = Number(raw);
    return Number.isFinite(n) ? n : raw;
  }
  return raw;
}

function Field({ node, port, onValue }: { node: CanvasNode; port: InputPort; onValue: (v: unknown) => void }) {
  const id = `field-${node.id}-${port.name}`;
  const value = node.values[port.name];
  const label = `${port.name} (${port.type}${port.required ? ', required' : ''})`;
  if (port.type === 'boolean')
    return (
      <label class="check">
        <input type="checkbox" checked={value === true} onChange={(e) => onValue(e.currentTarget.checked)} /> {label}
      </label>
    );
  const shown = value === undefined || value === null ? '' : String(value);
  const placeholder = port.default !== undefined && port.default !== null ? String(port.default) : '';
  return (
    <label for={id}>
      {label}
      {port.choices?.length ? (
        <select id={id} value={shown} onChange={(e) => onValue(parseValue(port, e.currentTarget.value))}>
          <option value="">(default{placeholder ? `: ${placeholder}` : ''})</option>
          {port.choices.map((c) => (
            <option key={String(c)} value={String(c)}>
              {String(c)}
            </option>
          ))}
        </select>
      ) : port.type === 'string' && port.name.includes('prompt') ? (
        <textarea id={id} rows={3} value={shown} placeholder={placeholder} onInput={(e) => onValue(parseValue(port, e.currentTarget.value))} />
      ) : ['integer', 'number', 'seed'].includes(port.type) ? (
        <input
          id={id}
          type="number"
          step={port.type === 'number' ? 'any' : '1'}
          min={port.minimum ?? undefined}
          max={port.maximum ?? undefined}
          value={shown}
          placeholder={placeholder}
          onInput={(e) => onValue(parseValue(port, e.currentTarget.value))}
        />
      ) : (
        <input
          id={id}
          type="text"
          value={shown}
          placeholder={port.type === 'image' ? 'upload:<id> or output:<id>' : placeholder}
          onInput={(e) => onValue(parseValue(port, e.currentTarget.value))}
        />
      )}
    </label>
  );
}

export function Inspector({
  graph,
  tools,
  nodeId,
  onValue,
  onExpose,
}: {
  graph: CanvasGraph;
  tools: Tools;
  nodeId: string | null;
  onValue: (node: string, port: string, value: unknown) => void;
  onExpose: (node: string, port: string, on: boolean) => void;
}) {
  const node = nodeId ? graph.nodes.find((n) => n.id === nodeId) : undefined;
  if (!node)
    return (
      <aside class="inspector" aria-label="Node inputs">
        <p class="muted">Select a node to set its inputs.</p>
      </aside>
    );
  const tool = tools[node.tool];
  const wired = new Set(graph.edges.filter((e) => e.target === node.id).map((e) => e.targetPort));
  return (
    <aside class="inspector" aria-label="Node inputs">
      <h2>
        {tool?.name ?? node.tool} <span class="muted">{node.id}</span>
      </h2>
      {tool?.inputs.map((p) =>
        wired.has(p.name) ? (
          <p key={p.name} class="muted">
            {p.name}: wired
          </p>
        ) : (
          <div key={p.name} class="field">
            <Field node={node} port={p} onValue={(v) => onValue(node.id, p.name, v)} />
            <label class="check">
              <input
                type="checkbox"
                checked={graph.exposed.some((x) => x.node === node.id && x.port === p.name)}
                onChange={(e) => onExpose(node.id, p.name, e.currentTarget.checked)}
              />{' '}
              expose {p.name} as a pipeline input
            </label>
          </div>
        ),
      )}
      {!tool?.inputs.length && <p class="muted">This tool's inputs are shown once you are signed in.</p>}
    </aside>
  );
}
