"""The demo's SQLite database takes the dashboard recorder's writes from several processes without "database is locked".

In the demo, daphne, the Celery worker and beat all record dashboard rows into
one SQLite file. Here four processes with the demo's own settings write rows
through the recorder at the same moment, as they do when tasks are launched.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "demo"
WRITERS = 4
TASKS_PER_WRITER = 60
UPDATES_PER_TASK = 4

# Each writer records its tasks' states through the dashboard recorder, flushing after every
# update so that the four processes keep writing at the same time, then exits 0 when all landed.
WRITER = """
import logging, sys, time
import django
django.setup()
from realtime_async.contrib.dashboard.recorder import Recorder

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.005)
recorder = Recorder()
for update in range({updates}):
    for i in range({tasks}):
        name = f"w{{sys.argv[1]}}-{{i}}"
        record = {{"task": name, "seq": update + 1, "state": "running", "message": f"step {{update}}",
                   "percent": update * 25.0, "created_at": start}}
        recorder.add(name, {{"record": record, "user": None}})
    assert recorder.flush(60), "the recorder did not drain"
"""


@pytest.fixture
def demo_env(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "demoproject.settings",
        "DEMO_DB": str(tmp_path / "db.sqlite3"),
        "PYTHONPATH": f"{DEMO}:{DEMO.parent}",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=DEMO, env=env, check=True, timeout=120)
    return env


@pytest.mark.slow
def test_concurrent_dashboard_writers_never_lock_the_demo_database(demo_env):
    script = WRITER.format(tasks=TASKS_PER_WRITER, updates=UPDATES_PER_TASK)
    start = time.time() + 3  # every writer has started Django by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n), str(start)],
            cwd=DEMO,
            env=demo_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    logs = []
    for proc in procs:
        out, err = proc.communicate(timeout=150)
        logs.append(out + err)
        assert proc.returncode == 0, err[-2000:]
    log = "\n".join(logs)
    assert "database is locked" not in log
    assert "Traceback" not in log

    count = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup();"
            "from realtime_async.contrib.dashboard.models import TaskRecord as T;"
            f"print(T.objects.count(), T.objects.filter(seq={UPDATES_PER_TASK}).count())",
        ],
        cwd=DEMO,
        env=demo_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    # Every task has its row, each with its last state.
    assert count == [str(WRITERS * TASKS_PER_WRITER)] * 2
