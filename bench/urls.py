from __future__ import annotations

from django.urls import include, path

# realtime_async's endpoints as projects include them: ``ProgressHttpRouter`` finds the polling and
# events URLs by their names in the ``realtime_async`` namespace.
urlpatterns = [path("", include("realtime_async.urls"))]
try:
    import celery_progress  # noqa: F401
except ImportError:  # the runner refuses celery-progress scenarios without it
    pass
else:
    urlpatterns.append(path("celery-progress/", include("celery_progress.urls")))
