"""A connection's feed: every task its user may see, each update once and in order.

A connection gets each ``(task, seq)`` at most once, whether through a
subscription or the feed: both go through one per-connection record of the
last seq sent per task (``Seen``). Feed updates of a task wait until
``can_view`` answered for the task's current run; it is asked off the event
loop, a batch of tasks at a time, so the hub's fan-out never waits for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from channels.db import database_sync_to_async

from realtime_async._core.access import may_view
from realtime_async._core.managers import resolve_manager
from realtime_async._core.naming import STAFF_FEED_GROUP, group_for_user
from realtime_async._core.process import Throttled
from realtime_async._delivery.hub import Hub, LayerUnavailable, Watcher, get_hub
from realtime_async.protocol import CLOSE_UNAVAILABLE

__all__ = ["FeedMixin", "Seen"]

logger = logging.getLogger("realtime_async")
_log = Throttled(logger)
_NO_FEED = "No feed without a signed-in user."

#: Tasks one connection remembers (last seq sent, the feed's permission); the least recent are forgotten.
REMEMBERED_TASKS = 4096


@dataclasses.dataclass(eq=False)
class Seen:
    """What one connection knows of one task across its subscription and its feed."""

    #: The last seq sent on this connection (either way), or refused by the feed.
    seq: int = 0
    #: Final states passed: each ends a run, and the next run under the name is asked about again.
    runs: int = 0
    #: ``can_view``'s answer for the feed, for the task's current run; None until asked.
    allowed: bool | None = None
    #: Feed updates waiting for that answer.
    held: list[tuple[int, str, bool]] = dataclasses.field(default_factory=list)


def _can_view_each(user: Any, frames: dict[str, str]) -> dict[str, bool]:
    """``can_view`` of each task's record, read from one of its progress frames; a failing hook refuses."""
    manager = resolve_manager()
    answers = {}
    for task, frame in frames.items():
        try:
            answers[task] = may_view(manager, user, task, json.loads(frame)["data"])
        except Exception:
            logger.exception("realtime_async: permission check for %r failed; access refused", task)
            answers[task] = False
    return answers


class FeedMixin:
    """The feed half of ``ProgressConsumer``; the consumer provides the attributes declared here."""

    scope: dict[str, Any]
    _closed: bool
    _hub: Hub | None
    _send_lock: asyncio.Lock
    _send_frame: Callable[[dict[str, Any], str, bool], Awaitable[None]]
    _subs: dict[str, Any]
    _guarded: Callable[[Awaitable[None]], Coroutine[Any, Any, None]]
    _send_error: Callable[..., Coroutine[Any, Any, None]]
    _close: Callable[[int], Coroutine[Any, Any, None]]

    def _init_feed(self) -> None:
        #: The feed groups followed (None: no feed), and per task what was sent or decided.
        self._feed: tuple[str, ...] | None = None
        self._seen: dict[str, Seen] = {}
        #: Tasks whose feed updates wait for ``can_view``, asked by ``_decider`` a batch at a time.
        self._undecided: dict[str, None] = {}
        self._decider: asyncio.Task[None] | None = None

    async def subscribe_feed(self) -> None:
        """Follow every task the user may see (see ``feed_groups``); a second call changes nothing."""
        if self._feed is not None:
            return
        user = self.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            await self._send_error("not_found", _NO_FEED)
            return
        self._feed = groups = self.feed_groups(user)
        try:
            self._hub = self._hub or get_hub()
            for group in groups:
                await self._hub.watch_feed(group, cast(Watcher, self))
        except LayerUnavailable as exc:
            _log.warning("realtime_async: cannot follow the feed (%s); closing with 4503", exc)
            await self._close(CLOSE_UNAVAILABLE)

    async def unsubscribe_feed(self) -> None:
        """Stop following the feed; what was decided about its tasks is kept for this connection."""
        await self._leave_feed()

    def feed_groups(self, user: Any) -> tuple[str, ...]:
        """The groups a signed-in user's feed follows: ``STAFF_FEED_GROUP`` for staff, else their own."""
        if getattr(user, "is_staff", False):
            return (STAFF_FEED_GROUP,)
        return (group_for_user(user.pk),)

    async def _leave_feed(self) -> None:
        groups, self._feed = self._feed, None
        if groups is None:
            return
        self._undecided.clear()
        for seen in self._seen.values():
            seen.held.clear()
        if self._hub is not None:
            for group in groups:
                await self._hub.unwatch_feed(group, cast(Watcher, self))

    def _remember(self, task: str) -> Seen:
        seen = self._seen.pop(task, None) or Seen()
        self._seen[task] = seen  # now the most recent
        if len(self._seen) > REMEMBERED_TASKS:
            del self._seen[next(iter(self._seen))]
        return seen

    def _sent(self, task: str, seq: int, final: bool) -> None:
        seen = self._remember(task)
        seen.seq = max(seen.seq, seq)
        if final:
            seen.runs += 1
            seen.allowed = None  # a new run under the same name may be someone else's: ask again

    async def _feed_deliver(self, task: str, seq: int, frame: str, final: bool) -> None:
        seen = self._remember(task)
        if seq <= seen.seq or any(seq <= held for held, _, _ in seen.held):
            return  # sent already (through the feed or a subscription), or older than that
        if seen.allowed is None or seen.held:
            # Latest wins while waiting, except a final state (as for a subscription).
            seen.held[:] = [item for item in seen.held if item[2]]
            seen.held.append((seq, frame, final))
            if seen.allowed is None:
                self._ask(task)
            return
        await self._admit(task, seen, seq, frame, final)

    async def _admit(self, task: str, seen: Seen, seq: int, frame: str, final: bool) -> None:
        """Send a feed update when the task's run is allowed; remember its seq either way, so copies are dropped."""
        allowed = seen.allowed
        # Before any await: a final state ends the run at once, so what follows is asked about again.
        self._sent(task, seq, final)
        if not allowed:
            return
        async with self._send_lock:
            # A subscription made meanwhile sends the task itself; a newer seq already sent wins.
            if self._closed or self._feed is None or task in self._subs or seq < seen.seq:
                return
            await self._send_frame({"type": "websocket.send", "text": frame}, task, final)

    def _ask(self, task: str) -> None:
        self._undecided[task] = None
        if self._decider is None or self._decider.done():
            self._decider = asyncio.create_task(self._guarded(self._decide()), name="realtime_async-feed-permissions")

    async def _decide(self) -> None:
        """Ask ``can_view`` about the tasks the feed holds updates of, off the event loop, a batch at a time.

        The hub's fan-out never waits for it, and tasks that show up while a
        batch is being decided are asked about together in the next one.
        """
        while self._undecided and self._feed is not None and not self._closed:
            batch, runs = {}, {}
            for task in self._undecided:
                seen = self._seen.get(task)
                if seen is not None and seen.allowed is None and seen.held:
                    batch[task], runs[task] = seen.held[0][1], seen.runs
            self._undecided.clear()
            if not batch:
                continue
            answers = await database_sync_to_async(_can_view_each)(self.scope.get("user"), batch)
            for task, allowed in answers.items():
                seen = self._seen.get(task)
                if seen is None or seen.allowed is not None or self._feed is None:
                    continue
                if seen.runs == runs[task]:
                    seen.allowed = allowed
                    await self._release(task, seen)
                else:  # the run ended meanwhile (its final state went out through a subscription)
                    seen.held[:] = [item for item in seen.held if item[0] > seen.seq]
                    if seen.held:
                        self._ask(task)

    async def _release(self, task: str, seen: Seen) -> None:
        """Send (or drop, when refused) the updates held while ``can_view`` was asked, up to the run's end."""
        while seen.held and seen.allowed is not None:
            seq, frame, final = seen.held.pop(0)
            if seq > seen.seq:
                await self._admit(task, seen, seq, frame, final)
        if seen.held:
            self._ask(task)  # a new run followed the final state
