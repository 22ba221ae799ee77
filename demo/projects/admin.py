from django.contrib import admin

from projects.models import Project, Report
from realtime_async.admin import AsyncActionsMixin, async_action


@admin.register(Project)
class ProjectAdmin(AsyncActionsMixin, admin.ModelAdmin):
    list_display = ["name", "files", "rebuilt_at"]
    actions = [
        async_action(
            "projects.workers.rebuild_projects", description="Rebuild selected projects (live)", title="Rebuild"
        )
    ]


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "pages", "generated_at"]
