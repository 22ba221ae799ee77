"""Celery beat entry points, kept for the documented import path.

Schedule the cleanup by its task name (see the README)::

    "realtime-async-cleanup": {
        "task": "realtime_async.schedules.cleanup_async_artifacts",
        "schedule": 60.0,
    }

The task itself is defined in ``realtime_async.tasks``, where every worker
that autodiscovers tasks registers it.
"""

from __future__ import annotations

from realtime_async.tasks import cleanup_async_artifacts

__all__ = ["cleanup_async_artifacts"]
