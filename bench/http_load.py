"""HTTP load and pollers: keep-alive HTTP/1.1 on asyncio streams, bounded by count and time.

Commands (see ``bench.agent``):

- ``load``: ``concurrency`` connections each sending GETs back to back for
  ``seconds`` (at most ``max_requests`` in all); answers requests a second and
  latencies. ``etag: true`` first fetches the ETag and sends it back as
  ``If-None-Match``, so every answer is a ``304``.
- ``poll``: pollers at a fixed interval (a random phase each), like a page's
  htmx (``hx-trigger="every 1000ms"``) or celery-progress's JavaScript (500 ms);
  answers when each answer arrived and which update it showed.
- ``pollers_open`` then ``pollers_run``: many clients, each on its own keep-alive
  connection, polling one of ``paths`` ``interval`` after its last answer (a random
  phase each) with that answer's ETag, as ``poll.js`` does, for ``seconds``; every
  connection is open and every path's ETag known before the run starts, and the
  server's CPU (read from ``/proc`` of ``server_pid``, on the same machine) is taken
  over the run only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
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


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) of ``pid``, as ``bench.harness.proc_cpu``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Pollers:
    """The many pollers' connections, opened by ``pollers_open`` and used by ``pollers_run``."""

    def __init__(self, cmd: dict[str, Any], etags: dict[str, str | None], conns: list[_Conn]) -> None:
        self.cmd, self.etags, self.conns = cmd, etags, conns


_pollers: _Pollers | None = None


async def pollers_open(cmd: dict[str, Any]) -> dict[str, Any]:
    """Each path's ETag (what a page got on its first poll), then ``clients`` connections, all open."""
    global _pollers
    await pollers_close({})
    host, port = "127.0.0.1", cmd["port"]
    limit = cmd.get("request_timeout", 10.0)
    started = time.monotonic()
    etags: dict[str, str | None] = {}
    probe = _Conn(host, port)
    try:
        for path in cmd["paths"]:
            _, got, _ = await asyncio.wait_for(probe.get(path, {"Accept": "application/json"}), limit)
            etags[path] = got.get("etag")
    finally:
        probe.close()
    probed = time.monotonic()
    conns = [_Conn(host, port) for _ in range(cmd["clients"])]
    opening = asyncio.Semaphore(32)  # under the listen backlog (Twisted: 50): no SYN retries
    deadline = probed + cmd.get("open_timeout", 30.0)

    async def open_one(conn: _Conn) -> None:
        async with opening:
            left = min(limit, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError("open deadline")
            conn.reader, conn.writer = await asyncio.wait_for(asyncio.open_connection(host, port), left)

    opened = await asyncio.gather(*(open_one(conn) for conn in conns), return_exceptions=True)
    failed = [repr(r) for r in opened if isinstance(r, BaseException)]
    _pollers = _Pollers(cmd, etags, conns)
    return {
        "connected": len(conns) - len(failed),
        "errors": failed[:5],
        "probe_seconds": probed - started,
        "seconds": time.monotonic() - started,
    }


async def pollers_run(cmd: dict[str, Any]) -> dict[str, Any]:
    """Every open connection polls its path ``interval`` after its last answer (a random phase each) with that
    answer's ETag, as ``poll.js`` does, for ``seconds``; the server's CPU is read from ``/proc`` of ``server_pid``
    around it."""
    if _pollers is None:
        raise RuntimeError("pollers_run before pollers_open")
    paths, conns, etags = _pollers.cmd["paths"], _pollers.conns, _pollers.etags
    interval, seconds = cmd["interval"], cmd["seconds"]
    limit = _pollers.cmd.get("request_timeout", 10.0)
    accept = {"Accept": "application/json"}
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    errors: list[str] = []
    slow = [0]
    budget = [cmd.get("max_requests", 100_000)]
    start = time.monotonic()
    stop_at = start + seconds

    async def client(k: int) -> None:
        conn, path = conns[k], paths[k % len(paths)]
        etag = etags[path]
        next_at = start + random.uniform(0, interval)
        while next_at < stop_at and budget[0] > 0:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            budget[0] -= 1
            t0 = time.perf_counter()
            try:
                status, got, _ = await asyncio.wait_for(
                    conn.get(path, {**accept, "If-None-Match": etag} if etag else accept), limit
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                if len(errors) < 5:
                    errors.append(repr(exc))
                conn.close()
                status = 0
            else:
                latencies.append((time.perf_counter() - t0) * 1000)
                if status == 200:
                    etag = got.get("etag", etag)
            statuses[status] = statuses.get(status, 0) + 1
            took = time.perf_counter() - t0
            slow[0] += took > interval
            next_at = time.monotonic() + interval  # poll.js: the next poll a whole interval after the answer

    cpu0, client_cpu0 = _cpu_seconds(cmd["server_pid"]), time.process_time()
    await asyncio.gather(*(client(k) for k in range(len(conns)) if conns[k].writer is not None))
    cpu, wall = _cpu_seconds(cmd["server_pid"]) - cpu0, time.monotonic() - start
    client_cpu = time.process_time() - client_cpu0
    await pollers_close({})
    return {
        "clients": len(conns),
        "interval": interval,
        "seconds": wall,
        "offered_rps": len(conns) / interval,
        "requests": len(latencies),
        "rps": len(latencies) / max(wall, seconds),  # over the window, or longer when the last answers were late
        "slow": slow[0],
        "lat": [round(x, 3) for x in latencies],
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "server_cpu": cpu,
        "server_cpu_share": cpu / wall,
        "client_cpu_share": client_cpu / wall,
    }


async def pollers_close(cmd: dict[str, Any]) -> dict[str, Any]:
    global _pollers
    if _pollers is not None:
        for conn in _pollers.conns:
            conn.close()
        _pollers = None
    return {}


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
    handlers = {
        "load": load,
        "poll": poll,
        "pollers_open": pollers_open,
        "pollers_run": pollers_run,
        "pollers_close": pollers_close,
    }
    return await handlers[cmd["op"]](cmd)


if __name__ == "__main__":
    run_loop(serve_async(handle))
