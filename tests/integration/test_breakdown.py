"""A group's breakdown: the polling endpoint's ``?parts=1`` and the widget's first render, on the real Redis store.

The parts are driven as their workers would drive them (``tests/integration/test_groups.py``);
``system/test_browser_breakdown.py`` shows the list live in Chromium.
"""

from __future__ import annotations

import importlib.resources
import json

import pytest
from django.test import Client
from django.urls import reverse
from jsonschema import Draft202012Validator

from realtime_async import Part
from realtime_async.widgets import render_live_progress
from tests.integration.test_groups import _parts, _settled, _start

pytestmark = pytest.mark.django_db(transaction=True)
NOWHERE = {"queue": "realtime-async-tests-nowhere"}
STEPS = "tests.testapp.workers.steps"
SCHEMA = json.loads(importlib.resources.files("realtime_async").joinpath("protocol.schema.json").read_text())


def url(name, **query):
    path = reverse("async-progress", kwargs={"task_name": name})
    return path + ("?" + "&".join(f"{key}={value}" for key, value in query.items()) if query else "")


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("grouper")


@pytest.fixture
def browser(owner):
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def group(manager, owner):
    """A group of three parts: the first failed, the second running at 40 %, the third queued."""
    parent = manager.launch_async_group(
        [Part(STEPS, (1,), title="First <b>"), Part(STEPS, (1,), title="Second"), Part(STEPS, (1,), title="Third")],
        title="Import",
        user=owner,
        **NOWHERE,
    )
    failed, running, _queued = _parts(manager, parent)
    _start(failed)
    manager.finish(failed, "failure", error="Broken.")
    _start(running)
    manager.update_progress(running, percent=40)
    counts = {"queued": 1, "running": 1, "success": 0, "failure": 1, "cancelled": 0, "lost": 0}
    _settled(
        manager, parent, lambda record: record["group"]["counts"] == counts and abs(record["percent"] - 40 / 3) < 0.1
    )
    return parent


def test_the_owner_gets_the_parts_in_order_with_the_counts(browser, manager, group):
    response = browser.get(url(group, parts=1))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    answer = response.json()
    assert (answer["v"], answer["type"], answer["task"]) == (1, "breakdown", group)
    data = answer["data"]
    record = manager.get_progress(group)
    assert data["counts"] == record["group"]["counts"] and data["total"] == 3 and data["omitted"] == 0
    assert (data["seq"], data["state"]) == (record["seq"], "running")
    assert data["parts"] == [
        {"task": f"{group}.0", "title": "First <b>", "state": "failure", "percent": 0.0, "error": "Broken."},
        {"task": f"{group}.1", "title": "Second", "state": "running", "percent": 40.0, "error": None},
        {"task": f"{group}.2", "title": "Third", "state": "queued", "percent": 0.0, "error": None},
    ]


def test_a_real_answer_matches_the_protocol_schema(browser, group):
    validator = Draft202012Validator(
        {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": "#/$defs/breakdown"}
    )
    answer = browser.get(url(group, parts=1)).json()
    validator.validate(answer)
    assert not validator.is_valid({**answer, "data": {**answer["data"], "parts": [{"task": group}]}})


def test_other_users_and_anonymous_get_the_same_404_as_for_unknown_tasks(group, django_user_model):
    other = Client()
    other.force_login(django_user_model.objects.create_user("mallory"))
    unknown = other.get(url("no-such-group", parts=1))
    for client in (other, Client()):
        response = client.get(url(group, parts=1))
        assert response.status_code == 404
        assert response.content == unknown.content and response.json()["code"] == "not_found"


def test_a_watch_token_opens_the_breakdown_as_it_opens_the_parent(manager, group):
    token = manager.make_watch_token(group)
    response = Client().get(reverse("async-progress", kwargs={"task_name": group}), {"token": token, "parts": "1"})
    assert response.status_code == 200 and len(response.json()["data"]["parts"]) == 3


def test_a_task_that_is_not_a_group_or_a_bad_value_is_a_400(browser, manager, owner, group):
    alone = manager.launch_async_task(STEPS, 1, user=owner, **NOWHERE)
    response = browser.get(url(alone, parts=1))
    assert response.status_code == 400
    assert response.json() == {
        "v": 1,
        "type": "error",
        "code": "bad_request",
        "message": "Not a group: only a group's parent task has parts.",
    }
    part = f"{group}.1"  # a part is a task, not a group
    assert browser.get(url(part, parts=1)).status_code == 400
    assert browser.get(url(group, parts="yes")).json()["code"] == "bad_request"


def test_the_etag_differs_from_the_plain_answer_and_follows_the_parts(browser, manager, group):
    plain = browser.get(url(group))
    parts = browser.get(url(group, parts=1))
    assert plain["ETag"] != parts["ETag"]
    again = browser.get(url(group, parts=1), HTTP_IF_NONE_MATCH=parts["ETag"])
    assert again.status_code == 304 and again["ETag"] == parts["ETag"]
    manager.update_progress(f"{group}.1", percent=90)
    changed = browser.get(url(group, parts=1), HTTP_IF_NONE_MATCH=parts["ETag"])
    assert changed.status_code == 200 and changed.json()["data"]["parts"][1]["percent"] == 90.0


def test_the_final_answer_stops_polling_and_names_every_part(browser, manager, group):
    for name in _parts(manager, group)[1:]:
        if manager.get_progress(name)["state"] == "queued":
            _start(name)
        manager.finish(name, "success")
    response = browser.get(url(group, parts=1))
    assert response.status_code == 286
    data = response.json()["data"]
    assert data["state"] == "failure" and [part["state"] for part in data["parts"]] == ["failure", "success", "success"]


def test_the_widget_renders_the_breakdown_first_escaped(manager, owner, group):
    html = render_live_progress(group, user=owner, breakdown=True, include_assets=False)
    assert "3 parts: 1 failed, 1 running, 1 queued" in html
    assert 'data-ra-part-state="failure"' in html and "First &lt;b&gt;" in html and "First <b>" not in html
    assert '<span class="ra-progress__part-error"> Broken.</span>' in html
    assert html.count('class="ra-progress__part"') == 3
    assert "aria-live" not in html.split('data-ra-field="breakdown"', 1)[1].split("</div>", 1)[0]
    plain = render_live_progress(group, user=owner, include_assets=False)
    assert 'data-ra-field="breakdown"' not in plain


def test_breakdown_on_a_task_that_is_not_a_group_renders_none(manager, owner):
    alone = manager.launch_async_task(STEPS, 1, user=owner, **NOWHERE)
    assert 'data-ra-field="breakdown"' not in render_live_progress(alone, user=owner, breakdown=True)


def test_the_dashboard_row_of_a_group_shows_its_summary_under_the_message(manager, group):
    from django.template.loader import render_to_string

    from realtime_async.contrib.dashboard.views import row_context

    row = row_context(manager.get_progress(group))
    assert row["group_text"] == "3 parts: 1 failed, 1 running, 1 queued"
    html = render_to_string("realtime_async_dashboard/row.html", {"row": row})
    assert '<small class="ra-group" data-ra-field="group">3 parts: 1 failed, 1 running, 1 queued</small>' in html
    alone = row_context({"task": "t-1", "state": "running", "seq": 2})
    assert alone["group_text"] == "" and 'data-ra-field="group" hidden' in render_to_string(
        "realtime_async_dashboard/row.html", {"row": alone}
    )
