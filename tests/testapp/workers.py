"""Worker functions run by the test Celery worker."""

from __future__ import annotations

import os
import time

from realtime_async.async_manager import AsyncManager
from realtime_async.exceptions import PublicTaskError

#: How long a worker function waits at a gate that the test never opens.
GATE_TIMEOUT = 60.0


def wait_for_gate(path):
    """Waits until the file ``path`` exists: the test's gate (the ``gate`` fixture, tests/system/conftest.py).

    A test that must watch a task run (a page, watchers, a reload or a fault mid-task) opens it once they
    follow the task, rather than betting that a task of a few seconds is still running when they arrive on a
    loaded machine. The task is ``running`` meanwhile, its heartbeat beating, its record unchanged.
    """
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test did not open the gate {path} within {GATE_TIMEOUT:g} s")
        time.sleep(0.02)


def steps(n, *, delay=0.05, wait_for=None, hold=None, task_key=None, manager_class=None, **kwargs):
    """``n`` steps of ``delay`` seconds; first waits for the gate ``wait_for``, and after step ``hold[0]`` for
    the gate ``hold[1]`` (``wait_for_gate``)."""
    manager = AsyncManager.resolve_manager(manager_class)
    if wait_for:
        wait_for_gate(wait_for)
    for i in range(1, n + 1):
        time.sleep(delay)
        manager.update_progress(task_key, f"Step {i}/{n}", current=i, total=n)
        if hold and i == hold[0]:
            wait_for_gate(hold[1])
    return {"steps": n, "manager": type(manager).__name__, "pid": os.getpid(), "kwargs": sorted(kwargs)}


def fail_secret(*, task_key=None, manager_class=None, **kwargs):
    manager = AsyncManager.resolve_manager(manager_class)
    manager.update_progress(task_key, "about to fail", current=1, total=2)
    raise RuntimeError("database password is hunter2-SECRET")


def fail_public(*, task_key=None, manager_class=None, **kwargs):
    raise PublicTaskError("The CSV file has no header row.")


def sleep_then_finish(seconds, *, wait_for=None, task_key=None, manager_class=None, **kwargs):
    """Sleeps in small steps, reporting each, so tests can act mid-task; first waits for the gate ``wait_for``."""
    manager = AsyncManager.resolve_manager(manager_class)
    if wait_for:
        wait_for_gate(wait_for)
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        i += 1
        manager.update_progress(task_key, f"tick {i}", percent=min(99, i))
        time.sleep(0.1)
    return {"ticks": i}


def hot_loop(n, *, task_key=None, manager_class=None, **kwargs):
    manager = AsyncManager.resolve_manager(manager_class)
    start = time.perf_counter()
    for i in range(1, n + 1):
        manager.update_progress(task_key, f"item {i}", current=i, total=n)
    return {"seconds": time.perf_counter() - start}


def write_pid_and_wait(path, seconds, *, task_key=None, manager_class=None, **kwargs):
    manager = AsyncManager.resolve_manager(manager_class)
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    manager.update_progress(task_key, "waiting to be killed", percent=10)
    time.sleep(seconds)
    return "survived"


def touch_file(path, *, task_key=None, manager_class=None, **kwargs):
    with open(path, "w") as fh:
        fh.write("ran")
    return "ran"


def hold_and_check(path, seconds, *, task_key=None, manager_class=None, **kwargs):
    """Writes its pid, works for ``seconds`` of its own running time, then reports whether it still holds its locks.

    Steps are counted, not a wall-clock deadline: a SIGSTOP freezes one step, so
    the worker still runs for nearly ``seconds`` after SIGCONT, and its heartbeat
    beats in that time however long the freeze lasted.
    """
    manager = AsyncManager.resolve_manager(manager_class)
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    for _ in range(round(seconds / 0.1)):
        manager.update_progress(task_key, "working on the locked objects")
        time.sleep(0.1)
    return {"held": manager.holds_locks(task_key)}


def admin_rebuild(pks, *, task_key=None, manager_class=None, delay=0.2, **kwargs):
    """The admin action's worker: "rebuilds" each selected Widget, ``delay`` seconds apiece, reporting as it goes.

    It reports every 0.1 s, so a cancel stops it within one report.
    """
    from django.db.models import F

    from tests.testapp.models import Widget

    manager = AsyncManager.resolve_manager(manager_class)
    total = len(pks)
    for i, pk in enumerate(pks):
        deadline = time.monotonic() + delay
        while True:
            manager.update_progress(task_key, f"Rebuilding {i + 1}/{total}", current=i, total=total)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(0.1, left))
        Widget.objects.filter(pk=pk).update(rebuilds=F("rebuilds") + 1)
        manager.update_progress(task_key, f"Rebuilt {i + 1}/{total}", current=i + 1, total=total)
    return {"rebuilt": total}


def track_rows(n, *, sized=True, delay=0.0, task_key=None, manager_class=None, **kwargs):
    """Goes through ``n`` rows with ``manager.track``: a list (sized) or a generator; returns how many it saw."""
    manager = AsyncManager.resolve_manager(manager_class)
    rows = list(range(n)) if sized else (i for i in range(n))
    seen = 0
    for _ in manager.track(task_key, rows, message="Importing row {n} of {total}"):
        seen += 1
        time.sleep(delay)
    return {"seen": seen}


def staged(*, fail_in=None, steps=3, delay=0.05, task_key=None, manager_class=None, **kwargs):
    """Three stages declared at launch (Load, Process, Save); ``fail_in`` names one that raises."""
    manager = AsyncManager.resolve_manager(manager_class)
    for name in ("Load", "Process", "Save"):
        with manager.stage(task_key, name):
            for i in range(1, steps + 1):
                time.sleep(delay)
                manager.update_progress(task_key, f"{name} {i}/{steps}", current=i, total=steps)
            if name == fail_in:
                raise PublicTaskError(f"{name} broke.")
    return "staged"


def chatty(n, *, delay=0.0, task_key=None, manager_class=None, **kwargs):
    """Logs ``n`` numbered lines (every tenth a warning) beside its progress; fails after them when ``n`` is odd."""
    manager = AsyncManager.resolve_manager(manager_class)
    for i in range(1, n + 1):
        manager.update_progress(task_key, f"Row {i} of {n}", current=i, total=n)
        manager.log(task_key, f"Row {i} <b>done</b>", level="warning" if i % 10 == 0 else "info")
        time.sleep(delay)
    if n % 2:
        raise PublicTaskError("Odd number of rows.")
    return {"logged": n}


def chunk(index, *, seconds=0.0, fail=False, task_key=None, manager_class=None, **kwargs):
    """One part of a group: a few progress steps over ``seconds``; fails with a public error when ``fail``."""
    manager = AsyncManager.resolve_manager(manager_class)
    for step in range(1, 5):
        time.sleep(seconds / 4)
        manager.update_progress(task_key, f"Chunk {index}: step {step}/4", current=step, total=4)
    if fail:
        raise PublicTaskError(f"Chunk {index} is broken.")
    return {"chunk": index}


def merge(results, *, task_key=None, manager_class=None, **kwargs):
    """A group's fan-in step: gets the parts' results in part order and says what it got."""
    manager = AsyncManager.resolve_manager(manager_class)
    for _result in manager.track(task_key, results, message="Merging {n} of {total}"):
        time.sleep(0.01)
    return {"merged": [result["chunk"] for result in results]}
