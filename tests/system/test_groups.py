"""Groups on a real prefork worker (two processes) and Redis: counts, weighted percent, policies, cancel, lost parts."""

from __future__ import annotations

import itertools
import os
import random
import signal

import pytest

from realtime_async import Part
from realtime_async._core.records import FINAL_STATES
from tests.services import wait_for
from tests.testapp.managers import recorded_events

pytestmark = pytest.mark.django_db(transaction=True)
CHUNK = "tests.testapp.workers.chunk"


def _final(manager, name, timeout=90):
    return wait_for(
        lambda: (r := manager.get_progress(name)) and r["state"] in FINAL_STATES and r, timeout, 0.1, f"{name} to end"
    )


def _events(task, expected):
    """The task's lifecycle events, once the last one is in (it follows the final write, in the worker).

    ``create`` is emitted by the launching process after the enqueue, the others by workers: only
    the workers' events have an order to check.
    """
    seen = wait_for(lambda: len(recorded_events(task)) >= len(expected), 10, 0.05, f"{expected[-1]} of {task}")
    kinds = [entry["event"] for entry in recorded_events(task)]
    assert kinds.count("create") == expected.count("create"), seen
    assert [kind for kind in kinds if kind != "create"] == [kind for kind in expected if kind != "create"], seen


def _parts(manager, parent):
    return [f"{parent}.{index}" for index in range(manager.get_progress(parent)["group"]["parts"])]


def test_a_fifty_part_group_ends_success_with_exact_counts(celery_worker_proc, manager):
    rng = random.Random(50)
    parts = [Part(CHUNK, (i,), {"seconds": rng.uniform(0, 0.15)}, weight=rng.randint(1, 4)) for i in range(50)]
    parent = manager.launch_async_group(parts, title="Fifty chunks")
    seen = []
    record = wait_for(
        lambda: (r := manager.get_progress(parent)) and (seen.append(r["percent"]) or r["state"] in FINAL_STATES) and r,
        90,
        0.05,
        "the group to end",
    )
    assert record["state"] == "success" and record["percent"] == 100.0
    assert record["group"]["counts"] == {
        "queued": 0,
        "running": 0,
        "success": 50,
        "failure": 0,
        "cancelled": 0,
        "lost": 0,
    }
    percents = [p for p in seen if p is not None]
    assert percents == sorted(percents)  # the weighted mean only grows
    assert all(manager.get_progress(name)["state"] == "success" for name in _parts(manager, parent))
    _events(parent, ["create", "complete"])
    assert parent not in manager.active_tasks()


@pytest.mark.parametrize("policy", ["continue", "fail_fast"])
def test_one_failing_part_under_each_policy(celery_worker_proc, manager, policy):
    parts = [Part(CHUNK, (0,), {"fail": True})] + [Part(CHUNK, (i,), {"seconds": 0.4}) for i in range(1, 6)]
    parent = manager.launch_async_group(parts, on_failure=policy)
    record = _final(manager, parent)
    counts = record["group"]["counts"]
    assert record["state"] == "failure"
    if policy == "continue":
        assert record["error"] == "1 of 6 parts failed." and counts["success"] == 5 and counts["failure"] == 1
    else:
        assert counts["failure"] == 1 and counts["success"] < 5
        states = [_final(manager, name)["state"] for name in _parts(manager, parent)]
        assert states[0] == "failure" and "cancelled" in states  # the others were stopped
        assert set(states) <= {"failure", "success", "cancelled"}


def test_cancel_mid_group_stops_every_part(celery_worker_proc, manager, django_user_model):
    owner = django_user_model.objects.create_user("group-canceller")
    parent = manager.launch_async_group([Part(CHUNK, (i,), {"seconds": 2.0}) for i in range(6)], user=owner)
    wait_for(lambda: manager.get_progress(parent)["group"]["counts"]["running"] >= 1, 30, 0.05, "a running part")
    assert manager.cancel(parent, user=owner)
    record = _final(manager, parent, timeout=30)
    assert record["state"] == "cancelled" and record["group"]["counts"]["cancelled"] >= 4  # two may have been running
    assert all(manager.get_progress(name)["state"] in FINAL_STATES for name in _parts(manager, parent))


def test_a_part_whose_worker_died_ends_lost_and_the_group_follows(celery_worker_proc, manager, tmp_path):
    pid_file = tmp_path / "part.pid"
    parts = [Part("tests.testapp.workers.write_pid_and_wait", (str(pid_file), 60))] + [
        Part(CHUNK, (i,)) for i in (1, 2)
    ]
    parent = manager.launch_async_group(parts)
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, what="the part's pid"))
    wait_for(lambda: manager.get_progress(f"{parent}.0")["percent"] == 10, 10, what="the part's progress")
    os.kill(pid, signal.SIGKILL)  # its pool process dies mid-part; HEARTBEAT_TIMEOUT is 3 s in the test settings
    wait_for(
        lambda: manager.cleanup_completed_tasks() and manager.get_progress(f"{parent}.0")["state"] == "lost",
        20,
        0.5,
        "cleanup to find the lost part",
    )
    record = _final(manager, parent)
    assert record["state"] == "failure" and record["error"] == "1 of 3 parts failed."
    assert record["group"]["counts"]["lost"] == 1 and record["group"]["counts"]["success"] == 2


def test_a_fan_in_step_gets_every_result_in_part_order_and_ends_the_group(celery_worker_proc, manager):
    rng = random.Random(12)
    parts = [Part(CHUNK, (i,), {"seconds": rng.uniform(0, 0.2)}) for i in range(12)]
    parent = manager.launch_async_group(parts, then=Part("tests.testapp.workers.merge", title="Merge"))
    record = _final(manager, parent)
    assert record["state"] == "success" and record["percent"] == 100.0
    assert record["group"]["counts"]["success"] == 12
    step = manager.get_progress(f"{parent}.then")
    assert step["state"] == "success" and step["result"] == {"merged": list(range(12))}
    _events(parent, ["create", "complete"])


def test_a_chain_of_three_steps_runs_them_in_order_as_the_parents_stages(celery_worker_proc, manager):
    steps = [Part(CHUNK, (i,), {"seconds": 0.2}, title=title) for i, title in enumerate(["Fetch", "Compute", "Render"])]
    parent = manager.launch_async_chain(steps, title="Quarterly report")
    seen_stages = set()
    record = wait_for(
        lambda: (
            (r := manager.get_progress(parent)) and (seen_stages.add(r["stage"]) or r["state"] in FINAL_STATES) and r
        ),
        60,
        0.02,
        "the chain to end",
    )
    assert record["state"] == "success" and record["percent"] == 100.0
    assert [(stage["name"], stage["state"]) for stage in record["stages"]] == [
        ("Fetch", "done"),
        ("Compute", "done"),
        ("Render", "done"),
    ]
    assert {"Fetch", "Compute", "Render"} & seen_stages  # watched live, stage by stage
    runs = [manager.get_progress(name) for name in _parts(manager, parent)]
    for before, after in itertools.pairwise(runs):
        assert after["started_at"] >= before["finished_at"]  # one after another
    _events(parent, ["create", "complete"])
