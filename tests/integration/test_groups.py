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


# -- the fan-in step ---------------------------------------------------------------------
class _Enqueued:
    def __init__(self, monkeypatch, manager):
        self.calls = []
        monkeypatch.setattr(type(manager), "_enqueue", lambda _, spec, args: self.calls.append((spec, args)))


def test_then_runs_once_with_the_results_in_part_order_and_ends_the_group(manager, monkeypatch):
    enqueued = _Enqueued(monkeypatch, manager)
    parent = manager.launch_async_group(
        [Part(STEPS, (1,), weight=2), Part(STEPS, (2,), weight=2)],
        then=Part(STEPS, ("merge",), weight=4, title="Merge"),
        **NOWHERE,
    )
    first, second = _parts(manager, parent)
    assert manager.get_progress(parent)["group"]["parts"] == 2  # the step is not a part
    then_name = f"{parent}.then"
    assert manager.get_progress(then_name)["state"] == "queued"
    enqueued.calls.clear()  # the parts' own enqueues
    for name, result in ((second, "b"), (first, "a")):
        _start(name)
        manager.finish(name, "success", result=result)
    record = manager.get_progress(parent)
    assert record["state"] == "running" and record["stage"] == "Merge" and record["percent"] == 50.0
    ((spec, args),) = enqueued.calls
    assert spec["task"] == then_name and args == [["a", "b"], "merge"]  # part order, not finishing order
    _start(then_name)
    manager.update_progress(then_name, percent=50)
    _settled(manager, parent, lambda r: r["percent"] == 75.0)
    manager.finish(then_name, "success", result={"merged": 2})
    record = manager.get_progress(parent)
    assert record["state"] == "success" and record["percent"] == 100.0 and record["stage"] is None
    assert [entry["event"] for entry in recorded_events(parent)] == ["create", "complete"]


@pytest.mark.parametrize("ending", ["failure", "cancel"])
def test_then_never_runs_when_a_part_failed_or_the_group_was_cancelled(manager, monkeypatch, ending, django_user_model):
    enqueued = _Enqueued(monkeypatch, manager)
    owner = django_user_model.objects.create_user(f"then-{ending}")
    parent = manager.launch_async_group([STEPS, STEPS], then=STEPS, user=owner, **NOWHERE)
    first, second = _parts(manager, parent)
    enqueued.calls.clear()
    _start(first)
    if ending == "failure":
        manager.finish(first, "failure", error="Broken.")
    else:
        assert manager.cancel(parent, user=owner)
        manager.finish(first, "cancelled")
    if manager.get_progress(second)["state"] not in FINAL_STATES:
        _start(second)
        manager.finish(second, "success")
    record = manager.get_progress(parent)
    assert record["state"] == ("failure" if ending == "failure" else "cancelled")
    assert enqueued.calls == [] and manager.get_progress(f"{parent}.then")["state"] == "cancelled"


def test_a_failing_then_fails_the_group_with_its_public_error(manager, monkeypatch):
    _Enqueued(monkeypatch, manager)
    parent = manager.launch_async_group([STEPS], then=STEPS, **NOWHERE)
    (part,) = _parts(manager, parent)
    _start(part)
    manager.finish(part, "success")
    _start(f"{parent}.then")
    manager.finish(f"{parent}.then", "failure", error="The totals do not add up.")
    record = manager.get_progress(parent)
    assert record["state"] == "failure" and record["error"] == "The totals do not add up."


def test_then_starts_exactly_once_when_the_last_two_parts_end_at_once_in_two_processes(manager):
    import multiprocessing

    from tests import racer

    rounds = 25
    groups = [manager.launch_async_group([STEPS, STEPS], then=STEPS, **NOWHERE) for _ in range(rounds)]
    for parent in groups:
        for name in _parts(manager, parent):
            _start(name)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=racer.finish_last_parts, args=(i, groups, barrier, results)) for i in range(2)]
    for proc in procs:
        proc.start()
    for _ in range(rounds * 2):
        results.get(timeout=60)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    client, prefix = get_store().client, get_store().prefix
    for parent in groups:
        starts = client.lrange(f"{prefix}:test-then:{parent}.then", 0, -1)
        assert len(starts) == 1, (parent, starts)
        assert json.loads(starts[0]) == [{"part": 0}, {"part": 1}]
        assert manager.get_progress(parent)["state"] == "running"
        client.delete(f"{prefix}:test-then:{parent}.then")


# -- chains ---------------------------------------------------------------------------------
def _stage_states(manager, parent):
    return [(stage["name"], stage["state"]) for stage in manager.get_progress(parent)["stages"]]


def test_a_chain_starts_each_step_when_the_one_before_succeeded_and_shows_them_as_stages(manager, monkeypatch):
    enqueued = _Enqueued(monkeypatch, manager)
    parent = manager.launch_async_chain(
        [Part(STEPS, (1,), title="Fetch"), Part(STEPS, (2,), title="Compute"), Part(STEPS, (3,), title="Fetch")],
        title="Report",
        **NOWHERE,
    )
    fetch, compute, render = _parts(manager, parent)
    assert [spec["task"] for spec, _ in enqueued.calls] == [fetch]  # one step at a time
    assert _stage_states(manager, parent) == [("Fetch", "pending"), ("Compute", "pending"), ("Fetch (2)", "pending")]
    _start(fetch)
    manager.update_progress(fetch, percent=40)
    record = _settled(manager, parent, lambda r: r["stages"][0]["percent"] == 40)
    assert record["stage"] == "Fetch" and record["stages"][0]["state"] == "active"
    manager.finish(fetch, "success")
    assert [spec["task"] for spec, _ in enqueued.calls] == [fetch, compute]
    assert enqueued.calls[1][1] == [2]  # its own arguments
    _start(compute)
    manager.finish(compute, "success")
    _start(render)
    manager.finish(render, "success")
    record = manager.get_progress(parent)
    assert record["state"] == "success" and record["percent"] == 100.0 and record["stage"] is None
    assert [state for _, state in _stage_states(manager, parent)] == ["done", "done", "done"]


def test_a_failed_step_ends_a_fail_fast_chain_and_the_rest_never_runs(manager, monkeypatch):
    enqueued = _Enqueued(monkeypatch, manager)
    parent = manager.launch_async_chain([STEPS, STEPS, STEPS], **NOWHERE)
    first, second, third = _parts(manager, parent)
    _start(first)
    manager.finish(first, "failure", error="No data.")
    record = manager.get_progress(parent)
    assert record["state"] == "failure" and record["error"] == "1 of 3 parts failed."
    assert [state for _, state in _stage_states(manager, parent)] == ["failed", "cancelled", "cancelled"]
    assert [spec["task"] for spec, _ in enqueued.calls] == [first]
    assert manager.get_progress(second)["state"] == manager.get_progress(third)["state"] == "cancelled"


def test_a_continue_chain_goes_on_after_a_failed_step_and_ends_failure(manager, monkeypatch):
    enqueued = _Enqueued(monkeypatch, manager)
    parent = manager.launch_async_chain([STEPS, STEPS], on_failure="continue", **NOWHERE)
    first, second = _parts(manager, parent)
    _start(first)
    manager.finish(first, "failure", error="No data.")
    assert [spec["task"] for spec, _ in enqueued.calls] == [first, second]
    _start(second)
    manager.finish(second, "success")
    assert manager.get_progress(parent)["state"] == "failure"


def test_a_chain_with_a_fan_in_step_and_a_cancel_mid_chain(manager, monkeypatch, django_user_model):
    enqueued = _Enqueued(monkeypatch, manager)
    owner = django_user_model.objects.create_user("chain-owner")
    parent = manager.launch_async_chain([STEPS, STEPS], then=Part(STEPS, title="Merge"), user=owner, **NOWHERE)
    first, second = _parts(manager, parent)
    assert [name for name, _ in _stage_states(manager, parent)][-1] == "Merge"
    _start(first)
    manager.finish(first, "success", result=1)
    _start(second)
    manager.finish(second, "success", result=2)
    spec, args = enqueued.calls[-1]
    assert spec["task"] == f"{parent}.then" and args == [[1, 2]]
    assert manager.get_progress(parent)["stage"] == "Merge"
    assert manager.cancel(parent, user=owner)
    manager.finish(f"{parent}.then", "cancelled")
    record = manager.get_progress(parent)
    assert record["state"] == "cancelled" and [s for _, s in _stage_states(manager, parent)][-1] == "cancelled"


def test_cancelling_a_group_with_a_fan_in_step_waits_for_its_running_parts(manager, monkeypatch, django_user_model):
    _Enqueued(monkeypatch, manager)
    owner = django_user_model.objects.create_user("then-canceller")
    parent = manager.launch_async_group([STEPS, STEPS], then=STEPS, user=owner, **NOWHERE)
    running, _queued = _parts(manager, parent)
    _start(running)
    assert manager.cancel(parent, user=owner)
    assert manager.get_progress(f"{parent}.then")["state"] == "cancelled"  # it never starts
    record = manager.get_progress(parent)
    assert record["state"] == "running"  # and its locks are still held: a part still works
    manager.finish(running, "cancelled")
    assert manager.get_progress(parent)["state"] == "cancelled"


def test_a_parts_updates_go_to_its_own_watchers_not_to_the_feeds_or_the_dashboard(manager, monkeypatch):
    from realtime_async._core.naming import group_for_task
    from realtime_async._writing import writer
    from realtime_async.contrib.dashboard import recorder

    sent, recorded = [], []
    real = writer.publication  # where each write goes, decided once for both kinds of layer

    def publication(task, owner, groups):
        sent.append(groups)
        return real(task, owner, groups)

    monkeypatch.setattr(writer, "publication", publication)
    monkeypatch.setattr(recorder.get_recorder(), "add", lambda name, payload: recorded.append(name))
    parent = manager.launch_async_group([STEPS, STEPS], **NOWHERE)
    part = _parts(manager, parent)[0]
    _start(part)
    sent.clear()
    manager.update_progress(part, percent=10)
    manager.finish(part, "success")
    assert (group_for_task(part),) in sent and all(
        len(groups) == 1 for groups in sent if group_for_task(part) in groups
    )
    other = _parts(manager, parent)[1]
    _start(other)
    manager.finish(other, "success")
    assert parent in recorded and part not in recorded and other not in recorded  # the group is, its parts are not


def test_the_parent_has_a_rate_and_an_eta_from_its_percent(manager):
    parent = manager.launch_async_group([STEPS, STEPS], **NOWHERE)
    first, second = _parts(manager, parent)
    _start(first)
    for percent in (10, 30, 50):
        manager.update_progress(first, percent=percent)
        time.sleep(0.25)
    record = _settled(manager, parent, lambda r: r["percent"] == 25.0 and r.get("rate"))
    assert record["rate"] > 0 and record["eta"] == pytest.approx((100 - 25.0) / record["rate"], abs=0.1)
    for name in (first, second):
        if name == second:
            _start(second)
        manager.finish(name, "success")
    assert manager.get_progress(parent)["eta"] is None


def test_deleting_a_finished_group_deletes_its_parts(manager):
    parent = manager.launch_async_group([STEPS, STEPS], then=STEPS, **NOWHERE)
    names = _parts(manager, parent)
    for name in names:
        _start(name)
        manager.finish(name, "failure", error="Broken.")
    assert manager.get_progress(parent)["state"] == "failure"
    assert manager.delete_task(parent)
    for name in [parent, *names, f"{parent}.then"]:
        assert manager.get_progress(name) is None, name
    assert get_store().group_parts(parent) == {}


def test_parts_are_enqueued_on_commit_and_not_at_all_after_a_rollback(manager, monkeypatch):
    from django.db import transaction

    enqueued = _Enqueued(monkeypatch, manager)
    with transaction.atomic():
        parent = manager.launch_async_group([STEPS, STEPS], **NOWHERE)
        assert enqueued.calls == [] and manager.get_progress(parent)["state"] == "queued"
    assert [spec["task"] for spec, _ in enqueued.calls] == _parts(manager, parent)
    enqueued.calls.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        dropped = manager.launch_async_group([STEPS, STEPS], **NOWHERE)
        raise RuntimeError("rolled back")
    assert enqueued.calls == [] and manager.get_progress(dropped) is None  # forgotten with its parts
    assert manager.get_progress(f"{dropped}.0") is None
