"""The writer: every state write of a process goes through it, coalesced per task.

Writes are coalesced per task: at most ``PROGRESS_RATE`` writes and broadcasts a second, the latest state wins,
and the latest state is always written within one interval by the scheduler thread even when no further call
comes. Final states are never coalesced. Each write is one store call (two when another process wrote the task
meanwhile: see ``update.lua``), which on Redis also publishes the record (``_core.publishing``): with
``RedisPubSubChannelLayer`` on the cache's Redis, as the layer's own message to the task's groups, and nothing
else is sent; with another layer, to the servers' hubs, followed by a broadcast to the task's Channels groups
through the sender thread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from django.core.serializers.json import DjangoJSONEncoder

from realtime_async._core.naming import PROGRESS_TYPE, group_for_task
from realtime_async._core.process import PerProcess
from realtime_async._core.publishing import publication, task_groups
from realtime_async._core.records import (
    FINAL_STATES,
    LOG_LEVELS,
    MAX_LOG_LINE_LENGTH,
    MAX_MESSAGE_LENGTH,
    LogEntry,
    LogLevel,
    Stage,
    StateRecord,
    compute_percent,
    copy_record,
    encode_record_body,
    log_counts,
)
from realtime_async._core.store import (
    GroupLink,
    GroupResult,
    Lines,
    Outcome,
    Write,
    WriteMode,
    WriteResult,
    get_store,
)
from realtime_async._writing.sender import broadcast, get_scheduler, wait_sent
from realtime_async._writing.stages import overall_percent
from realtime_async.conf import get_settings

__all__ = ["Tracker", "Writer", "get_writer", "group_link", "log_line", "progress_change", "task_groups"]

logger = logging.getLogger("realtime_async")

_EWMA_ALPHA = 0.3
_MIN_SAMPLE_SECONDS = 0.2


def _active_stage(record: StateRecord) -> Stage | None:
    for stage in record.get("stages") or ():
        if stage["state"] == "active":
            return stage
    return None


def _number(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ValueError(f"update_progress(): {name} must be a non-negative number, got {value!r}.")
    return value


def progress_change(
    message: str | None,
    current: float | None,
    total: float | None,
    percent: float | None,
    data: dict[str, Any] | None,
) -> Callable[[StateRecord], None]:
    """The change one ``update_progress`` call makes to a record, checked now (``ValueError``, ``TypeError``).

    Inside an active stage the call moves the stage's own bar, and the task's
    percent is the stages combined. The writer and the terminal apply the same change.
    """
    if message is not None and not isinstance(message, str):
        message = str(message)
    current, total = _number("current", current), _number("total", total)
    percent = _number("percent", percent)
    if data is not None:
        json.dumps(data, cls=DjangoJSONEncoder)  # fail here, in the worker, not later

    def apply(record: StateRecord) -> None:
        if message is not None:
            record["message"] = message[:MAX_MESSAGE_LENGTH]
        if total is not None:
            record["total"] = total
        if current is not None:
            record["current"] = current
        if data is not None:
            record["data"] = data
        record["percent"] = compute_percent(record.get("current"), record.get("total"), percent)
        if percent is not None and current is None:
            record["current"] = None
        active = _active_stage(record)
        if active is not None:
            active["percent"] = record["percent"]
            record["percent"] = overall_percent(record.get("stages") or [])

    return apply


def log_line(text: object, level: str) -> LogEntry:
    """A log line from what the worker gave: plain text on one line, cut to ``MAX_LOG_LINE_LENGTH``."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log(): level must be one of {', '.join(LOG_LEVELS)}, got {level!r}.")
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(char for char in text if char == "\n" or char == "\t" or char.isprintable())
    if len(text) > MAX_LOG_LINE_LENGTH:
        text = text[: MAX_LOG_LINE_LENGTH - 1] + "…"
    return {"t": round(time.time(), 3), "level": cast(LogLevel, level), "text": text}


def group_link(parent: str, owner: object) -> GroupLink:
    """Where a part's writes send its group's parent: its groups, at most ``PROGRESS_RATE`` times a second."""
    return GroupLink(parent, publication(parent, owner, task_groups(parent, owner)), 1.0 / get_settings().progress_rate)


@dataclasses.dataclass
class Tracker:
    """What this process knows of one task it runs: its latest record and the coalescing state."""

    record: StateRecord
    last_write: float = float("-inf")
    pending: bool = False
    scheduled: bool = False
    cancel_requested: bool = False
    finished: bool = False
    sample: tuple[float, float] | None = None
    meta: dict[str, Any] | None = None  # launch metadata, for lifecycle payloads
    #: Log lines waiting for the next write (never dropped by coalescing, only by the bound).
    lines: Lines = dataclasses.field(default_factory=Lines)
    #: When (monotonic) a write of this process last set the record's TTL (see ``Writer.commit``).
    ttl_set: float = float("-inf")

    def take_lines(self) -> Lines:
        lines, self.lines = self.lines, Lines()
        return lines

    def estimate(self, mono: float) -> None:
        """Update the record's smoothed ``rate`` and its ``eta`` from its progress at monotonic time ``mono``."""
        record = self.record
        measure, goal = record.get("current"), record.get("total")
        # With stages, current/total belong to the active stage: the whole task's ETA goes by its percent.
        if (measure is None or record.get("stages")) and record.get("percent") is not None:
            measure, goal = record["percent"], 100.0
        if measure is None:
            return
        if self.sample is None:
            self.sample = (mono, measure)
            return
        then, before = self.sample
        if mono - then >= _MIN_SAMPLE_SECONDS:
            instant = max(0.0, (measure - before) / (mono - then))
            rate = record.get("rate")
            record["rate"] = round(instant if rate is None else _EWMA_ALPHA * instant + (1 - _EWMA_ALPHA) * rate, 4)
            self.sample = (mono, measure)
        rate = record.get("rate")
        if rate and goal:
            record["eta"] = round(max(0.0, (goal - measure) / rate), 1)


class Writer:
    """Per-process owner of the trackers; every state write goes through it."""

    def __init__(self) -> None:
        self._trackers: dict[str, Tracker] = {}
        self._lock = threading.RLock()
        # Writes of one process are serialised so the store assigns seqs in
        # the order the states were made.
        self._write_lock = threading.Lock()

    # -- writing ---------------------------------------------------------
    def commit(
        self,
        record: StateRecord,
        *,
        mode: WriteMode = WriteMode.UPDATE,
        meta: dict[str, Any] | None = None,
        wait: bool = False,
        end: bool = False,
        lines: Lines | None = None,
    ) -> WriteResult:
        """Write ``record`` now and broadcast it; return what the store did.

        ``end`` releases the task's locks, registry entry and heartbeat atomically
        with the write (see ``Store.write_state``); ``AsyncManager.finish`` uses it.
        """
        settings = get_settings()
        task_name, state = record["task"], record["state"]
        ttl = settings.final_state_ttl if state in FINAL_STATES else settings.progress_ttl
        body = encode_record_body(record)
        meta_json = json.dumps(meta, cls=DjangoJSONEncoder) if meta is not None else ""
        sent = None
        part = record.get("part")
        # A group's part goes to its own watchers only: the feeds follow its parent (the breakdown shows parts).
        groups = (group_for_task(task_name),) if part else task_groups(task_name, record.get("owner"))
        # The write script publishes the record itself; unless it publishes the layer's own
        # message (direct), the groups get it through the layer too (see ``_core.publishing``).
        publish = publication(task_name, record.get("owner"), groups)
        link = group_link(part["group"], record.get("owner")) if part else None
        # The record's TTL is set again once a quarter of it went by: not on every write (a call
        # less inside the script); always for a final state, whose TTL differs.
        tracker, now = self._trackers.get(task_name), time.monotonic()
        refresh = tracker is None or state in FINAL_STATES or now - tracker.ttl_set > ttl / 4
        # The broadcast is queued under the lock too, so broadcasts leave in seq order.
        with self._write_lock:
            result = get_store().write_state(
                task_name,
                state,
                body,
                ttl=ttl,
                mode=mode,
                meta=meta_json,
                floor=record.get("seq") or 0,
                log=record.get("log"),
                end=end,
                publish=publish,
                lines=lines,
                group=link,
                refresh_ttl=refresh,
            )
            if refresh and tracker is not None and result.written:
                tracker.ttl_set = now
            if result.written and not (publish is not None and publish.direct):
                message = {
                    "type": PROGRESS_TYPE,
                    "task": task_name,
                    "seq": result.seq,
                    "state": state,
                    "owner": record.get("owner"),  # so feeds can route without decoding the record
                    "record": result.record_json,
                }
                sent = broadcast(groups, message)
            if link is not None and result.group is not None:
                sent = self._parent_written(link, result.group) or sent
        if wait or state in FINAL_STATES:
            wait_sent(sent)
        return result

    def _parent_written(self, link: GroupLink, group: GroupResult) -> Any:
        """Broadcast the parent's record a part's write published, or flush it once its interval passed."""
        if group.flush_in is not None:
            get_scheduler().call_at(time.monotonic() + group.flush_in, lambda: self.flush_group(link))
        if not group.record_json or (link.publish is not None and link.publish.direct):
            return None
        parent = json.loads(group.record_json)
        message = {
            "type": PROGRESS_TYPE,
            "task": link.parent,
            "seq": parent["seq"],
            "state": parent["state"],
            "owner": parent.get("owner"),
            "record": group.record_json,
        }
        return broadcast(task_groups(link.parent, parent.get("owner")), message)

    def flush_group(self, link: GroupLink) -> None:
        """Publish a parent that waited for its interval (on the scheduler thread); never raises."""
        try:
            with self._write_lock:
                self._parent_written(link, get_store().settle_group(link))
        except Exception as exc:  # Redis away: the next part's write publishes it
            logger.warning("realtime_async: publishing group %r failed (%s)", link.parent, type(exc).__name__)

    def create_quietly(self, records: list[tuple[StateRecord, dict[str, Any]]]) -> list[WriteResult]:
        """Create records (``WriteMode.CREATE``, with their meta) at once and broadcast none: a group's parts.

        Nobody watches a part before its group's launch returns, so its queued state is only stored.
        """
        settings = get_settings()
        limits, ttl = (settings.log_max_lines, settings.log_max_bytes), settings.progress_ttl
        writes = [  # as Store.write_state makes them: no floor, no end, nothing published, no lines
            Write(record["task"], record["state"], encode_record_body(record), ttl, WriteMode.CREATE,
                  json.dumps(meta, cls=DjangoJSONEncoder), 0, False, None, Lines(), limits)
            for record, meta in records
        ]  # fmt: skip
        with self._write_lock:
            return get_store().write_many(writes)

    # -- progress --------------------------------------------------------
    def track(self, record: StateRecord, meta: dict[str, Any] | None = None) -> None:
        """Start tracking a task run by this process, seeded from its record."""
        with self._lock:
            self._trackers[record["task"]] = Tracker(record=record.copy(), meta=meta)

    def tracker(self, task_name: str) -> Tracker | None:
        return self._trackers.get(task_name)

    def change(
        self, task_name: str, apply: Callable[[StateRecord], object] | None, *, line: LogEntry | None = None
    ) -> tuple[bool, Tracker | None]:
        """Change the task's record with ``apply``, log ``line``, write coalesced; return ``(written_now, tracker)``.

        What ``apply`` raises (a ``ValueError`` about a stage name) reaches the worker; ``apply`` checks
        before it changes anything (``stages._find``), so the record is not copied on this hot path.
        """
        now, mono = time.time(), time.monotonic()
        with self._lock:
            tracker = self._trackers.get(task_name)
            if tracker is None:
                stored = get_store().read_state(task_name)
                if stored is None:
                    logger.warning("realtime_async: progress of unknown task %r ignored", task_name)
                    return False, None
                # Seeded once per process: later calls need neither the record nor the meta again.
                tracker = self._trackers[task_name] = Tracker(
                    record=json.loads(stored), meta=get_store().read_meta(task_name)
                )
            if tracker.finished:
                return False, tracker
            record = tracker.record
            if apply is not None:
                apply(record)
            if line is not None:
                tracker.lines.add(line, get_settings().log_max_lines)
            tracker.estimate(mono)
            record["state"] = "running"
            record["updated_at"] = now
            interval = 1.0 / get_settings().progress_rate
            if mono - tracker.last_write >= interval:
                tracker.last_write = mono
                tracker.pending = False
                snapshot = copy_record(record)
                lines = tracker.take_lines()
            else:
                tracker.pending = True
                if not tracker.scheduled:
                    tracker.scheduled = True
                    get_scheduler().call_at(tracker.last_write + interval, lambda: self._trailing(task_name))
                return False, tracker
        self._write_progress(tracker, snapshot, lines)
        return True, tracker

    def _write_progress(self, tracker: Tracker, record: StateRecord, lines: Lines) -> None:
        try:
            result = self.commit(record, lines=lines)
        except Exception as exc:  # Redis down: the worker carries on, the next write retries (lines too)
            logger.warning("realtime_async: progress write failed (%s: %s)", type(exc).__name__, exc)
            with self._lock:
                tracker.lines = lines.then(tracker.lines, get_settings().log_max_lines)
            return
        tracker.cancel_requested = tracker.cancel_requested or result.cancel_requested
        if result.written:
            with self._lock:  # the floor of the next write, should Redis lose the record, and its log
                if result.seq >= (tracker.record.get("seq") or 0):
                    tracker.record["seq"] = result.seq
                    tracker.record.pop("log", None)
                    if counts := log_counts(result.record_json):
                        tracker.record["log"] = counts
        stored = result.record() if result.outcome is Outcome.FINAL_KEPT else None
        if stored is not None:
            tracker.finished = True  # someone else ended it (cancel, cleanup)
            tracker.record = stored

    def _trailing(self, task_name: str) -> None:
        with self._lock:
            tracker = self._trackers.get(task_name)
            if tracker is None:
                return
            tracker.scheduled = False
            if not tracker.pending or tracker.finished:
                return
            tracker.pending = False
            tracker.last_write = time.monotonic()
            snapshot = copy_record(tracker.record)
            lines = tracker.take_lines()
        self._write_progress(tracker, snapshot, lines)

    def finish(self, task_name: str) -> Tracker | None:
        """Stop coalescing ``task_name``; its tracker has the latest record and the lines the final write carries."""
        with self._lock:
            tracker = self._trackers.pop(task_name, None)
            if tracker is None:
                return None
            tracker.finished = True
            tracker.pending = False
            return tracker


_writer = PerProcess(Writer)


def get_writer() -> Writer:
    """This process's ``Writer`` (a forked child gets a fresh one)."""
    return _writer.get()
