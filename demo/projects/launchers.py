"""What the demo's buttons, its management command and its admin launch."""

from typing import Any

from projects.models import Project, Report
from realtime_async import Part
from realtime_async.async_manager import AsyncManager

KINDS = {
    "rebuild": "Rebuild the first project",
    "report": "Generate a report",
    "import": "Import customers (fails on purpose)",
    "cleanup": "Long archive job (try Cancel)",
    "files": "Import 40 files in parallel",
}
#: The kinds that launch a group (many Celery tasks watched as one) rather than one task.
GROUPS = {"files"}
FILES = 40


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
    if kind in GROUPS:
        raise ValueError(f"{kind!r} launches a group of tasks, not one task; see parts_for().")
    raise ValueError(f"Unknown kind {kind!r}; choose one of {sorted(KINDS)}.")


def parts_for(kind: str) -> tuple[list[Part], dict[str, Any]]:
    """A group kind's parts and its launch options."""
    if kind == "files":
        parts = []
        for n in range(1, FILES + 1):
            name, rows = f"customers-{n:02d}.csv", 200 + 150 * (n % 5)  # files of different sizes...
            parts.append(Part("projects.workers.import_file", (name, rows), weight=rows, title=name))  # ...weighed
        return parts, {"title": f"Import {FILES} files"}
    raise ValueError(f"Unknown group kind {kind!r}; choose one of {sorted(GROUPS)}.")


def launch_kind(kind: str, user: Any = None) -> str:
    if kind in GROUPS:
        parts, options = parts_for(kind)
        return AsyncManager().launch_async_group(parts, user=user, **options)
    func, args, options = task_for(kind)
    return AsyncManager().launch_async_task(func, *args, user=user, **options)
