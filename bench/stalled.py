"""A client process holding WebSocket connections that stop reading (the slow-readers scenario).

Each connection has a small receive buffer (``rcvbuf``, set before it connects),
subscribes to every task it is given (with watch tokens), reads the snapshots,
then reads nothing more: the server's buffers take whatever it leaves unread.
Commands (see ``bench.agent``): ``connect``, ``close``. Bounded by the command's timeout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from bench.agent import serve_async
from bench.watchers import run_loop
from bench.wsclient import WSClient


class Stalled:
    def __init__(self) -> None:
        self.conns: list[WSClient] = []

    async def _one(self, port: int, path: str, tasks: list[list[str]], rcvbuf: int, deadline: float) -> WSClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connecting: it sets the window
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), deadline - time.monotonic())
        snapshots: set[str] = set()
        answered = loop.create_future()

        def on_text(payload: bytes, now: float) -> None:
            message = json.loads(payload)
            if message.get("type") == "progress":
                snapshots.add(message["task"])
            if len(snapshots) == len(tasks) and not answered.done():
                answered.set_result(None)

        _, conn = await loop.create_connection(lambda: WSClient("127.0.0.1", port, path, on_text, time.time), sock=sock)
        await asyncio.wait_for(asyncio.shield(conn.opened), deadline - time.monotonic())
        for name, token in tasks:
            conn.send_text(json.dumps({"v": 1, "type": "subscribe", "task": name, "token": token}))
        await asyncio.wait_for(answered, deadline - time.monotonic())
        assert conn.transport is not None
        conn.transport.pause_reading()  # from now on this client reads nothing
        return conn

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + cmd["timeout"]
        started = time.monotonic()
        self.conns = list(
            await asyncio.gather(
                *(self._one(cmd["port"], cmd["path"], cmd["tasks"], cmd["rcvbuf"], deadline) for _ in range(cmd["n"]))
            )
        )
        return {"connected": len(self.conns), "seconds": time.monotonic() - started}

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for conn in self.conns:  # what the server queued is never read: no close handshake
            if conn.transport is not None:
                conn.transport.abort()
        self.conns = []
        return {}

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["op"] not in ("connect", "close"):
            raise ValueError(f"unknown command {cmd['op']!r}")
        return await getattr(self, cmd["op"])(cmd)  # type: ignore[no-any-return]


def main() -> None:
    run_loop(serve_async(Stalled().handle))


if __name__ == "__main__":
    main()
