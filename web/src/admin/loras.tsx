// LoRA moderation: the queue (awaiting review, staging, failed staging) polled every 2 s, with
// where each file comes from (source URL) and where it was finally fetched from (final URL),
// staging progress in bytes, approve (with visibility) and reject (with a reason). LoRAs decided
// here stay listed under "Your decisions" until they settle, so staging can be watched.
import { useState } from 'preact/hooks';
import { api, must } from '../api/client';
import { Loading, Notice } from '../ui';
import { LoadError, useAction, usePoll } from './common';
import { bytes, staging, tone, type Lora } from './format';

type Status = Lora['moderation_status'];
const QUEUE: Status[] = ['pending_review', 'staging', 'deployment_failed'];
const FILTERS: { value: 'queue' | Status; label: string }[] = [
  { value: 'queue', label: 'Queue (awaiting review, staging, failed)' },
  { value: 'pending_review', label: 'Awaiting review' },
  { value: 'staging', label: 'Staging' },
  { value: 'deployment_failed', label: 'Staging failed' },
  { value: 'approved', label: 'Approved' },
  { value: 'rejected', label: 'Rejected' },
];

async function loadQueue(filter: 'queue' | Status): Promise<Lora[]> {
  const states = filter === 'queue' ? QUEUE : [filter];
  const lists = await Promise.all(
    states.map((status) => must(api.GET('/v1/admin/loras', { params: { query: { status } } }))),
  );
  return lists.flatMap((l) => l.loras);
}

export function Loras() {
  const [filter, setFilter] = useState<'queue' | Status>('queue');
  const [decided, setDecided] = useState<string[]>([]);
  const [loras, error, reload] = usePoll(() => loadQueue(filter), 2000, [filter]);
  const onDecided = (slug: string) => {
    setDecided((d) => [slug, ...d.filter((s) => s !== slug)]);
    reload();
  };
  return (
    <div data-testid="admin-loras">
      <p>
        <label for="lora-filter">Show</label>
        <select id="lora-filter" value={filter} onChange={(e) => setFilter((e.target as HTMLSelectElement).value as Status)}>
          {FILTERS.map((f) => (
            <option key={f.value} value={f.value}>
              {f.label}
            </option>
          ))}
        </select>
      </p>
      {decided.length > 0 && <Decided slugs={decided} />}
      <h2>{FILTERS.find((f) => f.value === filter)?.label}</h2>
      <LoadError error={error} />
      {!loras ? (
        !error && <Loading what="Loading the queue" />
      ) : loras.length === 0 ? (
        <p class="muted">Nothing here.</p>
      ) : (
        loras.map((l) => <LoraCard key={l.slug} lora={l} onDecided={onDecided} />)
      )}
    </div>
  );
}

/** The LoRAs approved or rejected here, followed until they settle. */
function Decided({ slugs }: { slugs: string[] }) {
  const [loras, error] = usePoll(
    () => Promise.all(slugs.map((slug) => must(api.GET('/v1/loras/{slug}', { params: { path: { slug } } })))),
    1000,
    [slugs.join(' ')],
  );
  return (
    <section aria-labelledby="decided-h" data-testid="lora-decisions">
      <h2 id="decided-h">Your decisions</h2>
      <LoadError error={error} />
      {loras?.map((l) => <LoraCard key={l.slug} lora={l} compact />)}
    </section>
  );
}

function Progress({ lora }: { lora: Lora }) {
  const p = staging(lora);
  if (lora.moderation_status !== 'staging' && !(lora.moderation_status === 'approved' && p.done)) return null;
  return (
    <div>
      <progress
        aria-label={`Staging ${lora.name}`}
        max={p.total ?? undefined}
        value={p.total ? p.done : undefined}
      />
      <span class="hint" data-testid="staging-bytes">
        {bytes(p.done)} of {bytes(p.total)}
        {p.fraction !== null && ` (${Math.round(p.fraction * 100)}%)`}
      </span>
    </div>
  );
}

function Link({ url }: { url: string | null }) {
  if (!url) return <span class="muted">—</span>;
  return (
    <a href={url} rel="noopener noreferrer" target="_blank">
      {url}
    </a>
  );
}

function LoraCard({ lora, onDecided, compact = false }: { lora: Lora; onDecided?: (slug: string) => void; compact?: boolean }) {
  const status = lora.moderation_status;
  return (
    <article class="card admin-lora" data-testid="lora-card" data-slug={lora.slug} aria-labelledby={`lora-${compact ? 'd' : 'q'}-${lora.slug}`}>
      <h3 id={`lora-${compact ? 'd' : 'q'}-${lora.slug}`}>
        {lora.name} <code>{lora.slug}</code>{' '}
        <span class={`badge ${tone(status)}`} data-testid="lora-status">
          {status}
        </span>
      </h3>
      <Progress lora={lora} />
      {lora.failure_reason && <p class="message error">Staging failed: {lora.failure_reason}</p>}
      {lora.moderation_reason && <p class="hint">Reason: {lora.moderation_reason}</p>}
      {!compact && (
        <dl>
          <dt>Source URL</dt>
          <dd data-testid="lora-source-url">
            <Link url={lora.source_url} />
          </dd>
          <dt>Final URL</dt>
          <dd data-testid="lora-final-url">
            <Link url={lora.final_url} />
          </dd>
          <dt>Page</dt>
          <dd>
            <Link url={lora.page_url} />
          </dd>
          <dt>From</dt>
          <dd>
            {lora.source_kind}
            {lora.original_author && `, by ${lora.original_author}`}
          </dd>
          <dt>Base model</dt>
          <dd>
            {lora.base_model} <span class="hint">({lora.source_base_model})</span>
          </dd>
          <dt>File</dt>
          <dd>
            {lora.file_name} · {bytes(lora.file_size)}
            {lora.file_sha256 && (
              <div class="hint">
                sha256 <code>{lora.file_sha256}</code>
              </div>
            )}
          </dd>
          <dt>Triggers</dt>
          <dd>{lora.triggers.length ? lora.triggers.join(', ') : '—'}</dd>
          <dt>Visibility</dt>
          <dd>{lora.visibility}</dd>
        </dl>
      )}
      {!compact && onDecided && status !== 'approved' && status !== 'rejected' && (
        <Decide lora={lora} onDecided={onDecided} />
      )}
    </article>
  );
}

function Decide({ lora, onDecided }: { lora: Lora; onDecided: (slug: string) => void }) {
  const [visibility, setVisibility] = useState<'public' | 'private' | 'unlisted'>(
    (lora.visibility as 'public' | 'private' | 'unlisted') ?? 'public',
  );
  const [reason, setReason] = useState('');
  const [done, setDone] = useState<string | null>(null);
  const action = useAction();
  const id = lora.slug;

  async function approve() {
    const out = await action.run(() =>
      must(api.POST('/v1/admin/loras/{slug}/approve', { params: { path: { slug: id } }, body: { visibility } })),
    );
    if (out) {
      setDone(`Approved ${out.name}: ${out.moderation_status === 'approved' ? 'approved' : 'staging its file'}.`);
      onDecided(id);
    }
  }
  async function reject(event: Event) {
    event.preventDefault();
    const out = await action.run(() =>
      must(api.POST('/v1/admin/loras/{slug}/reject', { params: { path: { slug: id } }, body: { reason } })),
    );
    if (out) {
      setDone(`Rejected ${out.name}.`);
      onDecided(id);
    }
  }

  return (
    <div class="admin-form">
      {lora.moderation_status !== 'staging' && (
      <div>
        <label for={`vis-${id}`}>Visibility</label>
        <select id={`vis-${id}`} value={visibility} onChange={(e) => setVisibility((e.target as HTMLSelectElement).value as typeof visibility)}>
          <option value="public">public</option>
          <option value="unlisted">unlisted</option>
          <option value="private">private</option>
        </select>
      </div>
      )}
      {lora.moderation_status !== 'staging' && (
      <p class="row">
        <button type="button" onClick={() => void approve()} disabled={action.busy}>
          {lora.moderation_status === 'deployment_failed' ? 'Retry staging' : 'Approve'}
          <span class="visually-hidden"> {lora.name}</span>
        </button>
      </p>
      )}
      <form onSubmit={reject} class="full row">
        <label for={`reason-${id}`} class="visually-hidden">
          Reason for rejecting {lora.name}
        </label>
        <input
          id={`reason-${id}`}
          placeholder="Reason for rejecting"
          value={reason}
          required
          onInput={(e) => setReason((e.target as HTMLInputElement).value)}
        />
        <button type="submit" class="danger" disabled={action.busy || !reason.trim()}>
          Reject<span class="visually-hidden"> {lora.name}</span>
        </button>
      </form>
      <LoadError error={action.error} />
      {done && <Notice kind="ok">{done}</Notice>}
    </div>
  );
}
