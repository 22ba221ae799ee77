"""The dashboard add-on records tasks from the lifecycle events of real workers, from several processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.db import connection

from realtime_async.contrib.dashboard.models import TaskRecord
from tests.services import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("dora")


def _record(name, state):
    return wait_for(lambda: TaskRecord.objects.filter(task_name=name, state=state).first(), 20, 0.1, f"{name} {state}")


def test_success_is_recorded(celery_worker_proc, manager, owner):
    name = manager.launch_async_task(
        "tests.testapp.workers.steps", 4, user=owner, affected_objects=["P1"], task_kwargs={"delay": 0.1, "extra": "x"}
    )
    row = _record(name, "success")
    assert row.owner == owner and row.owner_label == "dora"
    assert row.affected_objects == ["P1"] and row.task_kwargs == {"delay": 0.1, "extra": "x"}
    assert row.result["steps"] == 4 and row.percent == 100.0 and row.message == "Step 4/4"
    assert row.created_at <= row.started_at <= row.finished_at
    assert row.error == ""


def test_failure_is_recorded_with_the_public_error_only(celery_worker_proc, manager, owner):
    name = manager.launch_async_task("tests.testapp.workers.fail_secret", user=owner)
    row = _record(name, "failure")
    assert row.error == "The task failed."
    assert "hunter2" not in f"{row.message} {row.error} {row.result}"


def test_a_failing_record_write_never_breaks_the_task(celery_worker_proc, manager, owner):
    table = TaskRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        name = manager.launch_async_task("tests.testapp.workers.steps", 3, user=owner, task_kwargs={"delay": 0.05})
        record = wait_for(lambda: (r := manager.get_progress(name))["state"] == "success" and r, 30, what="success")
        assert record["result"]["steps"] == 3
        logged = f"dashboard record of {name!r} failed; will retry"
        wait_for(lambda: logged in celery_worker_proc.output(), 10, what="the logged failure")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
    # The writer recovers once the database does, and writes what it could not write before.
    later = manager.launch_async_task("tests.testapp.workers.steps", 1, user=owner, task_kwargs={"delay": 0})
    _record(later, "success")
    assert _record(name, "success").percent == 100.0


# Each writer process records the same shared tasks as the others and tasks of its own, flushing after
# every round so that all of them write at once; each round's seq is higher than any writer's round before.
WRITER = """
import os, sys, time
from pathlib import Path
import django
django.setup()
from realtime_async.contrib.dashboard.recorder import Recorder

n, writers, rounds, tasks, owner_id, start = (int(arg) for arg in sys.argv[1:7])
folder = Path(sys.argv[7])
recorder = Recorder()
(folder / f"ready-{n}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
for round_ in range(rounds):
    last = round_ == rounds - 1
    for name in [f"shared-{i}" for i in range(tasks)] + [f"own-{n}-{i}" for i in range(tasks)]:
        record = {"task": name, "seq": round_ * writers + n + 1, "state": "success" if last else "running",
                  "message": f"w{n} round {round_}", "percent": 100.0 if last else round_ * 10.0,
                  "created_at": start, "finished_at": start + 1 if last else None}
        recorder.add(name, {"record": record, "user": {"id": owner_id, "label": "dora"}, "task_kwargs": {"w": n}})
    assert recorder.flush(60), "the recorder did not drain"
"""
WRITERS, ROUNDS, TASKS = 4, 5, 10


def test_concurrent_writers_record_every_task_once_with_its_newest_state(owner, tmp_path):
    """Several processes write rows for the same and for different tasks at once, as web and worker processes do.

    Runs on the configured database: SQLite here, PostgreSQL in .ci/run's PostgreSQL pass, where nothing
    serialises the writers but the recorder's own row locks and the unique task name.
    """
    start = int(time.time())
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.project.settings"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, *map(str, (n, WRITERS, ROUNDS, TASKS, owner.pk, start, tmp_path))],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(WRITERS)
    ]
    try:
        wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == WRITERS, 60, 0.1, "every writer to start Django")
        (tmp_path / "go").touch()
        logs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-3000:]
        assert "Traceback" not in log and "will retry" not in log, log[-3000:]

    rows = {row.task_name: row for row in TaskRecord.objects.all()}
    assert len(rows) == TASKS + WRITERS * TASKS
    newest = ROUNDS * WRITERS  # the last round of the last writer
    for i in range(TASKS):
        row = rows[f"shared-{i}"]
        assert (row.seq, row.state, row.message) == (newest, "success", f"w{WRITERS - 1} round {ROUNDS - 1}")
        assert row.owner == owner and row.percent == 100.0
    for n in range(WRITERS):
        for i in range(TASKS):
            row = rows[f"own-{n}-{i}"]
            assert (row.seq, row.state, row.message) == ((ROUNDS - 1) * WRITERS + n + 1, "success", f"w{n} round 4")
            assert row.task_kwargs == {"w": n} and row.finished_at is not None
