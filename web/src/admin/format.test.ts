import { describe, expect, it } from 'vitest';
import { ago, bytes, columns, countByState, percent, staging, tickDigits, tone, usd, type SeriesPoint } from './format';

describe('countByState', () => {
  it('counts instances and orders live states first', () => {
    const got = countByState([{ state: 'IDLE' }, { state: 'TERMINATED' }, { state: 'BUSY' }, { state: 'IDLE' }]);
    expect(got).toEqual([
      ['BUSY', 1],
      ['IDLE', 2],
      ['TERMINATED', 1],
    ]);
  });
  it('puts unknown states last', () => {
    expect(countByState([{ state: 'WEIRD' }, { state: 'IDLE' }]).map((c) => c[0])).toEqual(['IDLE', 'WEIRD']);
  });
});

describe('formatting', () => {
  it('percent rounds and shows a dash for nothing counted', () => {
    expect(percent(0.736)).toBe('74%');
    expect(percent(null)).toBe('—');
  });
  it('bytes picks a unit', () => {
    expect(bytes(512)).toBe('512 B');
    expect(bytes(4096)).toBe('4.0 KiB');
    expect(bytes(3 * 1024 ** 3)).toBe('3.0 GiB');
    expect(bytes(null)).toBe('?');
  });
  it('ago counts back from now', () => {
    const now = Date.parse('2026-01-01T12:00:00Z');
    expect(ago('2026-01-01T11:59:30Z', now)).toBe('30 s ago');
    expect(ago('2026-01-01T10:00:00Z', now)).toBe('2 h ago');
    expect(ago(null, now)).toBe('never');
  });
  it('usd keeps sub-cent amounts visible', () => {
    expect(usd('1.5')).toBe('$1.50');
    expect(usd('0.00123')).toBe('$0.0012');
    expect(usd(-2)).toBe('−$2.00');
  });
  it('tone maps states to badges', () => {
    expect(tone('IDLE')).toBe('ok');
    expect(tone('staging')).toBe('warn');
    expect(tone('rejected')).toBe('bad');
  });
});

describe('staging', () => {
  it('gives the fraction of the known total', () => {
    expect(staging({ staging_bytes_done: 50, staging_bytes_total: 200, file_size: null })).toEqual({
      done: 50,
      total: 200,
      fraction: 0.25,
    });
  });
  it('falls back to the file size, and to no fraction', () => {
    expect(staging({ staging_bytes_done: 10, staging_bytes_total: null, file_size: 20 }).fraction).toBe(0.5);
    expect(staging({ staging_bytes_done: 10, staging_bytes_total: null, file_size: null }).fraction).toBeNull();
  });
});

describe('columns', () => {
  const point = (start: string, revenue: string, royalty: string, cost: string, jobs = 1): SeriesPoint => ({
    start,
    revenue_credits: 0,
    royalty_credits: 0,
    revenue_usd: revenue,
    royalty_usd: royalty,
    cost_usd: cost,
    jobs,
  });
  it('turns buckets into sorted columns of net revenue, cost and margin', () => {
    const c = columns([
      point('2026-01-01T13:00:00Z', '0.3', '0.1', '0.05', 2),
      point('2026-01-01T12:00:00Z', '0', '0', '0', 0),
    ]);
    expect(c.x).toEqual([Date.parse('2026-01-01T12:00:00Z') / 1000, Date.parse('2026-01-01T13:00:00Z') / 1000]);
    expect(c.revenue).toEqual([0, 0.2]);
    expect(c.cost).toEqual([0, 0.05]);
    expect(c.margin).toEqual([0, 0.15]);
    expect(c.jobs).toEqual([0, 2]);
  });
  it('is empty for no buckets', () => {
    expect(columns([]).x).toEqual([]);
  });
});

describe('tickDigits', () => {
  it('shows as many decimals as the tick step needs', () => {
    expect(tickDigits(5)).toBe(0);
    expect(tickDigits(0.5)).toBe(1);
    expect(tickDigits(0.0005)).toBe(4);
    expect(tickDigits(0.001)).toBe(3);
    expect(tickDigits(0)).toBe(0);
  });
});
