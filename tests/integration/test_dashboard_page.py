"""The live "my tasks" page: its server-rendered rows (``system/test_browser_dashboard.py`` runs it in Chromium)."""

from __future__ import annotations

import datetime
import re
import time

import pytest
from django.test import Client
from django.utils import translation

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._writing.writer import get_writer
from realtime_async.async_manager import AsyncManager
from realtime_async.contrib.dashboard.models import TaskRecord

URL = "/tasks/"


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("sam", is_staff=True)


def recorded(owner, state="running", *, live=True, **fields):
    """A task as the dashboard knows it: a database row, and its live record in the cache when ``live``."""
    name = new_task_name("dash")
    now = time.time()
    TaskRecord.objects.create(
        task_name=name,
        state=state,
        owner=owner,
        message=fields.get("message", "from the database"),
        percent=fields.get("percent"),
        created_at=datetime.datetime.fromtimestamp(now, tz=datetime.UTC),
    )
    if live:
        base = {"task": name, "owner": owner.pk if owner else None, "created_at": now}
        get_writer().commit({**base, "state": "queued"}, mode=WriteMode.CREATE)
        get_writer().commit({**base, "state": state, **fields})
    return name


def get(user, *, htmx=False, **headers):
    client = Client()
    if user is not None:
        client.force_login(user)
    if htmx:
        headers["HX-Request"] = "true"
    return client.get(URL, headers=headers)


def row_of(html, name):
    match = re.search(rf'<tr class="ra-dashboard__row" data-task="{name}".*?</tr>', html, re.S)
    return match.group(0) if match else None


@pytest.mark.django_db
def test_rows_are_rendered_with_the_live_state(alice):
    name = recorded(alice, message="Step 2/5", current=2, total=5, percent=40.0)
    response = get(alice)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1" in html and "My tasks" in html
    row = row_of(html, name)
    assert row is not None, html
    assert 'data-state="running"' in row and ">Running<" in row
    assert "Step 2/5" in row and "from the database" not in row  # the cache is fresher
    assert 'value="40"' in row and ">40%<" in row
    seq = AsyncManager.resolve_manager().get_progress(name)["seq"]
    assert f'data-seq="{seq}"' in row
    assert 'id="ra-dashboard-row"' in html  # the <template> of rows added live
    assert 'data-ra-poll-interval="1000"' in html and 'data-ra-poll-url="/tasks/"' in html


@pytest.mark.django_db
def test_a_task_the_cache_forgot_shows_its_database_row(alice):
    name = recorded(alice, "success", live=False, message="All done", percent=100.0)
    row = row_of(get(alice).content.decode(), name)
    assert row and 'data-state="success"' in row and "All done" in row and ">Done<" in row


@pytest.mark.django_db
def test_users_see_their_own_tasks_and_staff_see_all(alice, bob, staff):
    mine, theirs = recorded(alice), recorded(bob)
    html = get(alice).content.decode()
    assert row_of(html, mine) and not row_of(html, theirs)
    html = get(staff).content.decode()
    assert row_of(html, mine) and row_of(html, theirs) and "All tasks" in html


@pytest.mark.django_db
def test_an_overridden_can_view_is_honoured(alice, staff, settings):
    settings.REALTIME_ASYNC = {"ASYNC_MANAGER_CLASS_PATH": "tests.testapp.managers.HidingManager"}
    shown = recorded(alice)
    TaskRecord.objects.create(task_name="hidden-one", state="success", owner=alice)
    html = get(staff).content.decode()
    assert row_of(html, shown) and "hidden-one" not in html


@pytest.mark.django_db
def test_htmx_polls_get_the_rows_alone(alice):
    name = recorded(alice, percent=12.0)
    response = get(alice, htmx=True)
    html = response.content.decode()
    assert response.status_code == 200
    assert row_of(html, name) and "<table" not in html and "<script" not in html
    assert "HX-Request" in response["Vary"]
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_no_tasks(alice):
    assert "No tasks yet." in get(alice, htmx=True).content.decode()


@pytest.mark.django_db
def test_login_required():
    response = get(None)
    assert response.status_code == 302 and "login" in response["Location"]


@pytest.mark.django_db
def test_numbers_are_not_localised(alice):
    name = recorded(alice, percent=42.5)
    with translation.override("de"):
        row = row_of(get(alice, htmx=True).content.decode(), name)
    assert 'value="42.5"' in row


@pytest.mark.django_db
def test_indeterminate_while_running_without_a_percent(alice):
    name = recorded(alice, message="Thinking")
    row = row_of(get(alice, htmx=True).content.decode(), name)
    assert "<progress" in row and "value=" not in re.search(r"<progress[^>]*>", row).group(0)


@pytest.mark.django_db
def test_user_text_is_escaped(alice):
    name = recorded(alice, message="<img src=x onerror=alert(1)>")
    row = row_of(get(alice).content.decode(), name)
    assert "<img" not in row and "&lt;img src=x onerror=alert(1)&gt;" in row


@pytest.mark.django_db
def test_no_inline_script_or_style(alice):
    client = Client()
    client.force_login(alice)
    html = client.get("/demo/tasks/").content.decode()  # the page under a nonce policy
    nonce = re.search(r'nonce="([^"]+)"', html).group(1)
    for tag in re.findall(r"<(?:script|link)[^>]*>", html):
        assert f'nonce="{nonce}"' in tag, tag
    assert "style=" not in html and "<style" not in html
    assert all(' src="' in tag for tag in re.findall(r"<script[^>]*>", html))


@pytest.mark.django_db(transaction=True)
def test_each_title_links_to_the_task_page_with_its_live_widget_and_log(alice, bob):
    name = recorded(alice, "running", message="Halfway", percent=50.0)
    page = get(alice)
    assert f'href="{URL}{name}/"' in page.content.decode()
    task_page = Client()
    task_page.force_login(alice)
    answer = task_page.get(f"{URL}{name}/")
    html = answer.content.decode()
    assert answer.status_code == 200 and f'data-ra-task="{name}"' in html
    assert 'data-ra-field="log"' in html and "data-ra-widget" in html
    assert answer["Cache-Control"].startswith("max-age=0")
    stranger = Client()
    stranger.force_login(bob)
    assert stranger.get(f"{URL}{name}/").status_code == 404
    assert stranger.get(f"{URL}no-such-task/").status_code == 404
    assert task_page.get(f"{URL}no-such-task/").status_code == 404
    assert Client().get(f"{URL}{name}/").status_code == 302  # to the login page


@pytest.mark.django_db(transaction=True)
def test_a_task_whose_record_expired_shows_its_row_and_says_the_log_is_gone(alice):
    name = recorded(alice, "success", live=False, message="Imported <b>all</b>")
    client = Client()
    client.force_login(alice)
    html = client.get(f"{URL}{name}/").content.decode()
    assert "no longer kept" in html and "Imported &lt;b&gt;all&lt;/b&gt;" in html
    assert "data-ra-widget" not in html
