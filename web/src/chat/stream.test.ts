import { describe, expect, it } from 'vitest';
import { followConversation } from './stream';

function body(text: string): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  return new ReadableStream({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
}

describe('followConversation', () => {
  it('starts after the last item loaded and resumes after the last item received', async () => {
    const abort = new AbortController();
    const sent: (string | null)[] = [];
    const got: string[] = [];
    const answers = [
      'id: 7\nevent: run\ndata: {"run_id":"r","state":"RUNNING","steps":[]}\n\nid: 8\nevent: item\ndata: {"id":"a","seq":8}\n\n',
      'id: 9\nevent: item\ndata: {"id":"b","seq":9}\n\n',
    ];
    const fetchImpl = (async (_url: string, init?: RequestInit) => {
      sent.push(new Headers(init?.headers).get('Last-Event-ID'));
      const next = answers.shift();
      if (next === undefined) {
        abort.abort();
        throw new DOMException('aborted', 'AbortError');
      }
      return new Response(body(next), { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
    }) as typeof fetch;
    await followConversation('/v1/conversations/c/events', {
      after: 7,
      onEvent: (e) => got.push(`${e.event}:${e.id}`),
      signal: abort.signal,
      maxDelayMs: 1,
      fetchImpl,
    });
    expect(got).toEqual(['run:7', 'item:8', 'item:9']);
    expect(sent).toEqual(['7', '8', '9']);
  });

  it('sends no Last-Event-ID for a conversation read from the start, and stops on a 4xx', async () => {
    const abort = new AbortController();
    const sent: (string | null)[] = [];
    const fetchImpl = (async (_url: string, init?: RequestInit) => {
      sent.push(new Headers(init?.headers).get('Last-Event-ID'));
      return new Response('{"detail":"not found"}', { status: 404 });
    }) as typeof fetch;
    await followConversation('/x', { after: 0, onEvent: () => undefined, signal: abort.signal, maxDelayMs: 1, fetchImpl });
    expect(sent).toEqual([null]);
  });
});
