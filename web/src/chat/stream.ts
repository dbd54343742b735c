// A conversation's event stream (GET /v1/conversations/{id}/events): api/sse.ts's reader, starting
// after the last item the page already has and resuming after the last item received (run
// progress events carry ids too, but a reconnect must not skip items), open until the caller aborts.
import { type SseEvent, streamEvents } from '../api/sse';

export interface FollowOptions {
  /** The seq of the last item the page has (0: from the start). */
  after: number;
  onEvent: (event: SseEvent) => void;
  /** Called when the connection is up (true) or lost and being retried (false). */
  onConnected?: (up: boolean) => void;
  signal: AbortSignal;
  /** The longest wait between attempts. */
  maxDelayMs?: number;
  fetchImpl?: typeof fetch;
}

export function followConversation(url: string, opts: FollowOptions): Promise<void> {
  const { after, onEvent, signal, ...rest } = opts;
  return streamEvents(
    url,
    (event) => {
      onEvent(event);
    },
    signal,
    {
      ...rest,
      retries: Infinity,
      lastEventId: after > 0 ? String(after) : null,
      resumesFrom: (event) => event.event === 'item',
    },
  );
}
