"""Turns lifecycle events into ``TaskRecord`` rows, off the task's own thread.

Events are queued to one writer thread per process, so a slow or broken
database never delays or breaks a task. Pending events of one task are merged
(the latest record wins), so progress fields are written no more often than
the coalesced progress, and usually less.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import threading
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, close_old_connections, transaction

from realtime_async._core.process import PerProcess

__all__ = ["Recorder", "get_recorder", "on_task_lifecycle"]

logger = logging.getLogger("realtime_async")


#: The columns that come from the state record (the rest is launch metadata).
_RECORD_VALUES = frozenset(
    {"seq", "title", "state", "message", "percent", "result", "error", "created_at", "started_at", "finished_at"}
)


def _older(values: dict[str, Any], row: Any) -> bool:
    """Whether ``values`` hold an older state than ``row``: of an earlier run under the name, or of its run."""
    created, stored = values.get("created_at"), row.created_at
    if created is not None and stored is not None and created != stored:
        return bool(created < stored)
    return bool(values["seq"] < row.seq)


def _when(timestamp: float | None) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC) if timestamp else None


class Recorder:
    """A writer thread draining merged events into the database."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._busy = False
        threading.Thread(target=self._run, name="realtime_async-dashboard", daemon=True).start()
        atexit.register(self.flush, 5.0)

    def add(self, task_name: str, payload: dict[str, Any]) -> None:
        with self._cond:
            merged = self._pending.setdefault(task_name, {})
            for key in ("user", "affected_objects", "task_kwargs"):
                if payload.get(key) is not None:
                    merged[key] = payload[key]
            if payload.get("record"):
                merged["record"] = payload["record"]
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is written (or ``timeout``); True when done."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    #: Attempts at one task's row before its events are dropped (a database down for minutes).
    max_attempts = 8

    def _run(self) -> None:
        attempts: dict[str, int] = {}
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                batch, self._pending = self._pending, {}
                self._busy = True
            failed: dict[str, dict[str, Any]] = {}
            for task_name, payload in batch.items():
                try:
                    self._write(task_name, payload)
                    attempts.pop(task_name, None)
                except Exception:
                    attempts[task_name] = attempts.get(task_name, 0) + 1
                    if attempts[task_name] >= self.max_attempts:
                        attempts.pop(task_name)
                        logger.exception("realtime_async: dashboard record of %r dropped after retries", task_name)
                    else:
                        logger.exception("realtime_async: dashboard record of %r failed; will retry", task_name)
                        failed[task_name] = payload
                    with contextlib.suppress(Exception):  # this thread must outlive any database trouble
                        close_old_connections()
            # Between batches, as Django does between requests: with CONN_MAX_AGE = 0 no process keeps an
            # idle connection open for its writer (PostgreSQL counts them, and cannot drop a database in use).
            with contextlib.suppress(Exception):
                close_old_connections()
            with self._cond:
                # A failed row goes back under whatever arrived meanwhile (newer fields win).
                for task_name, payload in failed.items():
                    self._pending[task_name] = {**payload, **self._pending.get(task_name, {})}
                self._busy = False
                self._cond.notify_all()
            if failed:
                time.sleep(min(5.0, 0.25 * 2 ** max(attempts.get(name, 1) for name in failed)))

    def _write(self, task_name: str, payload: dict[str, Any]) -> None:
        values = self._values(payload)
        try:
            self._save(task_name, values)
        except IntegrityError:
            # The owner was deleted while the task ran: keep the row (and its owner_label), unlinked.
            owner_id = values.get("owner_id")
            if owner_id is None or get_user_model()._default_manager.filter(pk=owner_id).exists():
                raise
            self._save(task_name, {**values, "owner_id": None})

    @staticmethod
    def _save(task_name: str, values: dict[str, Any]) -> None:
        from realtime_async.contrib.dashboard.models import TaskRecord

        with transaction.atomic():
            rows = TaskRecord.objects.select_for_update().filter(task_name=task_name)
            row = rows.first()
            if row is None:
                # No row to lock yet: another process may be creating it at this moment (PostgreSQL lets
                # both through; SQLite's IMMEDIATE transactions do not). The unique name lets one insert
                # win; the loser locks the winner's row and merges into it, as if it had come second.
                try:
                    with transaction.atomic():
                        TaskRecord.objects.create(task_name=task_name, **values)
                    return
                except IntegrityError:
                    row = rows.first()
                    if row is None:
                        raise
            if "seq" in values and _older(values, row):
                # A newer state of the same run is there already (written by another process).
                values = {key: value for key, value in values.items() if key not in _RECORD_VALUES}
            for key, value in values.items():
                setattr(row, key, value)
            row.save()

    @staticmethod
    def _values(payload: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        record = payload.get("record") or {}
        if record:
            values.update(
                seq=record.get("seq") or 0,
                title=record.get("title") or "",
                state=record["state"],
                message=record.get("message") or "",
                percent=record.get("percent"),
                result=record.get("result"),
                error=record.get("error") or "",
                created_at=_when(record.get("created_at")),
                started_at=_when(record.get("started_at")),
                finished_at=_when(record.get("finished_at")),
            )
        user = payload.get("user")
        if user:
            values.update(owner_id=user["id"], owner_label=user["label"][:150])
        for key in ("affected_objects", "task_kwargs"):
            if key in payload:
                values[key] = payload[key]
        return values


_recorder = PerProcess(Recorder)


def get_recorder() -> Recorder:
    """This process's recorder."""
    return _recorder.get()


def on_task_lifecycle(sender: Any, *, event: str, task_name: str, **payload: Any) -> None:
    """``task_lifecycle`` receiver: queue the event for the writer thread.

    A group's parts are not recorded: the group is, and its breakdown shows the parts.
    """
    record = payload.get("record")
    if isinstance(record, dict) and record.get("part"):
        return
    get_recorder().add(task_name, payload)
