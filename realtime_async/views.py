"""The HTTP endpoints: polling (the same state as the WebSocket) and cancelling.

``GET <prefix>/realtime-async/progress/<task_name>/`` answers (see ``docs/protocol.md``):

- JSON, the WebSocket ``progress`` envelope, by default and for ``Accept: application/json``;
- for htmx requests, the widget's HTML fragment, which polls itself until the task is final;
- ``286`` once the task is final (htmx stops polling), ``404`` for unknown and
  forbidden tasks alike, ``304`` when ``If-None-Match`` holds the current ``ETag``.

Every answer is marked never to be cached: the state changes under the same URL.

``POST <prefix>/realtime-async/cancel/<task_name>/`` (with Django's CSRF token)
cancels a task: ``202`` when accepted, ``404`` for unknown and invisible tasks
alike, ``403`` when ``can_cancel`` refuses. ``cancel_outcome`` decides, for this
view and for the WebSocket ``cancel`` message.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Final, Literal

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.cache import patch_vary_headers
from django.utils.http import parse_etags
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from realtime_async.async_manager import AsyncManager
from realtime_async.progress import FINAL_STATES
from realtime_async.widgets import render_fragment, visible_record

__all__ = ["FORBIDDEN_MESSAGE", "CancelOutcome", "cancel_outcome", "cancel_view", "progress_view"]

logger = logging.getLogger("realtime_async")

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_MAX_LABEL = 200
# No task name in it: a 404 says nothing about the name it answers.
_NOT_FOUND_JSON = '{"v":1,"type":"error","code":"not_found","message":"No such task."}'
#: The public reason of every ``forbidden`` answer to a cancel.
FORBIDDEN_MESSAGE: Final = "You may not cancel this task."
_FORBIDDEN_JSON = json.dumps(
    {"v": 1, "type": "error", "code": "forbidden", "message": FORBIDDEN_MESSAGE}, separators=(",", ":")
)

CancelOutcome = Literal["accepted", "forbidden", "not_found"]


@never_cache
@require_GET
def progress_view(request: HttpRequest, task_name: str) -> HttpResponse:
    """The task's state record as JSON or an htmx fragment; 404 for unknown and forbidden tasks alike."""
    as_html = _wants_html(request)
    token = request.GET.get("token") or None
    try:
        record = visible_record(task_name, user=getattr(request, "user", None), token=token)
    except Exception:  # the store is down, or a custom can_view() failed: no detail for the client
        logger.exception("realtime_async: polling %.200r failed", task_name)
        response = HttpResponse("Service unavailable.", status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = "2"
        return _vary(response)
    if record is None:
        return _vary(_not_found(as_html))

    label = request.GET.get("label", "")[:_MAX_LABEL] or None
    # The fragment holds its own URL (query string included) and label, so they
    # belong to its ETag; the JSON depends on the record alone.
    etag = _etag(task_name, record, f"html:{request.GET.urlencode()}" if as_html else "json")
    if etag in (matches := _if_none_match(request)) or "*" in matches:
        not_modified = HttpResponseNotModified()
        not_modified["ETag"] = etag
        return _vary(not_modified)

    if as_html:
        body: str = render_fragment(task_name, record, htmx_url=request.get_full_path(), label=label)
        content_type = _HTML
    else:
        envelope = {"v": 1, "type": "progress", "task": task_name, "data": record}
        body = json.dumps(envelope, cls=DjangoJSONEncoder, separators=(",", ":"))
        content_type = _JSON
    final = record.get("state") in FINAL_STATES
    response = (HttpResponseStopPolling if final else HttpResponse)(body, content_type=content_type)
    response["ETag"] = etag
    return _vary(response)


@never_cache
@require_POST
def cancel_view(request: HttpRequest, task_name: str) -> HttpResponse:
    """Cancel the task: 202 when accepted, 404 for unknown and invisible tasks alike, 403 when refused."""
    token = request.GET.get("token") or None
    try:
        outcome = cancel_outcome(getattr(request, "user", None), task_name, token=token)
    except Exception:  # the store or the broker is down, or a hook failed: no detail for the client
        logger.exception("realtime_async: cancelling %.200r failed", task_name)
        response = HttpResponse("Service unavailable.", status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = "2"
        return _vary(response)
    if outcome == "not_found":
        return _vary(HttpResponse(_NOT_FOUND_JSON, status=404, content_type=_JSON))
    if outcome == "forbidden":
        return _vary(HttpResponse(_FORBIDDEN_JSON, status=403, content_type=_JSON))
    body = json.dumps({"v": 1, "type": "cancel", "task": task_name, "accepted": True}, separators=(",", ":"))
    return _vary(HttpResponse(body, status=202, content_type=_JSON))


def cancel_outcome(user: Any, task_name: str, *, token: str | None = None) -> CancelOutcome:
    """Cancel ``task_name`` as ``user`` would: ``accepted``, ``forbidden`` or ``not_found``.

    ``not_found`` for unknown tasks and tasks the user may not see (the same
    answer, so names cannot be probed); ``forbidden`` when they may see it but
    ``can_cancel`` says no. A valid watch ``token`` shows a task without letting
    its bearer cancel it: ``forbidden``. A task already final is ``accepted``
    and stays as it is. Synchronous: it reads the cache and may revoke the
    Celery task.
    """
    manager = AsyncManager.resolve_manager()
    record = manager.get_progress(task_name)  # None for an invalid name too
    if record is None:
        return "not_found"
    if not manager.can_view(user, record):
        return "forbidden" if token and manager.check_watch_token(token, task_name) else "not_found"
    if not manager.can_cancel(user, record):
        return "forbidden"
    if record["state"] in FINAL_STATES or manager.cancel(task_name, user=user):
        return "accepted"
    # cancel() refused after all: the task ended meanwhile (nothing left to do) or went away.
    record = manager.get_progress(task_name)
    if record is None:
        return "not_found"
    return "accepted" if record["state"] in FINAL_STATES else "forbidden"


def _wants_html(request: HttpRequest) -> bool:
    """htmx gets HTML unless it asks for JSON first; everyone else gets JSON."""
    htmx = bool(getattr(request, "htmx", False)) or request.headers.get("HX-Request") == "true"
    return htmx and request.get_preferred_type(["text/html", _JSON]) != _JSON


def _etag(task_name: str, record: dict[str, Any], variant: str) -> str:
    # seq names the state; created_at tells a relaunch under the same name
    # (whose seq may start again) from the run a client saw before.
    seed = f"{task_name}\0{record.get('created_at')}\0{variant}"
    return f'"{record.get("seq")}-{hashlib.blake2b(seed.encode(), digest_size=8).hexdigest()}"'


def _if_none_match(request: HttpRequest) -> set[str]:
    # A weak validator names the same state (only a compressor weakens ours).
    return {tag.removeprefix("W/") for tag in parse_etags(request.headers.get("If-None-Match", ""))}


def _not_found(as_html: bool) -> HttpResponse:
    """One answer for unknown and forbidden tasks, byte for byte, whatever the name."""
    if as_html:
        return HttpResponse(render_fragment("", None), status=404, content_type=_HTML)
    return HttpResponse(_NOT_FOUND_JSON, status=404, content_type=_JSON)


def _vary(response: HttpResponse) -> HttpResponse:
    # Cookie always: the session decides, and a header set only when the session
    # was read would tell a forbidden task from an unknown one.
    patch_vary_headers(response, ("Accept", "HX-Request", "Cookie"))
    return response
