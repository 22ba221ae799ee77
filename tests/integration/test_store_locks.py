"""Conflict locks in the store: all or nothing, re-entrant, released by their holder, across processes."""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from collections import defaultdict

import pytest

from realtime_async._core.store import CacheStore, WriteMode, get_store
from realtime_async._writing.writer import get_writer
from realtime_async.exceptions import ConflictError
from tests import racer
from tests.services import wait_for
from tests.testapp.managers import recorded_events


def _name() -> str:
    return f"lock-{uuid.uuid4().hex[:10]}"


def test_racing_processes_exactly_one_wins_every_time():
    rounds, racers = 220, 4
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(racers), ctx.Queue()
    procs = [ctx.Process(target=racer.race, args=(i, rounds, barrier, results)) for i in range(racers)]
    for proc in procs:
        proc.start()
    outcomes = defaultdict(list)
    for _ in range(rounds * racers):
        r, index, won = results.get(timeout=60)
        outcomes[r].append((index, won))
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert len(outcomes) == rounds
    for r, entries in outcomes.items():
        winners = [index for index, won in entries if won]
        assert len(entries) == racers
        assert len(winners) == 1, f"round {r}: winners {winners}"


def test_all_or_nothing(manager):
    a, b = _name(), _name()
    assert manager.add_conflict_ids(a, {"testapp.Thing": {1, 2}})
    assert not manager.add_conflict_ids(b, {"testapp.Thing": {2, 3}, "testapp.Other": {"x"}})
    # b reserved nothing: 3 and Other:x are still free.
    assert manager.check_conflict({"testapp.Thing": {1, 2, 3}, "testapp.Other": {"x"}}) == {
        "testapp.thing": {"1": a, "2": a}
    }
    assert manager.add_conflict_ids(b, {"testapp.Thing": {3}, "testapp.Other": {"x"}})
    manager.remove_conflict_ids(a)
    manager.remove_conflict_ids(b)


def test_reentrant_for_the_holder(manager):
    a = _name()
    assert manager.add_conflict_ids(a, {"testapp.Thing": {10}})
    assert manager.add_conflict_ids(a, {"testapp.Thing": {10, 11}})
    assert manager.check_conflict({"testapp.Thing": {10, 11}}) == {"testapp.thing": {"10": a, "11": a}}
    assert manager.remove_conflict_ids(a) == 2
    assert manager.check_conflict({"testapp.Thing": {10, 11}}) == {}


def test_release_only_by_the_holder(manager, redis_client):
    a, b = _name(), _name()
    assert manager.add_conflict_ids(a, {"testapp.Thing": {20}})
    # a's lock expires and b takes the object.
    lock_key = f"{manager_store_prefix()}:l:testapp.thing:20"
    redis_client.pexpire(lock_key, 1)
    wait_for(lambda: not redis_client.exists(lock_key), 5, what="lock expiry")
    assert manager.add_conflict_ids(b, {"testapp.Thing": {20}})
    assert not manager.holds_locks(a)  # a can tell it lost the object before writing
    assert manager.holds_locks(b)
    assert manager.remove_conflict_ids(a) == 0
    assert manager.check_conflict({"testapp.Thing": {20}}) == {"testapp.thing": {"20": b}}
    manager.remove_conflict_ids(b)


def manager_store_prefix() -> str:
    return get_store().prefix


def test_uuid_and_string_primary_keys(manager):
    a, b = _name(), _name()
    key = uuid.uuid4()
    assert manager.add_conflict_ids(a, {"testapp.Thing": {key}, "testapp.Slug": {"alpha", "β-unicode"}})
    # The same UUID as text, upper-cased, is the same object.
    assert not manager.add_conflict_ids(b, {"testapp.Thing": {str(key).upper()}})
    assert not manager.add_conflict_ids(b, {"testapp.Slug": {"β-unicode"}})
    assert manager.add_conflict_ids(b, {"testapp.Slug": {"beta"}})
    assert manager.check_conflict({"testapp.Thing": [key]}) == {"testapp.thing": {str(key): a}}
    manager.remove_conflict_ids(a)
    manager.remove_conflict_ids(b)


def test_launch_conflict_names_holder_and_reserves_nothing(manager):
    holder, name = _name(), _name()
    assert manager.add_conflict_ids(holder, {"testapp.Thing": {30}})
    with pytest.raises(ConflictError) as excinfo:
        manager.launch_async_task(
            "tests.testapp.workers.steps", 1, task_name=name, conflict_ids={"testapp.Thing": {30, 31}}
        )
    assert excinfo.value.holder == holder
    assert holder in str(excinfo.value)
    assert manager.check_conflict({"testapp.Thing": {31}}) == {}
    assert manager.get_progress(name) is None
    assert name not in manager.active_tasks()
    manager.remove_conflict_ids(holder)


def test_failed_enqueue_releases_everything(manager, monkeypatch):
    from realtime_async.tasks import run_async_task

    def broken(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(run_async_task, "apply_async", broken)
    name = _name()
    with pytest.raises(ConnectionError):
        manager.launch_async_task(
            "tests.testapp.workers.steps", 1, task_name=name, conflict_ids={"testapp.Thing": {40}}
        )
    assert manager.check_conflict({"testapp.Thing": {40}}) == {}
    assert manager.get_progress(name) is None
    assert name not in manager.active_tasks()
    assert recorded_events(name) == []


def _launch_holding(manager, lock_id: int) -> str:
    """A running task with one lock, a registry entry and a heartbeat, as a worker's would be."""
    name = _name()
    assert manager.add_conflict_ids(name, {"testapp.Thing": {lock_id}})
    get_writer().commit({"task": name, "state": "running", "created_at": time.time()}, mode=WriteMode.CREATE)
    get_store().add_active(name)
    get_store().renew(name, lock_ttl=30, heartbeat_timeout=30, state_ttl=60)
    return name


@pytest.mark.parametrize("store_kind", ["redis", "cache"])
def test_finish_ends_the_task_in_the_final_write_itself(manager, monkeypatch, settings, store_kind):
    # The locks, registry entry and heartbeat go in the same step as the final
    # state: the separate store calls are broken here, and finishing still frees everything.
    if store_kind == "cache":
        settings.CACHES = {**settings.CACHES, "ra-local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "CACHE_ALIAS": "ra-local"}
        assert isinstance(get_store(), CacheStore)
    store_class = type(get_store())
    name = _launch_holding(manager, 60)
    assert get_store().is_alive(name) and name in manager.active_tasks()

    def broken(*args, **kwargs):
        raise AssertionError("finish must not need a separate release step")

    if store_kind == "redis":  # the local-cache store does its steps under one process-wide mutex instead
        for method in ("release", "remove_active"):  # (stopping the heartbeat has no store call of its own)
            monkeypatch.setattr(store_class, method, broken)
    stored = manager.finish(name, "success", result={"ok": True})
    monkeypatch.undo()
    assert stored is not None and stored["state"] == "success"
    assert manager.check_conflict({"testapp.Thing": {60}}) == {}
    assert get_store().task_locks(name) == []
    assert name not in manager.active_tasks()
    assert not get_store().is_alive(name)


def test_a_reader_that_sees_a_final_state_never_finds_its_locks_taken(manager):
    # Another process polls the way a launcher waiting to start the next task would.
    import threading

    rounds, seen = 25, []
    for i in range(rounds):
        name = _launch_holding(manager, 100 + i)
        stop = threading.Event()

        def poll(name=name, lock=100 + i, stop=stop):
            deadline = time.monotonic() + 10
            while not stop.is_set() and time.monotonic() < deadline:
                state = json.loads(get_store().read_state(name))["state"]
                if state == "success":
                    seen.append(manager.check_conflict({"testapp.Thing": {lock}}))
                    return

        reader = threading.Thread(target=poll)
        reader.start()
        manager.finish(name, "success")
        reader.join(15)
        stop.set()
    assert len(seen) == rounds
    assert seen == [{}] * rounds
