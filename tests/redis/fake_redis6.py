"""A tiny RESP server that answers like Redis 6.2 where it matters: ``SET ... NX GET``
is a syntax error there (the combination arrived in Redis 7.0)."""

from __future__ import annotations

import asyncio
from types import TracebackType


class FakeRedis6:
    """Strings in a dict; enough commands for the cache routes and the client's handshake."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeRedis6:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                command = await _read_command(reader)
                if command is None:
                    break
                writer.write(self._answer(command))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _answer(self, command: list[bytes]) -> bytes:
        name = command[0].upper()
        options = {part.upper() for part in command[3:]}
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"CLIENT":
            return b"+OK\r\n"
        if name == b"INFO":
            return _bulk(b"# Cluster\r\ncluster_enabled:0\r\n# Server\r\nredis_version:6.2.14\r\n")
        if name == b"SET":
            if b"GET" in options and b"NX" in options:
                return b"-ERR syntax error\r\n"
            self.data[command[1]] = command[2]
            return b"+OK\r\n"
        if name == b"GET":
            return _bulk(self.data.get(command[1]))
        if name == b"TTL":
            return b":-1\r\n" if command[1] in self.data else b":-2\r\n"
        if name in (b"DEL", b"UNLINK"):
            return b":%d\r\n" % sum(self.data.pop(key, None) is not None for key in command[1:])
        return b"-ERR unknown command '%s'\r\n" % name.lower()


def _bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


async def _read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    header = await reader.readline()
    if not header:
        return None
    if not header.startswith(b"*"):  # inline command
        return header.split()
    parts = []
    for _ in range(int(header[1:])):
        length = int((await reader.readline())[1:])
        parts.append((await reader.readexactly(length + 2))[:-2])
    return parts
