"""Cleanup of lost tasks: the ``realtime_async_cleanup`` command, the manager call and the beat task."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.management import call_command

from realtime_async._core.store import WriteMode, get_store
from realtime_async._writing.writer import get_writer


def _record(name, state, **fields):
    now = time.time()
    return {"task": name, "state": state, "created_at": now, "updated_at": now, **fields}


@pytest.fixture
def scenario(manager):
    """A running task whose heartbeat is gone, a live one, a queued one and a stale registry entry."""
    store = get_store()
    for name, state in [("dead", "running"), ("alive", "running"), ("waiting", "queued")]:
        get_writer().commit(_record(name, state), mode=WriteMode.CREATE)
        store.add_active(name)
    manager.add_conflict_ids("dead", {"testapp.Project": {1}})
    store.renew("alive", lock_ttl=60, heartbeat_timeout=60, state_ttl=60)
    store.add_active("ghost")
    return store


def _run(*args):
    out = StringIO()
    call_command("realtime_async_cleanup", *args, stdout=out)
    return out.getvalue()


def test_dry_run_reports_and_changes_nothing(scenario, manager):
    summary = json.loads(_run("--dry-run", "--json"))
    assert summary["dry_run"] is True and summary["active"] == 4
    assert {item["task"]: item["reason"] for item in summary["cleaned"]} == {
        "dead": "heartbeat expired: worker lost",
        "ghost": "no state record (expired or removed)",
    }
    assert {item["task"] for item in summary["skipped"]} == {"alive", "waiting"}
    assert manager.get_progress("dead")["state"] == "running"
    assert sorted(manager.active_tasks()) == ["alive", "dead", "ghost", "waiting"]
    assert manager.check_conflict({"testapp.Project": {1}}) == {"testapp.project": {"1": "dead"}}


def test_cleanup_ends_lost_tasks_and_frees_their_locks(scenario, manager):
    summary = json.loads(_run("--json"))
    assert summary["dry_run"] is False
    assert sorted(item["task"] for item in summary["cleaned"]) == ["dead", "ghost"]
    assert manager.get_progress("dead")["state"] == "lost"
    assert manager.get_progress("alive")["state"] == "running"
    assert manager.get_progress("waiting")["state"] == "queued"
    assert sorted(manager.active_tasks()) == ["alive", "waiting"]
    assert manager.check_conflict({"testapp.Project": {1}}) == {}


def test_text_output(scenario):
    text = _run("--dry-run")
    assert "Would clean dead: heartbeat expired: worker lost" in text
    assert "Skipped alive: running with a live heartbeat" in text


def test_old_queued_task_is_lost(manager, settings):
    get_writer().commit(_record("old", "queued", created_at=time.time() - 100), mode=WriteMode.CREATE)
    get_store().add_active("old")
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "QUEUED_TIMEOUT": 50}
    summary = manager.cleanup_completed_tasks()
    assert summary["cleaned"] == [{"task": "old", "reason": "queued longer than QUEUED_TIMEOUT", "state": "queued"}]
    assert manager.get_progress("old")["state"] == "lost"


def test_beat_schedule_task_runs_cleanup(scenario, manager):
    from realtime_async.schedules import cleanup_async_artifacts

    summary = cleanup_async_artifacts.apply().get()
    assert sorted(item["task"] for item in summary["cleaned"]) == ["dead", "ghost"]
