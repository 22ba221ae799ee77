"""``AsyncManager`` without the store: which class answers, the default permission rule, watch tokens."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from realtime_async.async_manager import AsyncManager
from tests.testapp.managers import OtherManager, RecordingManager


def test_resolve_manager_accepts_classes_paths_and_none():
    assert type(AsyncManager.resolve_manager(OtherManager)) is OtherManager
    assert type(AsyncManager.resolve_manager("tests.testapp.managers.OtherManager")) is OtherManager
    assert type(AsyncManager.resolve_manager()) is RecordingManager  # the setting


@pytest.mark.parametrize("bad", ["no.such.Manager", "tests.testapp.workers.steps", "logging.Logger", object])
def test_resolve_manager_falls_back_and_logs(bad, caplog):
    with caplog.at_level(logging.ERROR, logger="realtime_async"):
        # A bad class falls back to the configured class: RecordingManager here.
        assert type(AsyncManager.resolve_manager(bad)) is RecordingManager
    assert "using tests.testapp.managers.RecordingManager" in caplog.text


def test_permissions_default_rule():
    manager = AsyncManager()
    owner = SimpleNamespace(pk=1, is_authenticated=True, is_staff=False)
    other = SimpleNamespace(pk=2, is_authenticated=True, is_staff=False)
    staff = SimpleNamespace(pk=3, is_authenticated=True, is_staff=True)
    anonymous = SimpleNamespace(pk=None, is_authenticated=False, is_staff=False)
    mine, nobodys = {"owner": 1}, {"owner": None}
    assert manager.can_view(owner, mine) and manager.can_cancel(owner, mine)
    assert not manager.can_view(other, mine)
    assert manager.can_view(staff, mine) and manager.can_view(staff, nobodys)
    assert not manager.can_view(owner, nobodys)
    assert not manager.can_view(anonymous, mine) and not manager.can_view(None, mine)


def test_watch_tokens(settings):
    manager = AsyncManager()
    token = manager.make_watch_token("task-a")
    assert manager.check_watch_token(token, "task-a")
    assert not manager.check_watch_token(token, "task-b")
    assert not manager.check_watch_token(token + "x", "task-a")
    assert not manager.check_watch_token("", "task-a")
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "WATCH_TOKEN_MAX_AGE": 0.001}
    import time

    time.sleep(0.01)
    assert not manager.check_watch_token(token, "task-a")
