// Tools: each tool's price, with a price override (or back to the price derived from our cost),
// and its traffic split to ComfyUI Deploy. The API does not report a tool's current split, so the
// form sets it (and shows what the server answered).
import { useState } from 'preact/hooks';
import { api, must, type Schemas } from '../api/client';
import { credits, Loading, Notice } from '../ui';
import { LoadError, useAction, usePoll } from './common';

type Tool = Schemas['ToolSummary'];
type PriceModel = Schemas['PriceSet']['model'];
const MODELS: { value: PriceModel; label: string }[] = [
  { value: 'per_run', label: 'per run' },
  { value: 'per_megapixel', label: 'per output megapixel' },
  { value: 'per_gpu_second', label: 'per GPU second (with a cap)' },
  { value: 'per_1k_tokens', label: 'per 1000 tokens' },
];

export function Tools() {
  const [tools, error, reload] = usePoll(() => must(api.GET('/v1/tools')), 30_000);
  if (!tools) return error ? <LoadError error={error} /> : <Loading what="Loading the tools" />;
  return (
    <div data-testid="admin-tools">
      <LoadError error={error} />
      {tools.map((t) => (
        <ToolCard key={t.slug} tool={t} onChanged={reload} />
      ))}
    </div>
  );
}

function describe(price: Tool['price']): string {
  if (!price) return 'no price';
  const est = price.estimate !== null ? `, about ${credits(price.estimate)} a run` : '';
  if (price.model === 'derived') return `derived from our cost${est}`;
  return `${credits(price.credits)} ${price.model.replace(/_/g, ' ').replace('per 1k', 'per 1000')}${price.cap ? `, at most ${credits(price.cap)}` : ''}${est}`;
}

function ToolCard({ tool, onChanged }: { tool: Tool; onChanged: () => void }) {
  return (
    <section class="card admin-tool" aria-labelledby={`tool-${tool.slug}`}>
      <h3 id={`tool-${tool.slug}`}>
        {tool.name} <code>{tool.slug}</code>{' '}
        {!tool.available && <span class="badge bad">unavailable</span>}
      </h3>
      <p class="hint">
        {tool.kind} · pool {tool.pool ?? '—'} · price: <span data-testid={`price-${tool.slug}`}>{describe(tool.price)}</span>
      </p>
      <details>
        <summary>Price and traffic split of {tool.name}</summary>
        <PriceForm tool={tool} onChanged={onChanged} />
        <SplitForm tool={tool} />
      </details>
    </section>
  );
}

function PriceForm({ tool, onChanged }: { tool: Tool; onChanged: () => void }) {
  const [model, setModel] = useState<PriceModel>('per_run');
  const [amount, setAmount] = useState('');
  const [cap, setCap] = useState('');
  const [done, setDone] = useState<string | null>(null);
  const action = useAction();
  const id = tool.slug;
  async function save(event: Event) {
    event.preventDefault();
    const out = await action.run(() =>
      must(
        api.PUT('/v1/admin/tools/{slug}/price', {
          params: { path: { slug: id } },
          body: { model, credits: Number(amount), cap: model === 'per_gpu_second' ? Number(cap) : null },
        }),
      ),
    );
    if (out) {
      setDone(`Price set: ${describe(out)}.`);
      onChanged();
    }
  }
  async function clear() {
    const out = await action.run(() => must(api.DELETE('/v1/admin/tools/{slug}/price', { params: { path: { slug: id } } })));
    if (out) {
      setDone(`Price cleared: ${describe(out)}.`);
      onChanged();
    }
  }
  return (
    <form onSubmit={save} class="admin-form">
      <div>
        <label for={`model-${id}`}>Price model</label>
        <select id={`model-${id}`} value={model} onChange={(e) => setModel((e.target as HTMLSelectElement).value as PriceModel)}>
          {MODELS.map((m) => (
            <option key={m.value} value={m.value}>
              {m.label}
            </option>
          ))}
        </select>
      </div>
      <div>
        <label for={`credits-${id}`}>Credits</label>
        <input id={`credits-${id}`} type="number" min={0} step={1} required value={amount} onInput={(e) => setAmount((e.target as HTMLInputElement).value)} />
      </div>
      {model === 'per_gpu_second' && (
        <div>
          <label for={`cap-${id}`}>Cap per run (credits)</label>
          <input id={`cap-${id}`} type="number" min={0} step={1} required value={cap} onInput={(e) => setCap((e.target as HTMLInputElement).value)} />
        </div>
      )}
      <p class="row">
        <button type="submit" disabled={action.busy}>
          Set price
        </button>
        <button type="button" class="secondary" disabled={action.busy} onClick={() => void clear()}>
          Use the derived price
        </button>
      </p>
      <LoadError error={action.error} />
      {done && <Notice kind="ok">{done}</Notice>}
    </form>
  );
}

function SplitForm({ tool }: { tool: Tool }) {
  const [percent, setPercent] = useState('0');
  const [deployment, setDeployment] = useState('');
  const [done, setDone] = useState<string | null>(null);
  const action = useAction();
  const id = tool.slug;
  async function save(event: Event) {
    event.preventDefault();
    const out = await action.run(() =>
      must(
        api.PUT('/v1/admin/tools/{slug}/split', {
          params: { path: { slug: id } },
          body: { comfydeploy_percent: Number(percent), deployment_id: deployment.trim() || null },
        }),
      ),
    );
    if (out) setDone(`${out.comfydeploy_percent}% of ${out.tool}'s new jobs go to ComfyUI Deploy${out.deployment_id ? ` (${out.deployment_id})` : ''}.`);
  }
  return (
    <form onSubmit={save} class="admin-form">
      <div>
        <label for={`split-${id}`}>Share to ComfyUI Deploy (%)</label>
        <input id={`split-${id}`} type="number" min={0} max={100} step={1} required value={percent} onInput={(e) => setPercent((e.target as HTMLInputElement).value)} />
      </div>
      <div>
        <label for={`deployment-${id}`}>Deployment id</label>
        <input id={`deployment-${id}`} value={deployment} placeholder="keep the current one" onInput={(e) => setDeployment((e.target as HTMLInputElement).value)} />
      </div>
      <p class="row">
        <button type="submit" disabled={action.busy}>
          Set traffic split
        </button>
      </p>
      <LoadError error={action.error} />
      {done && <Notice kind="ok">{done}</Notice>}
    </form>
  );
}
