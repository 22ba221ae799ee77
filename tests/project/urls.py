from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from realtime_async.async_manager import AsyncManager

urlpatterns = [
    path("admin/", admin.site.urls),
    AsyncManager.get_url(name="async-progress"),
    AsyncManager.get_cancel_url(name="async-cancel"),
    AsyncManager.get_download_url(name="async-download"),
    # The same endpoints again, the includable way (the widget prefers these names).
    path("ra/", include("realtime_async.urls")),
    path("tasks/", include("realtime_async.contrib.dashboard.urls")),
    path("demo/", include("tests.testapp.urls")),
]
