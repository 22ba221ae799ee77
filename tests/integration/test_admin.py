"""Admin actions through the admin's own views: the split action launches one group over chunks of the selection.

Nothing is run: Celery's ``apply_async`` is replaced by a recorder, so the
tests see exactly what each part would be called with.
``system/test_browser_admin.py`` runs the same actions on a real worker.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse

from realtime_async import async_manager
from tests.testapp.models import Widget

# transaction=True: the group is enqueued at once, as outside any atomic block.
pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = "admin:testapp_widget_changelist"
WORKER = "tests.testapp.workers.admin_rebuild"


class _Enqueued:
    """Stands in for ``run_async_task``: records each call instead of sending it."""

    def __init__(self):
        self.calls = []

    def apply_async(self, *, kwargs, task_id=None, **options):
        self.calls.append(kwargs)


@pytest.fixture
def enqueued(monkeypatch):
    recorder = _Enqueued()
    monkeypatch.setattr(async_manager, "run_async_task", recorder)
    return recorder


@pytest.fixture
def client(django_user_model):
    staff = django_user_model.objects.create_superuser("admin-split", password="pw")
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def widgets():
    return [Widget.objects.create(name=f"w{i}") for i in range(5)]


def _run(client, action, objects):
    return client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [w.pk for w in objects]})


def _launched(response):
    assert response.status_code == 302, response.content[:500]
    return response.url.rstrip("/").rsplit("/", 1)[-1]


def test_the_split_action_launches_one_group_of_chunks(client, widgets, enqueued, manager):
    parent = _launched(_run(client, "rebuild_in_parallel", widgets))
    record = manager.get_progress(parent)
    assert record["title"] == "Rebuild: 5 widgets"
    assert record["group"]["parts"] == 3 and record["group"]["policy"] == "continue"
    parts = [manager.get_progress(f"{parent}.{index}") for index in range(3)]
    assert [part["title"] for part in parts] == [
        "Rebuild: 2 widgets (1–2)",
        "Rebuild: 2 widgets (3–4)",
        "Rebuild: 1 widget (5)",
    ]
    assert [part["part"]["weight"] for part in parts] == [2.0, 2.0, 1.0]  # proportional to the chunks
    # Each part is the non-split action's worker call (the pks first), on its own chunk of the selection.
    calls = sorted(enqueued.calls, key=lambda call: call["task_name"])
    assert [call["task_name"] for call in calls] == [f"{parent}.{index}" for index in range(3)]
    assert {call["func_path"] for call in calls} == {WORKER}
    chunks = [call["args"][0] for call in calls]
    assert [len(chunk) for chunk in chunks] == [2, 2, 1] and [len(call["args"]) for call in calls] == [1, 1, 1]
    assert sorted(pk for chunk in chunks for pk in chunk) == sorted(str(w.pk) for w in widgets)
    # Every selected object is locked once, by the parent; the parts hold nothing.
    assert manager.check_conflict({"testapp.Widget": [w.pk for w in widgets]}) == {
        "testapp.widget": {str(w.pk): parent for w in widgets}
    }


def test_the_split_action_opens_the_live_page_of_the_group(client, widgets, enqueued):
    response = _run(client, "rebuild_in_parallel", widgets[:3])
    parent = _launched(response)
    assert response.url == reverse("admin:testapp_widget_async_progress", args=[parent])
    page = client.get(response.url)
    assert page.status_code == 200 and page.context["is_group"] is True
    html = page.content.decode()
    assert "Rebuild: 3 widgets" in html and f'data-ra-task="{parent}"' in html
    # The group's breakdown, under its bar: a row per part.
    assert 'data-ra-field="breakdown"' in html
    assert [f'data-ra-part="{parent}.{index}"' in html for index in range(3)] == [True, True, False]


def test_the_single_task_action_page_is_not_a_group(client, widgets, enqueued):
    response = _run(client, "async_admin_rebuild", widgets[:1])
    _launched(response)
    page = client.get(response.url)
    assert page.context["is_group"] is False and 'data-ra-field="breakdown"' not in page.content.decode()


def test_a_split_action_over_locked_objects_launches_nothing(client, widgets, enqueued, manager):
    first = _launched(_run(client, "rebuild_in_parallel", widgets[:2]))
    sent = len(enqueued.calls)
    response = _run(client, "rebuild_in_parallel", widgets[1:])
    assert response.status_code == 302 and response.url == reverse(CHANGELIST)  # back to the list, no page
    messages = [str(message) for message in response.wsgi_request._messages]  # the first launch's, then this one's
    assert messages[-1:] == [f"Nothing was launched: task {first} is already working on some of these widgets."]
    assert len(enqueued.calls) == sent
    assert manager.check_conflict({"testapp.Widget": [w.pk for w in widgets[2:]]}) == {}
    assert set(manager.active_tasks()) == {first, f"{first}.0"}  # two widgets: one part


def test_chunks_grow_to_stay_within_group_max_parts(client, widgets, enqueued, manager):
    with override_settings(REALTIME_ASYNC={**settings.REALTIME_ASYNC, "GROUP_MAX_PARTS": 2}):
        parent = _launched(_run(client, "rebuild_in_parallel", widgets))
    assert manager.get_progress(parent)["group"]["parts"] == 2
    assert [len(call["args"][0]) for call in sorted(enqueued.calls, key=lambda c: c["task_name"])] == [3, 2]
