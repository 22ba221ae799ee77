"""Stages in the writer and the record, in this process: states, weights, the combined percent, bad names."""

from __future__ import annotations

import pytest

from realtime_async._writing.writer import get_writer
from realtime_async.exceptions import TaskCancelled
from tests.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
NOWHERE = {"queue": "realtime-async-tests-nowhere"}


def _latest(name):
    """This process's newest record of the task (the store has it within one progress interval)."""
    return get_writer().tracker(name).record


def _stored(manager, name, predicate):
    return wait_for(lambda: (r := manager.get_progress(name)) and predicate(r) and r, 5, 0.05, "the stored record")


def _states(record):
    return [(stage["name"], stage["state"]) for stage in record["stages"]]


def test_declared_at_launch_all_pending(manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, stages=["Load", "Process", "Save"], **NOWHERE)
    record = manager.get_progress(name)
    assert _states(record) == [("Load", "pending"), ("Process", "pending"), ("Save", "pending")]
    assert record["stage"] is None and record["percent"] is None
    assert [stage["weight"] for stage in record["stages"]] == [1.0, 1.0, 1.0]


def test_a_stage_has_its_own_bar_and_the_task_combines_them_by_weight(manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, stages={"Load": 1, "Process": 3}, **NOWHERE)
    with manager.stage(name, "Load"):
        assert _latest(name)["stage"] == "Load"
        manager.update_progress(name, "half", current=5, total=10)
        record = _latest(name)
        assert record["stages"][0]["percent"] == 50.0 and record["percent"] == 12.5  # 50 % of a quarter
    assert _states(_latest(name)) == [("Load", "done"), ("Process", "pending")] and _latest(name)["percent"] == 25.0
    with manager.stage(name, "Process"):
        manager.update_progress(name, percent=50)
        assert _latest(name)["percent"] == 62.5  # a quarter, plus half of three quarters
    stored = _stored(manager, name, lambda r: r["stages"][1]["state"] == "done")
    assert stored["percent"] == 100.0 and stored["stage"] is None


def test_a_failing_or_cancelled_stage_says_so(manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, stages=["A", "B", "C"], **NOWHERE)
    with pytest.raises(RuntimeError), manager.stage(name, "A"):
        raise RuntimeError("broken")
    with pytest.raises(TaskCancelled), manager.stage(name, "B"):
        raise TaskCancelled(name)
    stored = _stored(manager, name, lambda r: r["stages"][1]["state"] == "cancelled")
    assert _states(stored) == [("A", "failed"), ("B", "cancelled"), ("C", "pending")]


def test_unknown_or_undeclared_stages_are_refused_with_the_valid_names(manager):
    staged = manager.launch_async_task("tests.testapp.workers.steps", 1, stages=["Load", "Save"], **NOWHERE)
    unknown = r"Unknown stage 'Lode'; the stages of this task are \['Load', 'Save'\]"
    with pytest.raises(ValueError, match=unknown), manager.stage(staged, "Lode"):
        pass
    plain = manager.launch_async_task("tests.testapp.workers.steps", 1, **NOWHERE)
    with pytest.raises(ValueError, match="has no stages"), manager.stage(plain, "Load"):
        pass
    assert manager.get_progress(plain)["stages"] is None


def test_the_worker_can_declare_its_stages(manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, **NOWHERE)
    manager.declare_stages(name, ["Fetch", "Render"])
    with manager.stage(name, "Fetch"):
        pass
    stored = _stored(manager, name, lambda r: r["stages"] and r["stages"][0]["state"] == "done")
    assert _states(stored) == [("Fetch", "done"), ("Render", "pending")] and stored["percent"] == 50.0


def test_bad_declarations_fail_at_launch_and_long_names_are_cut(manager):
    with pytest.raises(ValueError, match="must differ"):
        manager.launch_async_task("tests.testapp.workers.steps", 1, stages=["A", "A"], **NOWHERE)
    with pytest.raises(ValueError, match="positive number"):
        manager.launch_async_task("tests.testapp.workers.steps", 1, stages={"A": 0}, **NOWHERE)
    with pytest.raises(ValueError, match="list of names"):
        manager.launch_async_task("tests.testapp.workers.steps", 1, stages="Load", **NOWHERE)
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, stages=["x" * 500], **NOWHERE)
    assert manager.get_progress(name)["stages"][0]["name"] == "x" * 100
