"""The writer (``_writing.writer``): progress records, rate and ETA, coalescing and sticky final states."""

from __future__ import annotations

import logging
import time

import pytest
from django.test import override_settings

from realtime_async._core.store import WriteMode, get_store
from realtime_async._writing.writer import get_writer
from realtime_async.exceptions import TaskCancelled
from tests.services import free_port, wait_for


def _queued(name="p1", owner=None):
    now = time.time()
    get_writer().commit({"task": name, "state": "queued", "owner": owner, "created_at": now}, mode=WriteMode.CREATE)
    return name


def test_plain_string_message_keeps_working(manager):
    name = _queued()
    manager.update_progress(name, "Halfway there")
    record = manager.get_progress(name)
    assert (record["state"], record["message"], record["percent"]) == ("running", "Halfway there", None)


def test_rate_and_eta_are_estimated(manager):
    name = _queued()
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 1000}):
        for i in range(1, 6):
            manager.update_progress(name, current=i * 10, total=100)
            time.sleep(0.25)
    record = manager.get_progress(name)
    assert 20 < record["rate"] < 60  # about 40 units a second, generous for a noisy machine
    assert 0.5 < record["eta"] < 3.5  # 50 units left at about 40 a second


@pytest.mark.parametrize("bad", [{"current": -1}, {"total": "ten"}, {"percent": True}, {"data": {"x": object()}}])
def test_bad_arguments_raise_clearly(manager, bad):
    name = _queued()
    with pytest.raises((ValueError, TypeError)):
        manager.update_progress(name, "x", **bad)


def test_hot_loop_writes_a_bounded_number_of_times_and_the_last_one_lands(manager):
    name = _queued()
    start = time.monotonic()
    for i in range(1, 20_001):
        manager.update_progress(name, f"item {i}", current=i, total=20_000)
    elapsed = time.monotonic() - start
    # No further call: the scheduler thread writes the trailing update within one interval.
    record = wait_for(lambda: (r := manager.get_progress(name))["current"] == 20_000 and r, 5, what="trailing write")
    assert record["message"] == "item 20000" and record["percent"] == 100.0
    assert record["seq"] <= 2 + 10 * (elapsed + 1), (record["seq"], elapsed)


def test_final_state_is_sticky(manager):
    name = _queued()
    manager.finish(name, "success", result={"ok": True})
    manager.update_progress(name, "late update", current=1, total=2)
    record = manager.get_progress(name)
    assert (record["state"], record["result"]) == ("success", {"ok": True})
    assert manager.finish(name, "failure", error="late") is None
    assert manager.get_progress(name)["state"] == "success"


def test_cancel_flag_reaches_a_running_task(manager):
    name = _queued()
    get_writer().track({**manager.get_progress(name), "state": "running"})
    manager.update_progress(name, "working", percent=5)
    get_store().set_cancel(name, 60)
    assert manager.is_cancelled(name)
    with pytest.raises(TaskCancelled):
        for i in range(50):  # noticed at the next write, within one coalescing interval
            manager.update_progress(name, "working", percent=6 + i)
            time.sleep(0.02)
    get_writer().finish(name)


def test_unknown_task_is_logged_and_ignored(manager, caplog):
    with caplog.at_level(logging.WARNING, logger="realtime_async"):
        manager.update_progress("no-such-task", "hello")
    assert manager.get_progress("no-such-task") is None
    assert "unknown task" in caplog.text
    manager.update_progress(None, "outside a task: nothing happens")


def test_failed_broadcast_never_raises(manager, caplog):
    dead = {"hosts": [{"address": f"redis://127.0.0.1:{free_port()}", "socket_timeout": 1}]}
    layers = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": dead}}
    name = _queued()
    with override_settings(CHANNEL_LAYERS=layers), caplog.at_level(logging.WARNING, logger="realtime_async"):
        from channels.layers import channel_layers

        channel_layers.backends.clear()
        manager.update_progress(name, "still stored", percent=50)
        manager.finish(name, "success")
        channel_layers.backends.clear()
    assert manager.get_progress(name)["state"] == "success"
    assert "broadcast" in caplog.text
