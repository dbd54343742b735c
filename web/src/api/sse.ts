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

export async function streamEvents(
  url: string,
  onEvent: SseHandler,
  signal: AbortSignal,
  { retries = 20 }: { retries?: number } = {},
): Promise<void> {
  let lastId: string | null = null;
  for (let attempt = 0; attempt <= retries && !signal.aborted; attempt++) {
    try {
      const headers: Record<string, string> = { Accept: 'text/event-stream', ...authHeaders('GET') };
      if (lastId !== null) headers['Last-Event-ID'] = lastId;
      const response = await fetch(url, { headers, signal, credentials: 'same-origin' });
      if (!response.ok || !response.body) {
        if (response.status >= 400 && response.status < 500) return; // not ours, or gone: no retry
        throw new Error(`events answered ${response.status}`);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const { events, rest } = parseEvents(buffer);
        buffer = rest;
        for (const event of events) {
          if (event.id !== null) lastId = event.id;
          if (onEvent(event) === 'stop') {
            await reader.cancel();
            return;
          }
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      void err;
    }
    await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 5000)));
  }
}
