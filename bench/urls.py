from __future__ import annotations

from django.urls import include, path

from realtime_async.async_manager import AsyncManager

urlpatterns = [AsyncManager.get_url(name="async-progress")]
try:
    import celery_progress  # noqa: F401
except ImportError:  # the runner refuses celery-progress scenarios without it
    pass
else:
    urlpatterns.append(path("celery-progress/", include("celery_progress.urls")))
