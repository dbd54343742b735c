import { describe, expect, it } from 'vitest';
import { parseEvents, streamEvents } from './sse';

describe('parseEvents', () => {
  it('splits complete events and keeps the partial rest', () => {
    const { events, rest } = parseEvents('id: 3\nevent: progress\ndata: {"step":1}\n\nid: 4\nevent: st');
    expect(events).toEqual([{ id: '3', event: 'progress', data: '{"step":1}' }]);
    expect(rest).toBe('id: 4\nevent: st');
  });

  it('joins multi-line data, ignores comments and reads CRLF framing', () => {
    const { events } = parseEvents(': keep-alive\r\n\r\ndata: a\r\ndata: b\r\n\r\n');
    expect(events).toEqual([{ id: null, event: 'message', data: 'a\nb' }]);
  });
});

function answer(text: string): Response {
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
  return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
}

describe('streamEvents', () => {
  it('resumes with the last id after a drop and stops when the handler says so', async () => {
    const sent: (string | null)[] = [];
    const answers = ['id: 1\nevent: progress\ndata: {}\n\n', 'id: 2\nevent: state\ndata: {"state":"COMPLETED"}\n\n'];
    const fetchImpl = (async (_url: string, init?: RequestInit) => {
      sent.push(new Headers(init?.headers).get('Last-Event-ID'));
      return answer(answers.shift() ?? '');
    }) as typeof fetch;
    const got: string[] = [];
    await streamEvents('/e', (e) => (got.push(e.event), e.event === 'state' ? 'stop' : undefined), new AbortController().signal, {
      maxDelayMs: 1,
      fetchImpl,
    });
    expect(got).toEqual(['progress', 'state']);
    expect(sent).toEqual([null, '1']);
  });

  it('gives up after the retries when connections bring no events', async () => {
    let calls = 0;
    const fetchImpl = (async () => (calls++, answer(''))) as typeof fetch;
    await streamEvents('/e', () => undefined, new AbortController().signal, { retries: 3, maxDelayMs: 1, fetchImpl });
    expect(calls).toBe(4);
  });

  it('moves the resume point only on the events chosen', async () => {
    const sent: (string | null)[] = [];
    const answers = ['id: 5\nevent: item\ndata: {}\n\nid: 6\nevent: run\ndata: {}\n\n', ''];
    const fetchImpl = (async (_url: string, init?: RequestInit) => {
      sent.push(new Headers(init?.headers).get('Last-Event-ID'));
      return answer(answers.shift() ?? '');
    }) as typeof fetch;
    await streamEvents('/e', () => undefined, new AbortController().signal, {
      retries: 1,
      lastEventId: '4',
      resumesFrom: (e) => e.event === 'item',
      maxDelayMs: 1,
      fetchImpl,
    });
    expect(sent).toEqual(['4', '5']);
  });
});
