"""A TCP relay on loopback, standard library only, for the access tests: what sits between a browser and a
studio on 127.0.0.1. Plain, it passes bytes through (run under another OS user, it is that user's
program opening 127.0.0.1); with ``--forwarded`` it is a reverse proxy as Caddy is by default, adding
``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` to every request it passes on.

    python3 tests/relay.py LISTEN_PORT TARGET_PORT [--forwarded]     # prints "ready" once listening
"""
from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def requests(reader, writer, client_ip: str) -> None:
    """Client to studio, one HTTP request at a time, each with the proxy's headers; raw after an upgrade."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].split(b"\r\n")
            headers = {ln.split(b":", 1)[0].strip().lower(): ln.split(b":", 1)[1].strip() for ln in lines[1:] if b":" in ln}
            host = headers.get(b"host", b"")
            lines += [b"X-Forwarded-For: " + client_ip.encode(), b"X-Forwarded-Proto: https",
                      b"X-Forwarded-Host: " + host]
            writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
            if b"upgrade" in headers or b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                return await pipe(reader, writer)
            length = int(headers.get(b"content-length", b"0") or 0)
            if length:
                writer.write(await reader.readexactly(length))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


def main(argv: list[str]) -> None:
    listen, target, forwarded = int(argv[0]), int(argv[1]), "--forwarded" in argv

    async def handle(client_reader, client_writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        ip = client_writer.get_extra_info("peername")[0]
        forward = requests(client_reader, up_writer, ip) if forwarded else pipe(client_reader, up_writer)
        await asyncio.gather(forward, pipe(up_reader, client_writer))

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", listen, limit=1 << 20)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main(sys.argv[1:])
