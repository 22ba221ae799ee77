"""The dashboard's recorder writes events into rows: older events never win, deleted owners are unlinked."""

from __future__ import annotations

import pytest

from realtime_async.contrib.dashboard.models import TaskRecord
from realtime_async.contrib.dashboard.recorder import get_recorder

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("dora")


def _event(name, seq, state, created_at, owner=None):
    record = {"seq": seq, "task": name, "state": state, "created_at": created_at, "percent": None}
    return {"record": record, "user": {"id": owner.pk, "label": owner.username} if owner else None}


def test_an_older_event_never_overwrites_a_newer_state(owner):
    # A launcher's retried `create` can reach the database after the worker's `complete`.
    recorder, name, t0 = get_recorder(), "ooo-task", 1_764_000_000.0
    recorder._write(name, _event(name, 5, "success", t0, owner))
    recorder._write(name, _event(name, 1, "queued", t0, owner))
    row = TaskRecord.objects.get(task_name=name)
    assert (row.state, row.seq, row.owner) == ("success", 5, owner)
    # A relaunch under the same name starts its seq again, and wins; a late event of the old run does not.
    recorder._write(name, _event(name, 1, "queued", t0 + 60, owner))
    recorder._write(name, _event(name, 6, "failure", t0, owner))
    assert (TaskRecord.objects.get(task_name=name).state, TaskRecord.objects.get(task_name=name).seq) == ("queued", 1)


def test_a_deleted_owner_leaves_the_row_unlinked(django_user_model):
    gone = django_user_model.objects.create_user("gone")
    event = _event("orphan-task", 2, "running", 1_764_000_000.0, gone)
    gone.delete()  # between the launch and the write, as a user deleted while their task runs
    get_recorder()._write("orphan-task", event)
    row = TaskRecord.objects.get(task_name="orphan-task")
    assert (row.state, row.owner_id, row.owner_label) == ("running", None, "gone")
