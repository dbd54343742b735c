// Costs and P&L: revenue against what the jobs cost us over time as a chart (GET
// /v1/admin/costs/series, by the hour or the day), the totals and the report by tool (GET
// /v1/admin/costs/pnl), and the instance bills by pool (GET /v1/admin/costs).
import { useMemo, useState } from 'preact/hooks';
import { api, must } from '../api/client';
import { credits, Loading } from '../ui';
import { LineChart, type Line } from './chart';
import { LoadError, Scroller, usePoll } from './common';
import { columns, usd } from './format';

const RANGES: { key: string; hours: number; bucket: 'hour' | 'day'; label: string }[] = [
  { key: '48h', hours: 48, bucket: 'hour', label: 'Last 48 hours, by the hour' },
  { key: '7d', hours: 168, bucket: 'hour', label: 'Last 7 days, by the hour' },
  { key: '30d', hours: 720, bucket: 'day', label: 'Last 30 days, by the day' },
  { key: '365d', hours: 8760, bucket: 'day', label: 'Last year, by the day' },
];

async function load(range: (typeof RANGES)[number]) {
  const step = range.bucket === 'hour' ? 3_600_000 : 86_400_000;
  // from the start of the bucket, so that the totals and the chart count the same jobs
  const since = new Date(Math.floor((Date.now() - range.hours * 3_600_000) / step) * step).toISOString();
  const [series, byDay, byTool, byPool] = await Promise.all([
    must(api.GET('/v1/admin/costs/series', { params: { query: { bucket: range.bucket, since } } })),
    must(api.GET('/v1/admin/costs/pnl', { params: { query: { group_by: 'day', since } } })),
    must(api.GET('/v1/admin/costs/pnl', { params: { query: { group_by: 'tool', since } } })),
    must(api.GET('/v1/admin/costs', { params: { query: { group_by: 'pool', since } } })),
  ]);
  return { series, byDay, byTool, byPool };
}

export function Costs() {
  const [rangeKey, setRangeKey] = useState('48h');
  const range = RANGES.find((r) => r.key === rangeKey) ?? RANGES[0];
  const [data, error] = usePoll(() => load(range), 15_000, [rangeKey]);
  const series = useMemo(() => (data ? columns(data.series.points) : null), [data]);
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
        <select id="cost-range" value={rangeKey} onChange={(e) => setRangeKey((e.target as HTMLSelectElement).value)}>
          {RANGES.map((r) => (
            <option key={r.key} value={r.key}>
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
          <h2>Over time</h2>
          <LineChart
            x={series.x}
            lines={lines}
            label={`Revenue, cost and margin per ${range.bucket} over ${series.x.length} ${range.bucket}s; the table below has the ${range.bucket}s with activity`}
          />
          <Table
            caption={`Profit and loss per ${range.bucket}, where there was any`}
            first={range.bucket === 'hour' ? 'Hour' : 'Day'}
            rows={data.series.points
              .map((p, n) => ({ p, n }))
              .filter(({ p }) => p.jobs || p.revenue_credits || Number(p.cost_usd))
              .reverse()
              .map(({ p, n }) => [
                range.bucket === 'hour' ? new Date(p.start).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' }) : p.start.slice(0, 10),
                usd(series.revenue[n]),
                usd(p.cost_usd),
                usd(series.margin[n]),
                String(p.jobs),
              ])}
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
          <Scroller label="Costs per pool">
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
          </Scroller>
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
    <Scroller label={caption}>
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
    </Scroller>
  );
}
