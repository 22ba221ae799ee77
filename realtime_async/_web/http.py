"""What every HTTP endpoint of the package shares: caching headers, the viewer's record, the 503 answer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.vary import vary_on_headers

from realtime_async._core.access import visible_record
from realtime_async._core.managers import resolve_manager
from realtime_async._core.records import StateRecord

__all__ = ["Unavailable", "every_answer", "unavailable", "viewer_record"]

logger = logging.getLogger("realtime_async")
_View = TypeVar("_View", bound=Callable[..., Any])


class Unavailable(Exception):
    """The store is down, or a custom ``can_view()`` failed: answer ``unavailable()``, with no detail."""


def every_answer(*headers: str) -> Callable[[_View], _View]:
    """Mark every answer of a view, its ``405`` included, as never cached and varying with the viewer.

    ``Cookie`` always: the session decides, and a header set only when the
    session was read would tell a forbidden task from an unknown one.
    """

    def decorate(view: _View) -> _View:
        return never_cache(vary_on_headers(*headers, "Cookie")(view))

    return decorate


def viewer_record(request: HttpRequest, task_name: str, what: str) -> StateRecord | None:
    """The record the request's user (or its ``?token=``) may see; None for unknown and forbidden alike.

    Raises ``Unavailable`` (logged, naming ``what`` failed) when the store or a hook fails.
    """
    token = request.GET.get("token") or None
    try:
        return visible_record(resolve_manager(), getattr(request, "user", None), task_name, token=token)
    except Exception as exc:
        logger.exception("realtime_async: %s %.200r failed", what, task_name)
        raise Unavailable from exc


def unavailable() -> HttpResponse:
    """The answer when the store, the broker or a hook fails: retry soon, no detail for the client."""
    response = HttpResponse("Service unavailable.", status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = "2"
    return response
