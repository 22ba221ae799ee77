"""A client process holding watchers (WebSockets, SSE streams, or a raw Redis subscriber), measuring what they get.

Commands (see ``bench.agent``): ``connect`` (WebSockets; with ``client: "sse"``, SSE streams, one per
watcher with its task in the URL, carrying the same JSON messages), ``floor_subscribe``,
``layer_subscribe``, ``subscribe``, ``start`` (a new step), ``finish`` (wait for every watcher's final
state, bounded, and answer the step's figures), ``close``.

Latency is taken at arrival (``time.time()`` once per read from the socket)
minus the publisher's ``time.time()`` carried in the update: ``data.t`` in
realtime_async's records (``finished_at`` for the final one), ``t`` in the
tutorial consumer's and the pub/sub floor's events, the ``description`` in
celery-progress's. Skipped intermediate states are counted, never guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any

from bench.agent import serve_async
from bench.sseclient import open_sse_client
from bench.wsclient import open_client, open_lib_client

FINAL = frozenset({"success", "failure", "cancelled", "lost"})
#: Latencies answered per step and process: a uniform sample beyond this.
SAMPLE_CAP = 60_000
clock = time.time
loads = json.loads


class _RespSubscriber(asyncio.Protocol):
    """A raw Redis SUBSCRIBE on asyncio: the pub/sub floor without a client library's overhead."""

    def __init__(self, channel: str, on_message) -> None:
        self.channel = channel.encode()
        self.on_message = on_message
        self.buf = bytearray()
        self.subscribed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        c = self.channel
        transport.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(c), c))

    def data_received(self, data: bytes) -> None:
        now = clock()
        buf = self.buf
        buf += data
        while True:
            parsed = self._parse(buf)
            if parsed is None:
                return
            items, used = parsed
            del buf[:used]
            if items[0] == b"message":
                self.on_message(items[2], now)
            elif items[0] == b"subscribe" and not self.subscribed.done():
                self.subscribed.set_result(None)

    @staticmethod
    def _parse(buf: bytearray) -> tuple[list[Any], int] | None:
        # Push messages are arrays of bulk strings and one integer: *3 $.. $.. $../:n
        if not buf.startswith(b"*"):
            return None
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        count, pos, items = int(buf[1:end]), end + 2, []
        for _ in range(count):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            kind, value = buf[pos : pos + 1], buf[pos + 1 : end]
            if kind == b"$":
                size = int(value)
                if len(buf) < end + 2 + size + 2:
                    return None
                items.append(bytes(buf[end + 2 : end + 2 + size]))
                pos = end + 2 + size + 2
            else:
                items.append(int(value))
                pos = end + 2
        return items, pos


class Watchers:
    def __init__(self) -> None:
        self.conns: list[Any] = []
        self.target = ""
        self.step: Any = None
        self.task_of: list[str | None] = []
        self.subscriber: asyncio.Transport | None = None
        self.layer: Any = None
        self.layer_reader: asyncio.Future[None] | None = None
        self._reset_step()

    # -- per-step figures ---------------------------------------------------
    def _reset_step(self) -> None:
        n = len(self.conns) or 1
        self.frames = [0] * n
        self.last_i = [-1] * n
        self.final_seen = [False] * n
        self.finals = 0
        self.lat: list[float] = []
        self.final_lat: list[float] = []
        self.first = self.last = 0.0
        self.stale = self.out_of_order = self.snapshot_count = 0
        self.errors: list[str] = []
        self.refusals = 0  # messages that are not progress (an SSE stream's not_found, limit)
        self.all_final = asyncio.Event()
        self.snap = [False] * n
        self.last_frame_at = 0.0
        self.cpu0 = time.process_time()
        # A group's parent (target "group"): per watcher, (seq, written at ms, arrival s, state) per new record.
        self.parent_frames: list[list[tuple[int, int, float, str]]] = [[] for _ in range(n)]
        self.parent_final: list[Any] = [None] * n
        self.parent_repeats = 0

    def _frame(self, k: int, i: int, t: float, now: float) -> None:
        self.frames[k] += 1
        self.lat.append(now - t)
        if i <= self.last_i[k]:
            self.out_of_order += 1
        self.last_i[k] = i
        if not self.first:
            self.first = now
        self.last = now

    def _final(self, k: int, t: float, now: float) -> None:
        if self.final_seen[k]:
            return
        self.final_seen[k] = True
        self.final_lat.append(now - t)
        self.last = max(self.last, now)
        self.finals += 1
        if self.finals == len(self.conns):
            self.all_final.set()

    # -- frame handlers, one per contender ------------------------------------
    def _record(self, k: int, payload: bytes, now: float) -> dict | None:
        """The record of a ``progress`` frame for connection ``k``'s task; None (counted) for anything else."""
        self.last_frame_at = now
        msg = loads(payload)
        if msg.get("type") != "progress":
            self.refusals += 1
            if len(self.errors) < 20:
                self.errors.append(str(msg)[:200])
            return None
        if msg["task"] != self.task_of[k]:
            self.stale += 1
            return None
        return msg["data"]

    def on_ours(self, k: int, payload: bytes, now: float) -> None:
        record = self._record(k, payload, now)
        if record is None:
            return
        if not self.snap[k]:  # the first frame of a subscription is the stored state
            self.snap[k] = True
            self.snapshot_count += 1
            if record["state"] not in FINAL:
                return
        if record["state"] in FINAL:
            self._final(k, record["finished_at"], now)
        else:
            data = record["data"]
            self._frame(k, data["i"], data["t"], now)

    def on_group(self, k: int, payload: bytes, now: float) -> None:
        """A group's parent: every record with a new seq, its write time (``updated_at``) and arrival."""
        record = self._record(k, payload, now)
        if record is None:
            return
        final = record["state"] in FINAL
        if not self.snap[k]:
            self.snap[k] = True
            self.snapshot_count += 1
            if not final:
                return
        frames = self.parent_frames[k]
        seq = int(record.get("seq") or 0)
        if frames and seq <= frames[-1][0]:
            if seq == frames[-1][0]:
                self.parent_repeats += 1
            else:
                self.out_of_order += 1
            return
        frames.append((seq, round((record.get("updated_at") or 0) * 1000), now, record["state"]))
        self.frames[k] += 1
        if not self.first:
            self.first = now
        self.last = now
        if final:
            self.parent_final[k] = (record.get("group") or {}).get("counts")
            self._final(k, record.get("finished_at") or now, now)

    def parent_figures(self) -> dict[str, Any]:
        """Parent records a second per watcher: the most in any 1 s window (by write time and by arrival,
        the final one aside), the mean over the span, and the final counts (the same for every watcher?)."""
        by_write, by_arrival, rates, counts = [], [], [], []
        for frames in self.parent_frames:
            running = [f for f in frames if f[3] not in FINAL]
            by_write.append(_most_in_window([f[1] / 1000 for f in running]))
            by_arrival.append(_most_in_window([f[2] for f in running]))
            counts.append(len(running))
            if len(running) > 1:
                rates.append((len(running) - 1) / max(1e-9, running[-1][2] - running[0][2]))
        finals = [c for c in self.parent_final if c is not None]
        return {
            "frames_per_watcher": counts,
            "most_per_s_written": max(by_write, default=None),
            "most_per_s_arrived": max(by_arrival, default=None),
            "mean_per_s": sum(rates) / len(rates) if rates else None,
            "final_counts": finals[0] if finals else None,
            "finals_agree": all(c == finals[0] for c in finals) if finals else False,
            "repeats": self.parent_repeats,
        }

    def on_event(self, k: int, payload: bytes, now: float) -> None:
        """The tutorial consumer's frames and the pub/sub floor's messages: ``{"t", "i", "step", "final"}``."""
        self.on_event_data(k, loads(payload), now)

    def on_event_data(self, k: int, event: dict[str, Any], now: float) -> None:
        self.last_frame_at = now
        if event.get("step") != self.step:
            self.stale += 1
            return
        if event["final"]:
            self._final(k, event["t"], now)
        else:
            self._frame(k, event["i"], event["t"], now)

    def on_celery_progress(self, k: int, payload: bytes, now: float) -> None:
        """celery-progress's ``Progress.get_info()``; the publisher puts ``"step i t"`` in ``description``."""
        self.last_frame_at = now
        info = loads(payload)
        if info.get("complete"):
            result = info.get("result") or {}
            if isinstance(result, dict) and result.get("step") == self.step:
                self._final(k, result["t"], now)
            else:
                self.stale += 1
            return
        step, i, t = (info.get("progress") or {}).get("description", "- 0 0").split()
        if step != str(self.step):
            self.stale += 1
            return
        self._frame(k, int(i), float(t), now)

    # -- commands -------------------------------------------------------------
    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open ``paths`` (WebSockets; with ``client: "sse"``, SSE streams of ``tasks[k]`` each, whose
        snapshots are awaited here, bounded, as ``subscribe`` awaits a WebSocket's)."""
        self.target = cmd["target"]
        handler = {
            "ours": self.on_ours,
            "naive": self.on_event,
            "celery_progress": self.on_celery_progress,
            "group": self.on_group,
        }[self.target]
        client = cmd.get("client")
        opener = {"websockets": open_lib_client, "sse": open_sse_client}.get(client, open_client)
        paths: list[str] = cmd["paths"]
        limit = asyncio.Semaphore(cmd.get("concurrency", 32))
        conns: list[Any] = [None] * len(paths)
        deadline = time.monotonic() + cmd["timeout"]
        started = time.monotonic()
        # Sized before the first connection opens: a stream's snapshot comes with its answer.
        self.conns = conns
        self.task_of = list(cmd.get("tasks") or [None] * len(paths))
        self._reset_step()

        async def one(k: int) -> None:
            async with limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("connect deadline")
                conns[k] = await opener(
                    "127.0.0.1", cmd["port"], paths[k], lambda p, now, k=k: handler(k, p, now), clock, left
                )

        results = await asyncio.gather(*(one(k) for k in range(len(paths))), return_exceptions=True)
        failures = [repr(r) for r in results if isinstance(r, BaseException)]
        if failures:  # the runner refuses a partial connect: the per-connection counters need not follow
            self.task_of = [t for t, c in zip(self.task_of, conns, strict=True) if c is not None]
            self.conns = [c for c in conns if c is not None]
            self._reset_step()
        if client == "sse":
            # Every stream's snapshot, or a refusal, or its end, or the deadline.
            while (  # noqa: ASYNC110
                self.snapshot_count + self.refusals + self._closed_count() < len(self.conns)
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.005)
        return {"connected": len(self.conns), "failed": len(failures), "errors": failures[:5],
                "snapshots": self.snapshot_count, "messages": self.errors[:5],
                "seconds": time.monotonic() - started, "loop": event_loop_name()}  # fmt: skip

    async def floor_subscribe(self, cmd: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.target = "floor"
        self.conns = ["floor"]
        transport, proto = await loop.create_connection(
            lambda: _RespSubscriber(cmd["channel"], lambda p, now: self.on_event(0, p, now)), "127.0.0.1", cmd["port"]
        )
        await asyncio.wait_for(proto.subscribed, 5)
        self.subscriber = transport
        self._reset_step()
        return {"connected": 1}

    async def layer_subscribe(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """A channels_redis receiver in a group, on its own loop: the channel layer without daphne."""
        if cmd.get("layer") == "pubsub":
            from channels_redis.pubsub import RedisPubSubChannelLayer

            layer = RedisPubSubChannelLayer(hosts=[cmd["url"]], prefix=cmd["prefix"])
        else:
            from channels_redis.core import RedisChannelLayer

            layer = RedisChannelLayer(hosts=[{"address": cmd["url"]}], prefix=cmd["prefix"])
        channel = await layer.new_channel("bench.layer")
        await layer.group_add(cmd["group"], channel)

        async def read() -> None:
            while True:
                message = await layer.receive(channel)
                self.on_event_data(0, message["data"], clock())

        self.target = "layer"
        self.conns = ["layer"]
        self._reset_step()
        self.layer, self.layer_reader = layer, asyncio.ensure_future(read())
        return {"connected": 1}

    async def subscribe(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Subscribe connection k to ``tasks[k % len(tasks)]`` and wait for every snapshot.

        ``window`` bounds the subscriptions awaiting their snapshot (none: all at once).
        """
        tasks: list[list[str]] = cmd["tasks"]
        window = cmd.get("window") or len(self.conns)
        self.snap = [False] * len(self.conns)
        self.snapshot_count = 0
        started = time.monotonic()
        deadline = started + cmd["timeout"]
        for k, conn in enumerate(self.conns):
            # A poll, not an event: closed connections count too, and it ends at the deadline.
            while k - self.snapshot_count - self._closed_count() >= window and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            name, token = tasks[k % len(tasks)]
            self.task_of[k] = name
            conn.send_text(json.dumps({"v": 1, "type": "subscribe", "task": name, "token": token}))
        # Every subscription answered, or its connection closed (e.g. 4503), or the deadline.
        while self.snapshot_count + self._closed_count() < len(self.conns) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        codes: dict[str, int] = {}
        for conn in self.conns:
            if conn.closed.done():
                codes[str(conn.close_code)] = codes.get(str(conn.close_code), 0) + 1
        return {
            "snapshots": self.snapshot_count,
            "seconds": time.monotonic() - started,
            "errors": self.errors[:5],
            "close_codes": codes,
        }

    def _closed_count(self) -> int:
        return sum(1 for conn in self.conns if conn.closed.done())

    async def start(self, cmd: dict[str, Any]) -> dict[str, Any]:
        snap, task_of = self.snap, self.task_of
        self._reset_step()
        self.snap, self.task_of = snap, task_of  # the subscriptions outlive the step's counters
        self.snapshot_count = sum(snap)
        self.step = cmd["step"]
        return {}

    async def finish(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Wait (bounded) for every final state, then for the stream to go quiet; answer the step's figures."""
        waited = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_final.wait(), cmd["timeout"])
        # Frames still arriving (a backlog) would spill into the next step: let them drain, bounded.
        quiet_deadline = time.monotonic() + cmd.get("settle", 2.0)
        while time.monotonic() < quiet_deadline and clock() - self.last_frame_at < 0.15:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        lat = self.lat if len(self.lat) <= SAMPLE_CAP else random.sample(self.lat, SAMPLE_CAP)
        closed = sum(1 for c in self.conns if getattr(c, "closed", None) is not None and c.closed.done())
        extra = {"parent": self.parent_figures()} if self.target == "group" else {}
        return {
            **extra,
            "watchers": len(self.conns),
            "frames": sum(self.frames),
            "frames_min": min(self.frames) if self.frames else 0,
            "finals": self.finals,
            "missing_finals": len(self.conns) - self.finals,
            "lat": [round(x * 1000, 3) for x in lat],
            "lat_count": len(self.lat),
            "final_lat": [round(x * 1000, 3) for x in self.final_lat],
            "first": self.first,
            "last": self.last,
            "stale": self.stale,
            "out_of_order": self.out_of_order,
            "errors": self.errors[:5],
            "closed": closed,
            "cpu": time.process_time() - self.cpu0,
            "waited": time.monotonic() - waited,
        }

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for conn in self.conns:
            if hasattr(conn, "close"):
                conn.close()
        if self.subscriber is not None:
            self.subscriber.close()
            self.subscriber = None
        if self.layer_reader is not None:
            self.layer_reader.cancel()
            with contextlib.suppress(BaseException):
                await self.layer_reader
            close = getattr(self.layer, "close_pools", None) or self.layer.flush
            await close()
            self.layer = self.layer_reader = None
        waits = [c.closed for c in self.conns if hasattr(c, "closed")]
        if waits:
            await asyncio.wait(waits, timeout=cmd.get("timeout", 5))
        self.conns = []
        return {}

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op not in ("connect", "floor_subscribe", "layer_subscribe", "subscribe", "start", "finish", "close"):
            raise ValueError(f"unknown command {op!r}")
        return await getattr(self, op)(cmd)  # type: ignore[no-any-return]


def _most_in_window(times: list[float], width: float = 1.0) -> int:
    """The most of ``times`` (sorted) inside any half-open window ``[t, t + width)``."""
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best


def event_loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def run_loop(main) -> None:
    """``asyncio.run(main)``, on uvloop when it is installed (the bench extra): a cheaper client."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main() -> None:
    run_loop(serve_async(Watchers().handle))


if __name__ == "__main__":
    main()
