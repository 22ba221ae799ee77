"""ASGI entry point of the demo project: ``daphne asgi:application`` from the repository root.

Your own project's ``asgi.py`` looks the same minus the ``sys.path`` and static
lines (see the README).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "demo"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demoproject.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - after Django is set up
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from realtime_async.routing import ProgressHttpRouter, tune_gc, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The demo serves its own static files; behind a real web server you would not.
        "http": ProgressHttpRouter(ASGIStaticFilesHandler(django_asgi_app)),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
tune_gc()  # last: a server holding many connections pauses far less for garbage collection
