// Costs and P&L: revenue against what the jobs cost us, by day as a chart (the P&L report's
// day rows), with the totals, and the same report by tool and the costs by pool as tables.
import { useMemo, useState } from 'preact/hooks';
import { api, must } from '../api/client';
import { credits, Loading } from '../ui';
import { LineChart, type Line } from './chart';
import { LoadError, usePoll } from './common';
import { pnlSeries, usd } from './format';

const RANGES = [
  { days: 7, label: 'Last 7 days' },
  { days: 30, label: 'Last 30 days' },
  { days: 90, label: 'Last 90 days' },
  { days: 0, label: 'All time' },
];

async function load(days: number) {
  const since = days ? new Date(Date.now() - days * 86_400_000).toISOString() : undefined;
  const [byDay, byTool, byPool] = await Promise.all([
    must(api.GET('/v1/admin/costs/pnl', { params: { query: { group_by: 'day', since } } })),
    must(api.GET('/v1/admin/costs/pnl', { params: { query: { group_by: 'tool', since } } })),
    must(api.GET('/v1/admin/costs', { params: { query: { group_by: 'pool', since } } })),
  ]);
  return { byDay, byTool, byPool };
}

export function Costs() {
  const [days, setDays] = useState(30);
  const [data, error] = usePoll(() => load(days), 30_000, [days]);
  const series = useMemo(() => (data ? pnlSeries(data.byDay.rows) : null), [data]);
  const lines = useMemo<Line[]>(
    () =>
      series
        ? [
            { label: 'Revenue less royalties', color: '#16704f', values: series.revenue },
            { label: 'Cost', color: '#b3261e', values: series.cost },
            { label: 'Margin', color: '#4b3fd6', values: series.margin, dash: [6, 4] },
          ]
        : [],
    [series],
  );
  return (
    <div data-testid="admin-costs">
      <p>
        <label for="cost-range">Period</label>
        <select id="cost-range" value={days} onChange={(e) => setDays(Number((e.target as HTMLSelectElement).value))}>
          {RANGES.map((r) => (
            <option key={r.days} value={r.days}>
              {r.label}
            </option>
          ))}
        </select>
      </p>
      <LoadError error={error} />
      {!data || !series ? (
        !error && <Loading what="Loading costs" />
      ) : (
        <>
          <dl class="admin-stats" aria-label="Totals">
            <div class="card">
              <dt>Revenue</dt>
              <dd data-testid="pnl-revenue">{usd(data.byDay.revenue_usd)}</dd>
            </div>
            <div class="card">
              <dt>Royalties</dt>
              <dd>{usd(data.byDay.royalty_usd)}</dd>
            </div>
            <div class="card">
              <dt>Cost</dt>
              <dd data-testid="pnl-cost">{usd(data.byDay.cost_usd)}</dd>
            </div>
            <div class="card">
              <dt>Margin</dt>
              <dd data-testid="pnl-margin">{usd(data.byDay.margin_usd)}</dd>
            </div>
            <div class="card">
              <dt>Idle cost</dt>
              <dd>{usd(data.byDay.unattributed_cost_usd)}</dd>
            </div>
          </dl>
          <p class="hint">
            {credits(data.byDay.revenue_credits)} captured at {data.byDay.credits_per_usd.toLocaleString('en-US')} credits per
            dollar.
          </p>
          <h2>By day</h2>
          {series.x.length === 0 ? (
            <p class="muted">No jobs or instance bills in this period yet.</p>
          ) : (
            <LineChart
              x={series.x}
              lines={lines}
              label={`Revenue, cost and margin per day over ${series.x.length} day${series.x.length === 1 ? '' : 's'}; the table below has the numbers`}
            />
          )}
          <Table
            caption="Profit and loss per day"
            first="Day"
            rows={data.byDay.rows.map((r) => [r.key, usd(r.net_revenue_usd), usd(r.cost_usd), usd(r.margin_usd), String(r.jobs)])}
          />
          <h2>By tool</h2>
          <Table
            caption="Profit and loss per tool"
            first="Tool"
            rows={data.byTool.rows.map((r) => [r.key, usd(r.net_revenue_usd), usd(r.cost_usd), usd(r.margin_usd), String(r.jobs)])}
          />
          <h2>Costs by pool</h2>
          <p class="hint">
            Billed {usd(data.byPool.billed)} for {data.byPool.instances} instance{data.byPool.instances === 1 ? '' : 's'}:{' '}
            {usd(data.byPool.attributed)} carried by {data.byPool.jobs} jobs, {usd(data.byPool.unattributed)} idle.
          </p>
          <div class="table-wrap">
            <table>
              <caption class="visually-hidden">Costs per pool</caption>
              <thead>
                <tr>
                  <th scope="col">Pool</th>
                  <th scope="col">Cost</th>
                  <th scope="col">GPU seconds</th>
                  <th scope="col">Jobs</th>
                </tr>
              </thead>
              <tbody>
                {data.byPool.rows.map((r) => (
                  <tr key={r.key}>
                    <td>{r.key}</td>
                    <td>{usd(r.cost)}</td>
                    <td>{r.gpu_seconds.toLocaleString('en-US')}</td>
                    <td>{r.jobs}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {data.byDay.notes.length > 0 && (
            <ul class="hint">
              {data.byDay.notes.map((n) => (
                <li key={n}>{n}</li>
              ))}
            </ul>
          )}
        </>
      )}
    </div>
  );
}

function Table({ caption, first, rows }: { caption: string; first: string; rows: string[][] }) {
  if (rows.length === 0) return <p class="muted">Nothing yet.</p>;
  return (
    <div class="table-wrap">
      <table>
        <caption class="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            <th scope="col">{first}</th>
            <th scope="col">Revenue less royalties</th>
            <th scope="col">Cost</th>
            <th scope="col">Margin</th>
            <th scope="col">Jobs</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r[0]}>
              {r.map((c, n) => (
                <td key={n}>{c}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
