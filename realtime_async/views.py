"""The polling endpoint: the same state as the WebSocket, for clients that cannot use one."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from realtime_async.async_manager import AsyncManager

__all__ = ["progress_view"]


@never_cache
@require_GET
def progress_view(request: HttpRequest, task_name: str) -> HttpResponse:
    """The task's state record as JSON; 404 for unknown and forbidden tasks alike."""
    manager = AsyncManager.resolve_manager()
    record: dict[str, Any] | None = manager.get_progress(task_name)
    token = request.GET.get("token")
    allowed = record is not None and (
        manager.can_view(request.user, record) or (token is not None and manager.check_watch_token(token, task_name))
    )
    if not allowed:
        raise Http404("No such task.")
    return JsonResponse({"v": 1, "type": "progress", "task": task_name, "data": record})
