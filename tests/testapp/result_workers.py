"""Worker functions that end with results: a CSV attached and a result link (tests/system/test_results.py)."""

from __future__ import annotations

import csv
import io
import time

from realtime_async._core.results import ResultLink
from realtime_async.async_manager import AsyncManager
from tests.testapp.workers import wait_for_gate


def report_rows(rows: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "name"])
    for n in range(1, rows + 1):
        writer.writerow([n, f"Name {n} <é>"])
    return buffer.getvalue()


def write_report(rows, *, delay=0.0, wait_for=None, task_key=None, manager_class=None, **kwargs):
    """Writes a CSV row by row in a temporary file, attaches it, and ends with a link; first waits for the gate
    ``wait_for`` (``workers.wait_for_gate``)."""
    manager = AsyncManager.resolve_manager(manager_class)
    if wait_for:
        wait_for_gate(wait_for)
    for _ in manager.track(task_key, range(rows), message="Row {n} of {total}"):
        time.sleep(delay)
    manager.attach_file(task_key, io.StringIO(report_rows(rows)), filename=f"Report {rows} März.csv")
    return ResultLink("/demo/widgets/?done=1", "Open the report")
