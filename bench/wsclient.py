"""A minimal WebSocket client on ``asyncio.Protocol``, cheap enough to hold 1,000 connections.

Load generators share two cores with the server, so a client that spends 40 µs of
Python per frame would steal what it measures. This one does the handshake,
parses unmasked server frames straight out of one buffer, answers pings and
closes; it sends masked text frames. No extensions, no fragmented sends.
The runner's client calibration compares it with the ``websockets`` library.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big") if n else b""
    return key + masked


def client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + _mask(payload)


class WSClient(asyncio.Protocol):
    """One connection. ``on_text(payload, now)`` gets every text message; ``now`` is the arrival time."""

    def __init__(self, host: str, port: int, path: str, on_text: Callable[[bytes, float], None], clock) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://{host}:{port}\r\n\r\n"
        ).encode()
        self.on_text = on_text
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self._fragments: list[bytes] = []

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during handshake ({exc})"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode("latin-1")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.opened.set_result(None)
        now = self.clock()
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos - head < length:
                break
            start = pos + head
            payload = bytes(buf[start : start + length])
            pos = start + length
            self._frame(b0 & 0x80, b0 & 0x0F, payload, now)
        if pos:
            del buf[:pos]

    # -- frames ------------------------------------------------------------
    def _frame(self, fin: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode in (OP_TEXT, OP_CONT, OP_BINARY):
            if not fin:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join([*self._fragments, payload])
                self._fragments = []
            self.on_text(payload, now)
        elif opcode == OP_PING:
            self._write(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            self._write(OP_CLOSE, payload[:2])
            self.transport.close()  # type: ignore[union-attr]

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self._write(OP_TEXT, text.encode())

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write(OP_CLOSE, struct.pack("!H", 1000))
            self.transport.close()


async def open_client(
    host: str, port: int, path: str, on_text: Callable[[bytes, float], None], clock, limit: float
) -> WSClient:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: WSClient(host, port, path, on_text, clock), host, port), limit
    )
    await asyncio.wait_for(asyncio.shield(proto.opened), limit)
    return proto


class LibClient:
    """The same interface over the ``websockets`` library, for the client calibration (text arrives as str)."""

    def __init__(self, conn, on_text: Callable[[bytes, float], None], clock) -> None:
        self.conn = conn
        self.on_text = on_text
        self.clock = clock
        self.close_code: int | None = None
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.conn:
                self.on_text(message, self.clock())
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.conn.close_code
            if not self.closed.done():
                self.closed.set_result(self.close_code)

    def send_text(self, text: str) -> None:
        asyncio.ensure_future(self.conn.send(text))

    def close(self) -> None:
        asyncio.ensure_future(self.conn.close())


async def open_lib_client(
    host: str, port: int, path: str, on_text: Callable[[bytes, float], None], clock, limit: float
) -> LibClient:
    from websockets.asyncio.client import connect

    conn = await connect(
        f"ws://{host}:{port}{path}",
        origin=f"http://{host}:{port}",
        open_timeout=limit,
        close_timeout=2,
        proxy=None,
        compression=None,
        max_queue=None,
        ping_interval=None,
    )
    return LibClient(conn, on_text, clock)
