"""The process-local fan-out hub between the channel layer and the WebSocket consumers.

With one layer channel per connection, an update of a task watched by N local
connections costs N Redis writes, N reads, N decodes and N dispatches (each
with a database thread hop in Channels). The hub instead holds ONE layer
channel per event loop (one daphne process), joins a task's group while at
least one local connection watches that task, and hands each update to the
watchers as one frame, encoded once.

Groups stay the public mechanism: whatever ``group_send``s a
``realtime_async.progress`` message to ``naming.group_for_task(name)`` reaches
every watcher of ``name``.

Feeds (a user's tasks, or every task for staff) work the same way: the hub
joins ``group_for_user(pk)`` while a local connection follows that user's feed
and ``STAFF_FEED_GROUP`` while a local staff connection follows the feed, and
routes each update by its record's ``owner`` (staff feeds get every update).
The core broadcasts one state change to the task's group, the owner's group and
the staff group, so the hub, being in several of them, receives it up to three
times: it forwards each ``(task, seq)`` once, and a connection that both
watches a task and follows a feed gets each update once.

Progress is a state, not a log: when fan-out lags, updates waiting for it are
replaced by newer ones of the same task (latest wins), except final states,
which are always delivered. A pass over many watchers yields to the event loop
every few deliveries (so the layer keeps being read and sockets written) and,
when a newer update of its task arrived meanwhile, goes on with that one.

When the layer fails (``receive`` raises twice in a row because Redis went
away, or a probe sent to the hub's own group does not come back because Redis
restarted and forgot the groups), every watcher is told to close with 4503 so its client
reconnects and resubscribes (the cache holds the truth), and the hub starts
afresh on next use.

With ``FAST_BROADCAST`` (the default) and the cache on Redis, the hub also
subscribes to the Redis pub/sub channels of its groups (``_pubsub``), to which
the core's write script publishes each record as it writes it: an update then
reaches the hub one ``PUBLISH`` after the write, and its copy through the layer,
a millisecond or so later, is dropped like any other copy. The layer remains
what delivery relies on: the pub/sub path only makes it sooner.

Each hub lives on one event loop: channels_redis refuses to receive on two
loops at once, and daphne runs one loop per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final, Literal

from channels.layers import get_channel_layer

from realtime_async._core.naming import HUB_CHANNEL_PREFIX, group_for_task
from realtime_async._core.publishing import direct_layer
from realtime_async._delivery.fanout import Entry, LayerUnavailable, Run, Watcher
from realtime_async._delivery.receiving import STOP_TYPE, Receiving
from realtime_async.conf import get_settings

__all__ = ["CHANNEL_PREFIX", "Hub", "LayerUnavailable", "Watcher", "get_hub"]

logger = logging.getLogger("realtime_async")

CHANNEL_PREFIX: Final = HUB_CHANNEL_PREFIX
_Kind = Literal["task", "feed"]


class Hub(Receiving):
    """Fans out task updates from one layer channel to the consumers of one event loop."""

    def __init__(self, layer: Any) -> None:
        super().__init__(layer)
        self._lifecycle = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._run is not None

    def watchers(self, task: str) -> int:
        """How many local connections watch ``task``."""
        entry = self._entries.get(task)
        return len(entry.watchers) if entry else 0

    def feed_watchers(self, group: str) -> int:
        """How many local connections follow the feed of ``group``."""
        entry = self._feeds.get(group)
        return len(entry.watchers) if entry else 0

    # -- membership ------------------------------------------------------
    async def watch(self, task: str, watcher: Watcher) -> None:
        """Deliver ``task``'s updates to ``watcher`` from now on; raise ``LayerUnavailable`` on failure.

        When this returns the hub is in the task's group, so a state read
        afterwards cannot miss an update (snapshot, then stream).
        """
        await self._join("task", task, group_for_task(task), watcher)

    async def unwatch(self, task: str, watcher: Watcher) -> None:
        """Stop delivering ``task`` to ``watcher``; leave the group after the last local watcher."""
        await self._leave("task", task, watcher)

    async def watch_feed(self, group: str, watcher: Watcher) -> None:
        """Deliver the updates of ``group``'s tasks to ``watcher``; raise ``LayerUnavailable`` on failure.

        ``group`` is ``STAFF_FEED_GROUP`` (every task) or ``group_for_user(pk)``
        (the tasks whose record's ``owner`` is ``pk``); the watcher decides
        what to forward.
        """
        await self._join("feed", group, group, watcher)

    async def unwatch_feed(self, group: str, watcher: Watcher) -> None:
        """Stop delivering ``group``'s updates to ``watcher``; leave the group after the last local follower."""
        await self._leave("feed", group, watcher)

    def _table(self, kind: _Kind) -> dict[str, Entry]:
        return self._entries if kind == "task" else self._feeds

    async def _join(self, kind: _Kind, key: str, group: str, watcher: Watcher) -> None:
        run = self._run or await self._start()
        entry = self._table(kind).get(key)
        if entry is None:
            entry = self._table(kind)[key] = Entry(group, key if kind == "task" else None)
        entry.watchers[watcher] = None
        try:
            if not entry.joined:
                async with entry.lock:
                    if not entry.joined and self._run is run:
                        await self._subscribe(run, entry)
            if self._run is not run or self._table(kind).get(key) is not entry:
                raise LayerUnavailable("the hub restarted while joining")
        except BaseException:
            await self._leave(kind, key, watcher)
            raise

    async def _leave(self, kind: _Kind, key: str, watcher: Watcher) -> None:
        entry = self._table(kind).get(key)
        if entry is None or watcher not in entry.watchers:
            return
        del entry.watchers[watcher]
        if entry.watchers:
            return
        async with entry.lock:
            if entry.watchers or self._table(kind).get(key) is not entry:
                return  # someone started watching again meanwhile
            run = self._run
            if entry.joined and run is not None:
                # Cleared first: a watch() arriving during the discard must add again.
                entry.joined = False
                await self._discard(run, entry)
            if entry.watchers or self._table(kind).get(key) is not entry:
                return
            del self._table(kind)[key]
        if not self._entries and not self._feeds:
            await self._stop_if_idle()

    async def _subscribe(self, run: Run, entry: Entry) -> None:
        """Put the hub in ``entry``'s group: the layer's membership and the pub/sub channel, or the channel alone."""
        if run.direct is None:
            async with self._membership:
                await self._call(self.layer.group_add(entry.group, run.channel))
        entry.joined = True
        if run.subscribers is not None:
            try:
                await run.subscribers.add(entry.group, entry.task, required=run.direct is not None)
            except ConnectionError as exc:
                entry.joined = False
                await run.subscribers.discard(entry.group, entry.task)
                raise LayerUnavailable(str(exc)) from exc

    async def _discard(self, run: Run, entry: Entry) -> None:
        """Take the hub out of ``entry``'s group (``entry.joined`` was cleared by the caller)."""
        if run.subscribers is not None:
            await run.subscribers.discard(entry.group, entry.task)
        if run.direct is not None:
            return  # no layer membership
        try:
            async with self._membership:
                await self._call(self.layer.group_discard(entry.group, run.channel))
        except LayerUnavailable as exc:
            # Harmless: the membership expires with the group and unwatched tasks are dropped here.
            logger.info("realtime_async: group_discard failed (%s)", exc)

    async def stop(self) -> None:
        """Forget every watcher without telling it and stop the hub (server shutdown, tests)."""
        run, self._run = self._run, None
        self._entries, self._feeds = {}, {}
        if run is not None:
            await self._shutdown(run)
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    # -- lifecycle -------------------------------------------------------
    async def _start(self) -> Run:
        async with self._lifecycle:
            if self._run is not None:
                return self._run
            direct = direct_layer()
            run = await (self._start_direct(direct) if direct is not None else self._start_layered())
            self._run = run
            return run

    async def _stop_if_idle(self) -> None:
        async with self._lifecycle:
            run = self._run
            if run is None or self._entries or self._feeds:
                return
            self._run = None
        if asyncio.current_task() in run.tasks:
            # The fan-out closed its last watcher (a final state): it cannot wait for its own end.
            self._spawn(self._shutdown(run))
        else:
            await self._shutdown(run)

    async def _shutdown(self, run: Run) -> None:
        if run.direct is not None:
            await self._cancel(run)
            return
        # Ask the reader to return instead of cancelling it mid-receive: a cancelled
        # channels_redis receive can leave its per-channel cleanup lock behind.
        with contextlib.suppress(LayerUnavailable):
            await self._call(self.layer.send(run.channel, {"type": STOP_TYPE}))
            await asyncio.wait(run.tasks[:1], timeout=self.layer_timeout)
        await self._cancel(run)
        with contextlib.suppress(LayerUnavailable):  # the probe group expires on its own
            await self._call(self.layer.group_discard(run.probe_group, run.channel))


_hub: Hub | None = None


def get_hub() -> Hub:
    """The hub of the running event loop and configured channel layer; raise ``LayerUnavailable`` without a layer."""
    global _hub
    layer = get_channel_layer(get_settings().channel_layer_alias)
    if layer is None:
        raise LayerUnavailable("no channel layer is configured")
    hub = _hub
    if hub is None or hub.loop is not asyncio.get_running_loop() or hub.layer is not layer:
        hub = _hub = Hub(layer)
    return hub
