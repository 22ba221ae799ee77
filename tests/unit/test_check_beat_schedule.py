"""System check realtime_async.W004: a beat schedule naming a realtime_async task that does not exist."""

from __future__ import annotations

from django.core.checks import run_checks
from django.test import override_settings

from realtime_async._core.naming import CLEANUP_TASK_NAME, RUN_TASK_NAME
from realtime_async.checks import check_beat_schedule


def _schedule(*tasks):
    return {f"entry-{i}": {"task": task, "schedule": 60.0} for i, task in enumerate(tasks)}


@override_settings(CELERY_BEAT_SCHEDULE=_schedule(CLEANUP_TASK_NAME, "myapp.tasks.nightly"))
def test_the_documented_schedule_passes():
    assert check_beat_schedule() == []
    assert [m for m in run_checks() if m.id == "realtime_async.W004"] == []


@override_settings(CELERY_BEAT_SCHEDULE=_schedule("realtime_async.cleanup_async_artifacts", RUN_TASK_NAME))
def test_a_misspelt_task_is_named_with_the_valid_one():
    [message] = check_beat_schedule()
    assert message.id == "realtime_async.W004"
    assert "'realtime_async.cleanup_async_artifacts'" in message.msg
    assert CLEANUP_TASK_NAME in message.hint and "inspect registered" in message.hint
    assert [m.id for m in run_checks() if m.id.startswith("realtime_async.W004")] == ["realtime_async.W004"]


def test_the_names_are_the_tasks_workers_register():
    from realtime_async import tasks

    assert tasks.run_async_task.name == RUN_TASK_NAME
    assert tasks.cleanup_async_artifacts.name == CLEANUP_TASK_NAME
