"""ASGI entry point of the test project, laid out as the README tells users to.

But for ``tune_gc()``: tests import this module into the test process too,
where freezing the heap and moving the collector's thresholds would change
every later test (``tests/unit/test_tune_gc.py`` tests it in a fresh process).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - after Django is set up
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from realtime_async.routing import ProgressHttpRouter, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Static files served by the app itself, only because tests have no web server in front.
        "http": ProgressHttpRouter(ASGIStaticFilesHandler(django_asgi_app)),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
