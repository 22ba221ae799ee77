"""Titles travel with the task: the record, the widget's label, the dashboard row, the admin's pages."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from realtime_async import AsyncManager
from realtime_async.contrib.dashboard.recorder import get_recorder
from realtime_async.contrib.dashboard.views import row_context
from realtime_async.widgets import render_live_progress
from tests.testapp.models import Widget

# transaction=True: the dashboard recorder writes from its own thread.
pytestmark = pytest.mark.django_db(transaction=True)
#: No worker reads this queue: the tasks stay queued, which is all these tests need.
NOWHERE = {"queue": "realtime-async-tests-nowhere"}


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice-titles", password="pw")


def test_the_record_carries_the_title_given_or_derived(manager, alice):
    given = manager.launch_async_task("tests.testapp.workers.steps", 1, title="Rebuild “Website”", **NOWHERE)
    derived = manager.launch_async_task("tests.testapp.workers.touch_file", "/x", **NOWHERE)
    long = manager.launch_async_task("tests.testapp.workers.steps", 1, title="y" * 500, **NOWHERE)
    assert manager.get_progress(given)["title"] == "Rebuild “Website”"
    assert manager.get_progress(derived)["title"] == "Touch file"
    assert len(manager.get_progress(long)["title"]) == 200


def test_the_title_survives_progress_and_the_final_state(manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, title="Export", **NOWHERE)
    manager.update_progress(name, "half way", percent=50)
    manager.finish(name, "success", result={"rows": 3})
    record = manager.get_progress(name)
    assert (record["state"], record["title"], record["message"]) == ("success", "Export", "half way")


def test_the_widget_is_labelled_by_the_title_unless_a_label_is_given(manager, alice):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, title="Import <rows>", user=alice, **NOWHERE)
    html = str(render_live_progress(name, user=alice))
    assert 'aria-label="Import &lt;rows&gt;"' in html and "<rows>" not in html
    assert 'aria-label="Mine"' in str(render_live_progress(name, user=alice, label="Mine"))
    assert 'aria-label="Progress"' in str(render_live_progress(name, user=None))  # not visible: no title either


def test_the_dashboard_row_shows_the_title_and_falls_back_to_the_name():
    assert row_context({"task": "t-1", "title": "Nightly export", "state": "running"})["title"] == "Nightly export"
    assert row_context({"task": "t-2", "state": "running"})["title"] == "t-2"


def test_admin_actions_title_their_task_and_its_page(django_user_model):
    staff = django_user_model.objects.create_superuser("admin-titles", password="pw")
    widgets = [Widget.objects.create(name=f"w{i}") for i in range(2)]
    client = Client()
    client.force_login(staff)
    changelist = reverse("admin:testapp_widget_changelist")
    response = client.post(changelist, {"action": "async_admin_rebuild", "_selected_action": [w.pk for w in widgets]})
    assert response.status_code == 302
    name = response.url.rstrip("/").rsplit("/", 1)[-1]
    page = client.get(response.url)
    assert page.status_code == 200
    assert "Admin rebuild: 2 widgets" in page.content.decode()
    assert AsyncManager().get_progress(name)["title"] == "Admin rebuild: 2 widgets"


def test_the_my_tasks_page_lists_tasks_by_title(manager, alice):
    title = "Quarterly <report>"
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, title=title, user=alice, **NOWHERE)
    assert get_recorder().flush(10)
    client = Client()
    client.force_login(alice)
    html = client.get(reverse("realtime_async_dashboard:my-tasks")).content.decode()
    assert 'data-ra-field="title" href="/tasks/' in html and ">Quarterly &lt;report&gt;</a>" in html
    assert f'data-ra-field="task">{name}</small>' in html
