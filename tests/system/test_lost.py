"""A worker child killed with SIGKILL mid-task ends ``lost`` after cleanup."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from realtime_async._writing.cleanup import LOST_ERROR
from tests.services import wait_for
from tests.testapp.managers import recorded_events

pytestmark = pytest.mark.django_db(transaction=True)


def test_killed_worker_child_is_lost_after_cleanup(celery_worker_proc, manager, tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    ids = {"testapp.Project": {99}}
    name = manager.launch_async_task("tests.testapp.workers.write_pid_and_wait", str(pid_file), 60, conflict_ids=ids)
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, what="the child's pid"))
    wait_for(lambda: manager.get_progress(name)["percent"] == 10, 10, what="progress")
    # While the heartbeat lives, cleanup leaves it alone.
    summary = manager.cleanup_completed_tasks()
    assert summary["skipped"] == [{"task": name, "reason": "running with a live heartbeat"}]
    os.kill(pid, signal.SIGKILL)
    # HEARTBEAT_TIMEOUT is 3 s in the test settings.
    wait_for(lambda: manager.cleanup_completed_tasks()["cleaned"], 15, 0.5, "cleanup to find the lost task")
    record = manager.get_progress(name)
    assert (record["state"], record["error"]) == ("lost", LOST_ERROR)
    assert manager.check_conflict(ids) == {}
    assert name not in manager.active_tasks()
    assert manager.cleanup_completed_tasks()["cleaned"] == []  # a second pass finds nothing
    kinds = [event["event"] for event in recorded_events(name)]
    assert kinds.count("fail") == 1 and kinds[-1] == "cleanup"
