// The public catalog the landing and pricing pages read (GET /v1/catalog: no sign-in needed),
// and how a tool's price reads to a person. Plain functions, tested in catalog.test.ts.
import { useEffect } from 'preact/hooks';
import { api, must, type Schemas } from '../api/client';
import { credits } from '../ui';

export type Catalog = Schemas['Catalog'];
export type Tool = Schemas['ToolSummary'];
export type Price = Schemas['PriceOut'];

export const loadCatalog = (): Promise<Catalog> => must(api.GET('/v1/catalog'));

/** Load again when the person comes back to the tab: prices and availability change while a
 * page sits open (an admin sets a price, the LLM endpoint comes up), and this costs no polling. */
export function useReloadOnReturn(reload: () => void): void {
  useEffect(() => {
    const onVisible = () => document.visibilityState === 'visible' && reload();
    document.addEventListener('visibilitychange', onVisible);
    return () => document.removeEventListener('visibilitychange', onVisible);
  }, [reload]);
}

/** What one unit of each price model is (the server's PriceKind values). */
export const UNITS: Record<string, string> = {
  per_run: 'per run',
  per_megapixel: 'per output megapixel',
  per_gpu_second: 'per GPU second',
  per_1k_tokens: 'per 1k tokens',
  derived: 'per run',
};

/** The model's name in a sentence, for the pricing table. */
export const MODEL_NAMES: Record<string, string> = {
  per_run: 'Fixed per run',
  per_megapixel: 'Per image size',
  per_gpu_second: 'Per GPU second, capped',
  per_1k_tokens: 'Per 1k tokens',
  derived: 'Fixed per run, from our cost',
};

/** "2 cr per 1k tokens"; a tool without a price says so rather than showing 0. */
export function priceLabel(price: Price | null | undefined): string {
  if (!price || price.credits === null || price.credits === undefined) return 'price set per run';
  return `${credits(price.credits)} ${UNITS[price.model] ?? price.model}`;
}

/** What one run with the tool's defaults comes to, when that is not the label already. */
export function priceNote(price: Price | null | undefined): string | null {
  if (!price) return null;
  if (price.model === 'per_gpu_second' && price.cap !== null && price.cap !== undefined)
    return `at most ${credits(price.cap)} a run`;
  if (price.model === 'per_run' || price.model === 'derived') return null;
  if (price.estimate === null || price.estimate === undefined) return 'the quote depends on the inputs';
  return `about ${credits(price.estimate)} with the defaults`;
}

// Generating comes first on the landing page; categories not named here follow, as they come.
const CATEGORY_ORDER = ['text-to-image', 'image-to-image', 'upscale', 'text', 'image-utility'];

/** Tools by category (CATEGORY_ORDER, then the rest as they come), available tools first. */
export function byCategory(tools: Tool[]): [string, Tool[]][] {
  const groups = new Map<string, Tool[]>();
  for (const tool of tools) {
    const list = groups.get(tool.category) ?? [];
    list.push(tool);
    groups.set(tool.category, list);
  }
  const rank = (c: string) => (CATEGORY_ORDER.includes(c) ? CATEGORY_ORDER.indexOf(c) : CATEGORY_ORDER.length);
  return [...groups]
    .sort(([a], [b]) => rank(a) - rank(b))
    .map(([category, list]) => [category, [...list].sort((a, b) => +b.available - +a.available)]);
}

/** "text-to-image" → "Text to image". */
export function categoryName(category: string): string {
  const words = category.replace(/[-_]+/g, ' ').trim();
  return words ? words[0].toUpperCase() + words.slice(1) : 'Other';
}

export const KIND_NAMES: Record<string, string> = {
  comfyui: 'GPU workflow',
  llm: 'Language model',
  image: 'Image utility',
};

/** 1000 → "0.001": the worth of one credit, in dollars, without float noise. */
export function usdPerCredit(perUsd: number): string {
  if (perUsd <= 0) return '—';
  return (1 / perUsd).toPrecision(3).replace(/\.?0+$/, '');
}
