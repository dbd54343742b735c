"""A TCP round-robin proxy for the replicas bench: one address in front of several `serve`
processes, as a load balancer would be. Each new connection goes to the next backend in turn and
keeps it for its life (HTTP keep-alive connections and event streams stay on one replica).

It runs as its own process (`python -m swarmstation.bench.proxy PORT BACKEND_PORT...`), so that
its CPU is its own and not the bench's: the bench prints it beside the replicas'.
"""

from __future__ import annotations

import asyncio
import itertools
import sys

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def serve(port: int, backends: list[int], host: str = "127.0.0.1") -> None:
    turn = itertools.cycle(backends)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        backend = next(turn)
        try:
            server_r, server_w = await asyncio.open_connection(host, backend)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        finally:
            for w in (client_w, server_w):
                w.close()

    server = await asyncio.start_server(handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    port, *backends = (int(a) for a in argv)
    if not backends:
        raise SystemExit("usage: python -m swarmstation.bench.proxy PORT BACKEND_PORT...")
    asyncio.run(serve(port, backends))


if __name__ == "__main__":
    main(sys.argv[1:])
