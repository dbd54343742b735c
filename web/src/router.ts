// A small client-side router on the History API: the path is a signal; links with an href that
// starts with "/" (and not an API prefix) navigate without a reload.
import { signal } from '@preact/signals';

export const path = signal(location.pathname);
export const query = signal(new URLSearchParams(location.search));

// Served by the control plane itself, never by the studio: a link there is a real navigation.
const SERVER_PREFIXES = ['/v1', '/worker/v1', '/docs', '/redoc', '/openapi.json', '/metrics', '/healthz', '/objects'];

export function isServerPath(p: string): boolean {
  return SERVER_PREFIXES.some((prefix) => p === prefix || p.startsWith(prefix + '/'));
}

export function navigate(to: string, { replace = false }: { replace?: boolean } = {}): void {
  const url = new URL(to, location.origin);
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  path.value = url.pathname;
  query.value = url.searchParams;
  window.scrollTo(0, 0);
}

addEventListener('popstate', () => {
  path.value = location.pathname;
  query.value = new URLSearchParams(location.search);
});

document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const anchor = (event.target as Element | null)?.closest?.('a');
  if (!anchor || anchor.target || anchor.hasAttribute('download')) return;
  const href = anchor.getAttribute('href');
  if (!href || !href.startsWith('/') || href.startsWith('//')) return;
  const url = new URL(href, location.origin);
  if (isServerPath(url.pathname)) return;
  event.preventDefault();
  navigate(href);
});

/** Match a pattern such as "/history/:kind/:id" against a path; the named parts, or null. */
export function match(pattern: string, p: string): Record<string, string> | null {
  const want = pattern.split('/').filter(Boolean);
  const got = p.split('/').filter(Boolean);
  if (want.length !== got.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(':')) params[want[i].slice(1)] = decodeURIComponent(got[i]);
    else if (want[i] !== got[i]) return null;
  }
  return params;
}
