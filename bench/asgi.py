"""ASGI apps of the benchmark: realtime_async's routes, the tutorial consumer, celery-progress's consumer.

Every WebSocket sits behind the same ``AllowedHostsOriginValidator(AuthMiddlewareStack(...))``
that ``docs/protocol.md`` tells projects to use, so each contender pays the same middleware.
Two applications differ in HTTP only: ``application`` serves it through
``ProgressHttpRouter(django_asgi_app)`` (the SSE stream, unchanged polls answered without
Django's handler), as a project following the docs does; ``plain_application`` sends every
request to Django's ASGI handler, the path before the router, kept so that one run measures both.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - after Django is set up
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from bench.naive import NaiveProgressConsumer  # noqa: E402
from realtime_async._delivery import backpressure  # noqa: E402
from realtime_async.routing import websocket_urlpatterns  # noqa: E402

if os.environ.get("RA_BENCH_BACKPRESSURE") == "0":
    # The slow-readers scenario's "before" figures: every frame written to its connection as it comes.
    backpressure.ENABLED = False

routes = [
    *websocket_urlpatterns,
    path("ws/bench/naive/<str:group>/", NaiveProgressConsumer.as_asgi()),
]
try:
    from celery_progress.websockets.routing import urlpatterns as celery_progress_routes
except ImportError:  # the runner refuses celery-progress scenarios without it (see the bench extra)
    celery_progress_routes = []
routes += celery_progress_routes

websocket_app = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes)))
plain_application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_app})
try:
    from realtime_async.routing import ProgressHttpRouter  # noqa: E402
except ImportError:  # a package without it: the runner leaves out, and reports, what needs it
    application = plain_application
else:
    application = ProtocolTypeRouter({"http": ProgressHttpRouter(django_asgi_app), "websocket": websocket_app})

try:
    from realtime_async.routing import tune_gc  # noqa: E402
except ImportError:  # a package without it: CPython's defaults, as before
    pass
else:
    # As the README's asgi.py does; RA_BENCH_GC=0 measures CPython's defaults (docs/benchmarks.md).
    if os.environ.get("RA_BENCH_GC") != "0":
        tune_gc()
