"""ASGI routing of the progress protocol (``docs/protocol.md``): the WebSocket URL patterns and the HTTP router.

A project's ``asgi.py`` wraps them::

    application = ProtocolTypeRouter({
        "http": ProgressHttpRouter(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    })

``ProgressHttpRouter`` is optional: without it Django serves every endpoint,
only at a higher cost (see its docstring).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.http.request import split_domain_port, validate_host
from django.urls import NoReverseMatch, URLPattern, path, re_path, reverse
from django.utils.http import http_date, parse_etags

from realtime_async._core.managers import resolve_manager
from realtime_async._core.naming import validate_task_name
from realtime_async._core.store import RedisStore, get_store, shard_of
from realtime_async._core.store.state_reader import StateReader, usable_for
from realtime_async._delivery.events import HEADERS, Opened, open_stream, parse_query, write_stream
from realtime_async._web import etags
from realtime_async.consumers import ProgressConsumer, TaskProgressConsumer
from realtime_async.protocol import counter_text

__all__ = ["ProgressHttpRouter", "tune_gc", "websocket_urlpatterns"]

logger = logging.getLogger("realtime_async")

websocket_urlpatterns: list[URLPattern] = [
    path("ws/realtime-async/", ProgressConsumer.as_asgi(), name="realtime-async-ws"),
    # Any name at all, empty or holding slashes, rather than the task name
    # pattern: a bad name must get close code 4404 from the consumer. A URL the
    # router cannot match fails the handshake with HTTP 500 and a traceback in
    # the server's log, for every client who asks.
    re_path(
        r"^ws/realtime-async/task/(?P<task_name>.*)/$", TaskProgressConsumer.as_asgi(), name="realtime-async-ws-task"
    ),
    # The rest of the per-task URLs (no name, no trailing slash): no task either, 4404.
    re_path(r"^ws/realtime-async/task(?:/|$)", TaskProgressConsumer.as_asgi()),
]

_MARK = "RA-task-name-0"
#: The headers an unchanged poll is decided by.
_POLL_HEADERS = frozenset((b"host", b"if-none-match", b"hx-request", b"cookie"))
#: What Django's ``never_cache`` and the polling view's ``Vary`` put on a ``304``.
_NOT_MODIFIED_HEADERS = [
    (b"cache-control", b"max-age=0, no-cache, no-store, must-revalidate, private"),
    (b"vary", b"Accept, HX-Request, Cookie"),
]


class ProgressHttpRouter:
    """Serve realtime_async's event streams and unchanged polls straight from ASGI; everything else by ``application``.

    Under ASGI every Django request pays for the handler: the ``request_started``
    and ``request_finished`` signals and each ``MiddlewareMixin`` middleware run
    in a thread (``sync_to_async``), several hops per request. That is most of
    what a poll used to cost. This router answers two requests before Django:

    - ``GET`` of the events URL (``realtime_async:events``): the stream, in a
      coroutine, with the server's own ``send`` for backpressure
      (``_delivery.events``). The session cookie gives the user, as Channels'
      ``AuthMiddlewareStack`` would (one thread hop per stream, not per record).
    - ``GET`` of the polling URL (``realtime_async:progress``) whose
      ``If-None-Match`` holds an ETag issued for the current state to the same
      credentials less than a minute ago (``_web.etags``): a ``304`` after one
      Redis read (``HGET`` on a pipelined connection, ``_core.store.state_reader``),
      no thread, no middleware. Anything else (a changed state, an
      htmx request, ``?parts=1``, an old or foreign ETag, a store that is not
      Redis) goes to Django, which checks ``can_view`` and answers in full.

    No Django middleware runs for these two: ``ALLOWED_HOSTS`` is checked here
    (a bad ``Host`` goes to Django, which answers 400); the session is read for
    streams only; a ``304`` carries Django's caching headers and no body, so
    security headers meant for content do not apply. The paths are found by
    reversing the URL names once, so ``include("realtime_async.urls")`` under
    any prefix works.
    """

    def __init__(self, application: Any) -> None:
        self.application = application
        self._paths: tuple[str, str, str] | None = None
        #: The running loop's pipelined reader of each Redis server of the store (None where it cannot go).
        self._redis: tuple[asyncio.AbstractEventLoop, dict[RedisStore, StateReader | None]] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET":
            events, prefix, suffix = self._paths or self._reverse()
            request_path = _path(scope)
            if request_path == events and _host_allowed(headers := _headers(scope)):
                await self._events(scope, receive, send, headers)
                return
            if prefix and request_path.startswith(prefix) and request_path.endswith(suffix):
                task = request_path[len(prefix) : len(request_path) - len(suffix)]
                if await self._not_modified(scope, send, task):
                    return
        await self.application(scope, receive, send)

    def _reverse(self) -> tuple[str, str, str]:
        try:
            events = reverse("realtime_async:events")
            prefix, _, suffix = reverse("realtime_async:progress", kwargs={"task_name": _MARK}).rpartition(_MARK)
        except NoReverseMatch:
            logger.warning("realtime_async: ProgressHttpRouter found no realtime_async URLs; Django serves them all")
            events, prefix, suffix = "\0", "", ""
        self._paths = (events, prefix, suffix)
        return self._paths

    async def _events(self, scope: dict[str, Any], receive: Any, send: Any, headers: dict[str, str]) -> None:
        query = parse_query(_query(scope), headers.get("last-event-id"))
        user = await _user(parse_cookie(headers.get("cookie", "")))
        opened = await open_stream(user, scope.get("client"), query)
        if not isinstance(opened, Opened):
            raw = [(b"content-type", opened.content_type.encode())] + _encode(opened.headers)
            await send({"type": "http.response.start", "status": opened.status, "headers": raw})
            await send({"type": "http.response.body", "body": opened.body.encode()})
            return
        await send({"type": "http.response.start", "status": 200, "headers": _encode(HEADERS)})
        await write_stream(opened, send, receive)

    async def _not_modified(self, scope: dict[str, Any], send: Any, task: str) -> bool:
        """Answer ``304`` when the request proves it holds the current state; False to let Django answer."""
        headers = _headers(scope, _POLL_HEADERS)
        presented = headers.get("if-none-match")
        if not presented or headers.get("hx-request") == "true" or not _host_allowed(headers):
            return False
        query = dict(_query(scope))  # the last value of each, as Django's QueryDict.get
        log_after = counter_text(query["log_after"]) if "log_after" in query else None
        if "parts" in query or ("log_after" in query and log_after is None):
            return False
        store = get_store()
        try:
            validate_task_name(task)
            shard = shard_of(store, task)
            if shard is None or (reader := self._reader(shard)) is None:
                return False
            stored = await reader.hget(shard.state_key(task), "rec")
            record = json.loads(stored) if stored is not None else None
        except Exception:  # an invalid name, a store that is down or busy: Django gives the answer
            return False
        if not isinstance(record, dict):
            return False
        token = query.get("token") or None
        viewer = etags.credentials(parse_cookie(headers.get("cookie", "")).get(settings.SESSION_COOKIE_NAME), token)
        tag = etags.matches(
            parse_etags(presented), task, record, etags.json_variant(log_after), viewer, max_age=etags.FAST_PATH_MAX_AGE
        )
        if tag is None or (token is not None and not resolve_manager().check_watch_token(token, task)):
            return False
        response = [(b"etag", tag.encode()), (b"expires", http_date().encode()), *_NOT_MODIFIED_HEADERS]
        await send({"type": "http.response.start", "status": 304, "headers": response})
        await send({"type": "http.response.body", "body": b""})
        return True

    async def aclose(self) -> None:
        """Close the fast path's Redis connection (tests; a server process just exits)."""
        readers, self._redis = self._redis, None
        for reader in readers[1].values() if readers is not None else ():
            if reader is not None:
                await reader.aclose()

    def _reader(self, shard: RedisStore) -> StateReader | None:
        """This loop's pipelined reader of ``shard`` (None where it cannot go: TLS, Sentinel, for two)."""
        loop = asyncio.get_running_loop()
        if self._redis is None or self._redis[0] is not loop:
            self._redis = (loop, {})
        readers = self._redis[1]
        if shard not in readers:
            address = usable_for(shard.client)
            readers[shard] = StateReader(address) if address is not None else None
        return readers[shard]


#: Allocations between two collections of the youngest generation in a tuned server process (CPython: 700).
GC_THRESHOLD = 10_000


def tune_gc(*, threshold: int | None = GC_THRESHOLD, freeze: bool = True) -> None:
    """Keep the cyclic garbage collector from pausing a server process that holds many connections.

    Call it once at the end of ``asgi.py``, after the application is built. A
    server holding many connections keeps many objects alive, and CPython's full
    collection walks them all: at 1,000 keep-alive pollers on daphne each full
    collection stopped the process for 60 to 130 ms, about every two seconds
    (each request's objects live until daphne reaps them, a second later, so
    they reach the oldest generation and trigger the next full collection). This
    does two things, both process-wide:

    - ``freeze``: collect once, then move everything alive (Django, the
      URLconf, every module loaded so far) to the permanent generation
      (``gc.freeze()``), which no collection walks again. Those objects live as
      long as the process anyway. Before a fork (uvicorn ``--workers``, a
      preloading gunicorn) it also keeps pages shared.
    - ``threshold``: collect the youngest generation every ``threshold``
      allocations instead of every 700, so that far fewer short-lived objects
      are caught alive and promoted towards the next full collection. The older
      generations keep their thresholds. ``None`` leaves all three as they are.

    Measured with ``python -m bench --only polling`` (docs/benchmarks.md): p99
    of 1,000 pollers on daphne 80 to 95 ms before, 10 to 12 ms after. Celery
    workers and management commands need none of it; leave it out of them.
    """
    if threshold is not None and threshold < 1:
        raise ValueError(f"tune_gc(threshold={threshold!r}): at least 1 (0 would turn the collector off), or None")
    if freeze:
        gc.collect()
        gc.freeze()
    if threshold is not None:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])


def _path(scope: dict[str, Any]) -> str:
    request_path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    return request_path[len(root) :] if root and request_path.startswith(root) else request_path


def _headers(scope: dict[str, Any], wanted: frozenset[bytes] | None = None) -> dict[str, str]:
    """The request's headers (those in ``wanted`` only, if given) by lower-case name (ASGI gives them lower-case)."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if wanted is None or name in wanted
    }


def _query(scope: dict[str, Any]) -> list[tuple[str, str]]:
    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _encode(headers: Any) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers]


def _host_allowed(headers: dict[str, str]) -> bool:
    """``ALLOWED_HOSTS`` as ``HttpRequest.get_host()`` checks it (with ``DEBUG``'s local defaults)."""
    host = headers.get("host") or ""
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


async def _user(cookies: dict[str, str]) -> Any:
    """The session's user, as Channels' ``AuthMiddlewareStack`` finds it (one thread hop); anonymous without one."""
    key = cookies.get(settings.SESSION_COOKIE_NAME)
    if not key:
        return AnonymousUser()
    from importlib import import_module

    from channels.auth import get_user

    session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    return await get_user({"session": session})
