// What every admin section shares: polling for live views, the "admins only" answer, and how a
// section shows a failed load (a 403 is the admins-only page, never a bare error).
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from '../api/client';
import { ErrorMessage } from '../ui';

/** Load now and then every `ms` while the tab is visible: [value, error, reload]. The last good
 * value stays on screen when a poll fails (the error is shown beside it). */
export function usePoll<T>(load: () => Promise<T>, ms: number, deps: unknown[] = []): [T | undefined, unknown, () => void] {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const once = async () => {
      if (!document.hidden) {
        try {
          const v = await loadRef.current();
          if (!live) return;
          setValue(v);
          setError(null);
        } catch (e) {
          if (!live) return;
          setError(e);
          // a 403 does not get better by asking again
          if (e instanceof ApiError && (e.status === 403 || e.status === 401)) return;
        }
      }
      if (live) timer = setTimeout(once, ms);
    };
    void once();
    return () => {
      live = false;
      clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, ms, tick]);
  return [value, error, () => setTick((t) => t + 1)];
}

export function isForbidden(error: unknown): boolean {
  return error instanceof ApiError && error.status === 403;
}

export function AdminsOnly() {
  return (
    <div class="message error admins-only" role="alert" data-testid="admins-only">
      <strong>Admins only.</strong> This part of the studio is for the operators of this swarmstation; your
      account is not an admin, so the server refuses its data (403). <a href="/generate">Go to Generate</a>.
    </div>
  );
}

/** A section's load error: the admins-only message for a 403, the API's message otherwise. */
export function LoadError({ error }: { error: unknown }) {
  if (!error) return null;
  if (isForbidden(error)) return <AdminsOnly />;
  return <ErrorMessage error={error} />;
}

/** Run an action with busy and error state for a form or button. */
export function useAction(): {
  busy: boolean;
  error: unknown;
  run: <T>(fn: () => Promise<T>) => Promise<T | undefined>;
  clear: () => void;
} {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  return {
    busy,
    error,
    clear: () => setError(null),
    async run(fn) {
      setBusy(true);
      setError(null);
      try {
        return await fn();
      } catch (e) {
        setError(e);
        return undefined;
      } finally {
        setBusy(false);
      }
    },
  };
}

/** A table that may scroll sideways on a phone: focusable, so a keyboard can scroll it too. */
export function Scroller({ label, children }: { label: string; children: ComponentChildren }) {
  return (
    <div class="table-wrap" tabIndex={0} role="region" aria-label={label}>
      {children}
    </div>
  );
}
