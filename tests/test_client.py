"""The client's event-stream parser (swarmstation/client.py) against the SSE format: multi-line
data, comments, id and retry fields, CRLF/CR/LF line ends split anywhere, and through a real
HTTP server that streams a job's events in awkward chunks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swarmstation.client import Client, ServerSentEvent, SseParser


def parse(*chunks: str) -> tuple[list[ServerSentEvent], SseParser]:
    parser = SseParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser


def test_data_lines_of_one_event_are_joined_with_line_feeds() -> None:
    events, _ = parse('data: {"a":\ndata:  1,\ndata: "b": 2}\n\n')
    assert events == [ServerSentEvent(type="message", data='{"a":\n 1,\n"b": 2}', id=None)]
    assert json.loads(events[0].data) == {"a": 1, "b": 2}


def test_comments_unknown_fields_and_events_without_data_dispatch_nothing() -> None:
    events, _ = parse(": keep-alive\n\n", "event: state\n\n", "foo: bar\ndata: x\n: in between\n\n")
    # The event type of a data-less event does not leak into the next one.
    assert events == [ServerSentEvent(type="message", data="x", id=None)]


def test_field_without_colon_and_space_rules() -> None:
    events, _ = parse("data\n\ndata:no-space\n\ndata:  two spaces\n\n")
    assert [e.data for e in events] == ["", "no-space", " two spaces"]


def test_id_persists_and_nul_ids_are_ignored() -> None:
    events, parser = parse(
        "id: 7\nevent: state\ndata: a\n\n", "data: b\n\n", "id: 8\x009\ndata: c\n\n", "id\ndata: d\n\n"
    )
    assert [(e.id, e.type, e.data) for e in events] == [
        ("7", "state", "a"),
        ("7", "message", "b"),
        ("7", "message", "c"),
        ("", "message", "d"),
    ]
    assert parser.last_event_id == ""


def test_retry_takes_ascii_digits_only() -> None:
    _, parser = parse("retry: 5000\n\n")
    assert parser.retry_ms == 5000
    _, parser = parse("retry: 5000\n", "retry: 5s\n", "retry: ٣\n", "retry:\n\n")
    assert parser.retry_ms == 5000


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"])
def test_every_line_end_style_split_at_every_position(newline: str) -> None:
    stream = newline.join(["\ufeff: hi", "id: 1", "event: progress", "data: {", 'data: "p": 0.5}', "", ""])
    for cut in range(len(stream) + 1):
        events, _ = parse(stream[:cut], stream[cut:])
        assert events == [ServerSentEvent(type="progress", data='{\n"p": 0.5}', id="1")], repr(cut)
    one_char_at_a_time, _ = parse(*stream)
    assert len(one_char_at_a_time) == 1


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    # "\r" then "\n" in the next chunk must not read as two line ends (a blank line: a dispatch).
    events, _ = parse("data: a\r", "\ndata: b\r\n\r\n")
    assert [e.data for e in events] == ["a\nb"]


def test_only_cr_and_lf_end_lines() -> None:
    # str.splitlines also breaks at these; in SSE they are ordinary characters.
    events, _ = parse("data: a\u2028b\x0bc\x85d\n\n")
    assert [e.data for e in events] == ["a\u2028b\x0bc\x85d"]


def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped() -> None:
    events, _ = parse("data: complete\n\n", "data: never finished\n")
    assert [e.data for e in events] == ["complete"]


# -- through Client.events and a real server ---------------------------------------------------
STREAM = (
    ": connected\r\n"
    'id: 1\r\nevent: state\r\ndata: {"state":\r\ndata:  "RUNNING"}\r\n\r\n'
    "retry: 3000\r\n: a comment\r\n\r\n"
    'id: 2\revent: progress\rdata: {"progress": 0.5}\r\r'
    'id: 3\nevent: state\ndata: {"state": "COMPLETED",\ndata: "reason": "line\\nbreak"}\n\n'
)


class StreamHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = STREAM.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # Small pieces with pauses, so that lines (and CRLF pairs) arrive split across reads.
        for start in range(0, len(body), 7):
            self.wfile.write(body[start : start + 7])
            self.wfile.flush()
            time.sleep(0.002)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def sse_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StreamHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_client_events_over_http(sse_server: str) -> None:
    with Client(sse_server, "ss_test") as client:
        events = [(ev.id, ev.type, ev.data) for ev in client.events("job-1")]
    assert events == [
        ("1", "state", {"state": "RUNNING"}),
        ("2", "progress", {"progress": 0.5}),
        ("3", "state", {"state": "COMPLETED", "reason": "line\nbreak"}),
    ]
