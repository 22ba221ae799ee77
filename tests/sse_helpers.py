"""A small asyncio HTTP/1.1 client for the event stream and polls: what the tests need to see, byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


class Stream:
    """One ``GET`` on loopback: the status line, the headers, then the body's SSE events (chunked or not)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunked = False
        self._buffer = b""
        self.ended = False
        #: Comment lines seen (heartbeats).
        self.comments = 0

    @classmethod
    async def open(
        cls, port: int, path: str, headers: dict[str, str] | None = None, *, rcvbuf: int | None = None
    ) -> Stream:
        sock = None
        if rcvbuf is not None:
            import socket

            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
        headers = {"Accept": "text/event-stream", **(headers or {})}
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        stream = cls(reader, writer)
        async with asyncio.timeout(10):
            status = await reader.readline()
            stream.status = int(status.split()[1])
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                stream.headers[name.strip().lower()] = value.strip()
        stream.chunked = stream.headers.get("transfer-encoding", "").lower() == "chunked"
        return stream

    async def body(self) -> bytes:
        """The whole body of a short answer (a refusal, a poll)."""
        if "content-length" in self.headers:
            return await self.reader.readexactly(int(self.headers["content-length"]))
        data = b""
        while (piece := await self._piece()) is not None:
            data += piece
        return data

    async def _piece(self) -> bytes | None:
        if not self.chunked:
            data = await self.reader.read(65536)
            return data or None
        size_line = await self.reader.readline()
        if not size_line:
            return None
        size = int(size_line.strip() or b"0", 16)
        if size == 0:
            await self.reader.readline()
            return None
        data = await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return data

    async def event(self, within: float = 5) -> dict[str, Any]:
        """The next event: ``{"id": ..., "data": <parsed JSON>}``, or ``{"retry": ms}``; comments are counted."""
        async with asyncio.timeout(within):
            while True:
                if b"\n\n" in self._buffer:
                    block, self._buffer = self._buffer.split(b"\n\n", 1)
                    event = self._parse(block.decode())
                    if event:
                        return event
                    continue
                piece = await self._piece()
                if piece is None:
                    self.ended = True
                    raise EOFError("the stream ended")
                self._buffer += piece

    def _parse(self, block: str) -> dict[str, Any]:
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments += 1
            elif field == "data":
                event["data"] = json.loads(value)
            elif field == "id":
                event["id"] = value
            elif field == "retry":
                event["retry"] = int(value)
        return event

    async def progress(self, within: float = 5) -> dict[str, Any]:
        """The next event that is not ``retry``."""
        while "retry" in (event := await self.event(within)):
            pass
        return event

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def events_path(*tasks: str, tokens: tuple[str, ...] = ()) -> str:
    from urllib.parse import urlencode

    pairs = [("task", task) for task in tasks] + [("token", token) for token in tokens]
    return "/ra/realtime-async/events/?" + urlencode(pairs)
