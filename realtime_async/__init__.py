"""realtime_async: live progress of background work in Django.

The names users need are importable from here; each is loaded on first use,
so importing the package (as Django and Celery do) loads nothing else::

    from realtime_async import AsyncManager, PublicTaskError

Everything in a module whose name starts with ``_`` is private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_async._core.records import State, StateRecord
    from realtime_async._core.results import ResultLink
    from realtime_async._writing.groups import Part
    from realtime_async.async_manager import AsyncManager, LifecycleEvent
    from realtime_async.exceptions import (
        ConflictError,
        ImproperlyConfiguredError,
        PublicTaskError,
        RealtimeAsyncError,
        TaskCancelled,
    )
    from realtime_async.signals import task_lifecycle

__all__ = [
    "AsyncManager",
    "ConflictError",
    "ImproperlyConfiguredError",
    "LifecycleEvent",
    "Part",
    "PublicTaskError",
    "RealtimeAsyncError",
    "ResultLink",
    "State",
    "StateRecord",
    "TaskCancelled",
    "task_lifecycle",
]

#: Where each public name lives.
_SOURCES = {
    "AsyncManager": "realtime_async.async_manager",
    "LifecycleEvent": "realtime_async.async_manager",
    "ConflictError": "realtime_async.exceptions",
    "ImproperlyConfiguredError": "realtime_async.exceptions",
    "PublicTaskError": "realtime_async.exceptions",
    "RealtimeAsyncError": "realtime_async.exceptions",
    "TaskCancelled": "realtime_async.exceptions",
    "ResultLink": "realtime_async._core.results",
    "Part": "realtime_async._writing.groups",
    "State": "realtime_async._core.records",
    "StateRecord": "realtime_async._core.records",
    "task_lifecycle": "realtime_async.signals",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'realtime_async' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
