"""The scheduled cleanup, configured as the README says, runs on a real `celery beat` and a real worker.

Nobody calls the cleanup here: beat sends ``realtime_async.schedules.cleanup_async_artifacts``
every second (``CELERY_BEAT_SCHEDULE`` in tests/project/settings.py, copied from
the README), the session's prefork worker runs it, and a task whose worker
child was killed ends ``lost`` with its locks free.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
from django.conf import settings

from realtime_async._writing.cleanup import LOST_ERROR
from tests.services import ROOT, Proc, wait_for
from tests.testapp.managers import recorded_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

README = ROOT / "README.md"


def _scheduled_in_readme() -> set[str]:
    """Every task name the README tells users to put in CELERY_BEAT_SCHEDULE."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"CELERY_BEAT_SCHEDULE = \{.*?\n\}", text, re.S)
    assert blocks, "the README shows no CELERY_BEAT_SCHEDULE"
    return {name for block in blocks for name in re.findall(r'"task": "([^"]+)"', block)}


@pytest.fixture
def beat(tmp_path):
    proc = Proc(
        "beat",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.project",
            "beat",
            "-l",
            "INFO",
            "-s",
            str(tmp_path / "beat-schedule"),
            "--pidfile",
            "",
        ],
        {"RA_TEST_BEAT_INTERVAL": "1"},
    )
    yield proc
    proc.stop()


def test_the_readme_schedule_is_what_the_tests_run():
    assert _scheduled_in_readme() == {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}


def test_workers_register_every_task_the_readme_schedules(celery_worker_proc):
    from tests.project.celery import app

    registered = wait_for(lambda: app.control.inspect(timeout=5).registered(), 30, 0.5, "the worker to answer")
    for worker, names in registered.items():
        missing = _scheduled_in_readme() - set(names)
        assert not missing, f"{worker} does not know {missing}"


def test_beat_ends_a_task_whose_worker_died(celery_worker_proc, beat, manager, tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    ids = {"testapp.Project": {4242}}
    name = manager.launch_async_task("tests.testapp.workers.write_pid_and_wait", str(pid_file), 60, conflict_ids=ids)
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, what="the child's pid"))
    wait_for(lambda: manager.get_progress(name)["percent"] == 10, 10, what="progress")
    beat.wait_output("Sending due task realtime-async-cleanup", timeout=30)
    assert manager.get_progress(name)["state"] == "running"  # a live heartbeat: the cleanup leaves it alone

    os.kill(pid, signal.SIGKILL)
    # HEARTBEAT_TIMEOUT is 3 s in the test settings; beat runs the cleanup every second.
    record = wait_for(lambda: (r := manager.get_progress(name)) and r["state"] == "lost" and r, 30, 0.2, "lost")
    assert record["error"] == LOST_ERROR
    assert manager.check_conflict(ids) == {}
    assert name not in manager.active_tasks()
    # The events follow the final write, in the worker that ran the cleanup: wait for the last one.
    wait_for(lambda: [e["event"] for e in recorded_events(name)][-1:] == ["cleanup"], 10, 0.1, "the cleanup event")
    kinds = [event["event"] for event in recorded_events(name)]
    assert kinds.count("fail") == 1 and kinds[-1] == "cleanup"
    assert "unregistered task" not in celery_worker_proc.output()
