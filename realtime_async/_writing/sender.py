"""Per-process background machinery: a timer thread and a channel-layer sender.

Workers are plain synchronous processes. ``async_to_sync(group_send)`` there
starts a thread, an event loop and a Redis connection on every call, so this
module keeps one event loop in one daemon thread per process and hands it
messages. Both are made lazily and made again after a fork (Celery's prefork
pool forks its children from a parent that may already have them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer

from realtime_async._core.process import PerProcess, Throttled
from realtime_async.conf import get_settings

__all__ = ["FINAL_BROADCAST_TIMEOUT", "Scheduler", "broadcast", "get_scheduler", "wait_sent"]

logger = logging.getLogger("realtime_async")

#: How long a final state's broadcast may hold up the worker that sends it.
FINAL_BROADCAST_TIMEOUT = 2.0


class Scheduler:
    """One daemon thread running callbacks at given monotonic times."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="realtime_async-scheduler", daemon=True)
        self._thread.start()

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._counter), callback))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:
                logger.exception("realtime_async background callback failed")


class _Sender:
    """An event loop in a daemon thread that sends to the channel layer, one message at a time.

    Sends go through one queue and one consumer so that they reach Redis in
    the order they were submitted; concurrent ``group_send`` calls would
    interleave and let an older state overtake a newer one.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._log = Throttled(logger)
        self._queue: asyncio.Queue[tuple[tuple[str, ...], dict[str, Any], concurrent.futures.Future[None]]]
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), name="realtime_async-sender", daemon=True).start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._queue = asyncio.Queue()
        self.loop.create_task(self._consume())
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    async def _consume(self) -> None:
        while True:
            groups, message, done = await self._queue.get()
            await self._send(groups, message)
            if not done.done():
                done.set_result(None)

    async def _send(self, groups: tuple[str, ...], message: dict[str, Any]) -> None:
        try:
            layer = get_channel_layer(get_settings().channel_layer_alias)
            if layer is None:
                self._log.warning("realtime_async: no channel layer is configured; progress is stored but not pushed")
                return
            for group in groups:
                await layer.group_send(group, message)
        except Exception as exc:
            self._log.warning("realtime_async: broadcast to the channel layer failed (%s: %s)", type(exc).__name__, exc)

    def submit(self, groups: tuple[str, ...], message: dict[str, Any]) -> concurrent.futures.Future[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self._queue.put_nowait, (groups, message, done))
        return done


_scheduler = PerProcess(Scheduler)
_sender = PerProcess(_Sender)


def get_scheduler() -> Scheduler:
    """This process's scheduler thread."""
    return _scheduler.get()


def broadcast(groups: tuple[str, ...], message: dict[str, Any]) -> concurrent.futures.Future[None] | None:
    """Queue ``message`` for each group, in order; never raises. Returns a future to wait on."""
    try:
        return _sender.get().submit(groups, message)
    except Exception as exc:  # an interpreter shutting down
        logger.warning("realtime_async: broadcast not queued (%s)", type(exc).__name__)
        return None


def wait_sent(future: concurrent.futures.Future[None] | None, timeout: float = FINAL_BROADCAST_TIMEOUT) -> None:
    """Wait for a queued broadcast (used for final states); logs instead of raising."""
    if future is None:
        return
    try:
        future.result(timeout)
    except Exception as exc:
        logger.warning("realtime_async: broadcast not confirmed (%s)", type(exc).__name__)
