"""URLs of realtime_async, to ``include("realtime_async.urls")`` in a project's URLconf.

The pattern is ``AsyncManager.get_url()``, so both ways of adding the polling
endpoint serve the same path and view.
"""

from __future__ import annotations

from realtime_async.async_manager import AsyncManager

__all__ = ["app_name", "urlpatterns"]

app_name = "realtime_async"

urlpatterns = [AsyncManager.get_url(name="progress")]
