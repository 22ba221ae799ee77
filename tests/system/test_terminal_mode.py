"""Terminal mode from a real shell: the demo's ``launch_demo_task`` run inline and followed, on a tty and not.

``--inline`` needs no service (the worker runs in the command); ``--follow``
launches through a real prefork Celery worker with the demo's settings, on a
redis-server of its own so that the session's worker never sees the demo's tasks.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.services import Proc, private_redis, wait_for

DEMO = Path(__file__).resolve().parents[2] / "demo"
CLEAR = "\r\x1b[2K"


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory):
    """The demo's settings on a migrated, seeded database of its own; tasks run twenty times faster."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demoproject.settings",
        "DEMO_DB": str(tmp_path_factory.mktemp("demo") / "db.sqlite3"),
        "PYTHONPATH": f"{DEMO}:{DEMO.parent}",
        "DEMO_SPEED": "20",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing answers: --inline must not need Redis
    }
    env.pop("NO_COLOR", None)
    for command in (["migrate", "-v", "0"], ["demo_seed"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=DEMO, env=env, check=True, timeout=120)
    return env


def manage(env, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "manage.py", "launch_demo_task", *args],
        cwd=DEMO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def manage_in_a_pty(env, *args, timeout=60, columns=100, interrupt_on=None):
    """Run the command with a terminal as stdin, stdout and stderr; return its exit code and all it printed.

    With ``interrupt_on``, Ctrl-C (SIGINT) is sent once the output holds that text.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "launch_demo_task", *args],
        cwd=DEMO,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                output += chunk
                if interrupt_on is not None and interrupt_on.encode() in output:
                    os.killpg(proc.pid, signal.SIGINT)
                    interrupt_on = None
            elif proc.poll() is not None:
                break
        else:
            raise AssertionError(f"still running after {timeout}s:\n{output[-2000:]!r}")
        return proc.wait(10), output.decode("utf-8", errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        os.close(master)


# -- --inline: the worker function in the command, no Celery, no Redis -----------------
def test_inline_without_a_tty_prints_plain_lines(demo_env):
    done = manage(demo_env, "report", "--inline")
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr.splitlines()
    assert err[0].startswith("Report “") and err[0].endswith("” · Running")
    assert any(line.startswith("0% · Stage 1 of 3: Collect data") for line in err)
    assert any(" · Stage 2 of 3: Render pages · Rendering page " in line for line in err)
    assert "Warning: Source 3 was slow to answer; its figures may be an hour old" in err
    assert err[-1].endswith("” · Done")
    assert "\x1b" not in done.stderr and "\r" not in done.stderr  # no terminal codes in a file
    assert len(err) < 40  # a line per stage and per few percent, not per update
    assert done.stdout.startswith("Open the report: /admin/projects/report/")


def test_inline_failure_shows_the_error_and_exits_1(demo_env):
    done = manage(demo_env, "import", "--inline")
    assert done.returncode == 1
    err = done.stderr.splitlines()
    assert "Error: Row 31 has no e-mail address" in err
    assert err[-1] == (
        "Import customers · 37% · Failed: Row 31: the e-mail column is empty. Nothing after row 30 was imported."
    )
    assert "Traceback" not in done.stderr  # a PublicTaskError is for people: its text is enough


def test_inline_on_a_terminal_redraws_one_status_line(demo_env):
    code, out = manage_in_a_pty(demo_env, "report", "--inline")
    assert code == 0, out[-3000:]
    assert out.count(CLEAR) > 5  # redrawn in place
    assert "Stage 2 of 3: Render pages" in out and "█" in out and "%" in out
    # The log line is printed above the status line, which is drawn again below it.
    assert CLEAR + "\x1b[33mWarning\x1b[0m: Source 3 was slow to answer; its figures may be an hour old\r\n" in out
    final = out.rsplit(CLEAR, 1)[1]
    assert final.startswith("Report “") and final.split("\r\n")[0].endswith("” · Done")
    for drawn in out.split(CLEAR)[1:]:  # no status line wider than the terminal: it would wrap
        assert len(drawn.split("\r\n")[0]) < 100


# -- --follow: a task run by a real prefork worker ------------------------------
@pytest.fixture(scope="module")
def demo_worker(demo_env):
    with private_redis() as (url, _redis, _port):
        env = {**demo_env, "REDIS_URL": url}
        worker = Proc(
            "demo-worker",
            [sys.executable, "-m", "celery", "-A", "demoproject", "worker", "-P", "prefork", "-c", "2", "-l", "INFO"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
            env,
        )
        try:
            worker.wait_output(" ready.", timeout=60)
            yield env
        finally:
            worker.stop()


@pytest.mark.slow
def test_follow_shows_a_celery_task_until_it_succeeds(demo_worker):
    done = manage(demo_worker, "report", "--follow")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.startswith("Launched task-")
    err = done.stderr.splitlines()
    assert err[0].endswith("” · Queued") or err[0].endswith("” · Running")
    assert any("Stage 2 of 3: Render pages" in line for line in err)
    assert "Warning: Source 3 was slow to answer; its figures may be an hour old" in err  # from the task's log
    assert err[-1].endswith("” · Done")


@pytest.mark.slow
def test_follow_exits_1_when_the_task_fails(demo_worker):
    done = manage(demo_worker, "import", "--follow")
    assert done.returncode == 1, done.stderr[-3000:]
    err = done.stderr.splitlines()
    assert "Error: Row 31 has no e-mail address" in err
    assert err[-1].startswith("Import customers · ") and err[-1].endswith(
        "Failed: Row 31: the e-mail column is empty. Nothing after row 30 was imported."
    )


@pytest.mark.slow
def test_follow_shows_the_demo_group_until_its_forty_parts_succeed(demo_worker):
    done = manage(demo_worker, "files", "--follow")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.startswith("Launched group-")
    err = done.stderr.splitlines()
    assert err[-1] == "Import 40 files · Done", err[-5:]


def test_inline_refuses_a_group(demo_env):
    done = manage(demo_env, "files", "--inline")
    assert done.returncode == 1
    assert "'files' is a group of Celery tasks run in parallel: launch it, with --follow." in done.stderr


@pytest.mark.slow
def test_follow_on_a_terminal_draws_the_same_status_line(demo_worker):
    # The rebuild ends before a poll may see it running: its log and final line are what a terminal shows of it.
    code, out = manage_in_a_pty(demo_worker, "rebuild", "--follow")
    assert code == 0, out[-3000:]
    assert "\x1b[32mSuccess\x1b[0m: Website: " in out
    assert out.rsplit(CLEAR, 1)[1].split("\r\n")[0] == "Rebuild “Website” · Done"
    # A longer task is seen running: its bar is redrawn in place until Ctrl-C stops following it.
    code, out = manage_in_a_pty(demo_worker, "cleanup", "--follow", columns=200, interrupt_on="Archiving batch ")
    assert code == 130, out[-3000:]
    assert out.count(CLEAR) >= 2 and "█" in out and "Archiving batch " in out
    assert "Stopped following" in out


@pytest.mark.slow
def test_ctrl_c_stops_following_not_the_task(demo_worker, tmp_path):
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "launch_demo_task", "cleanup", "--follow"],
            cwd=DEMO,
            env=demo_worker,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            wait_for(lambda: "Archiving batch" in err_path.read_text(), 30, 0.05, "the task's progress")
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 130
    task_name = out.split()[1]
    text = err_path.read_text()
    assert text.splitlines()[-1] == f"Stopped following {task_name}; the task goes on (watch or cancel it at /tasks/)."
    assert "Traceback" not in text and "Done" not in text
    # The task was not cancelled: it runs to its end (about three seconds at DEMO_SPEED 20).
    watch = (
        "import django, json, time; django.setup();"
        "from realtime_async import AsyncManager;"
        "deadline = time.monotonic() + 30\n"
        f"while (AsyncManager().get_progress({task_name!r}) or {{}}).get('state') in ('queued', 'running')"
        " and time.monotonic() < deadline: time.sleep(0.1)\n"
        f"print(AsyncManager().get_progress({task_name!r})['state'])"
    )
    state = subprocess.run(
        [sys.executable, "-c", watch], cwd=DEMO, env=demo_worker, capture_output=True, text=True, timeout=60
    )
    assert state.stdout.strip() == "success", state.stderr[-2000:]
