"""Helpers of ``tests/system/test_slow_readers.py``: clients that stop reading, a paced publisher, daphne's RSS.

- ``start_slow_reader_daphne(...)``: a real daphne serving the test project, with
  ``REALTIME_ASYNC`` keys overridden for that process only (``application`` below
  reads them from the environment) and, with ``backpressure=False``, the
  per-connection backpressure switched off: today's behaviour, to prove a test
  fails without it.
- ``RawWebSocket``: a WebSocket client on a plain TCP socket with a small
  ``SO_RCVBUF``, so a client that stops reading fills the kernel's buffers in a
  moment. It reads only when told to (``read_frame``, or a ``Reader`` thread).
- ``Publisher``: a thread writing running updates of many tasks at a steady rate,
  then their final states, as workers would (bounded in count and time).

Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from tests.services import Proc, start_daphne

#: ``REALTIME_ASYNC`` keys (JSON) merged into the test project's, in the daphne process only.
SETTINGS_ENV = "RA_SLOW_READERS_SETTINGS"
#: "0": per-connection backpressure off in the daphne process (the behaviour before it existed).
BACKPRESSURE_ENV = "RA_SLOW_READERS_BACKPRESSURE"
#: The client's receive buffer: small, so that the server's buffers take what the client leaves unread.
CLIENT_RCVBUF = 4096


def __getattr__(name: str) -> Any:
    """``tests.slow_reader_helpers:application`` for daphne: the test project's, with the overrides above.

    Resolved on first access only, so importing these helpers in the test process changes nothing.
    """
    if name != "application":
        raise AttributeError(name)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
    from django.conf import settings

    from tests.project.asgi import application

    overrides = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    if overrides:
        settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, **overrides}
        from realtime_async.conf import get_settings

        get_settings.cache_clear()
    if os.environ.get(BACKPRESSURE_ENV) == "0":
        from realtime_async._delivery import backpressure

        backpressure.ENABLED = False
    return application


def start_slow_reader_daphne(
    *, backpressure: bool = True, max_connections: int = 64, **overrides: Any
) -> tuple[Proc, int]:
    env = {
        SETTINGS_ENV: json.dumps(overrides),
        BACKPRESSURE_ENV: "1" if backpressure else "0",
        "RA_TEST_MAX_CONNECTIONS": str(max_connections),
    }
    return start_daphne(app="tests.slow_reader_helpers:application", env=env, name="daphne-slow-readers")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# -- a WebSocket client on a raw socket ------------------------------------------
class Closed(Exception):
    """The server closed the connection: ``code`` from its close frame, None when the socket just ended."""

    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


class RawWebSocket:
    """One client connection; reads only when asked (a client that stops reading is one not asked)."""

    def __init__(self, port: int, path: str = "/ws/realtime-async/", *, rcvbuf: int | None = CLIENT_RCVBUF) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting: the window the client offers is set at the handshake
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
            ).encode()
        )
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"handshake refused: {bytes(self.buf)!r}")
            self.buf += chunk
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buf = bytearray(rest)
        self.close_code: int | None = None
        self.ended = False
        self._send_lock = threading.Lock()

    @property
    def local_port(self) -> int:
        """The client's port, as daphne's access log names the connection (``127.0.0.1:<port>``)."""
        return int(self.sock.getsockname()[1])

    # -- writing (client frames are masked) --
    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self._send_lock:
            self.sock.sendall(header + mask + masked)

    def send_json(self, message: dict[str, Any]) -> None:
        self._send_frame(0x1, json.dumps(message).encode())

    def subscribe(self, task: str, token: str | None = None, seq: int | None = None) -> None:
        self.send_json({"v": 1, "type": "subscribe", "task": task, "token": token, "seq": seq})

    # -- reading --
    def _fill(self, need: int, deadline: float) -> None:
        while len(self.buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.ended = True
                raise Closed(self.close_code)
            self.buf += chunk

    def read_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """The next data frame ``(opcode, payload)``; pings are answered, a close frame raises ``Closed``."""
        deadline = time.monotonic() + timeout
        while True:
            self._fill(2, deadline)
            first, second = self.buf[0], self.buf[1]
            length, offset = second & 0x7F, 2
            if length == 126:
                self._fill(4, deadline)
                length, offset = struct.unpack("!H", self.buf[2:4])[0], 4
            elif length == 127:
                self._fill(10, deadline)
                length, offset = struct.unpack("!Q", self.buf[2:10])[0], 10
            self._fill(offset + length, deadline)
            payload = bytes(self.buf[offset : offset + length])
            del self.buf[: offset + length]
            opcode = first & 0x0F
            if opcode == 0x9:  # daphne's keepalive ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                with contextlib.suppress(OSError):
                    self._send_frame(0x8, payload[:2])
                raise Closed(self.close_code)
            return opcode, payload

    def read_json(self, timeout: float = 10.0) -> dict[str, Any]:
        opcode, payload = self.read_frame(timeout)
        assert opcode == 0x1, opcode
        return json.loads(payload)  # type: ignore[no-any-return]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Reader(threading.Thread):
    """Reads a ``RawWebSocket`` until stopped or closed, keeping ``(arrival time, message)`` of each frame."""

    def __init__(self, ws: RawWebSocket, name: str = "reader") -> None:
        super().__init__(name=name, daemon=True)
        self.ws = ws
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.closed: Closed | None = None
        self.error: BaseException | None = None
        self._stop_reading = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_reading.is_set():
                try:
                    message = self.ws.read_json(timeout=0.2)
                except TimeoutError:
                    continue
                self.got.append((time.time(), message))
        except Closed as closed:
            self.closed = closed
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading (at a frame boundary: what is half read stays in the client's buffer)."""
        self._stop_reading.set()
        self.join(timeout)
        assert not self.is_alive(), "the reader did not stop"

    def progress(self) -> list[dict[str, Any]]:
        return [message["data"] for _, message in self.got if message.get("type") == "progress"]


# -- a paced publisher -------------------------------------------------------------
class Publisher(threading.Thread):
    """Writes a running update of every task ``rate`` times a second (spread over the period), until stopped.

    Each record carries ``data.t`` (``time.time()`` at the write) and a
    ``message`` of ``message_chars`` characters; ``finish()`` stops the updates
    and writes every task's final state. Bounded by ``max_seconds``.
    """

    def __init__(self, tasks: list[str], *, rate: float = 10, message_chars: int = 600, max_seconds: float = 90):
        super().__init__(name="publisher", daemon=True)
        self.tasks, self.rate, self.message_chars, self.max_seconds = tasks, rate, message_chars, max_seconds
        self.sent = 0
        self.rounds = 0
        #: The seq of each task's last write, and of its final state.
        self.last_seq: dict[str, int] = {}
        self.finals: dict[str, int] = {}
        self.error: BaseException | None = None
        self._stop_publishing = threading.Event()

    def _record(self, task: str, state: str, i: int) -> dict[str, Any]:
        now = time.time()
        text = f"step {i} at {now:.6f} "
        return {
            "task": task,
            "state": state,
            "owner": None,
            "message": (text * (self.message_chars // len(text) + 1))[: self.message_chars],
            "current": i,
            "total": 1_000_000,
            "data": {"t": now, "i": i},
        }

    def run(self) -> None:
        from realtime_async._writing.writer import get_writer

        writer = get_writer()
        start = time.monotonic()
        period, n = 1 / self.rate, len(self.tasks)
        try:
            while not self._stop_publishing.is_set() and time.monotonic() - start < self.max_seconds:
                for j, task in enumerate(self.tasks):
                    wait = start + self.rounds * period + j * period / n - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    self.last_seq[task] = writer.commit(self._record(task, "running", self.rounds)).seq  # type: ignore[arg-type]
                    self.sent += 1
                self.rounds += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def finish(self) -> dict[str, int]:
        """Stop updating, then write every task's final state (``success``); answer each final seq."""
        from realtime_async._writing.writer import get_writer

        self._stop_publishing.set()
        self.join(10)
        assert not self.is_alive() and self.error is None, self.error
        writer = get_writer()
        for task in self.tasks:
            record = {**self._record(task, "success", self.rounds), "finished_at": time.time()}
            self.finals[task] = writer.commit(record, wait=True).seq  # type: ignore[arg-type]
        return self.finals
