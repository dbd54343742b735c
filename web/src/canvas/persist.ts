// Where the canvas is kept between visits: the signed-in person's workspace on the server
// (PUT /v1/workspaces/default), or this browser's local storage when signed out.
import { api, ApiError, must } from '../api/client';
import { isGraph, normalise } from './model';
import type { CanvasGraph } from './types';

const LOCAL_KEY = 'swarmstation.sandbox.graph';
const WORKSPACE = 'default';
export const AUTOSAVE_MS = 800;

export type SaveState = 'idle' | 'pending' | 'saving' | 'saved' | 'error';

function readLocal(): CanvasGraph | null {
  try {
    const raw = localStorage.getItem(LOCAL_KEY);
    const parsed: unknown = raw ? JSON.parse(raw) : null;
    return isGraph(parsed) ? normalise(parsed) : null;
  } catch {
    return null;
  }
}

export async function loadWorkspace(signedIn: boolean): Promise<CanvasGraph | null> {
  if (!signedIn) return readLocal();
  try {
    const ws = await must(api.GET('/v1/workspaces/{name}', { params: { path: { name: WORKSPACE } } }));
    return isGraph(ws.graph) ? normalise(ws.graph) : null;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return readLocal(); // first visit: what was built signed out
    throw err;
  }
}

async function save(graph: CanvasGraph, signedIn: boolean): Promise<void> {
  if (!signedIn) {
    localStorage.setItem(LOCAL_KEY, JSON.stringify(graph));
    return;
  }
  await must(
    api.PUT('/v1/workspaces/{name}', {
      params: { path: { name: WORKSPACE } },
      body: { graph: graph as unknown as Record<string, unknown> },
    }),
  );
}

/** A debounced saver: `schedule` restarts the timer; the newest graph wins. */
export function createAutosave(onState: (state: SaveState, error?: unknown) => void) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let latest: { graph: CanvasGraph; signedIn: boolean } | null = null;
  const flush = async () => {
    clearTimeout(timer);
    timer = undefined;
    const next = latest;
    latest = null;
    if (!next) return;
    onState('saving');
    try {
      await save(next.graph, next.signedIn);
      onState(latest ? 'pending' : 'saved');
    } catch (err) {
      onState('error', err);
    }
  };
  return {
    schedule(graph: CanvasGraph, signedIn: boolean) {
      latest = { graph, signedIn };
      onState('pending');
      clearTimeout(timer);
      timer = setTimeout(() => void flush(), AUTOSAVE_MS);
    },
    flush,
    cancel() {
      clearTimeout(timer);
      latest = null;
    },
  };
}
