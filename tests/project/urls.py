from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from realtime_async.async_manager import AsyncManager

urlpatterns = [
    path("admin/", admin.site.urls),
    AsyncManager.get_url(name="async-progress"),
    # The same endpoint again, the includable way (the widget prefers this name).
    path("ra/", include("realtime_async.urls")),
    path("demo/", include("tests.testapp.urls")),
]
