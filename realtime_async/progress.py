"""State records: building them, computing percent, rate and ETA, coalescing writes.

A state record is a flat JSON object (documented in ``docs/protocol.md``)::

    {"seq": 7, "task": "rebuild-42", "state": "running", "message": "Step 3/5",
     "current": 3, "total": 5, "percent": 60.0, "rate": 0.8, "eta": 2.5,
     "owner": 1, "created_at": 1764382000.1, "started_at": ..., "updated_at": ...,
     "finished_at": null, "result": null, "error": null, "data": null}

Times are Unix timestamps in seconds; ``rate`` is units of ``current`` per
second (percent per second when only ``percent`` is reported); ``eta`` is
seconds. ``seq`` is assigned by the store and only grows.

Writes are coalesced per task: at most ``PROGRESS_RATE`` writes and broadcasts
a second, the latest state wins, and the latest state is always written within
one interval by the scheduler thread even when no further call comes. Final
states are never coalesced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import Any, Literal, cast

from django.core.serializers.json import DjangoJSONEncoder

from realtime_async import _store
from realtime_async.broadcast import broadcast, get_scheduler, per_process, wait_sent
from realtime_async.conf import get_settings
from realtime_async.naming import STAFF_FEED_GROUP, group_for_task, group_for_user

__all__ = [
    "FINAL_STATES",
    "MAX_MESSAGE_LENGTH",
    "RECORD_FIELDS",
    "STATES",
    "State",
    "Writer",
    "compute_percent",
    "encode_record_body",
    "get_writer",
]

logger = logging.getLogger("realtime_async")

State = Literal["queued", "running", "success", "failure", "cancelled", "lost"]
STATES: tuple[State, ...] = ("queued", "running", "success", "failure", "cancelled", "lost")
FINAL_STATES = _store.FINAL_STATES
RECORD_FIELDS = (
    "seq",
    "task",
    "state",
    "message",
    "current",
    "total",
    "percent",
    "rate",
    "eta",
    "owner",
    "created_at",
    "started_at",
    "updated_at",
    "finished_at",
    "result",
    "error",
    "data",
)
MAX_MESSAGE_LENGTH = 1000
_EWMA_ALPHA = 0.3
_MIN_SAMPLE_SECONDS = 0.2


def compute_percent(current: float | None, total: float | None, percent: float | None) -> float | None:
    """``percent`` when given, else ``current / total``; clamped to 0..100, None when unknown."""
    if percent is None and current is not None and total:
        percent = current * 100.0 / total
    if percent is None:
        return None
    return round(min(100.0, max(0.0, float(percent))), 2)


def encode_record_body(record: dict[str, Any]) -> str:
    """JSON of ``record`` without its opening brace; the store prepends ``{"seq":N,``."""
    fields = {key: record.get(key) for key in RECORD_FIELDS if key != "seq"}
    return json.dumps(fields, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)[1:]


def _number(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ValueError(f"update_progress(): {name} must be a non-negative number, got {value!r}.")
    return value


@dataclasses.dataclass
class _Tracker:
    record: dict[str, Any]
    last_write: float = float("-inf")
    pending: bool = False
    scheduled: bool = False
    cancel_requested: bool = False
    finished: bool = False
    sample: tuple[float, float] | None = None
    meta: dict[str, Any] | None = None  # launch metadata, for lifecycle payloads


class Writer:
    """Per-process owner of the trackers; every state write goes through it."""

    def __init__(self) -> None:
        self._trackers: dict[str, _Tracker] = {}
        self._lock = threading.RLock()
        # Writes of one process are serialised so the store assigns seqs in
        # the order the states were made.
        self._write_lock = threading.Lock()

    # -- writing ---------------------------------------------------------
    def commit(
        self,
        record: dict[str, Any],
        *,
        mode: int = _store.KEEP_FINAL,
        meta: dict[str, Any] | None = None,
        wait: bool = False,
        end: bool = False,
    ) -> tuple[int, dict[str, Any] | None, bool]:
        """Write ``record`` now and broadcast it; return ``(seq, stored_record, cancel_requested)``.

        ``end`` releases the task's locks, registry entry and heartbeat atomically
        with the write (see ``Store.write_state``); ``AsyncManager.finish`` uses it.
        """
        settings = get_settings()
        task, state = record["task"], record["state"]
        ttl = settings.final_state_ttl if state in FINAL_STATES else settings.progress_ttl
        body = encode_record_body(record)
        meta_json = json.dumps(meta, cls=DjangoJSONEncoder) if meta is not None else ""
        sent = None
        # The task's watchers, its owner's feed and the staff feed (see the consumer's feeds).
        groups: tuple[str, ...] = (group_for_task(task), STAFF_FEED_GROUP)
        if record.get("owner") is not None:
            groups += (group_for_user(record["owner"]),)
        # The write script publishes the record to the servers' hubs itself (see ``fanout``);
        # the groups get it too, through the channel layer, for every other consumer.
        publish = groups if settings.fast_broadcast else ()
        # The broadcast is queued under the lock too, so broadcasts leave in seq order.
        with self._write_lock:
            seq, stored, cancel = _store.get_store().write_state(
                task,
                state,
                body,
                ttl=ttl,
                mode=mode,
                meta=meta_json,
                floor=record.get("seq") or 0,
                end=end,
                publish=publish,
            )
            if seq > 0:
                message = {
                    "type": "realtime_async.progress",
                    "task": task,
                    "seq": seq,
                    "state": state,
                    "owner": record.get("owner"),  # so feeds can route without decoding the record
                    "record": stored,
                }
                sent = broadcast(groups, message)
        if wait or state in FINAL_STATES:
            wait_sent(sent)
        return seq, (json.loads(stored) if stored else None), cancel

    # -- progress --------------------------------------------------------
    def track(self, record: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        """Start tracking a task run by this process, seeded from its record."""
        with self._lock:
            self._trackers[record["task"]] = _Tracker(record=dict(record), meta=meta)

    def forget(self, task: str) -> None:
        with self._lock:
            self._trackers.pop(task, None)

    def tracker(self, task: str) -> _Tracker | None:
        return self._trackers.get(task)

    def update(
        self,
        task: str,
        message: str | None,
        current: float | None,
        total: float | None,
        percent: float | None,
        data: dict[str, Any] | None,
    ) -> tuple[bool, _Tracker | None]:
        """Apply one progress call; return ``(written_now, tracker)``."""
        if message is not None and not isinstance(message, str):
            message = str(message)
        current, total = _number("current", current), _number("total", total)
        percent = _number("percent", percent)
        if data is not None:
            json.dumps(data, cls=DjangoJSONEncoder)  # fail here, in the worker, not later
        now, mono = time.time(), time.monotonic()
        with self._lock:
            tracker = self._trackers.get(task)
            if tracker is None:
                stored = _store.get_store().read_state(task)
                if stored is None:
                    logger.warning("realtime_async: update_progress() for unknown task %r ignored", task)
                    return False, None
                # Seeded once per process: later calls need neither the record nor the meta again.
                tracker = self._trackers[task] = _Tracker(
                    record=json.loads(stored), meta=_store.get_store().read_meta(task)
                )
            if tracker.finished:
                return False, tracker
            record = tracker.record
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
            self._estimate(tracker, mono)
            record["state"] = "running"
            record["updated_at"] = now
            interval = 1.0 / get_settings().progress_rate
            if mono - tracker.last_write >= interval:
                tracker.last_write = mono
                tracker.pending = False
                snapshot = dict(record)
            else:
                tracker.pending = True
                if not tracker.scheduled:
                    tracker.scheduled = True
                    get_scheduler().call_at(tracker.last_write + interval, lambda: self._trailing(task))
                return False, tracker
        self._write_progress(tracker, snapshot)
        return True, tracker

    def _estimate(self, tracker: _Tracker, mono: float) -> None:
        record = tracker.record
        measure, goal = record.get("current"), record.get("total")
        if measure is None and record.get("percent") is not None:
            measure, goal = record["percent"], 100.0
        if measure is None:
            return
        if tracker.sample is None:
            tracker.sample = (mono, measure)
            return
        then, before = tracker.sample
        if mono - then >= _MIN_SAMPLE_SECONDS:
            instant = max(0.0, (measure - before) / (mono - then))
            rate = record.get("rate")
            record["rate"] = round(instant if rate is None else _EWMA_ALPHA * instant + (1 - _EWMA_ALPHA) * rate, 4)
            tracker.sample = (mono, measure)
        rate = record.get("rate")
        if rate and goal:
            record["eta"] = round(max(0.0, (goal - measure) / rate), 1)

    def _write_progress(self, tracker: _Tracker, record: dict[str, Any]) -> None:
        try:
            seq, stored, cancel = self.commit(record)
        except Exception as exc:  # Redis down: the worker carries on, the next write retries
            logger.warning("realtime_async: progress write failed (%s: %s)", type(exc).__name__, exc)
            return
        tracker.cancel_requested = tracker.cancel_requested or cancel
        if seq > 0:
            with self._lock:  # the floor of the next write, should Redis lose the record
                tracker.record["seq"] = max(seq, tracker.record.get("seq") or 0)
        if seq == -1 and stored is not None:
            tracker.finished = True  # someone else ended it (cancel, cleanup)
            tracker.record = stored

    def _trailing(self, task: str) -> None:
        with self._lock:
            tracker = self._trackers.get(task)
            if tracker is None:
                return
            tracker.scheduled = False
            if not tracker.pending or tracker.finished:
                return
            tracker.pending = False
            tracker.last_write = time.monotonic()
            snapshot = dict(tracker.record)
        self._write_progress(tracker, snapshot)

    def finish(self, task: str) -> dict[str, Any] | None:
        """Stop coalescing ``task`` and return its latest record (pending writes are superseded)."""
        with self._lock:
            tracker = self._trackers.pop(task, None)
            if tracker is None:
                return None
            tracker.finished = True
            tracker.pending = False
            return tracker.record


def get_writer() -> Writer:
    """This process's ``Writer`` (a forked child gets a fresh one)."""
    return cast(Writer, per_process("writer", Writer))
