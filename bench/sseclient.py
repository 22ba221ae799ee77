"""A minimal Server-Sent Events client on ``asyncio.Protocol``, cheap enough to hold 1,000 streams.

The SSE counterpart of ``bench/wsclient.py``, with the same interface for ``bench.watchers``:
``on_text(payload, now)`` gets each event's ``data`` (its ``data:`` lines joined by newlines,
byte for byte the JSON message a WebSocket frame would carry) with the arrival time of the read
that completed it; ``closed`` resolves when the stream ends; ``close()`` ends it. One GET on its
own connection (HTTP/1.1, ``Accept: text/event-stream``); the body is read chunked or, without
``Transfer-Encoding``, as it comes until the server closes. ``id:`` is kept (``last_id``),
``retry:`` and comments (``: ping``) are counted, never passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class SSEClient(asyncio.Protocol):
    """One stream. ``close_code`` is the HTTP status when the server refused it (not 200), else None."""

    def __init__(self, host: str, port: int, path: str, on_text: Callable[[bytes, float], None], clock) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n\r\n"
        ).encode()
        self.on_text = on_text
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.close_code: int | None = None
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.last_id: str | None = None
        self.comments = 0
        self.events = 0
        self._raw = bytearray()  # the response as received (head, then body framing)
        self._text = bytearray()  # the body, de-chunked: SSE lines
        self._chunked = False
        self._chunk_left = 0  # bytes of the current chunk's data still to come
        self._crlf = False  # the CRLF ending the current chunk still to come
        self._data: list[bytes] = []

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the answer ({exc})"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def data_received(self, data: bytes) -> None:
        now = self.clock()
        raw = self._raw
        raw += data
        if self.status is None and not self._head():
            return
        if self._chunked:
            self._dechunk()
        else:
            self._text += raw
            raw.clear()
        self._lines(now)

    # -- HTTP ----------------------------------------------------------------
    def _head(self) -> bool:
        """Parse the status line and headers once they are all here; False while they are not."""
        raw = self._raw
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        status_line, *lines = bytes(raw[:end]).decode("latin-1").split("\r\n")
        del raw[: end + 4]
        self.status = int(status_line.split()[1])
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.status != 200 or not self.headers.get("content-type", "").startswith("text/event-stream"):
            self.close_code = self.status
            self.opened.set_exception(ConnectionError(f"{status_line} ({self.headers.get('content-type')})"))
            self.transport.close()  # type: ignore[union-attr]
            return False
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.opened.set_result(None)
        return True

    def _dechunk(self) -> None:
        raw, text = self._raw, self._text
        pos, size = 0, len(raw)
        while pos < size:
            if self._chunk_left:
                take = min(self._chunk_left, size - pos)
                text += raw[pos : pos + take]
                self._chunk_left -= take
                pos += take
            elif self._crlf:  # the CRLF after a chunk's data
                if size - pos < 2:
                    break
                pos += 2
                self._crlf = False
            else:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                length = int(bytes(raw[pos:end]).split(b";", 1)[0], 16)
                pos = end + 2
                if length == 0:  # the last chunk: the server ended the stream
                    self.transport.close()  # type: ignore[union-attr]
                    break
                self._chunk_left, self._crlf = length, True
        del raw[:pos]

    # -- SSE -----------------------------------------------------------------
    def _lines(self, now: float) -> None:
        text = self._text
        pos = 0
        while (end := text.find(b"\n", pos)) >= 0:
            line = bytes(text[pos:end]).rstrip(b"\r")
            pos = end + 1
            if not line:  # a blank line dispatches the event
                if self._data:
                    self.events += 1
                    payload, self._data = b"\n".join(self._data), []
                    self.on_text(payload, now)
                continue
            if line[:1] == b":":
                self.comments += 1
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"id":
                self.last_id = value.decode()
        if pos:
            del text[:pos]

    def send_text(self, text: str) -> None:
        raise TypeError("an SSE stream takes no client messages: its tasks are in its URL")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def open_sse_client(
    host: str, port: int, path: str, on_text: Callable[[bytes, float], None], clock, limit: float
) -> SSEClient:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: SSEClient(host, port, path, on_text, clock), host, port), limit
    )
    await asyncio.wait_for(asyncio.shield(proto.opened), limit)
    return proto
