"""The live "my tasks" page: a user's own tasks, every task for staff."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from realtime_async.async_manager import AsyncManager
from realtime_async.conf import get_settings
from realtime_async.contrib.dashboard.models import TaskRecord

__all__ = ["LIMIT", "my_tasks", "visible_records"]

#: Rows on the page; older tasks are in the admin.
LIMIT = 50


def visible_records(user: Any) -> QuerySet[TaskRecord]:
    """Records ``user`` may see under the default rule, newest first."""
    records = TaskRecord.objects.order_by("-created_at", "-pk")
    return records if user.is_staff else records.filter(owner_id=user.pk)


@never_cache
@require_GET
@login_required
def my_tasks(request: HttpRequest) -> HttpResponse:
    """The page, or for htmx polls only its table (the fallback when WebSockets fail)."""
    manager = AsyncManager.resolve_manager()
    rows = []
    for row in visible_records(request.user)[:LIMIT]:
        live = manager.get_progress(row.task_name)  # the cache is fresher than the record
        if live is not None and not manager.can_view(request.user, live):
            continue
        rows.append({"row": row, "record": live or _from_row(row)})
    template = (
        "realtime_async_dashboard/rows.html"
        if getattr(request, "htmx", False)
        else ("realtime_async_dashboard/my_tasks.html")
    )
    return render(request, template, {"rows": rows, "poll_interval": get_settings().poll_interval})


def _from_row(row: TaskRecord) -> dict[str, Any]:
    return {
        "task": row.task_name,
        "state": row.state,
        "message": row.message,
        "percent": row.percent,
        "error": row.error or None,
    }
