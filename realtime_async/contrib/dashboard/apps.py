from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy


class DashboardConfig(AppConfig):
    name = "realtime_async.contrib.dashboard"
    label = "realtime_async_dashboard"
    verbose_name = gettext_lazy("Background tasks")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from realtime_async.contrib.dashboard.recorder import on_task_lifecycle
        from realtime_async.signals import task_lifecycle

        task_lifecycle.connect(on_task_lifecycle, dispatch_uid="realtime_async.contrib.dashboard")
