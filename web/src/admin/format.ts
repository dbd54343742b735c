// Pure helpers for the admin pages: counts, rates, sizes, times and the P&L chart's series.
// No DOM and no fetch, so vitest checks them directly.
import type { Schemas } from '../api/client';

export type Instance = Schemas['InstanceOut'];
export type Lora = Schemas['LoraOut'];

/** Instances by state, in the order an operator reads them (live ones first). */
export const STATE_ORDER = [
  'BUSY',
  'IDLE',
  'INITIALIZING',
  'PROVISIONING',
  'DRAINING',
  'STOPPED',
  'UNHEALTHY',
  'TERMINATED',
] as const;

export function countByState(instances: readonly Pick<Instance, 'state'>[]): [string, number][] {
  const counts = new Map<string, number>();
  for (const i of instances) counts.set(i.state, (counts.get(i.state) ?? 0) + 1);
  const rank = (s: string) => {
    const at = (STATE_ORDER as readonly string[]).indexOf(s);
    return at < 0 ? STATE_ORDER.length : at;
  };
  return [...counts.entries()].sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
}

/** The badge tone for an instance state or a LoRA's moderation state. */
export function tone(state: string): '' | 'ok' | 'warn' | 'bad' {
  if (['IDLE', 'BUSY', 'approved'].includes(state)) return 'ok';
  if (['PROVISIONING', 'INITIALIZING', 'DRAINING', 'STOPPED', 'staging', 'pending_review'].includes(state))
    return 'warn';
  if (['UNHEALTHY', 'TERMINATED', 'rejected', 'deployment_failed'].includes(state)) return 'bad';
  return '';
}

/** A rate in [0, 1] as a whole percentage; "—" when nothing was counted yet. */
export function percent(rate: number | null | undefined): string {
  if (rate === null || rate === undefined || Number.isNaN(rate)) return '—';
  return `${Math.round(rate * 100)}%`;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '?';
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** A LoRA's staging progress: bytes done of total, and the fraction when the total is known. */
export function staging(lora: Pick<Lora, 'staging_bytes_done' | 'staging_bytes_total' | 'file_size'>): {
  done: number;
  total: number | null;
  fraction: number | null;
} {
  const total = lora.staging_bytes_total ?? lora.file_size ?? null;
  const done = lora.staging_bytes_done;
  return { done, total, fraction: total ? Math.min(1, done / total) : null };
}

/** How long ago `iso` was, relative to `now` (ms), in the largest unit that fits. */
export function ago(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return 'never';
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export type SeriesPoint = Schemas['SeriesPoint'];

/** The cost series (GET /v1/admin/costs/series) as uPlot's columns: x in Unix seconds (each
 * bucket's start), then revenue less royalties, cost and margin in USD, and jobs. The server
 * sends every bucket, empty ones as zeros, so the columns line up without filling gaps here. */
export interface Columns {
  x: number[];
  revenue: number[];
  cost: number[];
  margin: number[];
  jobs: number[];
}

export function columns(points: readonly SeriesPoint[]): Columns {
  const sorted = [...points].sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
  const net = (p: SeriesPoint) => Number(p.revenue_usd) - Number(p.royalty_usd);
  // rounded to the micro-dollar the API counts in, so that 0.3 - 0.1 shows as 0.2
  const micro = (v: number) => Math.round(v * 1e6) / 1e6;
  return {
    x: sorted.map((p) => Date.parse(p.start) / 1000),
    revenue: sorted.map((p) => micro(net(p))),
    cost: sorted.map((p) => Number(p.cost_usd)),
    margin: sorted.map((p) => micro(net(p) - Number(p.cost_usd))),
    jobs: sorted.map((p) => p.jobs),
  };
}

/** Decimal places for axis labels whose ticks are `step` apart (0.0005 → 4). */
export function tickDigits(step: number): number {
  if (!(step > 0) || step >= 1) return 0;
  return Math.min(8, Math.ceil(-Math.log10(step) - 1e-9));
}

/** Dollars as the admin pages show them: two decimals, or four under a cent (GPU seconds are
 * cheap, and "$0.00" would hide them). */
export function usd(value: string | number): string {
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  const digits = n !== 0 && Math.abs(n) < 0.01 ? 4 : 2;
  return `${n < 0 ? '−' : ''}$${Math.abs(n).toFixed(digits)}`;
}

/** A fresh Idempotency-Key for one credit grant: a retry of the same click reuses it. */
export function newIdempotencyKey(): string {
  return globalThis.crypto?.randomUUID?.() ?? `grant-${Date.now()}-${Math.random().toString(36).slice(2)}`;
}
