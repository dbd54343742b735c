// Server-sent events over fetch (EventSource cannot send an Authorization header): parses the
// text/event-stream framing, resumes with Last-Event-ID after a dropped connection, and stops
// when the caller aborts or the handler returns 'stop'.
import { authHeaders } from './client';

export interface SseEvent {
  id: string | null;
  event: string;
  data: string;
}

export type SseHandler = (event: SseEvent) => void | 'stop';

/** Split a buffer into complete events; returns them and what is left of the buffer. */
export function parseEvents(buffer: string): { events: SseEvent[]; rest: string } {
  const events: SseEvent[] = [];
  const normalised = buffer.replace(/\r\n?/g, '\n');
  const blocks = normalised.split('\n\n');
  const rest = blocks.pop() ?? '';
  for (const block of blocks) {
    let id: string | null = null;
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'id') id = value;
      else if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length || id !== null) events.push({ id, event, data: data.join('\n') });
  }
  return { events, rest };
}

export interface StreamOptions {
  /** How many dropped connections to retry in a row (default 20; Infinity: until aborted). */
  retries?: number;
  /** Resume from this event id on the first request (null: from the start). */
  lastEventId?: string | null;
  /** Which events move the resume point (default: every event with an id). */
  resumesFrom?: (event: SseEvent) => boolean;
  /** Called when the connection is up (true) or lost and being retried (false). */
  onConnected?: (up: boolean) => void;
  /** The longest wait between attempts. */
  maxDelayMs?: number;
  fetchImpl?: typeof fetch;
}

/** Follow a stream until the handler says 'stop', the server ends it for good (a 4xx), the retries
 * run out or the caller aborts. A connection that brings events resets the retry count (one that
 * brings none, as after a stream's end, does not: the retries stay bounded). */
export async function streamEvents(
  url: string,
  onEvent: SseHandler,
  signal: AbortSignal,
  {
    retries = 20,
    lastEventId = null,
    resumesFrom = () => true,
    onConnected,
    maxDelayMs = 5000,
    fetchImpl = fetch,
  }: StreamOptions = {},
): Promise<void> {
  let lastId = lastEventId;
  for (let attempt = 0; attempt <= retries && !signal.aborted; attempt++) {
    try {
      const headers: Record<string, string> = { Accept: 'text/event-stream', ...authHeaders('GET') };
      if (lastId !== null) headers['Last-Event-ID'] = lastId;
      const response = await fetchImpl(url, { headers, signal, credentials: 'same-origin' });
      if (!response.ok || !response.body) {
        if (response.status >= 400 && response.status < 500) return; // not ours, or gone: no retry
        throw new Error(`events answered ${response.status}`);
      }
      onConnected?.(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const { events, rest } = parseEvents(buffer);
        buffer = rest;
        if (events.length) attempt = 0;
        for (const event of events) {
          if (event.id !== null && resumesFrom(event)) lastId = event.id;
          if (onEvent(event) === 'stop') {
            await reader.cancel();
            return;
          }
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    onConnected?.(false);
    await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, maxDelayMs)));
  }
}
