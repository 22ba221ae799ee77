"""The writer (``_writing.writer``): progress records, rate and ETA, coalescing and sticky final states."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time

import pytest
from django.conf import settings
from django.test import override_settings

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode, get_store
from realtime_async._core.store.watched import WRONG_GUESS
from realtime_async._writing.writer import Writer, get_writer, log_line
from realtime_async.exceptions import TaskCancelled
from tests.services import free_port, private_redis, wait_for


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
    """How the store wrote ``name``, in order, each a round trip.

    "set" is a transaction that wrote (the guess held, ``watched.py``), "set?" one that found the
    hash touched; "update" is ``update.lua`` that wrote, "update?" one that found the guess wrong;
    "write" is ``write.lua``; "update (not run)" a script the server did not have yet.
    """
    store, ran = get_store().shard(name), []
    update, write, send = store._update, store._write, store._watched._send

    def spied_send(line, commands):
        replies = send(line, commands)
        if commands[0][0] == "MULTI":
            ran.append("set" if replies[-3] is not None else "set?")
        elif commands[0][0] == "EVALSHA":  # update.lua: write.lua goes through the pool
            ran.append("update" if not isinstance(replies[0], list) or int(replies[0][0]) != WRONG_GUESS else "update?")
            ran[-1] += "" if isinstance(replies[0], list) else " (not run)"
        return replies

    def spied_update(**kwargs):
        answer = update(**kwargs)
        ran.append("update" if int(answer[0]) != WRONG_GUESS else "update?")
        return answer

    def spied_write(**kwargs):
        ran.append("write")
        return write(**kwargs)

    spied_update.sha = update.sha
    monkeypatch.setattr(store._watched, "_send", spied_send)
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
    # The first plain update after write.lua checks by script and starts watching; the next ones are transactions.
    assert ran == ["write", "update", "set", "set", "write", "update"]
    record = manager.get_progress(name)
    assert (record["seq"], record["message"]) == (7, "after the second line")
    assert record["log"] == {"last": 2, "dropped": 0}
    assert [json.loads(line)["text"] for line in get_store().read_log(name).lines] == ["first line", "second line"]


def _in_another_process(work):
    """Run ``work`` in a forked process (its own store, connections and writer), as another worker would."""
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join(30)
    assert child.exitcode == 0


@pytest.mark.reliability
def test_a_write_by_another_process_meanwhile_is_numbered_after_it(manager, monkeypatch, reliability):
    """Another process's write (its own log line here) touches the watched hash: the transaction does
    nothing, and what the connection reads then shows the guess wrong, so write.lua writes, above both."""
    name = _queued(new_task_name("guess"))
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 1e9}):
        ran = _scripts_run(monkeypatch, name)
        manager.update_progress(name, "ours", percent=10)
        _in_another_process(lambda: Writer().change(name, None, line=log_line("from elsewhere", "info")))
        manager.update_progress(name, "ours again", percent=20)
        manager.update_progress(name, "and again", percent=30)
        manager.update_progress(name, "and once more", percent=40)
    get_writer().finish(name)
    assert ran == ["update", "set?", "write", "update", "set"]
    record = manager.get_progress(name)
    assert (record["seq"], record["message"], record["percent"]) == (6, "and once more", 40.0)
    assert record["log"] == {"last": 1, "dropped": 0}  # the other writer's line, kept in the records after it
    reliability(
        "Another process writes a task between two of a worker's updates",
        "a forked process's writer adds a log line (write.lua) while the worker's connection watches the task's hash",
        f"the worker's transaction wrote nothing ({ran[1]}); write.lua numbered its update after the other's "
        f"(seq {record['seq']} at the end, the other's line kept); then transactions again ({ran[-1]})",
    )


def test_a_touch_that_keeps_the_record_costs_one_more_transaction(manager, monkeypatch):
    """A heartbeat's PEXPIRE by another connection touches the hash but not the record: the guess still
    holds, and the second transaction writes."""
    name = _queued(new_task_name("guess"))
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 1e9}):
        store = get_store().shard(name)
        ran = _scripts_run(monkeypatch, name)
        manager.update_progress(name, "one", percent=10)
        manager.update_progress(name, "two", percent=20)
        assert store.client.pexpire(store.state_key(name), 600_000)
        manager.update_progress(name, "three", percent=30)
    get_writer().finish(name)
    assert ran == ["update", "set", "set?", "set"]
    record = manager.get_progress(name)
    assert (record["seq"], record["message"], record["percent"]) == (4, "three", 30.0)


@pytest.mark.reliability
def test_a_final_state_written_by_another_process_is_kept(manager, monkeypatch, reliability):
    name = _queued(new_task_name("guess"))
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 1e9}):
        ran = _scripts_run(monkeypatch, name)
        manager.update_progress(name, "running", percent=10)
        manager.update_progress(name, "still running", percent=20)
        _in_another_process(lambda: manager.finish(name, "failure", error="elsewhere"))
        manager.update_progress(name, "too late", percent=30)
    assert ran == ["update", "set", "set?", "update"]  # the script answers that a final state was kept
    record = manager.get_progress(name)
    assert (record["state"], record["seq"], record["percent"]) == ("failure", 4, 20.0)
    reliability(
        "A task ended by another process while its worker still reports progress",
        "a forked process finishes the task (failure) between two of the worker's watched updates",
        f"the worker's transaction wrote nothing; update.lua kept the final state: {record['state']}, "
        f"seq {record['seq']}, percent {record['percent']}",
    )


@pytest.mark.reliability
def test_a_server_without_watch_is_written_by_script_alone(manager, monkeypatch, reliability):
    """A Redis (or a proxy) that refuses WATCH: the first script's write stands, and scripts write from then on."""
    with private_redis(None, "--rename-command", "WATCH", '""') as (url, _proc, _port):
        caches = {
            **settings.CACHES,
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url},
        }
        with override_settings(CACHES=caches, REALTIME_ASYNC={"PROGRESS_RATE": 1e9}):
            name = _queued(new_task_name("nowatch"))
            ran = _scripts_run(monkeypatch, name)
            for i in range(1, 4):
                manager.update_progress(name, f"step {i}", percent=i * 10)
            assert get_store().shard(name)._watched.usable is False
            record = manager.get_progress(name)
            get_writer().finish(name)
    # The launch's write (by the pool) and the first update, whose round trip finds both the script
    # unknown and WATCH refused (the store's call loads it), then scripts alone.
    assert ran == ["update (not run)", "update", "update", "update"]
    assert (record["seq"], record["message"]) == (4, "step 3")
    reliability(
        "A Redis (or a proxy) that refuses WATCH",
        "private redis-server started with WATCH renamed away; three updates",
        f"every update written once by script ({', '.join(ran)}), seq {record['seq']}; WATCH not asked again",
    )


@pytest.mark.reliability
def test_a_killed_watching_connection_loses_no_update(manager, monkeypatch, reliability):
    """CLIENT KILL of the connection that watches: that update goes by script through the pool, the next reconnect."""
    name = _queued(new_task_name("guess"))
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 1e9}):
        store = get_store().shard(name)  # made anew when the settings change
        ran = _scripts_run(monkeypatch, name)
        manager.update_progress(name, "one", percent=10)
        port = store._watched._line.connection._sock.getsockname()[1]
        assert store.client.client_kill(f"127.0.0.1:{port}")
        for i in range(2, 5):
            manager.update_progress(name, f"step {i}", percent=i * 10)
    get_writer().finish(name)
    assert ran == ["update", "update", "update", "set"]
    record = manager.get_progress(name)
    assert (record["seq"], record["message"], record["percent"]) == (5, "step 4", 40.0)
    reliability(
        "The worker's watching connection killed between two updates",
        "CLIENT KILL of the connection that WATCHes the task's hash, then three updates",
        f"every update written ({', '.join(ran)}): the first by script through the pool, the next on a new "
        f"connection; seq {record['seq']}, the last update's message stored",
    )


def test_a_store_made_again_leaves_no_connection_behind(manager):
    """The watching connection is not the pool's, and a store replaced (a settings change, here five times)
    closes its own: neither the pool's connections nor this process's watching clients add up."""
    name = _queued(new_task_name("guess"))
    client = get_store().shard(name).client
    pool, ours = client.connection_pool, f"realtime_async:watch:{os.getpid()}"
    created = pool._created_connections

    def watching_clients():
        return sum(1 for entry in client.client_list() if entry.get("name") == ours)

    watching = []
    for i in range(5):
        with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 1e9 + i}):
            manager.update_progress(name, f"round {i}", percent=i)
            manager.update_progress(name, f"round {i} again", percent=i + 0.5)
            watching.append(get_store().shard(name)._watched._line.connection)
            assert watching[-1].is_connected and watching_clients() == 1
    assert not any(connection.is_connected for connection in watching)  # each closed with its store
    get_writer().finish(name)
    assert pool._created_connections <= created + 1
    assert watching_clients() <= 1  # the current store's, at most
    assert manager.get_progress(name)["message"] == "round 4 again"
