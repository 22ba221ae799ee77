"""One Server-Sent Events stream: a watcher of the hub whose client reads bytes instead of WebSocket frames.

The hub hands an ``EventStream`` each update as it hands a WebSocket consumer
one (``hub_deliver``), but the stream only notes it: the newest record of each
task waits in ``pending`` (a final record is kept and ends the task) until the
writer (``chunks()``) takes everything waiting as one chunk. A client that
reads slowly therefore costs one waiting record per task, never a queue, and
whoever writes the chunks (``_delivery.events``) decides what "slowly" means.

Where the server's ``send`` only queues bytes (daphne), ``_delivery.events`` sets
``write_now``: a record that finds the writer waiting with nothing before it
then goes out at once, from the hub's pass, without waking the writer's task;
once the server says the client is behind, records wait as above.

Each ``(task, seq)`` goes out at most once and in order: ``sent`` holds the
last seq written per task, and the snapshot that starts a task sets it first
(snapshot, then stream, as ``docs/protocol.md`` says).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from realtime_async._delivery.fanout import LayerUnavailable

__all__ = ["HEARTBEAT", "RETRY_MS", "EventStream", "event_bytes", "message_bytes"]

logger = logging.getLogger("realtime_async")

#: The browser's reconnect delay (milliseconds), sent first.
RETRY_MS = 2000
HEARTBEAT = b": ping\n\n"

_cache: dict[str, Any] = {"frame": None, "event": b""}


def event_bytes(task: str, seq: int, frame: str) -> bytes:
    """The SSE event of one progress record: ``id: task:seq`` and the protocol's JSON as ``data:``.

    The hub gives every watcher of an update the same ``frame`` object, so one
    slot is enough for a fan-out pass to encode it once.
    """
    if _cache["frame"] is not frame:
        # Task names hold no line breaks and the JSON none either (json.dumps escapes them).
        _cache.update(frame=frame, event=f"id: {task}:{seq}\ndata: {frame}\n\n".encode())
    event: bytes = _cache["event"]
    return event


def message_bytes(text: str) -> bytes:
    """An SSE event with no id (an ``error`` message): the browser keeps its last event id."""
    return f"data: {text}\n\n".encode()


class EventStream:
    """The hub's side of one event stream: what waits for its client, and the chunks to write."""

    def __init__(self, hub: Any, *, heartbeat: float, max_bytes: int) -> None:
        self.hub = hub
        self.heartbeat, self.max_bytes = heartbeat, max_bytes
        #: Tasks the hub delivers to this stream (watched, not final yet).
        self.live: set[str] = set()
        #: The last seq written per task; a task is absent until its snapshot was taken.
        self.sent: dict[str, int] = {}
        #: The newest record waiting per task: (seq, frame, final).
        self.pending: dict[str, tuple[int, str, bool]] = {}
        #: Bytes to write before anything pending (the start: retry, snapshots, refusals).
        self.head: list[bytes] = [f"retry: {RETRY_MS}\n\n".encode()]
        self.failed = False
        #: Tasks whose final record was taken: their groups are left once it is written.
        self._ended: list[str] = []
        self._wake = asyncio.Event()
        self._closed = False
        #: The heartbeat's timer: one per quiet interval, not one per record (see ``_beat``).
        self._beat_timer: asyncio.TimerHandle | None = None
        self._beat_due = False
        #: When the writer last began to wait, or last wrote at once (loop time); None while it writes.
        self._waiting_since: float | None = None
        #: Bytes written so far: the stream ends after ``max_bytes``.
        self.written = 0
        #: Writes a chunk at once, without the writer, or says it cannot (False); None: the writer writes all.
        self.write_now: Callable[[bytes], bool] | None = None

    # -- the hub's side -----------------------------------------------------
    async def hub_deliver(self, task: str, seq: int, frame: str, final: bool) -> None:
        """Note ``task``'s record ``seq`` (the newest wins; a final one stays)."""
        if task not in self.live or seq <= self.sent.get(task, 0):
            return
        waiting = self.pending.get(task)
        if waiting is not None and (waiting[2] or waiting[0] >= seq):
            return
        if self._written_now(task, seq, frame, final):
            return
        self.pending[task] = (seq, frame, final)
        self._wake.set()

    def _written_now(self, task: str, seq: int, frame: str, final: bool) -> bool:
        """Write a record at once when the writer waits with nothing before it (no wake-up of its task).

        A final record goes through the writer, which then leaves the task's group.
        """
        if self.write_now is None or final or self.pending or self._waiting_since is None:
            return False
        event = event_bytes(task, seq, frame)
        try:
            written = self.write_now(event)
        except Exception:  # the writer tries again, and ends the stream if it fails too
            logger.debug("realtime_async: writing an event at once failed", exc_info=True)
            written = False
        if not written:
            return False  # the client is behind (or gone): the writer waits for it, under the stall bound
        self.sent[task] = seq
        self.written += len(event)
        self._waiting_since = asyncio.get_running_loop().time()  # not quiet: the heartbeat waits
        if self.written >= self.max_bytes:
            self._wake.set()  # the writer ends the stream
        return True

    async def hub_failed(self) -> None:
        """The hub lost the channel layer: the stream ends, and the browser reconnects and resumes."""
        self.failed = True
        self.live.clear()
        self._wake.set()

    # -- starting -----------------------------------------------------------
    async def watch(self, tasks: list[str]) -> None:
        """Join every task's group (before the snapshots are read); raise ``LayerUnavailable`` on failure."""
        for task in tasks:
            self.live.add(task)
            await self.hub.watch(task, self)

    async def start(self, task: str, snapshot: tuple[str, int, bool], frame: str | None) -> None:
        """Begin ``task`` at its stored record: ``frame`` goes out first (None: the client has this seq)."""
        _, seq, final = snapshot
        self.sent[task] = seq
        if frame is not None:
            self.head.append(event_bytes(task, seq, frame))
        if final:
            await self._end(task)

    async def refuse(self, task: str, message: str) -> None:
        """Tell the client about ``task`` with an ``error`` message and stop watching it."""
        self.head.append(message_bytes(message))
        await self._end(task)

    # -- writing ------------------------------------------------------------
    async def chunks(self) -> AsyncGenerator[bytes]:
        """What to write, chunk by chunk: the start, then what waits whenever something does, or a heartbeat.

        Ends (the client reconnects and resumes) after ``max_bytes`` or when the hub failed.
        """
        try:
            chunk: bytes | None = b"".join(self.head) + self._take()
            self.head = []
            while chunk is not None:
                yield chunk
                self.written += len(chunk)
                if self.written >= self.max_bytes or self.failed:
                    return
                await self._finish_ended()
                chunk = await self._next()
        finally:
            await self.close()

    async def _next(self) -> bytes | None:
        """What waits now, else what comes within a heartbeat interval, else a heartbeat; None once the hub failed."""
        chunk = self._take()
        if chunk:
            return chunk
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            self._waiting_since = loop.time()
            if self._beat_timer is None:
                self._beat_timer = loop.call_at(self._waiting_since + self.heartbeat, self._beat)
            try:
                await self._wake.wait()
            finally:
                self._waiting_since = None
            if self.failed or self.written >= self.max_bytes:
                return None
            chunk = self._take()
            if chunk:
                return chunk
            if self._beat_due:
                self._beat_due = False
                return HEARTBEAT

    def _beat(self) -> None:
        """The heartbeat's timer: wake the writer for a heartbeat once it waited a whole interval, else wait on.

        The timer is not moved at each record (that would cost a timer per record
        and stream): when it fires early, it is set again for the rest of the interval.
        """
        self._beat_timer = None
        if self._waiting_since is None or self._closed:
            return  # writing: the next wait sets a timer again
        loop = asyncio.get_running_loop()
        due = self._waiting_since + self.heartbeat
        if loop.time() < due:
            self._beat_timer = loop.call_at(due, self._beat)
            return
        self._beat_due = True
        self._wake.set()

    def _take(self) -> bytes:
        """Everything waiting, oldest task first, as one chunk; final records end their task."""
        if not self.pending:
            return b""
        waiting, self.pending = self.pending, {}
        parts = []
        for task, (seq, frame, final) in waiting.items():
            if seq <= self.sent.get(task, 0):
                continue
            self.sent[task] = seq
            parts.append(event_bytes(task, seq, frame))
            if final:
                self.live.discard(task)
                self._ended.append(task)
        return b"".join(parts)

    async def _finish_ended(self) -> None:
        ended, self._ended = self._ended, []
        for task in ended:
            await self._unwatch(task)

    async def _end(self, task: str) -> None:
        self.live.discard(task)
        await self._unwatch(task)

    async def _unwatch(self, task: str) -> None:
        try:
            await self.hub.unwatch(task, self)
        except LayerUnavailable as exc:  # harmless: the membership expires with the group
            logger.info("realtime_async: leaving %r's group failed (%s)", task, exc)

    async def close(self) -> None:
        """Stop watching everything (the stream ended, the client went away); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._beat_timer is not None:
            self._beat_timer.cancel()
            self._beat_timer = None
        tasks, self.live = list(self.live), set()
        self.pending.clear()
        for task in tasks:
            await self._unwatch(task)
