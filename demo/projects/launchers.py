"""What the demo's buttons, its management command and its admin launch."""

from typing import Any

from projects.models import Project, Report
from realtime_async.async_manager import AsyncManager

KINDS = {
    "rebuild": "Rebuild the first project",
    "report": "Generate a report",
    "import": "Import customers (fails on purpose)",
    "cleanup": "Long archive job (try Cancel)",
}


def launch_kind(kind: str, user: Any = None) -> str:
    manager = AsyncManager()
    if kind == "rebuild":
        project = Project.objects.order_by("pk").first()
        return manager.launch_async_task(
            "projects.workers.rebuild_projects",
            [project.pk],
            title=f"Rebuild “{project}”",
            conflict_ids={"projects.Project": {project.pk}},
            user=user,
            affected_objects=[str(project)],
        )
    if kind == "report":
        report = Report.objects.order_by("?").first()
        return manager.launch_async_task(
            "projects.workers.generate_report",
            report.pk,
            title=f"Report “{report}”",
            user=user,
            affected_objects=[str(report)],
        )
    if kind == "import":
        return manager.launch_async_task("projects.workers.import_customers", title="Import customers", user=user)
    if kind == "cleanup":
        return manager.launch_async_task("projects.workers.long_cleanup", title="Archive old files", user=user)
    raise ValueError(f"Unknown kind {kind!r}; choose one of {sorted(KINDS)}.")
