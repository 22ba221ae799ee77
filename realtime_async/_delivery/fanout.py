"""Routing and fan-out passes of the hub: which local watchers get an update, and in what order.

An update reaches the hub up to three times (through the task's group, the
owner's feed group and the staff group, and once more over pub/sub): each
``(task, seq)`` is routed once. Updates waiting for a pass are replaced by newer
ones of the same task (latest wins), except final states, which are always
delivered. A pass yields to the event loop every ``_CHUNK`` deliveries and
switches to a newer update of its task that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any, Final, Protocol

from realtime_async._core.naming import PROGRESS_TYPE, STAFF_FEED_GROUP, group_for_user
from realtime_async._core.publishing import DirectLayer
from realtime_async._core.records import FINAL_STATES
from realtime_async._delivery.pubsub import Subscribers
from realtime_async.protocol import progress_frame

__all__ = ["PROBE_TYPE", "Entry", "FanOut", "LayerUnavailable", "Run", "Update", "Watcher"]

logger = logging.getLogger("realtime_async")

#: The ``type`` of the hub's probes of its own group, answered through ``FanOut._route``.
PROBE_TYPE: Final = "realtime_async.hub_probe"
#: How many recent ``(task, seq)`` the hub remembers to drop the copies of one broadcast.
_RECENT: Final = 1024
#: Deliveries between two yields of the fan-out to the event loop (see ``FanOut._fan_out``).
_CHUNK: Final = 16


class LayerUnavailable(Exception):
    """The channel layer could not be used; the client should retry (close code 4503)."""


class Watcher(Protocol):
    """What the hub needs from a consumer."""

    async def hub_deliver(self, task: str, seq: int, frame: str, final: bool) -> None:
        """Send ``frame`` (the ``progress`` message of ``seq``) unless already past it."""

    async def hub_failed(self) -> None:
        """The hub lost the channel layer: close so that the client reconnects."""


@dataclasses.dataclass(frozen=True)
class Update:
    seq: int
    final: bool
    record: str
    #: The followed feed groups this update belongs to, decided when it arrived.
    feeds: tuple[str, ...] = ()


@dataclasses.dataclass(eq=False)
class Entry:
    """The local watchers of one task (or one feed) and the hub's membership of its group."""

    group: str
    #: The watched task (None for a feed): where its group is heard, with ``SHARDS``.
    task: str | None = None
    watchers: dict[Watcher, None] = dataclasses.field(default_factory=dict)
    joined: bool = False
    # Serialises group_add and group_discard so a discard cannot undo a later add.
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


@dataclasses.dataclass(eq=False)
class Run:
    """One life of the hub: its layer channel and the tasks serving it."""

    channel: str
    probe_group: str
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    pending: dict[str, list[Update]] = dataclasses.field(default_factory=dict)
    #: ``(task, seq)`` recently routed, with the record's hash: a broadcast reaches the hub once per group it is in.
    recent: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    probe_token: str = ""
    probe_answered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    probe_now: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: The hub's pub/sub connections, one per Redis server: all it receives (direct), or the fast path.
    subscribers: Subscribers | None = None
    #: Set when the write script publishes the layer's messages itself (see ``_core.publishing``).
    direct: DirectLayer | None = None
    #: Loop time of the last renewal of the run's group memberships (see ``Hub._renew``).
    renewed: float = 0.0


def _parse_update(message: dict[str, Any]) -> tuple[str, Update] | None:
    # Anyone with access to the layer may group_send: check the shape, not the record.
    task, seq, record, state = message.get("task"), message.get("seq"), message.get("record"), message.get("state")
    if not isinstance(task, str) or isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    if not isinstance(record, str):
        return None
    return task, Update(seq, state in FINAL_STATES, record)


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


class FanOut:
    """The routing half of ``Hub``: the tables of watchers, and the passes that serve them."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        #: Followed feeds by group: ``STAFF_FEED_GROUP`` and ``group_for_user(pk)``.
        self._feeds: dict[str, Entry] = {}
        self._run: Run | None = None

    def _route(self, run: Run, message: dict[str, Any]) -> None:
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
        elif kind == PROBE_TYPE and message.get("token") == run.probe_token:
            run.probe_answered.set()

    def _route_published(self, run: Run, data: bytes) -> None:
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
    def _seen_recently(run: Run, task: str, update: Update) -> bool:
        # The record's hash tells a copy from a new run under the same name whose
        # seq started again (its record was deleted): that one must go through.
        key, digest = (task, update.seq), hash(update.record)
        if run.recent.get(key) == digest:
            return True
        run.recent[key] = digest
        if len(run.recent) > _RECENT:
            del run.recent[next(iter(run.recent))]
        return False

    def _watchers_of(self, task: str, update: Update) -> list[Watcher]:
        """The task's watchers and the followers of its feeds, each once."""
        entry = self._entries.get(task)
        watchers: dict[Watcher, None] = dict(entry.watchers) if entry else {}
        for group in update.feeds:
            feed = self._feeds.get(group)
            if feed is not None:
                watchers.update(feed.watchers)
        return list(watchers)

    async def _fan_out(self, run: Run) -> None:
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

    async def _deliver(self, run: Run, task: str, update: Update, budget: int) -> int:
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
    def _newer(run: Run, task: str, update: Update) -> Update | None:
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
