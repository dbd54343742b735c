// Overview: the queue, instances by state and the pools, refreshed every 2 s.
import { api, must } from '../api/client';
import { Loading } from '../ui';
import { LoadError, Scroller, usePoll } from './common';
import { countByState, tone } from './format';

const QUEUE_KEYS = ['queued', 'assigned', 'running', 'completed', 'failed', 'cancelled'] as const;

export function Overview() {
  const [status, error] = usePoll(() => must(api.GET('/v1/admin/status')), 2000);
  if (!status) return error ? <LoadError error={error} /> : <Loading what="Loading the status" />;
  const byState = countByState(status.instances);
  return (
    <div data-testid="admin-overview">
      <LoadError error={error} />
      <h2>Queue</h2>
      <dl class="admin-stats" aria-label="Jobs by state">
        {QUEUE_KEYS.map((k) => (
          <div key={k} class="card">
            <dt>{k}</dt>
            <dd data-testid={`queue-${k}`}>{status.queue[k]}</dd>
          </div>
        ))}
      </dl>
      <h2>Instances by state</h2>
      {byState.length === 0 ? (
        <p class="muted">No live instances. Pools start them on demand, or attach a machine.</p>
      ) : (
        <ul class="admin-states" aria-label="Instances by state">
          {byState.map(([state, n]) => (
            <li key={state}>
              <span class={`badge ${tone(state)}`}>{state}</span> {n}
            </li>
          ))}
        </ul>
      )}
      <h2>Pools</h2>
      <Scroller label="Pools">
        <table>
          <thead>
            <tr>
              <th scope="col">Pool</th>
              <th scope="col">Provider</th>
              <th scope="col">Min–max</th>
              <th scope="col">Instances</th>
            </tr>
          </thead>
          <tbody>
            {status.pools.map((p) => (
              <tr key={p.name}>
                <td>
                  <a href={`/admin/pools#pool-${p.name}`}>{p.name}</a>
                </td>
                <td>{p.provider}</td>
                <td>
                  {p.min_instances}–{p.max_instances}
                </td>
                <td>
                  {Object.entries(p.instances).length === 0
                    ? 'none'
                    : Object.entries(p.instances)
                        .map(([s, n]) => `${n} ${s.toLowerCase()}`)
                        .join(', ')}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Scroller>
    </div>
  );
}
