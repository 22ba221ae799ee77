"""The dashboard add-on records a task launched and cancelled here, without a worker."""

from __future__ import annotations

import pytest

from realtime_async.contrib.dashboard.models import TaskRecord
from realtime_async.contrib.dashboard.recorder import get_recorder

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("dora")


def test_cancel_is_recorded(manager, owner):
    name = manager.launch_async_task("tests.testapp.workers.touch_file", "/nonexistent", user=owner, countdown=30)
    manager.cancel(name, user=owner)
    assert get_recorder().flush()
    assert TaskRecord.objects.get(task_name=name).state == "cancelled"
