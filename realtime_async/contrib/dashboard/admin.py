from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from realtime_async.contrib.dashboard.models import TaskRecord

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[TaskRecord]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(TaskRecord)
class TaskRecordAdmin(_ModelAdmin):
    list_display = ["title", "task_name", "state", "percent", "message", "owner_label", "created_at", "finished_at"]
    list_filter = ["state", "created_at", "finished_at"]
    search_fields = ["title", "task_name", "message", "owner_label", "error"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in TaskRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # records come from tasks, never from people

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
