"""Groups in the store and the manager, in this process: the parent's aggregate, its end, bad input, cancel.

The parts are driven here as their workers would drive them (``update_progress``
and ``finish`` under the part's name); ``system/test_groups.py`` runs them on a
real prefork worker.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from realtime_async import Part
from realtime_async._core.records import FINAL_STATES, GROUP_STATES
from realtime_async._core.store import get_store
from realtime_async._writing.writer import get_writer, group_link
from realtime_async.exceptions import ConflictError
from tests.services import wait_for
from tests.testapp.managers import recorded_events

pytestmark = pytest.mark.django_db(transaction=True)
NOWHERE = {"queue": "realtime-async-tests-nowhere"}
STEPS = "tests.testapp.workers.steps"


@pytest.fixture
def widget():
    from tests.testapp.models import Widget

    return {"testapp.widget": {Widget.objects.create(name="grouped").pk}}


def _parts(manager, parent):
    return [f"{parent}.{index}" for index in range(manager.get_progress(parent)["group"]["parts"])]


def _start(name):
    """The part starts as the worker's run() starts it: running, tracked by this process."""
    record = json.loads(get_store().read_state(name))
    record["state"] = "running"
    started = get_writer().commit(record)
    get_writer().track(started.record(), {})


def _settled(manager, parent, predicate=lambda record: True):
    """The parent once its pending publish (at most one interval away) is out."""
    return wait_for(lambda: (r := manager.get_progress(parent)) and predicate(r) and r, 5, 0.02, "the parent")


def test_launch_records_the_parent_and_every_part_queued(manager):
    parent = manager.launch_async_group(
        [Part(STEPS, (1,), weight=3, title="Big"), Part(STEPS, (1,)), STEPS], title="Import", **NOWHERE
    )
    record = manager.get_progress(parent)
    assert record["title"] == "Import" and record["state"] == "queued" and record["percent"] is None
    assert record["group"] == {
        "parts": 3,
        "policy": "continue",
        "counts": {**dict.fromkeys(GROUP_STATES, 0), "queued": 3},
    }
    names = _parts(manager, parent)
    assert names == [f"{parent}.0", f"{parent}.1", f"{parent}.2"]
    first = manager.get_progress(names[0])
    assert first["part"] == {"group": parent, "index": 0, "weight": 3.0} and first["title"] == "Big"
    assert first["state"] == "queued" and first["owner"] is None
    assert set(manager.active_tasks()) >= {parent, *names}
    assert [entry["event"] for entry in recorded_events(parent)] == ["create"]


def test_the_parent_counts_its_parts_and_combines_their_percent_by_weight(manager):
    parent = manager.launch_async_group([Part(STEPS, (1,), weight=3), Part(STEPS, (1,), weight=1)], **NOWHERE)
    heavy, light = _parts(manager, parent)
    _start(heavy)
    manager.update_progress(heavy, percent=50)
    record = _settled(manager, parent, lambda r: r["percent"] == 37.5)  # 50 % of three quarters
    assert record["state"] == "running" and record["group"]["counts"]["running"] == 1
    manager.finish(heavy, "success")
    record = _settled(manager, parent, lambda r: r["group"]["counts"]["success"] == 1)
    assert record["percent"] == 75.0 and record["state"] == "running"
    _start(light)
    manager.finish(light, "success")
    record = manager.get_progress(parent)  # a final state is published at once
    assert record["state"] == "success" and record["percent"] == 100.0
    assert record["group"]["counts"] == {**dict.fromkeys(GROUP_STATES, 0), "success": 2}
    assert parent not in manager.active_tasks()
    assert [entry["event"] for entry in recorded_events(parent)] == ["create", "complete"]


def test_continue_ends_failure_once_every_part_ended(manager):
    parent = manager.launch_async_group([STEPS, STEPS, STEPS], **NOWHERE)
    first, second, third = _parts(manager, parent)
    for name in (first, second):
        _start(name)
    manager.finish(first, "failure", error="Broken.")
    assert manager.get_progress(parent)["state"] != "failure"  # the others go on
    manager.finish(second, "success")
    _start(third)
    manager.finish(third, "success")
    record = manager.get_progress(parent)
    assert record["state"] == "failure" and record["error"] == "1 of 3 parts failed."
    assert record["group"]["counts"]["success"] == 2 and record["group"]["counts"]["failure"] == 1


def test_fail_fast_ends_at_the_first_failure_and_cancels_the_others(manager):
    parent = manager.launch_async_group([STEPS, STEPS, STEPS], on_failure="fail_fast", **NOWHERE)
    failing, running, queued = _parts(manager, parent)
    for name in (failing, running):
        _start(name)
    manager.finish(failing, "failure", error="Broken.")
    record = manager.get_progress(parent)
    assert record["state"] == "failure" and record["error"] == "1 of 3 parts failed."
    assert manager.get_progress(queued)["state"] == "cancelled"  # revoked and ended at once
    assert get_store().is_cancelled(running)  # stops at its next update
    with pytest.raises(Exception, match=running):
        manager.update_progress(running, "still here")
    assert [entry["event"] for entry in recorded_events(parent)] == ["create", "fail"]


def test_cancelling_the_parent_cancels_its_parts_and_it_ends_with_the_last(manager, django_user_model):
    owner = django_user_model.objects.create_user("group-owner")
    parent = manager.launch_async_group([STEPS, STEPS], user=owner, **NOWHERE)
    running, queued = _parts(manager, parent)
    _start(running)
    assert manager.cancel(parent, user=owner)
    assert manager.get_progress(queued)["state"] == "cancelled"
    assert manager.get_progress(parent)["state"] == "running"  # until its running part stops
    manager.finish(running, "cancelled")
    record = manager.get_progress(parent)
    assert record["state"] == "cancelled" and record["group"]["counts"]["cancelled"] == 2


def test_the_group_reserves_its_conflict_ids_once_and_frees_them_when_it_ends(manager, widget):
    parent = manager.launch_async_group([STEPS, STEPS], conflict_ids=widget, **NOWHERE)
    with pytest.raises(ConflictError):
        manager.launch_async_task(STEPS, 1, conflict_ids=widget, **NOWHERE)
    for name in _parts(manager, parent):
        _start(name)
        manager.finish(name, "success")
    assert manager.get_progress(parent)["state"] == "success"
    assert manager.check_conflict(widget) == {}


@pytest.mark.parametrize(
    ("parts", "options", "message"),
    [
        ([], {}, "at least one part"),
        ([Part(STEPS, weight=0)], {}, "Part 0: the weight must be a positive number"),
        ([STEPS, Part(STEPS, weight=-1)], {}, "Part 1: the weight"),
        ([Part(STEPS, weight=True)], {}, "Part 0: the weight"),
        ([STEPS, "tests.testapp.workers.no_such_function"], {}, "Part 1: 'tests.testapp.workers.no_such_function'"),
        ([STEPS], {"on_failure": "sometimes"}, "on_failure must be one of continue, fail_fast"),
        ([STEPS], {"task_name": "x" * 125}, "leaves no room"),
    ],
)
def test_bad_groups_are_refused_before_anything_is_reserved_or_recorded(manager, widget, parts, options, message):
    before = set(manager.active_tasks())
    with pytest.raises(ValueError, match=message):
        manager.launch_async_group(parts, conflict_ids=widget, **options, **NOWHERE)
    assert set(manager.active_tasks()) == before and manager.check_conflict(widget) == {}


def test_more_parts_than_the_limit_are_refused(manager, settings):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "GROUP_MAX_PARTS": 3}
    with pytest.raises(ValueError, match=r"4 parts, more than GROUP_MAX_PARTS \(3\)"):
        manager.launch_async_group([STEPS] * 4, **NOWHERE)


def test_a_failed_enqueue_midway_revokes_what_was_enqueued_and_forgets_everything(manager, monkeypatch, widget):
    from realtime_async import async_manager

    sent, revoked = [], []

    def apply_async(*, kwargs, task_id, **options):
        if len(sent) == 2:
            raise ConnectionError("broker away")
        sent.append(task_id)

    monkeypatch.setattr(async_manager.run_async_task, "apply_async", apply_async)
    monkeypatch.setattr(type(manager), "_revoke", lambda self, names: revoked.extend(names))
    with pytest.raises(ConnectionError):
        manager.launch_async_group([STEPS] * 4, task_name="group-broken", conflict_ids=widget, **NOWHERE)
    assert revoked == sent == ["group-broken.0", "group-broken.1"]
    assert manager.get_progress("group-broken") is None and manager.get_progress("group-broken.0") is None
    assert manager.check_conflict(widget) == {} and "group-broken" not in manager.active_tasks()


def test_cleanup_ends_a_group_whose_last_final_write_was_lost(manager):
    parent = manager.launch_async_group([STEPS], **NOWHERE)
    (part,) = _parts(manager, parent)
    _start(part)
    # The part ended, but the parent did not hear of it (as if that write's group step was lost).
    get_store().client.hset(f"{get_store().prefix}:gp:{parent}", part, json.dumps({"s": "success", "p": 100, "w": 1}))
    get_store().client.hset(f"{get_store().prefix}:t:{parent}", mapping={"g:running": 0, "g:success": 1, "g:ended": 1})
    summary = manager.cleanup_completed_tasks()
    assert parent in [entry["task"] for entry in summary["cleaned"]]
    assert manager.get_progress(parent)["state"] == "success"


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    weights=st.lists(st.integers(1, 5), min_size=1, max_size=6),
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.one_of(st.integers(0, 100), st.sampled_from(sorted(FINAL_STATES)))),
        max_size=25,
    ),
)
def test_the_aggregate_equals_a_recomputation_from_the_parts(manager, weights, steps):
    parent = manager.launch_async_group([Part(STEPS, weight=weight) for weight in weights], **NOWHERE)
    names = _parts(manager, parent)
    started: set[str] = set()
    for index, step in steps:
        name = names[index % len(names)]
        if manager.get_progress(name)["state"] in FINAL_STATES:
            continue
        if name not in started:
            _start(name)
            started.add(name)
        if isinstance(step, int):
            get_writer().commit({**get_writer().tracker(name).record, "state": "running", "percent": float(step)})
        else:
            manager.finish(name, step)
    time.sleep(group_link(parent, None).interval + 0.02)  # past the publish interval: a flush publishes
    get_writer().flush_group(group_link(parent, None))
    parts = [manager.get_progress(name) for name in names]
    record = manager.get_progress(parent)
    counts = {state: sum(part["state"] == state for part in parts) for state in GROUP_STATES}
    assert record["group"]["counts"] == counts
    share = [100.0 if part["state"] == "success" else (part.get("percent") or 0.0) for part in parts]
    expected = sum(w * p for w, p in zip(weights, share, strict=True)) / sum(weights)
    if record["state"] != "queued":
        assert record["percent"] == pytest.approx(expected, abs=0.01)
    ended = all(part["state"] in FINAL_STATES for part in parts)
    assert (record["state"] in FINAL_STATES) == ended
    if ended:
        assert record["state"] == ("success" if counts["success"] == len(parts) else record["state"])
