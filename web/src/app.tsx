// The shell: header with navigation and who is signed in, and the page the path names. Pages
// other than the landing page load on demand (the canvas and the charts are large).
import type { ComponentType } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { match, path } from './router';
import { account, isAdmin, me, signOut } from './session';
import { credits, ErrorMessage, Loading } from './ui';
import Landing from './pages/landing';

export type PageProps = { params: Record<string, string> };
type PageModule = { default: ComponentType<PageProps> };

const routes: [string, () => Promise<PageModule>][] = [
  ['/pricing', () => import('./pages/pricing')],
  ['/guide', () => import('./pages/guide')],
  ['/guide/:slug', () => import('./pages/guide')],
  ['/signin', () => import('./pages/signin')],
  ['/generate', () => import('./pages/generate')],
  ['/generate/:tool', () => import('./pages/generate')],
  ['/sandbox', () => import('./pages/sandbox')],
  ['/chat', () => import('./pages/chat')],
  ['/history', () => import('./pages/history')],
  ['/history/:kind/:id', () => import('./pages/history')],
  ['/account', () => import('./pages/account')],
  ['/admin', () => import('./pages/admin')],
  ['/admin/:section', () => import('./pages/admin')],
];

function resolve(p: string): { load: (() => Promise<PageModule>) | null; params: Record<string, string> } {
  for (const [pattern, load] of routes) {
    const params = match(pattern, p);
    if (params) return { load, params };
  }
  return { load: null, params: {} };
}

function Lazy({ load, params }: { load: () => Promise<PageModule>; params: Record<string, string> }) {
  const [mod, setMod] = useState<PageModule | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    let live = true;
    setMod(null);
    setError(null);
    load().then(
      (m) => live && setMod(m),
      (e) => live && setError(e),
    );
    return () => {
      live = false;
    };
  }, [load]);
  if (error) return <ErrorMessage error={new Error('This page could not be loaded; reload to try again.')} />;
  if (!mod) return <Loading />;
  const Page = mod.default;
  return <Page params={params} />;
}

function NotFoundPage() {
  return (
    <section>
      <h1>Not found</h1>
      <p>
        Nothing lives at <code>{path.value}</code>. <a href="/">Back to the start</a>.
      </p>
    </section>
  );
}

function Header() {
  const user = me.value;
  return (
    <header class="top">
      <a class="brand" href="/">
        swarmstation
      </a>
      <nav aria-label="Main">
        <a href="/generate">Generate</a>
        <a href="/sandbox">Sandbox</a>
        <a href="/chat">Chat</a>
        <a href="/history">History</a>
        <a href="/pricing">Pricing</a>
        <a href="/guide">Docs</a>
        {isAdmin.value && <a href="/admin">Admin</a>}
      </nav>
      <div class="who">
        {user ? (
          <>
            <a href="/account" class="balance" data-testid="balance" title="Your balance">
              {credits(account.value?.available)}
            </a>
            <a href="/account" class="user" data-testid="signed-in-as">
              {me.value?.address ? `${me.value.address.slice(0, 6)}…${me.value.address.slice(-4)}` : user.user.name}
            </a>
            <button type="button" class="link" onClick={() => void signOut()}>
              Sign out
            </button>
          </>
        ) : (
          <a href="/signin" class="button">
            Sign in
          </a>
        )}
      </div>
    </header>
  );
}

export function App() {
  const p = path.value;
  const { load, params } = p === '/' ? { load: null, params: {} } : resolve(p);
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <Header />
      <main id="main" tabIndex={-1}>
        {p === '/' ? <Landing params={{}} /> : load ? <Lazy key={p} load={load} params={params} /> : <NotFoundPage />}
      </main>
    </>
  );
}
