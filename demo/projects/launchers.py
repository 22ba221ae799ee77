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


def task_for(kind: str) -> tuple[str, list[Any], dict[str, Any]]:
    """A kind's worker function (dotted path), its arguments and its launch options."""
    if kind == "rebuild":
        project = Project.objects.order_by("pk").first()
        options = {
            "title": f"Rebuild “{project}”",
            "conflict_ids": {"projects.Project": {project.pk}},
            "affected_objects": [str(project)],
        }
        return "projects.workers.rebuild_projects", [[project.pk]], options
    if kind == "report":
        report = Report.objects.order_by("?").first()
        options = {"title": f"Report “{report}”", "affected_objects": [str(report)]}
        return "projects.workers.generate_report", [report.pk], options
    if kind == "import":
        return "projects.workers.import_customers", [], {"title": "Import customers"}
    if kind == "cleanup":
        return "projects.workers.long_cleanup", [], {"title": "Archive old files"}
    raise ValueError(f"Unknown kind {kind!r}; choose one of {sorted(KINDS)}.")


def launch_kind(kind: str, user: Any = None) -> str:
    func, args, options = task_for(kind)
    return AsyncManager().launch_async_task(func, *args, user=user, **options)
