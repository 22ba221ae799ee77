"""An admin with async actions, driven by tests/system/test_browser_admin.py."""

from __future__ import annotations

from django.contrib import admin

from realtime_async.admin import AsyncActionsMixin, async_action
from tests.testapp.models import Widget


@admin.register(Widget)
class WidgetAdmin(AsyncActionsMixin, admin.ModelAdmin):
    list_display = ["name", "rebuilds"]
    actions = [
        # A second a widget: long enough for the task's page to load and watch it move on a busy machine.
        async_action(
            "tests.testapp.workers.admin_rebuild",
            description="Rebuild in the background",
            task_kwargs={"delay": 1.0},
        ),
        # The same worker, long enough to act while it runs (conflicts, cancel).
        async_action(
            "tests.testapp.workers.admin_rebuild",
            description="Rebuild slowly in the background",
            task_kwargs={"delay": 10},
            name="rebuild_slowly",
        ),
        # One group of a part per two widgets, watched as one task.
        async_action(
            "tests.testapp.workers.admin_rebuild",
            description="Rebuild in parallel",
            title="Rebuild",
            chunk_size=2,
            name="rebuild_in_parallel",
        ),
    ]
