import { describe, expect, it } from 'vitest';
import { parseEvents } from './sse';

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
