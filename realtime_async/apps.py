from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed


class RealtimeAsyncConfig(AppConfig):
    name = "realtime_async"
    verbose_name = "Realtime async"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from realtime_async import checks  # noqa: F401 - registers the system checks
        from realtime_async._core import store
        from realtime_async.conf import reset_on_setting_changed

        setting_changed.connect(reset_on_setting_changed, dispatch_uid="realtime_async.conf")
        setting_changed.connect(store.reset, dispatch_uid="realtime_async.store")
