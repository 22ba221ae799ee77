"""The writer (``_writing.writer``): progress records, rate and ETA, coalescing and sticky final states."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.test import override_settings

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode, get_store
from realtime_async._writing.writer import Writer, get_writer, log_line
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


def _scripts_run(monkeypatch, name):
    """The write scripts the store runs for ``name``, in order: "update" (guessed right), "update?" (wrong), "write"."""
    store, ran = get_store().shard(name), []
    update, write = store._update, store._write

    def spied_update(**kwargs):
        answer = update(**kwargs)
        ran.append("update" if int(answer[0]) != -3 else "update?")
        return answer

    def spied_write(**kwargs):
        ran.append("write")
        return write(**kwargs)

    monkeypatch.setattr(store, "_update", spied_update)
    monkeypatch.setattr(store, "_write", spied_write)
    return ran


def test_a_logging_tasks_plain_updates_take_one_script_each(manager, monkeypatch):
    """The writer knows the log's counts it wrote: the record of a plain update is made in Python, even with a log."""
    name = _queued(new_task_name("guess"))
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 1e9}):
        ran = _scripts_run(monkeypatch, name)  # the store is made anew when the settings change
        manager.log(name, "first line")
        for i in range(1, 4):
            manager.update_progress(name, f"step {i}", current=i, total=3)
        manager.log(name, "second line")
        manager.update_progress(name, "after the second line")
    get_writer().finish(name)
    assert ran == ["write", "update", "update", "update", "write", "update"]
    record = manager.get_progress(name)
    assert (record["seq"], record["message"]) == (7, "after the second line")
    assert record["log"] == {"last": 2, "dropped": 0}
    assert [json.loads(line)["text"] for line in get_store().read_log(name).lines] == ["first line", "second line"]


def test_a_write_by_another_process_meanwhile_is_numbered_after_it(manager, monkeypatch):
    """The guess is wrong once another writer wrote (its own log line here): write.lua writes, above both."""
    name = _queued(new_task_name("guess"))
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 1e9}):
        ran = _scripts_run(monkeypatch, name)
        manager.update_progress(name, "ours", percent=10)
        elsewhere = Writer()  # another process's writer: its own tracker, seeded from the store
        elsewhere.change(name, None, line=log_line("from elsewhere", "info"))
        manager.update_progress(name, "ours again", percent=20)
        manager.update_progress(name, "and again", percent=30)
    get_writer().finish(name)
    assert ran == ["update", "write", "update?", "write", "update"]
    record = manager.get_progress(name)
    assert (record["seq"], record["message"], record["percent"]) == (5, "and again", 30.0)
    assert record["log"] == {"last": 1, "dropped": 0}  # the other writer's line, kept in the records after it
