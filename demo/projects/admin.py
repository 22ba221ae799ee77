from django.contrib import admin

from projects.models import Project, Report
from realtime_async.admin import AsyncActionsMixin, async_action


@admin.register(Project)
class ProjectAdmin(AsyncActionsMixin, admin.ModelAdmin):
    list_display = ["name", "files", "rebuilt_at"]
    actions = [
        async_action(
            "projects.workers.rebuild_projects", description="Rebuild selected projects (live)", title="Rebuild"
        ),
        # One group: a Celery task per two projects, run in parallel, watched as one bar.
        async_action(
            "projects.workers.rebuild_projects",
            description="Rebuild selected projects in parallel (2 per task)",
            title="Rebuild",
            chunk_size=2,
            name="rebuild_in_parallel",
        ),
    ]


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "pages", "generated_at"]
