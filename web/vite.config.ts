import preact from '@preact/preset-vite';
import { cpSync, existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { defineConfig, type Plugin } from 'vitest/config';

// The control plane `npm run dev` proxies to (SWARMSTATION_URL, or `make run`'s default).
const api = process.env.SWARMSTATION_URL ?? 'http://127.0.0.1:8000';
const proxied = ['/v1', '/worker/v1', '/objects', '/healthz', '/metrics', '/docs', '/openapi.json'];
// STUDIO_DIST_DIR: build elsewhere (the server reads the same variable).
const outDir = process.env.STUDIO_DIST_DIR ?? resolve(__dirname, '../swarmstation/studio_dist');

/** Copies README.md and docs/ into the build, so that an installed package can show its docs
 * (api/docs_pages.py reads them from the repository when it is there, else from this copy). */
function packDocs(): Plugin {
  return {
    name: 'swarmstation-pack-docs',
    apply: 'build',
    closeBundle() {
      const repo = resolve(__dirname, '..');
      mkdirSync(resolve(outDir, 'docs'), { recursive: true });
      cpSync(resolve(repo, 'README.md'), resolve(outDir, 'docs/README.md'));
      if (existsSync(resolve(repo, 'docs'))) cpSync(resolve(repo, 'docs'), resolve(outDir, 'docs'), { recursive: true });
    },
  };
}

export default defineConfig({
  plugins: [preact(), packDocs()],
  build: {
    // Packaged with the Python package: an installed swarmstation serves the studio without Node.
    outDir,
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    target: 'es2022',
    modulePreload: { polyfill: false },
  },
  server: {
    proxy: Object.fromEntries(proxied.map((p) => [p, { target: api, changeOrigin: false }])),
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.ts', 'src/**/*.test.tsx'],
  },
});
