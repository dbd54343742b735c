// Pools and instances, live (polled every 2 s): each instance's state and why, its active jobs,
// cache hit rates and heartbeat; its transitions on demand; each pool's settings, editable.
import { useState } from 'preact/hooks';
import { api, must, type Schemas } from '../api/client';
import { Loading, Notice } from '../ui';
import { LoadError, Scroller, useAction, usePoll } from './common';
import { ago, percent, tone, type Instance } from './format';

type Pool = Schemas['PoolDetail'];

async function loadPools(includeTerminated: boolean): Promise<{ pools: Pool[]; instances: Instance[] }> {
  const [pools, instances] = await Promise.all([
    must(api.GET('/v1/admin/pools')),
    must(api.GET('/v1/admin/instances', { params: { query: { include_terminated: includeTerminated } } })),
  ]);
  return { pools, instances };
}

export function Pools() {
  const [withTerminated, setWithTerminated] = useState(false);
  const [data, error, reload] = usePoll(() => loadPools(withTerminated), 2000, [withTerminated]);
  if (!data) return error ? <LoadError error={error} /> : <Loading what="Loading the pools" />;
  return (
    <div data-testid="admin-pools">
      <LoadError error={error} />
      <p class="row">
        <input
          id="with-terminated"
          type="checkbox"
          checked={withTerminated}
          onChange={(e) => setWithTerminated((e.target as HTMLInputElement).checked)}
        />
        <label for="with-terminated" class="inline">
          Show terminated instances
        </label>
        <span class="muted" aria-live="off">
          Live: refreshed every 2 s.
        </span>
      </p>
      {data.pools.map((pool) => (
        <PoolCard
          key={pool.name}
          pool={pool}
          instances={data.instances.filter((i) => i.pool === pool.name)}
          onSaved={reload}
        />
      ))}
      {data.pools.length === 0 && <p class="muted">No pools yet (swarmstation pools create).</p>}
    </div>
  );
}

function PoolCard({ pool, instances, onSaved }: { pool: Pool; instances: Instance[]; onSaved: () => void }) {
  return (
    <section class="card admin-pool" id={`pool-${pool.name}`} aria-labelledby={`pool-h-${pool.name}`}>
      <h2 id={`pool-h-${pool.name}`}>
        Pool {pool.name} <span class="badge">{pool.provider}</span>
      </h2>
      <p class="muted">
        {instances.length} instance{instances.length === 1 ? '' : 's'} · {pool.queued} queued · {pool.parked} parked ·
        min {pool.min_instances}, max {pool.max_instances}, {pool.slots_per_instance} slot
        {pool.slots_per_instance === 1 ? '' : 's'} each
      </p>
      {instances.length === 0 ? (
        <p class="muted">No instances in this pool.</p>
      ) : (
        <Scroller label={`Instances of pool ${pool.name}`}>
          <table data-testid={`instances-${pool.name}`}>
            <thead>
              <tr>
                <th scope="col">Instance</th>
                <th scope="col">State</th>
                <th scope="col">Active jobs</th>
                <th scope="col">Cache hits</th>
                <th scope="col">Heartbeat</th>
                <th scope="col">History</th>
              </tr>
            </thead>
            <tbody>
              {instances.map((i) => (
                <InstanceRow key={i.id} instance={i} />
              ))}
            </tbody>
          </table>
        </Scroller>
      )}
      <PoolSettings pool={pool} onSaved={onSaved} />
    </section>
  );
}

function InstanceRow({ instance: i }: { instance: Instance }) {
  const [open, setOpen] = useState(false);
  // an attached machine's name, else the start of our id (the provider's id is in the title)
  const label = (i.info?.name as string | undefined) ?? i.id.slice(0, 8);
  return (
    <>
      <tr data-testid="instance-row" data-instance-id={i.id}>
        <td>
          <code title={`${i.id}${i.provider_instance_id ? ` (${i.provider}: ${i.provider_instance_id})` : ''}`}>{label}</code>
          <div class="hint">{i.provider}</div>
        </td>
        <td>
          <span class={`badge ${tone(i.state)}`} data-testid="instance-state">
            {i.state}
          </span>
          {i.state_reason && <div class="hint">{i.state_reason}</div>}
        </td>
        <td>{i.active_jobs}</td>
        <td>
          {percent(i.cache_hit_rate)} <span class="hint">of files</span>
          <div class="hint">{percent(i.cache_byte_hit_rate)} of bytes</div>
        </td>
        <td>{ago(i.last_heartbeat_at)}</td>
        <td>
          <button
            type="button"
            class="secondary"
            aria-expanded={open}
            aria-controls={`history-${i.id}`}
            onClick={() => setOpen(!open)}
          >
            {open ? 'Hide' : 'Show'} history<span class="visually-hidden"> of {label}</span>
          </button>
        </td>
      </tr>
      {open && (
        <tr id={`history-${i.id}`} data-testid="instance-history">
          <td colSpan={6}>
            <Transitions id={i.id} />
          </td>
        </tr>
      )}
    </>
  );
}

function Transitions({ id }: { id: string }) {
  const [detail, error] = usePoll(
    () => must(api.GET('/v1/admin/instances/{instance_id}', { params: { path: { instance_id: id } } })),
    2000,
    [id],
  );
  if (!detail) return error ? <LoadError error={error} /> : <Loading what="Loading its history" />;
  const steps = detail.transitions ?? [];
  if (steps.length === 0) return <p class="muted">No transitions recorded.</p>;
  return (
    <ol class="admin-transitions" aria-label="State transitions">
      {steps.map((t, n) => (
        <li key={n}>
          <time dateTime={t.at}>{new Date(t.at).toLocaleString()}</time>: {t.from_state ?? 'new'} →{' '}
          <span class={`badge ${tone(t.to_state)}`}>{t.to_state}</span> {t.reason && <span class="hint">{t.reason}</span>}
        </li>
      ))}
    </ol>
  );
}

// The settings an operator changes most; the rest stay with the CLI (`swarmstation pools set`).
const FIELDS = [
  ['min_instances', 'Min instances', 1],
  ['max_instances', 'Max instances', 1],
  ['slots_per_instance', 'Slots per instance', 1],
  ['scale_up_queue_threshold', 'Scale up at queued jobs', 1],
  ['idle_minutes', 'Idle minutes before stopping', 0.5],
  ['target_wait_seconds', 'Target wait (s)', 1],
] as const;
type Field = (typeof FIELDS)[number][0];

function PoolSettings({ pool, onSaved }: { pool: Pool; onSaved: () => void }) {
  const [values, setValues] = useState<Record<Field, string> | null>(null);
  const [saved, setSaved] = useState(false);
  const action = useAction();
  const current = values ?? (Object.fromEntries(FIELDS.map(([k]) => [k, String(pool[k])])) as Record<Field, string>);

  async function save(event: Event) {
    event.preventDefault();
    setSaved(false);
    const body: Record<string, number> = {};
    for (const [k] of FIELDS) if (Number(current[k]) !== pool[k]) body[k] = Number(current[k]);
    const done = await action.run(() =>
      must(api.PATCH('/v1/admin/pools/{name}', { params: { path: { name: pool.name } }, body })),
    );
    if (done) {
      setValues(null);
      setSaved(true);
      onSaved();
    }
  }

  return (
    <details class="admin-settings">
      <summary>Settings of pool {pool.name}</summary>
      <form onSubmit={save} class="admin-form">
        {FIELDS.map(([k, label, step]) => (
          <div key={k}>
            <label for={`${pool.name}-${k}`}>{label}</label>
            <input
              id={`${pool.name}-${k}`}
              type="number"
              min={0}
              step={step}
              value={current[k]}
              onInput={(e) => setValues({ ...current, [k]: (e.target as HTMLInputElement).value })}
            />
          </div>
        ))}
        <p class="row">
          <button type="submit" disabled={action.busy}>
            Save pool settings
          </button>
        </p>
        <LoadError error={action.error} />
        {saved && <Notice kind="ok">Saved.</Notice>}
      </form>
    </details>
  );
}
