"""WebSocket URL patterns of the progress protocol (``docs/protocol.md``).

A project's ``asgi.py`` wraps them in
``AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))``.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from realtime_async.consumers import ProgressConsumer, TaskProgressConsumer

__all__ = ["websocket_urlpatterns"]

websocket_urlpatterns: list[URLPattern] = [
    path("ws/realtime-async/", ProgressConsumer.as_asgi(), name="realtime-async-ws"),
    # ``str`` rather than the task name pattern: a bad name must get close code
    # 4404 from the consumer, not a routing error.
    path("ws/realtime-async/task/<str:task_name>/", TaskProgressConsumer.as_asgi(), name="realtime-async-ws-task"),
]
