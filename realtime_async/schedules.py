"""Celery beat entry points.

Add to ``CELERY_BEAT_SCHEDULE`` (see the README)::

    "realtime-async-cleanup": {
        "task": "realtime_async.schedules.cleanup_async_artifacts",
        "schedule": 60.0,
    }
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from realtime_async.async_manager import AsyncManager

__all__ = ["cleanup_async_artifacts"]


@shared_task(name="realtime_async.schedules.cleanup_async_artifacts", ignore_result=True)
def cleanup_async_artifacts() -> dict[str, Any]:
    """Run ``cleanup_completed_tasks`` with the configured manager class."""
    return AsyncManager.resolve_manager().cleanup_completed_tasks()
