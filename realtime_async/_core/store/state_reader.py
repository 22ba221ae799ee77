"""One pipelined asyncio connection that reads task records: the unchanged poll's one Redis read, cheaply.

``ProgressHttpRouter`` reads one record per unchanged poll. Through redis-py's
asyncio client that read costs about 100 µs of the server's CPU (a pooled
connection per request, its checks, one loop wake-up per reply), and its pool
raises instead of waiting once a burst of polls holds every connection. A poll
needs one command, ``HGET <record key> rec``, so this reader keeps one
connection per event loop and pipelines: each read writes its command and
queues a future; one reader task parses the replies in order and resolves
them. Many polls in flight share each wake-up, and a burst only lengthens
the queue (bounded by ``MAX_IN_FLIGHT``).

It speaks the few RESP replies ``HGET``, ``AUTH`` and ``SELECT`` can give. A
connection that fails, or a read that takes longer than ``timeout``, fails
every read in flight (``ConnectionError``; the router then lets Django answer)
and the next read connects again. TLS connections are left to redis-py
(``usable_for`` says which clients this reader can serve).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

__all__ = ["MAX_IN_FLIGHT", "StateReader", "usable_for"]

#: Reads queued on the connection at once; past it, reads fail at once (Django answers those polls).
MAX_IN_FLIGHT = 1000


def usable_for(client: Any) -> dict[str, Any] | None:
    """How to reach the server of redis-py ``client`` (host/port or path, login, db); None for TLS and the like."""
    kwargs = client.connection_pool.connection_kwargs
    kind = client.connection_pool.connection_class.__name__
    if kind not in ("Connection", "UnixDomainSocketConnection"):
        return None
    return {
        "host": kwargs.get("host", "localhost"),
        "port": int(kwargs.get("port", 6379)),
        "path": kwargs.get("path") if kind == "UnixDomainSocketConnection" else None,
        "username": kwargs.get("username"),
        "password": kwargs.get("password"),
        "db": int(kwargs.get("db", 0) or 0),
        "timeout": float(kwargs.get("socket_timeout") or 2.0),
    }


def _command(*parts: str | bytes) -> bytes:
    encoded = [part.encode() if isinstance(part, str) else part for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded)


class StateReader:
    """``await reader.hget(key, field)`` over one pipelined connection of the running loop."""

    def __init__(self, address: dict[str, Any]) -> None:
        self.address = address
        self.timeout: float = address["timeout"]
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: collections.deque[asyncio.Future[bytes | None]] = collections.deque()
        self._reading: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None

    async def hget(self, key: str, field: str) -> bytes | None:
        """The field's value, None when absent; raises ``ConnectionError`` when the server cannot be read now."""
        writer = self._writer if self._writer is not None and not self._writer.is_closing() else await self._connect()
        if len(self._waiting) >= MAX_IN_FLIGHT:
            raise ConnectionError("too many reads in flight")
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        writer.write(_command("HGET", key, field))
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            self._broken(ConnectionError("no answer in time"))  # replies could no longer be matched to reads
            raise ConnectionError("no answer in time") from None

    async def aclose(self) -> None:
        self._broken(ConnectionError("closed"))
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def _connect(self) -> asyncio.StreamWriter:
        self._connecting = self._connecting or asyncio.Lock()
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            address = self.address
            try:
                async with asyncio.timeout(self.timeout):
                    if address["path"]:
                        reader, writer = await asyncio.open_unix_connection(address["path"])
                    else:
                        reader, writer = await asyncio.open_connection(address["host"], address["port"])
                    setup = []
                    if address["password"]:
                        login = [address["username"]] if address["username"] else []
                        setup.append(_command("AUTH", *login, address["password"]))
                    if address["db"]:
                        setup.append(_command("SELECT", str(address["db"])))
                    writer.write(b"".join(setup))
                    for _ in setup:
                        line = await reader.readline()
                        if not line.startswith(b"+"):
                            writer.close()
                            raise ConnectionError("the server refused the login or the database")
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(f"cannot connect ({type(exc).__name__})") from exc
            self._writer = writer
            self._reading = asyncio.ensure_future(self._read(reader, writer))
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line.endswith(b"\r\n"):
                    raise ConnectionError("the connection closed")
                if line[:1] == b"$":
                    size = int(line[1:-2])
                    value = None if size < 0 else (await reader.readexactly(size + 2))[:-2]
                    self._resolve(value, None)
                elif line[:1] == b"-":
                    self._resolve(None, ConnectionError(line[1:-2].decode(errors="replace")))
                else:
                    raise ConnectionError("an unexpected reply")
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            if self._writer is writer:
                self._broken(ConnectionError(str(exc) or type(exc).__name__))

    def _resolve(self, value: bytes | None, error: Exception | None) -> None:
        future = self._waiting.popleft()
        if not future.done():
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _broken(self, error: Exception) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        waiting, self._waiting = self._waiting, collections.deque()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a read that gave up on it must not log "never retrieved"
