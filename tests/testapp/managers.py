"""A manager that records every lifecycle event in Redis, with the pid that emitted it."""

from __future__ import annotations

import json
import os
from typing import Any

from django.core.cache import cache

from realtime_async.async_manager import AsyncManager
from realtime_async import _store


def _client():
    return _store.redis_client_for(cache)


def events_key(task_name: str) -> str:
    return cache.make_key(f"test-events:{task_name}")


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
