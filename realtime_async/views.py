"""The HTTP endpoints: polling (the same state as the WebSocket) and cancelling.

``GET <prefix>/realtime-async/progress/<task_name>/`` answers (see ``docs/protocol.md``):

- JSON, the WebSocket ``progress`` envelope, by default and for ``Accept: application/json``;
- for htmx requests, the widget's HTML fragment, which polls itself until the task is final;
- ``286`` once the task is final (htmx stops polling), ``404`` for unknown and
  forbidden tasks alike, ``304`` when ``If-None-Match`` holds the current ``ETag``;
- with ``?parts=1``, JSON only: a group parent's parts, a ``breakdown`` envelope
  (``_web/breakdown.py``); ``400`` for a task that is not a group's parent.

Every answer is marked never to be cached: the state changes under the same URL.

``POST <prefix>/realtime-async/cancel/<task_name>/`` (with Django's CSRF token)
cancels a task: ``202`` when accepted, ``404`` for unknown and invisible tasks
alike, ``403`` when ``can_cancel`` refuses. ``_core.access`` decides, for these
views as for every other transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.utils.http import parse_etags
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from realtime_async._core.access import cancel_outcome
from realtime_async._core.managers import resolve_manager
from realtime_async._core.records import StateRecord, is_final
from realtime_async._core.store import get_store
from realtime_async._delivery.events import HEADERS, Opened, open_stream, parse_query
from realtime_async._web import etags
from realtime_async._web.breakdown import breakdown
from realtime_async._web.http import Unavailable, every_answer, unavailable, viewer_record
from realtime_async.protocol import (
    FORBIDDEN_MESSAGE,
    NOT_FOUND_MESSAGE,
    breakdown_envelope,
    cancel_accepted_frame,
    counter_text,
    error_frame,
    progress_envelope,
)
from realtime_async.widgets import render_fragment

__all__ = ["cancel_view", "events_view", "progress_view"]

logger = logging.getLogger("realtime_async")

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_MAX_LABEL = 200
# No task name in it: a 404 says nothing about the name it answers.
_NOT_FOUND_JSON = error_frame("not_found", NOT_FOUND_MESSAGE)
_FORBIDDEN_JSON = error_frame("forbidden", FORBIDDEN_MESSAGE)
_BAD_LOG_AFTER_JSON = error_frame("bad_request", "Invalid field: log_after.")
_BAD_PARTS_JSON = error_frame("bad_request", "Invalid field: parts (1 asks for a group's parts).")
_NOT_A_GROUP_JSON = error_frame("bad_request", "Not a group: only a group's parent task has parts.")


@every_answer("Accept", "HX-Request")
@require_GET
def progress_view(request: HttpRequest, task_name: str) -> HttpResponse:
    """The task's state record as JSON or an htmx fragment; 404 for unknown and forbidden tasks alike."""
    as_html = _wants_html(request)
    try:
        record = viewer_record(request, task_name, "polling")
    except Unavailable:
        return unavailable()
    if record is None:
        return _not_found(as_html and "parts" not in request.GET)
    if "parts" in request.GET:
        return _breakdown(request, task_name, record)

    label = request.GET.get("label", "")[:_MAX_LABEL] or None
    log_after = _log_after(request)
    if log_after == -1:
        return HttpResponse(_BAD_LOG_AFTER_JSON, status=400, content_type=_JSON)
    # The fragment holds its own URL (query string included) and label, so they
    # belong to its ETag; the JSON depends on the record and the log lines asked for.
    variant = f"html:{request.GET.urlencode()}" if as_html else etags.json_variant(log_after)
    viewer = etags.credentials(request.COOKIES.get(settings.SESSION_COOKIE_NAME), request.GET.get("token"))
    etag = etags.issue(task_name, record, variant, viewer)
    presented = _if_none_match(request)
    if "*" in presented or etags.matches(presented, task_name, record, variant, viewer):
        return _not_modified_response(etag)

    if as_html:
        body: str = render_fragment(task_name, record, htmx_url=request.get_full_path(), label=label)
        content_type = _HTML
    else:
        if log_after is not None and "log" in record:  # lines come with the state: one answer, one ETag
            try:
                record["log"] = get_store().read_log(task_name, log_after).info()
            except Exception:
                logger.exception("realtime_async: reading the log of %.200r failed", task_name)
                return unavailable()
        body = progress_envelope(task_name, dict(record))
        content_type = _JSON
    response = (HttpResponseStopPolling if is_final(record) else HttpResponse)(body, content_type=content_type)
    response["ETag"] = etag
    return response


@every_answer("Accept", "HX-Request")
@require_POST
def cancel_view(request: HttpRequest, task_name: str) -> HttpResponse:
    """Cancel the task: 202 when accepted, 404 for unknown and invisible tasks alike, 403 when refused."""
    token = request.GET.get("token") or None
    try:
        outcome = cancel_outcome(resolve_manager(), getattr(request, "user", None), task_name, token=token)
    except Exception:  # the store or the broker is down, or a hook failed: no detail for the client
        logger.exception("realtime_async: cancelling %.200r failed", task_name)
        return unavailable()
    if outcome == "not_found":
        return HttpResponse(_NOT_FOUND_JSON, status=404, content_type=_JSON)
    if outcome == "forbidden":
        return HttpResponse(_FORBIDDEN_JSON, status=403, content_type=_JSON)
    return HttpResponse(cancel_accepted_frame(task_name), status=202, content_type=_JSON)


@every_answer()
@require_GET
async def events_view(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The task records as Server-Sent Events (``_delivery.events``); ``ProgressHttpRouter`` serves it faster."""
    pairs = [(name, value) for name, values in request.GET.lists() for value in values]
    query = parse_query(pairs, request.headers.get("Last-Event-ID"))
    opened = await open_stream(await request.auser(), (request.META.get("REMOTE_ADDR", ""),), query)
    if not isinstance(opened, Opened):
        response = HttpResponse(opened.body, status=opened.status, content_type=opened.content_type)
        for name, value in opened.headers:
            response[name] = value
        return response
    return _EventStreamResponse(opened)


class _EventStreamResponse(StreamingHttpResponse):
    """The stream's chunks, released when Django closes the response (the stream ended, or the client left).

    Django closes a response from a thread and does not close an async
    iterator it stopped reading, so ``close()`` hands the release to the loop.
    """

    def __init__(self, opened: Opened) -> None:
        super().__init__(self._chunks(opened))
        self._opened, self._loop = opened, asyncio.get_running_loop()
        for name, value in HEADERS:
            self[name] = value

    @staticmethod
    async def _chunks(opened: Opened) -> AsyncIterator[bytes]:
        try:
            async for chunk in opened.stream.chunks():
                yield chunk
        finally:
            await opened.release()

    def close(self) -> None:
        super().close()
        if not self._opened.released and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: _background(self._opened.release()))


_pending: set[asyncio.Task[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def _breakdown(request: HttpRequest, task_name: str, record: StateRecord) -> HttpResponse:
    """``?parts=1``: the parts of a group's parent, JSON only; its viewers are the parent's (same owner)."""
    if request.GET.get("parts") != "1":
        return HttpResponse(_BAD_PARTS_JSON, status=400, content_type=_JSON)
    if not record.get("group"):
        return HttpResponse(_NOT_A_GROUP_JSON, status=400, content_type=_JSON)
    try:
        entries = get_store().group_entries(task_name)
    except Exception:
        logger.exception("realtime_async: reading the parts of %.200r failed", task_name)
        return unavailable()
    body = breakdown_envelope(task_name, dict(breakdown(task_name, record, entries)))
    # The parts can change between two publishes of the parent (its seq): the ETag names the answer's bytes.
    etag = _etag(task_name, record, f"parts:{hashlib.blake2b(body.encode(), digest_size=8).hexdigest()}")
    if (not_modified := _not_modified(request, etag)) is not None:
        return not_modified
    response = (HttpResponseStopPolling if is_final(record) else HttpResponse)(body, content_type=_JSON)
    response["ETag"] = etag
    return response


def _log_after(request: HttpRequest) -> int | None:
    """``?log_after=N``: None when absent, -1 when it is not a line number."""
    value = request.GET.get("log_after")
    if value is None:
        return None
    number = counter_text(value)
    return -1 if number is None else number


def _wants_html(request: HttpRequest) -> bool:
    """htmx gets HTML unless it asks for JSON first; everyone else gets JSON."""
    htmx = bool(getattr(request, "htmx", False)) or request.headers.get("HX-Request") == "true"
    return htmx and request.get_preferred_type(["text/html", _JSON]) != _JSON


def _etag(task_name: str, record: StateRecord, variant: str) -> str:
    # seq names the state; created_at tells a relaunch under the same name
    # (whose seq may start again) from the run a client saw before.
    seed = f"{task_name}\0{record.get('created_at')}\0{variant}"
    return f'"{record.get("seq")}-{hashlib.blake2b(seed.encode(), digest_size=8).hexdigest()}"'


def _not_modified(request: HttpRequest, etag: str) -> HttpResponse | None:
    """The ``304`` when ``If-None-Match`` holds ``etag`` (or ``*``); None otherwise."""
    if etag not in (matches := _if_none_match(request)) and "*" not in matches:
        return None
    return _not_modified_response(etag)


def _not_modified_response(etag: str) -> HttpResponse:
    not_modified = HttpResponseNotModified()
    not_modified["ETag"] = etag
    return not_modified


def _if_none_match(request: HttpRequest) -> set[str]:
    # A weak validator names the same state (only a compressor weakens ours).
    return {tag.removeprefix("W/") for tag in parse_etags(request.headers.get("If-None-Match", ""))}


def _not_found(as_html: bool) -> HttpResponse:
    """One answer for unknown and forbidden tasks, byte for byte, whatever the name."""
    if as_html:
        return HttpResponse(render_fragment("", None), status=404, content_type=_HTML)
    return HttpResponse(_NOT_FOUND_JSON, status=404, content_type=_JSON)
