// Small pieces every page uses: messages, loading states, the sign-in gate, credit amounts.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError } from './api/client';
import { navigate, path } from './router';
import { me, sessionKnown } from './session';

export function credits(amount: number | null | undefined): string {
  if (amount === null || amount === undefined) return '—';
  return `${amount.toLocaleString('en-US')} cr`;
}

export function ErrorMessage({ error }: { error: unknown }) {
  if (!error) return null;
  const text = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  const fields = error instanceof ApiError ? error.fields : [];
  return (
    <div class="message error" role="alert">
      <strong>{error instanceof ApiError && error.status ? `${error.status} ` : ''}</strong>
      {text}
      {fields.length > 0 && (
        <ul>
          {fields.map((f) => (
            <li key={f.field}>
              <code>{f.field}</code>: {f.reason}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Notice({ children, kind = 'info' }: { children: ComponentChildren; kind?: 'info' | 'ok' }) {
  return (
    <div class={`message ${kind}`} role="status">
      {children}
    </div>
  );
}

export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <p class="loading" aria-live="polite">
      {what}…
    </p>
  );
}

/** Render children only for a signed-in person; others are sent to sign in, and come back. */
export function RequireSignIn({ children }: { children: ComponentChildren }) {
  const known = sessionKnown.value;
  const user = me.value;
  useEffect(() => {
    if (known && !user) navigate(`/signin?next=${encodeURIComponent(path.value + location.search)}`, { replace: true });
  }, [known, user]);
  if (!known) return <Loading />;
  if (!user) return null;
  return <>{children}</>;
}

/** Load something on mount (and when `deps` change): [value, error, reload]. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []): [T | undefined, unknown, () => void] {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setError(null);
    load().then(
      (v) => live && setValue(v),
      (e) => live && setError(e),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  return [value, error, () => setTick((t) => t + 1)];
}

export function PageTitle({ children }: { children: string }) {
  useEffect(() => {
    document.title = `${children} · swarmstation`;
  }, [children]);
  return <h1>{children}</h1>;
}
