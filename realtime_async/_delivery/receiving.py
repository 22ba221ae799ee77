"""How a hub's run receives updates, and what it does when that fails (see ``_delivery.hub``).

A run is one life of the hub. It receives in one of two ways, decided when it
starts (``_core.publishing``):

- *layered*: from its own channel of the channel layer, which is in each
  watched group, with probes of its own group and renewals of its memberships;
  and, sooner, from the hubs' pub/sub channels (``FAST_BROADCAST``);
- *direct*: from the layer's pub/sub channels of the watched groups, on one
  connection of its own, and after that connection was away, from the store.

A failure it cannot recover from closes every watcher with 4503 (``_fail``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any, Final, TypeVar

from realtime_async._core.naming import HUB_CHANNEL_PREFIX
from realtime_async._core.publishing import DirectLayer
from realtime_async._core.store import RedisStore, get_store, redis_shards
from realtime_async._delivery.fanout import PROBE_TYPE, Entry, FanOut, LayerUnavailable, Run, Watcher
from realtime_async._delivery.pubsub import Subscriber, Subscribers, async_pool_for
from realtime_async.conf import get_settings

__all__ = ["MEMBERSHIP_CALLS", "STOP_TYPE", "Receiving"]

logger = logging.getLogger("realtime_async")

#: What a layered run's reader returns on (see ``Hub._shutdown``).
STOP_TYPE: Final = "realtime_async.hub_stop"
CHANNEL_PREFIX: Final = HUB_CHANNEL_PREFIX
#: Group memberships changed at once: redis-py's asyncio pool raises instead of waiting when empty.
MEMBERSHIP_CALLS: Final = 32

_T = TypeVar("_T")


class Receiving(FanOut):
    """The receiving half of ``Hub``: starting a run's tasks, reading, probing, failing."""

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
        self._membership = asyncio.Semaphore(MEMBERSHIP_CALLS)
        self._background: set[asyncio.Task[None]] = set()

    async def _start_layered(self) -> Run:
        """A run that receives from its own layer channel, sooner over the hubs' channels (``FAST_BROADCAST``)."""
        channel = await self._call(self.layer.new_channel(CHANNEL_PREFIX))
        run = Run(channel, f"{CHANNEL_PREFIX}.{uuid.uuid4().hex}")
        await self._call(self.layer.group_add(run.probe_group, channel))
        run.tasks = [
            asyncio.create_task(self._read(run), name="realtime_async-hub-read"),
            asyncio.create_task(self._fan_out(run), name="realtime_async-hub-fan-out"),
            asyncio.create_task(self._probe(run), name="realtime_async-hub-probe"),
        ]
        run.renewed = self.loop.time()
        shards = redis_shards(get_store())
        if get_settings().fast_broadcast and shards:
            self._listen(
                run,
                [
                    Subscriber(
                        async_pool_for(shard.client, shard.shard_spec),
                        shard.broadcast_channel,
                        run.probe_group,
                        lambda data: self._route_published(run, data),
                    )
                    for shard in shards
                ],
            )
        return run

    async def _start_direct(self, direct: DirectLayer) -> Run:
        """A run that receives on the layer's group channels itself (see ``_core.publishing``)."""
        shards = redis_shards(get_store())  # direct_layer() says they are the layer's hosts
        run = Run("", f"{CHANNEL_PREFIX}.{uuid.uuid4().hex}", direct=direct)
        run.tasks = [asyncio.create_task(self._fan_out(run), name="realtime_async-hub-fan-out")]
        self._listen(run, [self._direct_subscriber(run, direct, index, shard) for index, shard in enumerate(shards)])
        return run

    def _direct_subscriber(self, run: Run, direct: DirectLayer, index: int, shard: RedisStore) -> Subscriber:
        return Subscriber(
            async_pool_for(shard.client, shard.shard_spec),
            direct.channel,
            run.probe_group,
            lambda data: self._route_layer_message(run, data),
            lambda again: self._spawn(self._resync(run, index)) if again else None,
            lambda exc: self._spawn(self._lose_shard(run, index, exc)),
        )

    @staticmethod
    def _listen(run: Run, each: list[Subscriber]) -> None:
        """Give ``run`` a subscriber per Redis server of the store, each reading in a task of the run's."""
        store: Any = get_store()
        run.subscribers = Subscribers(each, store.shard_index)
        run.tasks += [asyncio.create_task(one.run(), name="realtime_async-hub-pubsub") for one in each]

    async def _stop_if_idle(self) -> None:
        """End the run when nothing is watched any more (``Hub``'s)."""
        raise NotImplementedError

    async def _lose_shard(self, run: Run, index: int, exc: BaseException) -> None:
        """A shard cannot be reached: close the watchers of its tasks, and the feeds' followers, with 4503.

        With one server that is every watcher (``_fail``); with several, the
        tasks on the other shards are served on as before.
        """
        if run.subscribers is None or len(run.subscribers.each) == 1:
            await self._fail(run, exc)
            return
        if self._run is not run:
            return
        lost = {task: entry for task, entry in self._entries.items() if run.subscribers.index(task) == index}
        feeds, self._feeds = self._feeds, {}
        for task in lost:
            del self._entries[task]
        watchers = _each_watcher([*lost.values(), *feeds.values()])
        logger.warning(
            "realtime_async: Redis shard %d cannot be reached (%s: %s); closing %d watcher(s) of its tasks with 4503",
            index, type(exc).__name__, exc, len(watchers),
        )  # fmt: skip
        for entry in [*lost.values(), *feeds.values()]:
            entry.joined = False
            await run.subscribers.discard(entry.group, entry.task)
        await _close_all(watchers, "a shard failure")
        if not self._entries and not self._feeds:
            await self._stop_if_idle()

    def _route_layer_message(self, run: Run, data: bytes) -> None:
        """Route what a layer group channel carried: the write script's message, or anyone's ``group_send``."""
        assert run.direct is not None
        try:
            message = run.direct.decode(data)
        except Exception:
            message = None
        if not isinstance(message, dict):
            logger.debug("realtime_async: malformed layer message dropped")
            return
        self._route(run, message)

    async def _resync(self, run: Run, index: int = 0) -> None:
        """After shard ``index``'s pub/sub connection was away: deliver what it holds past what was delivered.

        Each watcher drops a seq at or below its last, so a record delivered
        already is not sent twice. A feed's updates cannot be read back this way
        (which tasks changed is not known): its followers are closed with 4503,
        so their clients subscribe again and get their snapshot.
        """
        if self._run is not run:
            return
        await _close_all(_each_watcher(self._feeds.values()), "a pub/sub reconnection")
        subscribers = run.subscribers
        names = [name for name in self._entries if subscribers is None or subscribers.index(name) == index]
        if not names:
            return
        store: Any = get_store()
        try:
            records = await asyncio.to_thread(store.read_states, names)
        except Exception as exc:  # Redis away again: the next reconnection reads again
            logger.warning("realtime_async: reading tasks back after a reconnection failed (%s)", type(exc).__name__)
            return
        for record in records:
            if record is not None:
                self._route_published(run, record.encode())
        logger.info("realtime_async: pub/sub reconnected; %d watched task(s) read back from the store", len(names))

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
        watchers = _each_watcher(entries)
        logger.warning(
            "realtime_async: channel layer failed (%s: %s); closing %d WebSocket(s) with 4503",
            type(exc).__name__, exc, len(watchers),
        )  # fmt: skip
        await self._cancel(run)
        await _close_all(watchers, "a layer failure")
        if run.direct is None:
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
            if message.get("type") == STOP_TYPE:
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


def _each_watcher(entries: Iterable[Entry]) -> list[Watcher]:
    """The watchers of ``entries``, each once (one may watch several tasks and feeds)."""
    return list({watcher: None for entry in entries for watcher in entry.watchers})


async def _close_all(watchers: Iterable[Watcher], after: str) -> None:
    """Close each of ``watchers`` with 4503 (``hub_failed``); one that fails to close does not stop the rest."""
    for watcher in watchers:
        try:
            await watcher.hub_failed()
        except Exception:
            logger.exception("realtime_async: closing a watcher after %s failed", after)
