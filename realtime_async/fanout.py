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
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, Final, Literal, Protocol, TypeVar

from channels.layers import get_channel_layer

from realtime_async import _store
from realtime_async._pubsub import Subscriber, async_pool_for
from realtime_async.conf import get_settings
from realtime_async.naming import STAFF_FEED_GROUP, group_for_task, group_for_user
from realtime_async.progress import FINAL_STATES
from realtime_async.protocol import progress_frame

__all__ = ["CHANNEL_PREFIX", "PROGRESS_TYPE", "Hub", "LayerUnavailable", "Watcher", "get_hub"]

logger = logging.getLogger("realtime_async")

#: The ``type`` of the messages the core broadcasts to task groups.
PROGRESS_TYPE: Final = "realtime_async.progress"
_PROBE_TYPE: Final = "realtime_async.hub_probe"
_STOP_TYPE: Final = "realtime_async.hub_stop"
#: channels_redis' ``channel_capacity`` patterns can match this prefix.
CHANNEL_PREFIX: Final = "realtime_async.hub"
#: How many recent ``(task, seq)`` the hub remembers to drop the copies of one broadcast.
_RECENT: Final = 1024
#: Deliveries between two yields of the fan-out to the event loop (see ``Hub._fan_out``).
_CHUNK: Final = 16
#: Group memberships changed at once: redis-py's asyncio pool raises instead of waiting when empty.
_MEMBERSHIP_CALLS: Final = 32

_T = TypeVar("_T")
_Kind = Literal["task", "feed"]


class LayerUnavailable(Exception):
    """The channel layer could not be used; the client should retry (close code 4503)."""


class Watcher(Protocol):
    """What the hub needs from a consumer."""

    async def hub_deliver(self, task: str, seq: int, frame: str, final: bool) -> None:
        """Send ``frame`` (the ``progress`` message of ``seq``) unless already past it."""

    async def hub_failed(self) -> None:
        """The hub lost the channel layer: close so that the client reconnects."""


@dataclasses.dataclass(frozen=True)
class _Update:
    seq: int
    final: bool
    record: str
    #: The followed feed groups this update belongs to, decided when it arrived.
    feeds: tuple[str, ...] = ()


@dataclasses.dataclass(eq=False)
class _Entry:
    """The local watchers of one task (or one feed) and the hub's membership of its group."""

    group: str
    watchers: dict[Watcher, None] = dataclasses.field(default_factory=dict)
    joined: bool = False
    # Serialises group_add and group_discard so a discard cannot undo a later add.
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


@dataclasses.dataclass(eq=False)
class _Run:
    """One life of the hub: its layer channel and the tasks serving it."""

    channel: str
    probe_group: str
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    pending: dict[str, list[_Update]] = dataclasses.field(default_factory=dict)
    #: ``(task, seq)`` recently routed, with the record's hash: a broadcast reaches the hub once per group it is in.
    recent: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    probe_token: str = ""
    probe_answered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    probe_now: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: The pub/sub fast path (``FAST_BROADCAST``), when the store has one.
    subscriber: Subscriber | None = None
    #: Loop time of the last renewal of the run's group memberships (see ``Hub._renew``).
    renewed: float = 0.0


def _parse_update(message: dict[str, Any]) -> tuple[str, _Update] | None:
    # Anyone with access to the layer may group_send: check the shape, not the record.
    task, seq, record, state = message.get("task"), message.get("seq"), message.get("record"), message.get("state")
    if not isinstance(task, str) or isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    if not isinstance(record, str):
        return None
    return task, _Update(seq, state in FINAL_STATES, record)


def _owner(message: dict[str, Any], record: str) -> object:
    """The update's ``owner``: the message's (the core sends it), else the record's; None when it has none.

    Which feeds get an update matters for routing only: each connection asks
    ``can_view`` about the record itself before it forwards a feed update.
    """
    owner = message.get("owner")
    if not _is_owner(owner):
        try:
            owner = json.loads(record).get("owner")
        except (ValueError, AttributeError, RecursionError):
            return None
    return owner if _is_owner(owner) else None


def _is_owner(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


class Hub:
    """Fans out task updates from one layer channel to the consumers of one event loop."""

    #: Seconds between probes of the hub's own group (a lost membership is found within about this).
    probe_interval: float = 20.0
    #: Seconds a channel layer call (or a probe's round trip) may take before the layer counts as failed.
    layer_timeout: float = 10.0
    #: Longest time between two renewals of the hub's group memberships (see ``_renew``).
    renew_interval: float = 3600.0

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        self._entries: dict[str, _Entry] = {}
        #: Followed feeds by group: ``STAFF_FEED_GROUP`` and ``group_for_user(pk)``.
        self._feeds: dict[str, _Entry] = {}
        self._run: _Run | None = None
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

    def _table(self, kind: _Kind) -> dict[str, _Entry]:
        return self._entries if kind == "task" else self._feeds

    async def _join(self, kind: _Kind, key: str, group: str, watcher: Watcher) -> None:
        run = self._run or await self._start()
        entry = self._table(kind).get(key)
        if entry is None:
            entry = self._table(kind)[key] = _Entry(group)
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
    async def _start(self) -> _Run:
        async with self._lifecycle:
            if self._run is not None:
                return self._run
            channel = await self._call(self.layer.new_channel(CHANNEL_PREFIX))
            run = _Run(channel, f"{CHANNEL_PREFIX}.{uuid.uuid4().hex}")
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

    def _subscriber(self, run: _Run) -> Subscriber | None:
        store = _store.get_store()
        if not get_settings().fast_broadcast or not isinstance(store, _store.RedisStore):
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

    async def _shutdown(self, run: _Run) -> None:
        # Ask the reader to return instead of cancelling it mid-receive: a cancelled
        # channels_redis receive can leave its per-channel cleanup lock behind.
        with contextlib.suppress(LayerUnavailable):
            await self._call(self.layer.send(run.channel, {"type": _STOP_TYPE}))
            await asyncio.wait(run.tasks[:1], timeout=self.layer_timeout)
        await self._cancel(run)
        with contextlib.suppress(LayerUnavailable):  # the probe group expires on its own
            await self._call(self.layer.group_discard(run.probe_group, run.channel))

    async def _cancel(self, run: _Run) -> None:
        current = asyncio.current_task()
        others = [task for task in run.tasks if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _fail(self, run: _Run, exc: BaseException) -> None:
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
    async def _read(self, run: _Run) -> None:
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

    def _route(self, run: _Run, message: dict[str, Any]) -> None:
        if self._run is not run:
            return  # a stopped run's last messages: its watchers now belong to the next run
        kind = message.get("type")
        if kind == PROGRESS_TYPE:
            parsed = _parse_update(message)
            if parsed is None:
                logger.debug("realtime_async: malformed progress message dropped")
                return
            task, update = parsed
            feeds = self._feeds_of(message, update.record) if self._feeds else ()
            if task not in self._entries and not feeds:
                return
            if self._seen_recently(run, task, update):
                return  # the same broadcast, through another of the hub's groups
            if feeds:
                update = dataclasses.replace(update, feeds=feeds)
            queue = run.pending.setdefault(task, [])
            if any(waiting.seq >= update.seq for waiting in queue):
                return  # a duplicate, or older than what is waiting
            # Latest wins, but a final state stays: a relaunch under the same name may follow it.
            queue[:] = [waiting for waiting in queue if waiting.final]
            queue.append(update)
            run.wake.set()
        elif kind == _PROBE_TYPE and message.get("token") == run.probe_token:
            run.probe_answered.set()

    def _route_published(self, run: _Run, data: bytes) -> None:
        """Route a record that the write script published (see ``_pubsub``)."""
        try:
            record = data.decode()
            fields = json.loads(record)
        except (UnicodeDecodeError, ValueError, RecursionError):
            fields = None
        if not isinstance(fields, dict):
            logger.debug("realtime_async: malformed published record dropped")
            return
        self._route(
            run,
            {
                "type": PROGRESS_TYPE,
                "task": fields.get("task"),
                "seq": fields.get("seq"),
                "state": fields.get("state"),
                "owner": fields.get("owner"),
                "record": record,
            },
        )

    def _feeds_of(self, message: dict[str, Any], record: str) -> tuple[str, ...]:
        """The followed feed groups an update (``message`` carrying ``record``) belongs to."""
        feeds: tuple[str, ...] = (STAFF_FEED_GROUP,) if STAFF_FEED_GROUP in self._feeds else ()
        if len(self._feeds) > len(feeds):  # some user follows their own feed
            owner = _owner(message, record)
            group = group_for_user(owner) if owner is not None else None
            if group in self._feeds:
                feeds += (group,)
        return feeds

    @staticmethod
    def _seen_recently(run: _Run, task: str, update: _Update) -> bool:
        # The record's hash tells a copy from a new run under the same name whose
        # seq started again (its record was deleted): that one must go through.
        key, digest = (task, update.seq), hash(update.record)
        if run.recent.get(key) == digest:
            return True
        run.recent[key] = digest
        if len(run.recent) > _RECENT:
            del run.recent[next(iter(run.recent))]
        return False

    def _watchers_of(self, task: str, update: _Update) -> list[Watcher]:
        """The task's watchers and the followers of its feeds, each once."""
        entry = self._entries.get(task)
        watchers: dict[Watcher, None] = dict(entry.watchers) if entry else {}
        for group in update.feeds:
            feed = self._feeds.get(group)
            if feed is not None:
                watchers.update(feed.watchers)
        return list(watchers)

    async def _fan_out(self, run: _Run) -> None:
        # Daphne's send never blocks, so without yielding a pass over 1,000 watchers
        # would hold the loop: the reader would get one message per pass (the
        # backlog then waits in Redis, out of latest-wins' reach) and no socket
        # would be written before the pass ends. So the pass yields every
        # ``_CHUNK`` deliveries, and switches to a newer update that arrived meanwhile.
        budget = _CHUNK
        while True:
            await run.wake.wait()
            run.wake.clear()
            while run.pending:
                task = next(iter(run.pending))
                updates = run.pending.pop(task)
                for update in updates:
                    if self._run is not run:
                        break
                    budget = await self._deliver(run, task, update, budget)

    async def _deliver(self, run: _Run, task: str, update: _Update, budget: int) -> int:
        """Hand ``update`` to the task's watchers, yielding every ``_CHUNK`` deliveries; return the budget left.

        When a newer intermediate update of the task arrives during the pass (and
        this one is not final), the watchers not served yet get the newer one instead, then
        those served with the older one get the newer one too: each connection
        drops seqs at or below its last one, so order holds and nobody misses
        the latest. A final state is never replaced: it goes to every watcher.
        """
        watchers = self._watchers_of(task, update)
        frame = progress_frame(task, update.record) if watchers else ""
        index = 0
        while index < len(watchers):
            watcher = watchers[index]
            index += 1
            try:
                await watcher.hub_deliver(task, update.seq, frame, update.final)
            except Exception:  # one broken connection must not starve the others
                logger.exception("realtime_async: delivery to a WebSocket failed")
            budget -= 1
            if budget > 0:
                continue
            budget = _CHUNK
            await asyncio.sleep(0)
            if self._run is not run:
                return budget
            newer = self._newer(run, task, update)
            if newer is not None:
                served, update = set(watchers[:index]), newer
                rest = self._watchers_of(task, update)
                # The ones still waiting first, then those who got the older frame.
                watchers = [w for w in rest if w not in served] + [w for w in rest if w in served]
                frame, index = progress_frame(task, update.record), 0
        return budget

    @staticmethod
    def _newer(run: _Run, task: str, update: _Update) -> _Update | None:
        """Take the next pending update of ``task`` when it may replace ``update`` mid-pass.

        Only a newer intermediate state does: a final state usually follows the
        last update at once, and waiting one pass for it costs less than taking
        that last update from most watchers.
        """
        queue = run.pending.get(task)
        if update.final or not queue or queue[0].final or queue[0].seq <= update.seq:
            return None
        newer = queue.pop(0)
        if not queue:
            del run.pending[task]
        return newer

    async def _renew(self, run: _Run) -> None:
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

    async def _probe(self, run: _Run) -> None:
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
                probe = {"type": _PROBE_TYPE, "token": run.probe_token}
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
