// Prints the built studio's JavaScript sizes (gzip) as JSON and fails when the landing page's
// initial JavaScript (the entry chunk and what it imports statically) is over the budget.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const BUDGET_KB = 60;
const dist = process.env.STUDIO_DIST_DIR ?? new URL('../../swarmstation/studio_dist/', import.meta.url).pathname;
const manifestHtml = readFileSync(join(dist, 'index.html'), 'utf8');
const assets = join(dist, 'assets');
const gz = (file) => gzipSync(readFileSync(join(assets, file)), { level: 9 }).length;

const entry = [...manifestHtml.matchAll(/<script[^>]+src="\/assets\/([^"]+\.js)"/g)].map((m) => m[1]);
const preloads = [...manifestHtml.matchAll(/<link[^>]+rel="modulepreload"[^>]+href="\/assets\/([^"]+\.js)"/g)].map((m) => m[1]);
// Static imports of the entry chunk that index.html does not name are loaded at once too.
const initial = new Set([...entry, ...preloads]);
const queue = [...initial];
while (queue.length) {
  const file = queue.pop();
  const code = readFileSync(join(assets, file), 'utf8');
  for (const m of code.matchAll(/(?:^|[;\n}])\s*import\s*(?:[\w*{}\s,$]+from\s*)?["']\.\/([^"']+\.js)["']/g)) {
    if (!initial.has(m[1])) {
      initial.add(m[1]);
      queue.push(m[1]);
    }
  }
}
const chunks = Object.fromEntries(
  readdirSync(assets)
    .filter((f) => f.endsWith('.js') || f.endsWith('.css'))
    .sort()
    .map((f) => [f, +(gz(f) / 1024).toFixed(1)]),
);
const initialKb = +([...initial].reduce((sum, f) => sum + gz(f), 0) / 1024).toFixed(1);
const cssKb = +Object.entries(chunks).filter(([f]) => f.endsWith('.css')).reduce((s, [, v]) => s + v, 0).toFixed(1);
const report = { landing_initial_js_gzip_kb: initialKb, budget_kb: BUDGET_KB, css_gzip_kb: cssKb, initial_chunks: [...initial].sort(), chunks_gzip_kb: chunks };
console.log(JSON.stringify(report, null, 1));
if (initialKb > BUDGET_KB) {
  console.error(`landing page initial JavaScript is ${initialKb} kB gzip, over the ${BUDGET_KB} kB budget`);
  process.exit(1);
}
