from __future__ import annotations

import time

import pytest
from django.db import transaction

from tests.services import wait_for
from tests.testapp.managers import recorded_events

pytestmark = pytest.mark.django_db(transaction=True)


def _nothing_left(manager, name, ids):
    assert manager.get_progress(name) is None
    assert manager.check_conflict(ids) == {}
    assert name not in manager.active_tasks()
    assert recorded_events(name) == []


def test_rollback_leaves_no_task_lock_or_record(celery_worker_proc, manager):
    ids = {"testapp.Project": {7}}
    with pytest.raises(RuntimeError), transaction.atomic():
        manager.launch_async_task("tests.testapp.workers.steps", 1, task_name="tx-rollback", conflict_ids=ids)
        # Reserved at once, so a concurrent launcher already sees the conflict.
        assert manager.check_conflict(ids) == {"testapp.project": {"7": "tx-rollback"}}
        raise RuntimeError("roll back")
    _nothing_left(manager, "tx-rollback", ids)
    time.sleep(1)  # had anything been enqueued, the worker would have run it by now
    _nothing_left(manager, "tx-rollback", ids)


def test_savepoint_rollback_inside_a_committed_transaction(celery_worker_proc, manager):
    ids = {"testapp.Project": {8}}
    with transaction.atomic():
        try:
            with transaction.atomic():
                manager.launch_async_task("tests.testapp.workers.steps", 1, task_name="tx-savepoint", conflict_ids=ids)
                raise RuntimeError("roll back the savepoint only")
        except RuntimeError:
            pass
        kept = manager.launch_async_task("tests.testapp.workers.steps", 1, task_kwargs={"delay": 0})
    _nothing_left(manager, "tx-savepoint", ids)
    wait_for(lambda: manager.get_progress(kept)["state"] == "success", 30, what="the committed task")


def test_commit_enqueues_on_commit_only(celery_worker_proc, manager):
    with transaction.atomic():
        name = manager.launch_async_task("tests.testapp.workers.steps", 1, task_kwargs={"delay": 0})
        assert recorded_events(name) == []  # create fires on commit, with the enqueue
        time.sleep(0.5)
        assert manager.get_progress(name)["state"] == "queued"
    wait_for(lambda: manager.get_progress(name)["state"] == "success", 30, what="success")
    # Emitted here after the enqueue: the worker's own events may come before it.
    assert [event["event"] for event in recorded_events(name)].count("create") == 1
