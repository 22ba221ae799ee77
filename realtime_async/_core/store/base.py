"""The store's interface and the result of a write; ``redis_store.py`` and ``cache_store.py`` implement it."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable
from typing import Any

import msgpack

from realtime_async._core.naming import PROGRESS_TYPE
from realtime_async._core.records import LogEntry, LogInfo, LogLine, StateRecord
from realtime_async.conf import get_settings

__all__ = [
    "GroupLink",
    "GroupResult",
    "Lines",
    "LogRead",
    "NewGroup",
    "Outcome",
    "Publication",
    "Store",
    "Write",
    "WriteMode",
    "WriteResult",
]


class WriteMode(enum.IntEnum):
    """How ``write_state`` treats a task that already has a record."""

    #: Write unless the task is final: a late progress call cannot undo a final state.
    UPDATE = 0
    #: Write unless the task exists and is not final: a launch never takes over a running task.
    CREATE = 1


class Outcome(enum.Enum):
    """What ``write_state`` did."""

    WRITTEN = "written"
    #: Not written: the task was already final (``WriteMode.UPDATE``).
    FINAL_KEPT = "final_kept"
    #: Not written: the task exists and is not final (``WriteMode.CREATE``).
    UNFINISHED_EXISTS = "unfinished_exists"


@dataclasses.dataclass
class Lines:
    """Log lines waiting for a write, oldest first, and how many the bound dropped before they were written."""

    entries: list[LogEntry] = dataclasses.field(default_factory=list)
    dropped: int = 0

    def add(self, entry: LogEntry, limit: int) -> None:
        self.entries.append(entry)
        self._bound(limit)

    def then(self, newer: Lines, limit: int) -> Lines:
        """These lines followed by ``newer`` (a failed write puts its lines back before the new ones)."""
        joined = Lines([*self.entries, *newer.entries], self.dropped + newer.dropped)
        joined._bound(limit)
        return joined

    def _bound(self, limit: int) -> None:
        excess = len(self.entries) - limit
        if excess > 0:  # more lines than the log keeps: the oldest would be dropped by the store anyway
            del self.entries[:excess]
            self.dropped += excess

    def bodies(self) -> list[str]:
        """Each line's JSON without its opening brace: the store puts ``{"n":N,`` before it."""
        return [json.dumps(entry, separators=(",", ":"), ensure_ascii=False)[1:] for entry in self.entries]

    def __bool__(self) -> bool:
        return bool(self.entries) or self.dropped > 0


@dataclasses.dataclass(frozen=True)
class LogRead:
    """Lines of a task's log after a number, with where the log stands."""

    #: The newest line's number (0: the task logged nothing).
    last: int
    dropped: int
    #: The lines' JSON, oldest first.
    lines: list[str]

    def info(self) -> LogInfo:
        decoded: list[LogLine] = [json.loads(line) for line in self.lines]
        return {"last": self.last, "dropped": self.dropped, "lines": decoded}


@dataclasses.dataclass(frozen=True)
class Publication:
    """What the write script publishes a written record to: channels, and the message's packed head.

    An empty ``head`` publishes the record's JSON as it is (the hubs' fast
    channels, ``RedisStore.broadcast_channel``); otherwise the script appends
    ``seq``, ``state`` and ``record`` to ``head`` (a msgpack map of six entries
    whose first three it holds) and publishes that: a channel layer's message,
    byte for byte (see ``realtime_async._core.publishing``).
    """

    channels: tuple[str, ...]
    head: bytes = b""

    @classmethod
    def layer_message(cls, channels: tuple[str, ...], task_name: str, owner: object) -> Publication:
        """The channel layer's progress message of ``task_name`` to ``channels`` (its head packed here)."""
        return cls(channels, b"\x86" + _packed("type", PROGRESS_TYPE, "task", task_name, "owner", owner))

    @property
    def direct(self) -> bool:
        """Whether this is the channel layer's own message: then nothing else needs to be sent."""
        return bool(self.head)

    def message(self, seq: int, state: str, record_json: str) -> bytes:
        """What the script publishes for ``record_json`` (seq ``seq``), packed here: ``publish.lua``'s twin."""
        if not self.head:
            return record_json.encode()
        return self.head + _packed("seq", seq, "state", state, "record", record_json)


def _packed(*items: object) -> bytes:
    """``items`` packed one after another as msgpack-python packs them (the entries of a map).

    One ``packb`` of them as an array, less its one-byte header (at most 15
    items), instead of one ``packb`` (and one ``Packer``) per item.
    """
    assert len(items) <= 15
    packed: bytes = msgpack.packb(items)
    return packed[1:]


@dataclasses.dataclass(frozen=True)
class GroupLink:
    """The group a written part belongs to: its parent's name and where the parent's record is published."""

    parent: str
    #: Where the parent's record is published (the parent's groups), if anywhere.
    publish: Publication | None = None
    #: The parent is published at most once per this many seconds (``1 / PROGRESS_RATE``); a final state always.
    interval: float = 0.1


@dataclasses.dataclass(frozen=True)
class NewGroup:
    """A group being launched, as the store sets up its aggregate (``Store.create_group``)."""

    parent: str
    #: Each part's name → its weight and title, in part order.
    parts: dict[str, tuple[float, str]]
    policy: str
    #: The fan-in step (name, weight, title): counted in the percent, not in the parts; or None.
    then: tuple[str, float, str] | None = None
    #: ``"chain"`` for parts run one after another (each a stage of the parent), else ``"group"``.
    kind: str = "group"


@dataclasses.dataclass(frozen=True)
class GroupResult:
    """What a part's write did to its group's parent."""

    #: The parent's record as published, "" when it was not (unchanged, or within the interval).
    record_json: str = ""
    #: The parent's final state when this write ended the group, else "".
    final: str = ""
    #: Parts that were not final when the group ended, with their state: now flagged to cancel.
    unfinished: tuple[tuple[str, str], ...] = ()
    #: Seconds until the parent may be published, when this write left it waiting; else None.
    flush_in: float | None = None
    #: The part this write, and no other, must start: a chain's next step, or the fan-in step; else "".
    start: str = ""


@dataclasses.dataclass(frozen=True)
class Write:
    """One call of ``Store.write_state``, as the implementations get it."""

    task_name: str
    state: str
    #: The record's JSON without its opening brace; the store puts ``{"seq":N,`` before it.
    body: str
    ttl: float
    mode: WriteMode
    meta: str
    floor: int
    end: bool
    publish: Publication | None
    lines: Lines
    #: The log's bound: lines and bytes kept per task (``LOG_MAX_LINES``, ``LOG_MAX_BYTES``).
    log_limits: tuple[int, int]
    group: GroupLink | None = None
    #: False when the caller set the record's TTL itself not long ago: a store may leave it alone.
    refresh_ttl: bool = True
    #: The log's ``last`` and ``dropped`` in the record at ``floor``, as the caller knows them (None: no log).
    log: LogInfo | None = None

    @property
    def plain(self) -> bool:
        """A progress update and nothing else: no create, meta, log lines, end or group (the hot path)."""
        return self.mode is WriteMode.UPDATE and not (self.meta or self.lines or self.end or self.group)


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """The outcome of a write, the record now stored (JSON) and whether a cancel was asked for."""

    outcome: Outcome
    #: The new record's seq; 0 when nothing was written.
    seq: int
    #: The stored record as JSON: the one written, or the one that stopped the write.
    record_json: str
    cancel_requested: bool
    #: Set when the written task is a part of a group (``Write.group``).
    group: GroupResult | None = None

    @property
    def written(self) -> bool:
        return self.outcome is Outcome.WRITTEN

    def record(self) -> StateRecord | None:
        """The stored record, decoded."""
        return json.loads(self.record_json) if self.record_json else None


class Store:
    """The operations the manager needs on the cache: records, locks, heartbeats, cancel flags, the registry."""

    def write_state(
        self,
        task_name: str,
        state: str,
        body: str,
        *,
        ttl: float,
        mode: WriteMode = WriteMode.UPDATE,
        meta: str = "",
        floor: int = 0,
        end: bool = False,
        publish: Publication | None = None,
        lines: Lines | None = None,
        group: GroupLink | None = None,
        refresh_ttl: bool = True,
        log: LogInfo | None = None,
    ) -> WriteResult:
        """Store a record (``body``: its JSON without the opening brace) above seq ``floor``.

        Final states are sticky (see ``WriteMode``). With ``end``, the same
        atomic step releases the task's locks, drops it from the active registry
        and stops its heartbeat, whether or not the state was written. A record
        written is also published, in the same step, as ``publish`` says;
        stores without pub/sub ignore it.

        ``lines`` are appended to the task's log when the record is written:
        numbered after the log's last line (and the lines they dropped), the
        oldest dropped while the log is over ``log_limits``. The record gets
        ``log`` (``last``, ``dropped``); the one returned and published also
        has the new lines. A ``CREATE`` starts a new log.

        With ``group``, the written task is a part of that group: in the same
        atomic step its parent's counts and weighted percent change by this
        part's difference, and the parent is published (rate-limited; see
        ``GroupResult``) or ended when every part ended.

        ``log`` is the log's ``last`` and ``dropped`` in the record at ``floor``,
        as far as the caller knows them (``log_counts`` of the last record it
        wrote): with them, a store may make the next record without reading
        the stored one first. Wrong or missing, they cost only that.
        """
        settings = get_settings()
        limits = (settings.log_max_lines, settings.log_max_bytes)
        lines = lines or Lines()
        write = Write(
            task_name, state, body, ttl, mode, meta, floor, end, publish, lines, limits, group, refresh_ttl, log
        )
        return self._write_state(write)

    def create_group(self, group: NewGroup) -> None:
        """Set up the aggregate of a new group, whose parent record was just created: every part queued."""
        raise NotImplementedError

    def settle_group(self, group: GroupLink) -> GroupResult:
        """Publish a waiting parent (a flush), or end it when every part ended (cleanup); see ``write_state``."""
        raise NotImplementedError

    def group_parts(self, parent: str) -> dict[str, str]:
        """Each part of the group and its state as the aggregate last counted it."""
        raise NotImplementedError

    def group_results(self, parts: list[str]) -> list[Any]:
        """The ``result`` of each task named, in order (None for one without a record); one round trip."""
        raise NotImplementedError

    def group_entries(self, parent: str) -> dict[str, dict[str, Any]]:
        """Each part as the aggregate knows it: ``{"s": state, "p": percent, "w": weight, "t": title, "e": error}``.

        One read of the parts hash (``GROUP_MAX_PARTS`` entries at most): for a breakdown, not for a hot path.
        """
        raise NotImplementedError

    def _write_state(self, write: Write) -> WriteResult:
        raise NotImplementedError

    def read_state(self, task_name: str) -> str | None:
        """The stored record as JSON, or None."""
        raise NotImplementedError

    def read_log(self, task_name: str, after: int = 0) -> LogRead:
        """The task's log lines numbered above ``after``, oldest first (all it keeps when ``after`` is 0)."""
        raise NotImplementedError

    def read_meta(self, task_name: str) -> dict[str, Any]:
        """The launch metadata (user, affected objects, task kwargs, function, locks)."""
        raise NotImplementedError

    def delete_task(self, task_name: str) -> None:
        raise NotImplementedError

    def acquire(self, task_name: str, lock_ids: list[str], ttl: float) -> dict[str, str]:
        """Take every lock or none; return ``{}`` or ``{lock_id: holder}`` of those held by others."""
        raise NotImplementedError

    def release(self, task_name: str, lock_ids: list[str] | None = None) -> int:
        """Release the given locks (all of the task's when None) that the task still holds."""
        raise NotImplementedError

    def holders(self, lock_ids: Iterable[str]) -> dict[str, str]:
        raise NotImplementedError

    def task_locks(self, task_name: str) -> list[str]:
        raise NotImplementedError

    def renew(self, task_name: str, *, lock_ttl: float, heartbeat_timeout: float, state_ttl: float) -> list[str]:
        """Renew a running task's locks, heartbeat and record; return the locks it lost."""
        raise NotImplementedError

    def is_alive(self, task_name: str) -> bool:
        raise NotImplementedError

    def set_cancel(self, task_name: str, ttl: float) -> None:
        raise NotImplementedError

    def is_cancelled(self, task_name: str) -> bool:
        raise NotImplementedError

    def add_active(self, task_name: str) -> None:
        raise NotImplementedError

    def add_active_many(self, task_names: list[str]) -> None:
        """``add_active`` for each name; one round trip on Redis."""
        for name in task_names:
            self.add_active(name)

    def write_many(self, writes: list[Write]) -> list[WriteResult]:
        """Several writes at once (each atomic, not all together); one round trip on Redis. No groups."""
        return [self._write_state(write) for write in writes]

    def remove_active(self, task_name: str) -> None:
        raise NotImplementedError

    def active(self) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what this store holds apart from the cache's client (it is being replaced)."""
