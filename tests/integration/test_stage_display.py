"""The stepper of a task with stages, rendered by the server: the widget, the HTMX fragment and the dashboard row."""

from __future__ import annotations

import html as html_lib
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
from realtime_async.contrib.dashboard.views import row_context
from realtime_async.widgets import render_fragment, render_live_progress

pytestmark = pytest.mark.django_db

NAMES = ["Load", 'Process <b>&</b> "check"', "Save"]


def stages(active: int, *, failed: bool = False) -> list[dict]:
    def state(index: int) -> str:
        if index < active:
            return "done"
        if index > active:
            return "cancelled" if failed else "pending"
        return "failed" if failed else "active"

    return [
        {"name": name, "state": state(index), "weight": 1.0, "percent": 100.0 if index < active else None}
        for index, name in enumerate(NAMES)
    ]


def make_task(user, state="running", **fields):
    name = new_task_name("stg")
    base = {"task": name, "owner": user.pk, "created_at": time.time()}
    get_writer().commit({**base, "state": "queued"}, mode=WriteMode.CREATE)
    if state != "queued":
        get_writer().commit({**base, "state": state, **fields})
    return name


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("stella")


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def stepper(html: str) -> list[tuple[str, str, bool, str]]:
    """(state, name, current, hidden label) of each step of the one stepper in ``html``."""
    lists = re.findall(r'<ol class="ra-progress__stages" data-ra-field="stages"[^>]*>(.*?)</ol>', html, re.S)
    assert len(lists) == 1, html
    return [
        (state, html_lib.unescape(name), bool(current), html_lib.unescape(label))
        for state, current, name, label in re.findall(
            r'<li class="ra-progress__stage" data-ra-stage-state="([^"]*)"( aria-current="step")?>'
            r'<span class="ra-progress__stage-name">([^<]*)</span>'
            r'<span class="ra-progress__stage-state"> ([^<]*)</span></li>',
            lists[0],
        )
    ]


def test_the_widget_renders_the_stepper_with_the_active_stage_current(user):
    task = make_task(user, stages=stages(1), stage=NAMES[1], percent=40.0, message="Item 3/10")
    assert AsyncManager.resolve_manager().get_progress(task)["stage"] == NAMES[1]  # the store keeps the fields
    html = render_live_progress(task, user=user, include_assets=False)
    assert stepper(html) == [
        ("done", "Load", False, "Done"),
        ("active", NAMES[1], True, "In progress"),
        ("pending", "Save", False, "Not started"),
    ]
    assert html.count('aria-current="step"') == 1
    assert 'aria-label="Stages"' in html
    # Names are text: escaped, never markup.
    assert "<b>" not in html
    assert "Process &lt;b&gt;&amp;&lt;/b&gt; &quot;check&quot;" in html
    # Between the bar's details and the message; no inline style or script.
    assert (
        html.index('data-ra-field="eta"') < html.index('data-ra-field="stages"') < html.index('data-ra-field="message"')
    )
    assert "style=" not in html and "<script" not in html


def test_a_final_task_has_no_current_stage(user):
    task = make_task(user, "failure", stages=stages(1, failed=True), stage=None, error="Disk full.")
    html = render_live_progress(task, user=user, include_assets=False)
    assert stepper(html) == [
        ("done", "Load", False, "Done"),
        ("failed", NAMES[1], False, "Failed"),
        ("cancelled", "Save", False, "Cancelled"),
    ]
    assert "aria-current" not in html


@pytest.mark.parametrize("fields", [{}, {"stages": None, "stage": None}])
def test_no_stages_no_stepper(user, fields):
    task = make_task(user, percent=10.0, **fields)
    html = render_live_progress(task, user=user, include_assets=False)
    assert "ra-progress__stages" not in html
    assert "aria-current" not in html
    assert "ra-progress__stages" not in render_live_progress("stg-missing-task", user=user, include_assets=False)


def test_the_fragment_renders_the_stepper_too(user):
    task = make_task(user, stages=stages(0), stage="Load")
    record = AsyncManager.resolve_manager().get_progress(task)
    assert stepper(render_fragment(task, record))[0] == ("active", "Load", True, "In progress")


def test_dashboard_rows_show_the_current_stage(user):
    assert row_context({"task": "t-1", "state": "running", "stages": stages(1), "stage": NAMES[1]})["stage_text"] == (
        f"Stage 2 of 3: {NAMES[1]}"
    )
    assert row_context({"task": "t-1", "state": "running"})["stage_text"] == ""

    task = make_task(user, stages=stages(2), stage="Save", message="Writing")
    TaskRecord.objects.get_or_create(task_name=task, defaults={"state": "running", "owner": user})
    client = Client()
    client.force_login(user)
    html = client.get("/tasks/").content.decode()
    row = re.search(rf'<tr class="ra-dashboard__row" data-task="{task}".*?</tr>', html, re.S).group(0)
    assert '<small class="ra-stage" data-ra-field="stage">Stage 3 of 3: Save</small>' in row
    assert '<span data-ra-field="message">Writing</span>' in row
    # The blank row of new tasks keeps the (hidden) hook for the script to fill.
    template = re.search(r'<template id="ra-dashboard-row">(.*?)</template>', html, re.S).group(1)
    assert '<small class="ra-stage" data-ra-field="stage" hidden></small>' in template
