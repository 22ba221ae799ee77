"""Stages in a real prefork worker: every stage done on success; the failing stage failed, the rest pending."""

from __future__ import annotations

import pytest

from tests.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
STAGES = ["Load", "Process", "Save"]


def _final(manager, name):
    return wait_for(
        lambda: (r := manager.get_progress(name)) and r["state"] in ("success", "failure", "cancelled") and r,
        30,
        0.1,
        "a final state",
    )


def _states(record):
    return [(stage["name"], stage["state"]) for stage in record["stages"]]


def test_a_staged_task_ends_with_every_stage_done(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.staged", stages=STAGES)
    seen = set()
    record = wait_for(
        lambda: (r := manager.get_progress(name)) and (seen.add(r.get("stage")) or r["state"] == "success") and r,
        30,
        0.02,
        "success",
    )
    assert _states(record) == [(n, "done") for n in STAGES]
    assert record["percent"] == 100.0 and record["stage"] is None
    assert {"Load", "Process", "Save"} & seen  # the active stage was seen moving


def test_a_failure_marks_its_stage_failed(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.staged", stages=STAGES, task_kwargs={"fail_in": "Process"})
    record = _final(manager, name)
    assert (record["state"], record["error"]) == ("failure", "Process broke.")
    assert _states(record) == [("Load", "done"), ("Process", "failed"), ("Save", "pending")]


def test_a_cancel_marks_its_stage_cancelled(celery_worker_proc, manager, django_user_model):
    owner = django_user_model.objects.create_user("stage-owner")
    name = manager.launch_async_task(
        "tests.testapp.workers.staged", stages=STAGES, user=owner, task_kwargs={"steps": 200, "delay": 0.02}
    )
    wait_for(lambda: (manager.get_progress(name) or {}).get("stage") == "Load", 20, 0.05, "the first stage")
    assert manager.cancel(name, user=owner)
    record = _final(manager, name)
    assert record["state"] == "cancelled"
    assert _states(record) == [("Load", "cancelled"), ("Process", "pending"), ("Save", "pending")]
