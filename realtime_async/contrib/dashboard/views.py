"""The live "my tasks" page: a user's own tasks, every task for staff.

The rows are rendered here, from the cache's live record where there is one
(fresher than the database's). ``dashboard.js`` then follows the WebSocket
feed (``subscribe_feed``), updating rows and adding new tasks at the top;
when the socket fails it polls this same view, which answers requests marked
``HX-Request: true`` with the rows alone.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from realtime_async.async_manager import AsyncManager
from realtime_async.conf import get_settings
from realtime_async.contrib.dashboard.models import TaskRecord
from realtime_async.progress import FINAL_STATES
from realtime_async.widgets import DEFAULT_WS_PATH, state_labels

__all__ = ["LIMIT", "my_tasks", "row_context", "visible_records"]

#: Rows on the page; older tasks are in the admin.
LIMIT = 50


def visible_records(user: Any) -> QuerySet[TaskRecord]:
    """Records ``user`` may see under the default rule, newest first."""
    records = TaskRecord.objects.order_by("-created_at", "-pk")
    return records if user.is_staff else records.filter(owner_id=user.pk)


def row_context(record: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """What ``row.html`` shows of a state record; ``dashboard.js`` renders feed records the same way.

    Numbers are strings here: the template would localise them ("42,5").
    """
    labels = labels if labels is not None else state_labels()
    state = record.get("state") or "queued"
    raw = record.get("percent")
    percent = min(100.0, max(0.0, float(raw))) if isinstance(raw, (int, float)) else None
    if state in ("failure", "lost"):
        message = record.get("error") or gettext("The task failed.")
    else:
        message = record.get("message") or ""
    created = record.get("created_at")
    return {
        "task": record.get("task") or "",
        "state": state,
        "state_label": labels.get(state, state),
        "seq": str(record.get("seq") or 0),
        "created": repr(float(created)) if isinstance(created, (int, float)) else "",
        # Running without a known percent is indeterminate (no value); anything else shows a value.
        "indeterminate": percent is None and state == "running",
        "percent": f"{percent:g}" if percent is not None else "0",
        "percent_text": f"{math.floor(percent)}%" if percent is not None else "",
        "message": message,
        "final": state in FINAL_STATES,
    }


@never_cache
@require_GET
@login_required
def my_tasks(request: HttpRequest) -> HttpResponse:
    """The page, or for htmx-style polls (``HX-Request: true``) only its rows: the fallback when WebSockets fail."""
    manager = AsyncManager.resolve_manager()
    labels = state_labels()
    rows = []
    for row in visible_records(request.user)[:LIMIT]:
        record = manager.get_progress(row.task_name) or _from_row(row)  # the cache is fresher than the row
        # The manager decides, as on every transport: an overridden can_view narrows this page too.
        if manager.can_view(request.user, record):
            rows.append(row_context(record, labels))
    rows_only = request.headers.get("HX-Request") == "true"
    context: dict[str, Any] = {"rows": rows}
    if not rows_only:
        context.update(
            poll_ms=str(max(100, round(get_settings().poll_interval * 1000))),
            ws_url=DEFAULT_WS_PATH,
            limit=str(LIMIT),
            i18n=json.dumps({"states": labels, "failed": gettext("The task failed.")}, separators=(",", ":")),
            blank_row=row_context({"task": "", "state": "queued"}, labels),
        )
    template = "realtime_async_dashboard/rows.html" if rows_only else "realtime_async_dashboard/my_tasks.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _from_row(row: TaskRecord) -> dict[str, Any]:
    """A state record from the database row, for tasks the cache forgot."""
    return {
        "task": row.task_name,
        "state": row.state,
        "message": row.message,
        "percent": row.percent,
        "error": row.error or None,
        "owner": row.owner_id,
        "created_at": row.created_at.timestamp() if row.created_at else None,
    }
