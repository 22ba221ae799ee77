"""HTTP load and pollers: keep-alive HTTP/1.1 on asyncio streams, bounded by count and time.

Commands (see ``bench.agent``):

- ``load``: ``concurrency`` connections each sending GETs back to back for
  ``seconds`` (at most ``max_requests`` in all); answers requests a second and
  latencies. ``etag: true`` first fetches the ETag and sends it back as
  ``If-None-Match``, so every answer is a ``304``.
- ``poll``: pollers at a fixed interval (a random phase each), like a page's
  htmx (``hx-trigger="every 1000ms"``) or celery-progress's JavaScript (500 ms);
  answers when each answer arrived and which update it showed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from typing import Any

from bench.agent import serve_async
from bench.watchers import run_loop

_MESSAGE = re.compile(rb'data-ra-field="message">t=([0-9.]+)<')


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: keep-alive"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        got = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                got[name.strip().lower()] = value.strip()
        if "content-length" in got:
            body = await self.reader.readexactly(int(got["content-length"]))
        elif got.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(part[:-2] for part in parts)
        else:
            body = b"" if status in (204, 304) else await self.reader.read()
        if got.get("connection", "").lower() == "close":
            self.close()
        return status, got, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def load(cmd: dict[str, Any]) -> dict[str, Any]:
    host, port, path = "127.0.0.1", cmd["port"], cmd["path"]
    headers = dict(cmd.get("headers", {}))
    if cmd.get("etag"):
        probe = _Conn(host, port)
        _, got, _ = await probe.get(path, headers)
        probe.close()
        headers["If-None-Match"] = got["etag"]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    budget = [cmd["max_requests"]]
    stop_at = time.monotonic() + cmd["seconds"]

    async def worker() -> None:
        conn = _Conn(host, port)
        try:
            while budget[0] > 0 and time.monotonic() < stop_at:
                budget[0] -= 1
                t0 = time.perf_counter()
                status, _, _ = await conn.get(path, headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    started = time.monotonic()
    cpu0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(cmd["concurrency"])))
    elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "lat": [round(x, 3) for x in latencies],
        "statuses": {str(k): v for k, v in statuses.items()},
        "client_cpu": time.process_time() - cpu0,
        "seconds": elapsed,
    }


def _shown_time(kind: str, body: bytes) -> float | None:
    """The publisher's time of the update an answer shows."""
    if kind == "htmx":
        match = _MESSAGE.search(body)
        return float(match.group(1)) if match else None
    with contextlib.suppress(ValueError, KeyError, AttributeError):
        return float(json.loads(body)["progress"]["description"].split()[2])
    return None


async def poll(cmd: dict[str, Any]) -> dict[str, Any]:
    stop_at = time.monotonic() + cmd["seconds"]

    async def poller(target: dict[str, Any]) -> list[list[float | None]]:
        conn = _Conn("127.0.0.1", cmd["port"])
        seen: list[list[float | None]] = []
        interval = target["interval"]
        next_at = time.monotonic() + random.uniform(0, interval)
        try:
            while time.monotonic() < stop_at and len(seen) < 10_000:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                _, _, body = await conn.get(target["path"], target.get("headers", {}))
                seen.append([time.time(), _shown_time(target["kind"], body)])
        finally:
            conn.close()
        return seen

    results = await asyncio.gather(*(poller(target) for target in cmd["targets"]))
    return {"seen": {target["name"]: result for target, result in zip(cmd["targets"], results, strict=True)}}


async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
    handlers = {"load": load, "poll": poll}
    return await handlers[cmd["op"]](cmd)


if __name__ == "__main__":
    run_loop(serve_async(handle))
