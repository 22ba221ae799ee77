"""The live "my tasks" page: a user's own tasks, every task for staff.

The rows are rendered here, from the cache's live record where there is one
(fresher than the database's). ``dashboard.js`` then follows the WebSocket
feed (``subscribe_feed``), updating rows and adding new tasks at the top;
when the socket fails it polls this same view, which answers requests marked
``HX-Request: true`` with the rows alone.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from realtime_async._core.access import may_view, visible_record
from realtime_async._core.managers import resolve_manager
from realtime_async._core.records import State, StateRecord
from realtime_async._web.display import display, i18n, state_labels
from realtime_async._web.results import display_results
from realtime_async.conf import get_settings
from realtime_async.contrib.dashboard.models import TaskRecord
from realtime_async.widgets import DEFAULT_WS_PATH

__all__ = ["LIMIT", "my_tasks", "row_context", "task_page", "task_url_prefix", "visible_records"]

#: Rows on the page; older tasks are in the admin.
LIMIT = 50


def visible_records(user: Any) -> QuerySet[TaskRecord]:
    """Records ``user`` may see under the default rule, newest first."""
    records = TaskRecord.objects.order_by("-created_at", "-pk")
    return records if user.is_staff else records.filter(owner_id=user.pk)


def row_context(record: StateRecord, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """What ``row.html`` shows of a state record; ``dashboard.js`` renders feed records the same way.

    Numbers are strings here: the template would localise them ("42,5").
    """
    shown = display(record, labels)
    created = record.get("created_at")
    return {
        "task": record.get("task") or "",
        # A task launched before titles existed is named by its task name.
        "title": record.get("title") or record.get("task") or "",
        "state": shown["state"],
        "state_label": shown["state_label"],
        "seq": str(record.get("seq") or 0),
        "created": repr(float(created)) if isinstance(created, (int, float)) else "",
        # Running without a known percent is indeterminate (no value); anything else shows a value.
        "indeterminate": shown["indeterminate"],
        "percent": f"{shown['percent']:g}" if shown["percent"] is not None else "0",
        "percent_text": shown["percent_text"],
        "message": shown["message"],
        # "Stage 2 of 3: Process" while a stage of the task is current, else "".
        "stage_text": shown["stage_text"],
        # A group's parent: "1,000 parts: 812 done, 3 failed, 185 running", from its record's counts.
        "group_text": shown["group_text"],
        # A succeeded task's result link and downloads (_web/results.py; dashboard.js redraws them).
        "results": display_results(record),
        "final": shown["final"],
    }


@never_cache
@require_GET
@login_required
def my_tasks(request: HttpRequest) -> HttpResponse:
    """The page, or for htmx-style polls (``HX-Request: true``) only its rows: the fallback when WebSockets fail."""
    manager = resolve_manager()
    labels = state_labels()
    rows = []
    for row in visible_records(request.user)[:LIMIT]:
        record = manager.get_progress(row.task_name) or _from_row(row)  # the cache is fresher than the row
        # The manager decides, as on every transport: an overridden can_view narrows this page too.
        if may_view(manager, request.user, row.task_name, record):
            rows.append(row_context(record, labels))
    rows_only = request.headers.get("HX-Request") == "true"
    context: dict[str, Any] = {"rows": rows, "task_url": task_url_prefix()}
    if not rows_only:
        context.update(
            poll_ms=str(max(100, round(get_settings().poll_interval * 1000))),
            ws_url=DEFAULT_WS_PATH,
            limit=str(LIMIT),
            i18n=json.dumps(i18n(), separators=(",", ":")),
            blank_row=row_context({"task": "", "state": "queued"}, labels),
        )
    template = "realtime_async_dashboard/rows.html" if rows_only else "realtime_async_dashboard/my_tasks.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@never_cache
@require_GET
@login_required
def task_page(request: HttpRequest, task_name: str) -> HttpResponse:
    """One task: its live widget, with stages, log and results, for as long as its record is kept.

    404 for unknown and forbidden tasks alike, as everywhere. A task whose
    record expired (``FINAL_STATE_TTL``) but whose row is still in the database
    gets the row, and a note that its log is no longer kept.
    """
    manager = resolve_manager()
    record = visible_record(manager, request.user, task_name)
    row = None
    if record is None:
        row = visible_records(request.user).filter(task_name=task_name).first()
        if row is None or not may_view(manager, request.user, task_name, _from_row(row)):
            raise Http404
    context = {"task_name": task_name, "live": record is not None}
    context["row"] = row_context(record or _from_row(cast(TaskRecord, row)))
    return render(request, "realtime_async_dashboard/task.html", context)


def task_url_prefix() -> str:
    """The path of a task's page without the name (``"/tasks/"``); "" when this app's URLs are not included."""
    try:
        return reverse("realtime_async_dashboard:task", args=["-"])[:-2]
    except NoReverseMatch:
        return ""


def _from_row(row: TaskRecord) -> StateRecord:
    """A state record from the database row, for tasks the cache forgot."""
    return {
        "task": row.task_name,
        "title": row.title or None,
        "state": cast(State, row.state),
        "message": row.message,
        "percent": row.percent,
        "error": row.error or None,
        "owner": row.owner_id,
        "created_at": row.created_at.timestamp() if row.created_at else None,
    }
