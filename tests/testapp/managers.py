"""A manager that records every lifecycle event in Redis, with the pid that emitted it."""

from __future__ import annotations

import json
import os
from typing import Any

from realtime_async._core.store import get_store
from realtime_async.async_manager import AsyncManager


def _client():
    return get_store().client


def events_key(task_name: str) -> str:
    # Under the store's prefix, so the per-test cleanup removes it too.
    return f"{get_store().prefix}:test-events:{task_name}"


class RecordingManager(AsyncManager):
    def async_task_lifecycle(self, event: str, task_name: str, **payload: Any) -> None:
        if payload.get("task_kwargs", {}).get("explode_hook"):
            raise RuntimeError("hook exploded on purpose")
        entry = {"event": event, "pid": os.getpid(), "payload": payload}
        _client().rpush(events_key(task_name), json.dumps(entry, default=str))


def recorded_events(task_name: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in _client().lrange(events_key(task_name), 0, -1)]


class OtherManager(AsyncManager):
    pass


class HidingManager(AsyncManager):
    """Hides tasks whose name starts with "hidden" from everyone, staff included; counts ``can_view`` calls."""

    #: Shared on purpose: every resolve makes a new instance.
    calls: list[tuple[object, str]] = []

    def can_view(self, user, record):
        HidingManager.calls.append((getattr(user, "pk", None), record["task"]))
        if record["task"].startswith("hidden"):
            return False
        return super().can_view(user, record)


class NoCancelManager(AsyncManager):
    """Everyone who may see a task may not cancel it."""

    def can_cancel(self, user, record):
        return False
