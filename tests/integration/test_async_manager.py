"""``AsyncManager`` calls against real Redis, without a worker: launch validation, cancel permissions."""

from __future__ import annotations

import pytest

from realtime_async.async_manager import AsyncManager


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner")


def test_launch_validates_before_touching_anything():
    manager = AsyncManager()
    with pytest.raises(ValueError, match="Invalid task name"):
        manager.launch_async_task("tests.testapp.workers.steps", task_name="../bad")
    with pytest.raises(ValueError, match="cannot be imported"):
        manager.launch_async_task(lambda: None)
    assert manager.active_tasks() == []


@pytest.mark.django_db(transaction=True)
def test_cancel_needs_permission(manager, owner, django_user_model):
    other = django_user_model.objects.create_user("mallory")
    staff = django_user_model.objects.create_user("admin", is_staff=True)
    name = manager.launch_async_task("tests.testapp.workers.touch_file", "/nonexistent/x", user=owner, countdown=30)
    assert not manager.cancel(name, user=other)
    assert not manager.cancel(name, user=None)
    assert manager.get_progress(name)["state"] == "queued"
    assert manager.cancel(name, user=staff)
    assert manager.get_progress(name)["state"] == "cancelled"
    assert not manager.cancel("no-such-task", user=staff)
