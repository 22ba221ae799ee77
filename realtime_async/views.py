"""The HTTP endpoints: polling (the same state as the WebSocket) and cancelling.

``GET <prefix>/realtime-async/progress/<task_name>/`` answers (see ``docs/protocol.md``):

- JSON, the WebSocket ``progress`` envelope, by default and for ``Accept: application/json``;
- for htmx requests, the widget's HTML fragment, which polls itself until the task is final;
- ``286`` once the task is final (htmx stops polling), ``404`` for unknown and
  forbidden tasks alike, ``304`` when ``If-None-Match`` holds the current ``ETag``.

Every answer is marked never to be cached: the state changes under the same URL.

``POST <prefix>/realtime-async/cancel/<task_name>/`` (with Django's CSRF token)
cancels a task: ``202`` when accepted, ``404`` for unknown and invisible tasks
alike, ``403`` when ``can_cancel`` refuses. ``_core.access`` decides, for these
views as for every other transport.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.http import parse_etags
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling

from realtime_async._core.access import cancel_outcome, visible_record
from realtime_async._core.managers import resolve_manager
from realtime_async._core.records import StateRecord, is_final
from realtime_async.protocol import (
    FORBIDDEN_MESSAGE,
    NOT_FOUND_MESSAGE,
    cancel_accepted_frame,
    error_frame,
    progress_envelope,
)
from realtime_async.widgets import render_fragment

__all__ = ["cancel_view", "progress_view"]

logger = logging.getLogger("realtime_async")

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_MAX_LABEL = 200
# No task name in it: a 404 says nothing about the name it answers.
_NOT_FOUND_JSON = error_frame("not_found", NOT_FOUND_MESSAGE)
_FORBIDDEN_JSON = error_frame("forbidden", FORBIDDEN_MESSAGE)


def _every_answer(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Mark every answer of ``view``, its ``405`` included, as never cached and varying with the viewer.

    ``Cookie`` always: the session decides, and a header set only when the
    session was read would tell a forbidden task from an unknown one.
    """
    return never_cache(vary_on_headers("Accept", "HX-Request", "Cookie")(view))


@_every_answer
@require_GET
def progress_view(request: HttpRequest, task_name: str) -> HttpResponse:
    """The task's state record as JSON or an htmx fragment; 404 for unknown and forbidden tasks alike."""
    as_html = _wants_html(request)
    token = request.GET.get("token") or None
    try:
        record = visible_record(resolve_manager(), getattr(request, "user", None), task_name, token=token)
    except Exception:  # the store is down, or a custom can_view() failed: no detail for the client
        logger.exception("realtime_async: polling %.200r failed", task_name)
        return _unavailable()
    if record is None:
        return _not_found(as_html)

    label = request.GET.get("label", "")[:_MAX_LABEL] or None
    # The fragment holds its own URL (query string included) and label, so they
    # belong to its ETag; the JSON depends on the record alone.
    etag = _etag(task_name, record, f"html:{request.GET.urlencode()}" if as_html else "json")
    if etag in (matches := _if_none_match(request)) or "*" in matches:
        not_modified = HttpResponseNotModified()
        not_modified["ETag"] = etag
        return not_modified

    if as_html:
        body: str = render_fragment(task_name, record, htmx_url=request.get_full_path(), label=label)
        content_type = _HTML
    else:
        body = progress_envelope(task_name, dict(record))
        content_type = _JSON
    response = (HttpResponseStopPolling if is_final(record) else HttpResponse)(body, content_type=content_type)
    response["ETag"] = etag
    return response


@_every_answer
@require_POST
def cancel_view(request: HttpRequest, task_name: str) -> HttpResponse:
    """Cancel the task: 202 when accepted, 404 for unknown and invisible tasks alike, 403 when refused."""
    token = request.GET.get("token") or None
    try:
        outcome = cancel_outcome(resolve_manager(), getattr(request, "user", None), task_name, token=token)
    except Exception:  # the store or the broker is down, or a hook failed: no detail for the client
        logger.exception("realtime_async: cancelling %.200r failed", task_name)
        return _unavailable()
    if outcome == "not_found":
        return HttpResponse(_NOT_FOUND_JSON, status=404, content_type=_JSON)
    if outcome == "forbidden":
        return HttpResponse(_FORBIDDEN_JSON, status=403, content_type=_JSON)
    return HttpResponse(cancel_accepted_frame(task_name), status=202, content_type=_JSON)


def _wants_html(request: HttpRequest) -> bool:
    """htmx gets HTML unless it asks for JSON first; everyone else gets JSON."""
    htmx = bool(getattr(request, "htmx", False)) or request.headers.get("HX-Request") == "true"
    return htmx and request.get_preferred_type(["text/html", _JSON]) != _JSON


def _etag(task_name: str, record: StateRecord, variant: str) -> str:
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


def _unavailable() -> HttpResponse:
    """The answer when the store, the broker or a hook fails: retry soon, no detail for the client."""
    response = HttpResponse("Service unavailable.", status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = "2"
    return response
