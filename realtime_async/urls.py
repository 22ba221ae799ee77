"""URLs of realtime_async, to ``include("realtime_async.urls")`` in a project's URLconf.

The patterns are ``AsyncManager.get_url()``, ``get_cancel_url()`` and ``get_download_url()``,
so both ways of adding an endpoint serve the same path and view. ``events`` is the
Server-Sent Events stream (``docs/protocol.md``); ``routing.ProgressHttpRouter``
serves it, and unchanged polls, before Django when the project's ``asgi.py`` uses it.
"""

from __future__ import annotations

from django.urls import path

from realtime_async.async_manager import AsyncManager
from realtime_async.views import events_view

__all__ = ["app_name", "urlpatterns"]

app_name = "realtime_async"

urlpatterns = [
    AsyncManager.get_url(name="progress"),
    AsyncManager.get_cancel_url(name="cancel"),
    AsyncManager.get_download_url(name="download"),
    path("realtime-async/events/", events_view, name="events"),
]
