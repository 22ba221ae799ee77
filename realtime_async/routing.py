"""WebSocket URL patterns of the progress protocol (``docs/protocol.md``).

A project's ``asgi.py`` wraps them in
``AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))``.
"""

from __future__ import annotations

from django.urls import URLPattern, path, re_path

from realtime_async.consumers import ProgressConsumer, TaskProgressConsumer

__all__ = ["websocket_urlpatterns"]

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
