// A conversation's event stream (GET /v1/conversations/{id}/events): fetch-based server-sent
// events like api/sse.ts (whose parser it uses), but starting after the last item the page
// already has, and resuming with Last-Event-ID after every dropped connection. The stream stays
// open until the caller aborts.
import { authHeaders } from '../api/client';
import { parseEvents, type SseEvent } from '../api/sse';

export interface StreamOptions {
  /** The seq of the last item the page has (0: from the start). */
  after: number;
  /** Called with each event; the id of an event that has one is where a reconnect resumes. */
  onEvent: (event: SseEvent) => void;
  /** Called when the connection is up (true) or lost and being retried (false). */
  onConnected?: (up: boolean) => void;
  signal: AbortSignal;
  /** The longest wait between attempts. */
  maxDelayMs?: number;
  fetchImpl?: typeof fetch;
}

export async function followConversation(url: string, opts: StreamOptions): Promise<void> {
  const { signal, onEvent, onConnected } = opts;
  const fetcher = opts.fetchImpl ?? fetch;
  let lastId = String(opts.after);
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      const headers: Record<string, string> = { Accept: 'text/event-stream', ...authHeaders('GET') };
      if (lastId !== '0') headers['Last-Event-ID'] = lastId;
      const response = await fetcher(url, { headers, signal, credentials: 'same-origin' });
      if (!response.ok || !response.body) {
        if (response.status >= 400 && response.status < 500) return; // gone, or not ours: no retry
        throw new Error(`events answered ${response.status}`);
      }
      onConnected?.(true);
      attempt = 0;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const { events, rest } = parseEvents(buffer);
        buffer = rest;
        for (const event of events) {
          if (event.id !== null && event.event === 'item') lastId = event.id;
          onEvent(event);
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    onConnected?.(false);
    await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, opts.maxDelayMs ?? 5000)));
  }
}
