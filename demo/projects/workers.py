"""Worker functions of the demo: plain functions with realistic steps and durations."""

import csv
import io
import random
import time

from django.urls import reverse
from django.utils import timezone

from projects.models import Project, Report
from realtime_async import ResultLink
from realtime_async.async_manager import AsyncManager
from realtime_async.exceptions import PublicTaskError

SPEED = 1.0  # the smoke test sets DEMO_SPEED to run the same code faster


def _pause(seconds: float) -> None:
    import os

    time.sleep(seconds / float(os.environ.get("DEMO_SPEED", SPEED)))


def rebuild_projects(pks, *, task_key=None, manager_class=None, **kwargs):
    """Admin action: rebuild each selected project, file by file."""
    manager = AsyncManager.resolve_manager(manager_class)
    projects = list(Project.objects.filter(pk__in=pks))
    total = sum(p.files for p in projects) or 1
    done = 0
    for project in projects:
        for n in range(1, project.files + 1):
            _pause(random.uniform(0.1, 0.35))
            done += 1
            manager.update_progress(task_key, f"{project.name}: file {n}/{project.files}", current=done, total=total)
        project.rebuilt_at = timezone.now()
        project.save(update_fields=["rebuilt_at"])
        manager.log(task_key, f"{project.name}: {project.files} files rebuilt", level="success")
    return {"projects": len(projects), "files": done}


def generate_report(report_id, *, task_key=None, manager_class=None, **kwargs):
    """Generate a report in three stages: collect, render page by page, save; it ends with the CSV and a link."""
    manager = AsyncManager.resolve_manager(manager_class)
    report = Report.objects.get(pk=report_id)
    manager.declare_stages(task_key, {"Collect data": 1, "Render pages": 3, "Save": 1})
    with manager.stage(task_key, "Collect data"):
        for _source in manager.track(task_key, range(4), message="Querying source {n} of {total}"):
            _pause(0.25)
        manager.log(task_key, "Source 3 was slow to answer; its figures may be an hour old", level="warning")
    rows = io.StringIO()
    table = csv.writer(rows)
    table.writerow(["page", "words", "figures"])
    with manager.stage(task_key, "Render pages"):
        for page in manager.track(task_key, range(1, report.pages + 1), message="Rendering page {n}/{total}"):
            _pause(0.25)
            table.writerow([page, random.randint(200, 900), random.randint(0, 4)])
    with manager.stage(task_key, "Save"):
        report.generated_at = timezone.now()
        report.save(update_fields=["generated_at"])
        # The download button: kept through Django's storage API, served only to who may see this task.
        rows.seek(0)
        manager.attach_file(task_key, rows, filename=f"{report.title}.csv", content_type="text/csv; charset=utf-8")
    # "Open the report": the report's own page (the admin's, in this demo).
    return ResultLink(reverse("admin:projects_report_change", args=[report.pk]), "Open the report")


def import_customers(*, task_key=None, manager_class=None, **kwargs):
    """Fails part-way, as imports do: users see the public error, logs get the traceback."""
    manager = AsyncManager.resolve_manager(manager_class)
    rows = list(range(1, 81))
    for row in manager.track(task_key, rows, message="Importing row {n} of {total}"):
        if row == 31:
            manager.log(task_key, "Row 31 has no e-mail address", level="error")
            break  # the row with no e-mail
        _pause(0.1)
    raise PublicTaskError("Row 31: the e-mail column is empty. Nothing after row 30 was imported.")


def import_file(filename, rows, *, fail=False, task_key=None, manager_class=None, **kwargs):
    """One part of "Import 40 files in parallel": a file's rows in a few steps of slightly random length."""
    manager = AsyncManager.resolve_manager(manager_class)
    steps = 4
    for step in range(1, steps + 1):
        _pause(random.uniform(0.2, 0.6))
        done = rows * step // steps
        manager.update_progress(task_key, f"{filename}: row {done} of {rows}", current=done, total=rows)
        if fail and step == 2:
            manager.log(task_key, f"{filename}: row {done + 1} has no customer number", level="error")
            raise PublicTaskError(f"{filename}: row {done + 1} has no customer number.")
    manager.log(task_key, f"{filename}: {rows} rows imported", level="success")
    return {"file": filename, "rows": rows}


def long_cleanup(*, task_key=None, manager_class=None, **kwargs):
    """A slow task to try the Cancel button on."""
    manager = AsyncManager.resolve_manager(manager_class)
    for step in range(1, 121):
        _pause(0.5)
        manager.update_progress(task_key, f"Archiving batch {step}/120", current=step, total=120)
    return {"batches": 120}
