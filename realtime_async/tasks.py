"""realtime_async's Celery tasks, found by ``autodiscover_tasks()`` since ``realtime_async`` is an installed app.

- ``realtime_async.run`` runs every worker function (see ``_writing.worker``).
- ``realtime_async.schedules.cleanup_async_artifacts`` is the cleanup to put in
  ``CELERY_BEAT_SCHEDULE`` (the README shows how). It is defined here, not in
  ``realtime_async.schedules``, so that every worker that autodiscovers tasks
  knows it; its name keeps the documented path.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from realtime_async._core.managers import resolve_manager
from realtime_async._core.naming import CLEANUP_TASK_NAME, RUN_TASK_NAME
from realtime_async._writing.worker import GENERIC_ERROR, TIME_LIMIT_ERROR, run

__all__ = [
    "CLEANUP_TASK_NAME",
    "GENERIC_ERROR",
    "RUN_TASK_NAME",
    "TIME_LIMIT_ERROR",
    "cleanup_async_artifacts",
    "run_async_task",
]


@shared_task(name=RUN_TASK_NAME, ignore_result=True)
def run_async_task(
    *, func_path: str, args: list[Any], kwargs: dict[str, Any], task_name: str, manager_path: str
) -> Any:
    """Celery entry point; see ``realtime_async._writing.worker.run``."""
    return run(func_path, args, kwargs, task_name, manager_path)


@shared_task(name=CLEANUP_TASK_NAME, ignore_result=True)
def cleanup_async_artifacts() -> dict[str, Any]:
    """Run ``cleanup_completed_tasks`` with the configured manager class."""
    return resolve_manager().cleanup_completed_tasks()
