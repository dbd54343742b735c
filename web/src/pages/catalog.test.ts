import { describe, expect, it } from 'vitest';
import { byCategory, categoryName, priceLabel, priceNote, usdPerCredit, type Price, type Tool } from './catalog';

const price = (p: Partial<Price>): Price => ({ model: 'per_run', credits: 1, estimate: 1, cap: null, ...p });
const tool = (slug: string, category: string, available = true): Tool =>
  ({ slug, name: slug, category, available, kind: 'comfyui', outputs: [] }) as unknown as Tool;

describe('price text', () => {
  it('names the unit of each model', () => {
    expect(priceLabel(price({ model: 'per_1k_tokens', credits: 2 }))).toBe('2 cr per 1k tokens');
    expect(priceLabel(price({ model: 'per_run', credits: 1500 }))).toBe('1,500 cr per run');
    expect(priceLabel(price({ model: 'derived', credits: 3 }))).toBe('3 cr per run');
    expect(priceLabel(price({ model: 'per_megapixel', credits: 4 }))).toBe('4 cr per output megapixel');
    expect(priceLabel(null)).toBe('price set per run');
  });
  it('adds the cap or the estimate where the unit is not a run', () => {
    expect(priceNote(price({ model: 'per_gpu_second', credits: 1, cap: 90 }))).toBe('at most 90 cr a run');
    expect(priceNote(price({ model: 'per_1k_tokens', credits: 2, estimate: 4 }))).toBe('about 4 cr with the defaults');
    expect(priceNote(price({ model: 'per_megapixel', estimate: null }))).toBe('the quote depends on the inputs');
    expect(priceNote(price({ model: 'per_run' }))).toBeNull();
  });
});

describe('grouping', () => {
  it('puts generating first, then the rest in order, available tools first', () => {
    const groups = byCategory([
      tool('a', 'text', false),
      tool('z', 'misc'),
      tool('b', 'upscale'),
      tool('c', 'text'),
      tool('d', 'text-to-image'),
    ]);
    expect(groups.map(([c, ts]) => [c, ts.map((t) => t.slug)])).toEqual([
      ['text-to-image', ['d']],
      ['upscale', ['b']],
      ['text', ['c', 'a']],
      ['misc', ['z']],
    ]);
  });
  it('reads a category as words', () => {
    expect(categoryName('text-to-image')).toBe('Text to image');
    expect(categoryName('')).toBe('Other');
  });
});

describe('credits in dollars', () => {
  it('reads without float noise', () => {
    expect(usdPerCredit(1000)).toBe('0.001');
    expect(usdPerCredit(3)).toBe('0.333');
    expect(usdPerCredit(1)).toBe('1');
    expect(usdPerCredit(0)).toBe('—');
  });
});
