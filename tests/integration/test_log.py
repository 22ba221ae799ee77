"""Log lines in the store and the writer: numbered in order, bounded, written with the state, resumable."""

from __future__ import annotations

import json

import pytest

from realtime_async._core.store import CacheStore, Lines, LogRead, RedisStore, get_store
from realtime_async._writing.writer import get_writer, log_line
from realtime_async.exceptions import TaskCancelled
from tests.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
NOWHERE = {"queue": "realtime-async-tests-nowhere"}


@pytest.fixture(params=["redis", "cache"])
def store_kind(request, settings):
    """Both stores keep the same log: ``write.lua`` on Redis, ``CacheStore._append`` elsewhere."""
    if request.param == "cache":
        settings.CACHES = {**settings.CACHES, "ra-local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "CACHE_ALIAS": "ra-local"}
        assert isinstance(get_store(), CacheStore)
    else:
        assert isinstance(get_store(), RedisStore)
    return request.param


def _texts(read: LogRead) -> list[str]:
    return [json.loads(line)["text"] for line in read.lines]


def _numbers(read: LogRead) -> list[int]:
    return [json.loads(line)["n"] for line in read.lines]


def _lines(*texts: str, level: str = "info") -> Lines:
    lines = Lines()
    for text in texts:
        lines.add(log_line(text, level), 1000)
    return lines


def _write(name, *texts, state="running"):
    body = json.dumps({"task": name, "state": state})[1:]
    return get_store().write_state(name, state, body, ttl=60, lines=_lines(*texts))


def test_lines_are_numbered_in_order_and_ride_on_the_record_that_wrote_them(store_kind):
    first = _write("log-order", "one", "two")
    record = json.loads(first.record_json)
    assert record["log"]["last"] == 2 and record["log"]["dropped"] == 0
    assert [(line["n"], line["text"], line["level"]) for line in record["log"]["lines"]] == [
        (1, "one", "info"),
        (2, "two", "info"),
    ]
    stored = json.loads(get_store().read_state("log-order"))
    assert stored["log"] == {"last": 2, "dropped": 0}  # the stored record says how far the log goes, no lines
    second = json.loads(_write("log-order", "three").record_json)
    assert [line["n"] for line in second["log"]["lines"]] == [3]
    quiet = json.loads(_write("log-order").record_json)
    assert quiet["log"] == {"last": 3, "dropped": 0}  # a write without lines carries no lines
    assert _texts(get_store().read_log("log-order")) == ["one", "two", "three"]
    assert _texts(get_store().read_log("log-order", after=1)) == ["two", "three"]
    assert get_store().read_log("log-order", after=3).lines == []


def test_a_task_that_never_logged_has_no_log_field(store_kind):
    record = json.loads(_write("log-none").record_json)
    assert "log" not in record
    assert get_store().read_log("log-none") == LogRead(0, 0, [])
    assert get_store().read_log("log-unknown-task") == LogRead(0, 0, [])


def test_the_log_keeps_the_newest_lines_within_both_bounds(store_kind, settings):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "LOG_MAX_LINES": 5, "LOG_MAX_BYTES": 400}
    for batch in range(4):
        _write("log-bound", *(f"line {batch * 3 + i + 1}" for i in range(3)))
    read = get_store().read_log("log-bound")
    assert _numbers(read) == [8, 9, 10, 11, 12] and read.last == 12 and read.dropped == 7
    assert _numbers(get_store().read_log("log-bound", after=2)) == [8, 9, 10, 11, 12]  # what is gone stays gone
    assert _numbers(get_store().read_log("log-bound", after=10)) == [11, 12]
    long = "x" * 120
    _write("log-bound", long, long, long)  # three lines over 400 bytes: only the newest two fit
    read = get_store().read_log("log-bound")
    assert _numbers(read) == [14, 15] and read.dropped == 13
    assert sum(len(line.encode()) for line in read.lines) <= 400


def test_a_new_launch_of_the_same_name_starts_a_new_log(store_kind, manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, task_name="log-relaunch", **NOWHERE)
    manager.log(name, "first run")
    manager.finish(name, "success")
    assert get_store().read_log(name).last == 1
    manager.launch_async_task("tests.testapp.workers.steps", 1, task_name="log-relaunch", **NOWHERE)
    assert get_store().read_log(name) == LogRead(0, 0, []) and "log" not in manager.get_progress(name)


def test_coalescing_never_drops_a_line_and_the_final_write_carries_the_last_ones(store_kind, manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, **NOWHERE)
    for i in range(200):  # far faster than PROGRESS_RATE: most calls are coalesced
        manager.update_progress(name, f"row {i}", current=i, total=200)
        manager.log(name, f"row {i} done", level="success" if i % 2 else "info")
    manager.finish(name, "success")
    read = get_store().read_log(name)
    assert _texts(read) == [f"row {i} done" for i in range(200)] and _numbers(read) == list(range(1, 201))
    assert manager.get_progress(name)["log"] == {"last": 200, "dropped": 0}


def test_log_lines_are_plain_text_on_bounded_lines(manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, **NOWHERE)
    manager.log(name, "<b>bold</b>\x1b[31m red\r\nnext\x00", level="warning")
    manager.log(name, "y" * 5000)
    manager.log(name, 42)
    manager.finish(name, "success")
    texts = _texts(get_store().read_log(name))
    assert texts[0] == "<b>bold</b>[31m red\nnext"  # stored as text, escaped where shown; control characters gone
    assert len(texts[1]) == 1000 and texts[1].endswith("…")
    assert texts[2] == "42"
    with pytest.raises(ValueError, match="level must be one of debug, info, success, warning, error"):
        manager.log(name, "x", level="fatal")


def test_log_raises_task_cancelled_like_update_progress(manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, **NOWHERE)
    manager.update_progress(name, "started")
    get_store().set_cancel(name, 60)
    wait_for(lambda: _cancel_seen(manager, name), 5, 0.05, "the cancel flag seen by the writer")
    with pytest.raises(TaskCancelled):
        manager.log(name, "after the cancel")


def _cancel_seen(manager, name):
    try:
        manager.update_progress(name, "still going")
    except TaskCancelled:
        return True
    return False


def test_lines_of_a_failed_write_are_written_with_the_next_one(manager, monkeypatch):
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, **NOWHERE)
    store_class = type(get_store())
    real = store_class._write_state
    calls = {"n": 0}

    def flaky(self, write):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("Redis away")
        return real(self, write)

    monkeypatch.setattr(store_class, "_write_state", flaky)
    manager.log(name, "lost in a failed write?")
    monkeypatch.setattr(store_class, "_write_state", real)
    manager.log(name, "after it")
    manager.finish(name, "success")
    assert calls["n"] >= 1 and _texts(get_store().read_log(name)) == ["lost in a failed write?", "after it"]
    assert get_writer().tracker(name) is None
