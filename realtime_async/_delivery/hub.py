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
import uuid
from collections.abc import Awaitable
from typing import Any, Final, Literal, TypeVar

from channels.layers import get_channel_layer

from realtime_async._core.naming import HUB_CHANNEL_PREFIX, group_for_task
from realtime_async._core.store import RedisStore, get_store
from realtime_async._delivery.fanout import PROBE_TYPE, Entry, FanOut, LayerUnavailable, Run, Watcher
from realtime_async._delivery.pubsub import Subscriber, async_pool_for
from realtime_async.conf import get_settings

__all__ = ["CHANNEL_PREFIX", "Hub", "LayerUnavailable", "Watcher", "get_hub"]

logger = logging.getLogger("realtime_async")

_STOP_TYPE: Final = "realtime_async.hub_stop"
CHANNEL_PREFIX: Final = HUB_CHANNEL_PREFIX
#: Group memberships changed at once: redis-py's asyncio pool raises instead of waiting when empty.
_MEMBERSHIP_CALLS: Final = 32

_T = TypeVar("_T")
_Kind = Literal["task", "feed"]


class Hub(FanOut):
    """Fans out task updates from one layer channel to the consumers of one event loop."""

    #: Seconds between probes of the hub's own group (a lost membership is found within about this).
    probe_interval: float = 20.0
    #: Seconds a channel layer call (or a probe's round trip) may take before the layer counts as failed.
    layer_timeout: float = 10.0
    #: Longest time between two renewals of the hub's group memberships (see ``_renew``).
    renew_interval: float = 3600.0

    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        self._lifecycle = asyncio.Lock()
        self._membership = asyncio.Semaphore(_MEMBERSHIP_CALLS)
        self._background: set[asyncio.Task[None]] = set()

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
            entry = self._table(kind)[key] = Entry(group)
        entry.watchers[watcher] = None
        try:
            if not entry.joined:
                async with entry.lock:
                    if not entry.joined and self._run is run:
                        async with self._membership:
                            await self._call(self.layer.group_add(entry.group, run.channel))
                        entry.joined = True
                        if run.subscriber is not None:
                            await run.subscriber.add(entry.group)
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
                if run.subscriber is not None:
                    await run.subscriber.discard(entry.group)
                try:
                    async with self._membership:
                        await self._call(self.layer.group_discard(entry.group, run.channel))
                except LayerUnavailable as exc:
                    # Harmless: the membership expires with the group and unwatched tasks are dropped here.
                    logger.info("realtime_async: group_discard failed (%s)", exc)
            if entry.watchers or self._table(kind).get(key) is not entry:
                return
            del self._table(kind)[key]
        if not self._entries and not self._feeds:
            await self._stop_if_idle()

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
            channel = await self._call(self.layer.new_channel(CHANNEL_PREFIX))
            run = Run(channel, f"{CHANNEL_PREFIX}.{uuid.uuid4().hex}")
            await self._call(self.layer.group_add(run.probe_group, channel))
            run.tasks = [
                asyncio.create_task(self._read(run), name="realtime_async-hub-read"),
                asyncio.create_task(self._fan_out(run), name="realtime_async-hub-fan-out"),
                asyncio.create_task(self._probe(run), name="realtime_async-hub-probe"),
            ]
            run.renewed = self.loop.time()
            run.subscriber = self._subscriber(run)
            if run.subscriber is not None:
                run.tasks.append(asyncio.create_task(run.subscriber.run(), name="realtime_async-hub-pubsub"))
            self._run = run
            return run

    def _subscriber(self, run: Run) -> Subscriber | None:
        store = get_store()
        if not get_settings().fast_broadcast or not isinstance(store, RedisStore):
            return None
        return Subscriber(
            async_pool_for(store.client),
            store.broadcast_channel,
            run.probe_group,
            lambda data: self._route_published(run, data),
        )

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
        # Ask the reader to return instead of cancelling it mid-receive: a cancelled
        # channels_redis receive can leave its per-channel cleanup lock behind.
        with contextlib.suppress(LayerUnavailable):
            await self._call(self.layer.send(run.channel, {"type": _STOP_TYPE}))
            await asyncio.wait(run.tasks[:1], timeout=self.layer_timeout)
        await self._cancel(run)
        with contextlib.suppress(LayerUnavailable):  # the probe group expires on its own
            await self._call(self.layer.group_discard(run.probe_group, run.channel))

    async def _cancel(self, run: Run) -> None:
        current = asyncio.current_task()
        others = [task for task in run.tasks if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _fail(self, run: Run, exc: BaseException) -> None:
        if self._run is not run:
            return
        self._run = None
        entries = [*self._entries.values(), *self._feeds.values()]
        self._entries, self._feeds = {}, {}
        watchers = {watcher: None for entry in entries for watcher in entry.watchers}
        logger.warning(
            "realtime_async: channel layer failed (%s: %s); closing %d WebSocket(s) with 4503",
            type(exc).__name__, exc, len(watchers),
        )  # fmt: skip
        await self._cancel(run)
        for watcher in watchers:
            try:
                await watcher.hub_failed()
            except Exception:
                logger.exception("realtime_async: closing a WebSocket after a layer failure failed")
        # If the layer comes back with its data, drop the dead channel from the groups.
        groups = [entry.group for entry in entries if entry.joined] + [run.probe_group]
        self._spawn(self._forget(run.channel, groups))

    async def _forget(self, channel: str, groups: list[str]) -> None:
        for group in groups:
            try:
                await self._call(self.layer.group_discard(group, channel))
            except LayerUnavailable:
                return

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(self.layer_timeout):
                return await awaitable
        except Exception as exc:
            raise LayerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    # -- the run's tasks -------------------------------------------------
    async def _read(self, run: Run) -> None:
        failed = False
        while True:
            try:
                message = await self.layer.receive(run.channel)
            except Exception as exc:
                # One failed receive loses nothing while Redis keeps its data (the message
                # stays queued), and a pooled connection to a server that restarted fails
                # once. So: probe now, and fail only on a second error in a row or a lost probe.
                if failed:
                    await self._fail(run, exc)
                    return
                failed = True
                logger.info("realtime_async: hub receive failed (%s); probing the layer", exc)
                run.probe_now.set()
                continue
            failed = False
            if message.get("type") == _STOP_TYPE:
                return
            self._route(run, message)

    async def _renew(self, run: Run) -> None:
        """Add the hub to its groups again before channels_redis' ``group_expiry`` drops it.

        The layer forgets a member ``group_expiry`` seconds (a day by default)
        after it was added, however active: without this, a task watched for
        longer would stop getting updates, and the probe group would expire
        and close every watcher with 4503 once a day.
        """
        expiry = getattr(self.layer, "group_expiry", None)
        interval = min(self.renew_interval, expiry / 4) if isinstance(expiry, (int, float)) else self.renew_interval
        if self._run is not run or self.loop.time() - run.renewed < interval:
            return
        run.renewed = self.loop.time()
        groups = [run.probe_group]
        groups += [entry.group for entry in (*self._entries.values(), *self._feeds.values()) if entry.joined]
        for group in groups:
            async with self._membership:
                await self._call(self.layer.group_add(group, run.channel))

    async def _probe(self, run: Run) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.probe_interval):
                    await run.probe_now.wait()
            try:
                await self._renew(run)
            except LayerUnavailable as exc:
                await self._fail(run, exc)
                return
            run.probe_now.clear()
            run.probe_token = uuid.uuid4().hex
            run.probe_answered.clear()
            try:
                probe = {"type": PROBE_TYPE, "token": run.probe_token}
                await self._call(self.layer.group_send(run.probe_group, probe))
                async with asyncio.timeout(self.layer_timeout):
                    await run.probe_answered.wait()
            except (LayerUnavailable, TimeoutError) as exc:
                await self._fail(run, exc)
                return


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
