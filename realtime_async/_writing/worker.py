"""The body of the one Celery task that runs every worker function (``tasks.run_async_task``).

Workers are plain functions; ``run`` marks the task running, keeps its
heartbeat and lock renewal going, calls the function, and turns whatever
happens into a final state: ``success`` with the result, ``failure`` with a
public error, or ``cancelled``.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string

from realtime_async._core.managers import resolve_manager
from realtime_async._core.messages import CANCELLED, GENERIC_ERROR, TIME_LIMIT_ERROR
from realtime_async._core.records import is_final
from realtime_async._core.results import ResultLink
from realtime_async._core.store import get_store
from realtime_async._writing.files import link_change
from realtime_async._writing.sender import get_scheduler
from realtime_async._writing.writer import get_writer
from realtime_async.conf import get_settings
from realtime_async.exceptions import PublicTaskError, TaskCancelled

__all__ = ["GENERIC_ERROR", "TIME_LIMIT_ERROR", "run"]

logger = logging.getLogger("realtime_async")

# GENERIC_ERROR and TIME_LIMIT_ERROR are stored in English and translated when shown (_core/messages.py).


class _Heartbeat:
    """Renews the task's heartbeat and locks every ``HEARTBEAT_INTERVAL`` on the scheduler thread."""

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name
        self.running = True
        self.lost_locks: list[str] = []
        self.beat()

    def beat(self) -> None:
        if not self.running:
            return
        settings = get_settings()
        try:
            lost = get_store().renew(
                self.task_name,
                lock_ttl=settings.lock_ttl,
                heartbeat_timeout=settings.heartbeat_timeout,
                state_ttl=settings.progress_ttl,
            )
            new = [lock for lock in lost if lock not in self.lost_locks]
            if new:
                self.lost_locks.extend(new)
                logger.error("realtime_async: task %r lost its locks %s", self.task_name, new)
            if self.running and get_store().read_state(self.task_name) is None:
                self._restore()
        except Exception as exc:  # Redis away: try again at the next beat
            logger.warning("realtime_async: heartbeat of %r failed (%s)", self.task_name, type(exc).__name__)
        get_scheduler().call_at(time.monotonic() + settings.heartbeat_interval, self.beat)

    def _restore(self) -> None:
        """Redis lost the task's keys (a restart without persistence): write them again.

        The record comes back above its last seq, so watchers that resubscribe
        with their last seq still see it as new; the locks are taken again
        unless another task took them meanwhile.
        """
        tracker = get_writer().tracker(self.task_name)
        if tracker is None:
            return
        logger.warning("realtime_async: the state of %r was lost; restoring it", self.task_name)
        store = get_store()
        get_writer().commit(tracker.record.copy(), meta=tracker.meta)
        locks = list((tracker.meta or {}).get("locks") or ())
        if locks and store.acquire(self.task_name, locks, get_settings().lock_ttl):
            self.lost_locks.extend(locks)
            logger.error("realtime_async: task %r could not take its locks back", self.task_name)
        store.add_active(self.task_name)

    def stop(self) -> None:
        self.running = False


def _jsonable(result: Any, task_name: str) -> Any:
    try:
        return json.loads(json.dumps(result, cls=DjangoJSONEncoder))
    except (TypeError, ValueError):
        logger.error("realtime_async: result of %r is not JSON-serialisable; stored as null", task_name)
        return None


def run(func_path: str, args: list[Any], kwargs: dict[str, Any], task_name: str, manager_path: str) -> Any:
    """Run one task to a final state; the body of ``run_async_task``."""
    manager = resolve_manager(manager_path)
    store = get_store()
    record = manager.get_progress(task_name)
    if record is None or is_final(record):
        logger.warning(
            "realtime_async: task %r has no queued record (%s); not run", task_name, record and record["state"]
        )
        return None
    if store.is_cancelled(task_name):
        manager.finish(task_name, "cancelled", message=CANCELLED)
        return None
    heartbeat = _Heartbeat(task_name)  # first, so cleanup never sees it running without one
    now = time.time()
    record["state"], record["started_at"], record["updated_at"] = "running", now, now
    writer = get_writer()
    started = writer.commit(record)
    stored = started.record()
    if not started.written or stored is None:
        heartbeat.stop()
        return None  # ended by someone else in between
    meta = store.read_meta(task_name)
    writer.track(stored, meta)
    manager._emit("start", task_name, meta=meta, record=stored)
    try:
        func = import_string(func_path)
        result = func(*args, task_key=task_name, manager_class=manager_path, **kwargs)
    except TaskCancelled:
        heartbeat.stop()
        manager.finish(task_name, "cancelled", message=CANCELLED)
        return None
    except SoftTimeLimitExceeded:
        heartbeat.stop()
        logger.error("realtime_async: task %r exceeded its soft time limit", task_name)
        manager.finish(
            task_name,
            "failure",
            error=TIME_LIMIT_ERROR,
            event_payload={"exception": "SoftTimeLimitExceeded", "traceback": traceback.format_exc()},
        )
        return None
    except Exception as exc:
        heartbeat.stop()
        logger.exception("realtime_async: task %r failed", task_name)
        public = str(exc) if isinstance(exc, PublicTaskError) else GENERIC_ERROR
        manager.finish(
            task_name,
            "failure",
            error=public,
            event_payload={"exception": repr(exc), "traceback": traceback.format_exc()},
        )
        return None
    finally:
        heartbeat.stop()
    if isinstance(result, ResultLink):  # the function ended with its result link: the record shows it
        try:
            manager._change(task_name, link_change(result), check=False)
        except ValueError:
            logger.exception("realtime_async: task %r returned an unsafe result link; not shown", task_name)
        result = None
    result = _jsonable(result, task_name)
    manager.finish(task_name, "success", result=result)
    return result
