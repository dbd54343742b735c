"""Fixtures of the worker tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.worker.file_server import FileServer


@pytest.fixture
def server() -> Iterator[FileServer]:
    s = FileServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
