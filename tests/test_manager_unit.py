from __future__ import annotations

import importlib
import logging
import pkgutil
from types import SimpleNamespace

import pytest

import realtime_async
from realtime_async.async_manager import AsyncManager
from realtime_async.naming import group_for_task, group_for_user, new_task_name, validate_task_name
from tests.testapp.managers import OtherManager, RecordingManager


def test_resolve_manager_accepts_classes_paths_and_none():
    assert type(AsyncManager.resolve_manager(OtherManager)) is OtherManager
    assert type(AsyncManager.resolve_manager("tests.testapp.managers.OtherManager")) is OtherManager
    assert type(AsyncManager.resolve_manager()) is RecordingManager  # the setting


@pytest.mark.parametrize("bad", ["no.such.Manager", "tests.testapp.workers.steps", "logging.Logger", object])
def test_resolve_manager_falls_back_and_logs(bad, caplog):
    with caplog.at_level(logging.ERROR, logger="realtime_async"):
        assert type(AsyncManager.resolve_manager(bad)) is AsyncManager
    assert "using AsyncManager" in caplog.text


def test_task_names():
    name = new_task_name()
    assert validate_task_name(name) == name and len(name) > 20
    assert new_task_name() != name
    for bad in ["", "a" * 129, "../etc/passwd", "spaces here", "ünïcode", None, 5]:
        with pytest.raises(ValueError):
            validate_task_name(bad)


def test_group_names_follow_channels_rules():
    import re

    for group in [group_for_task("x" * 128), group_for_task("a:b@c+d"), group_for_user(12), group_for_user("ü")]:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,99}", group)
    assert group_for_task("a") != group_for_task("b") != group_for_user("a")


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


def test_launch_validates_before_touching_anything():
    manager = AsyncManager()
    with pytest.raises(ValueError, match="Invalid task name"):
        manager.launch_async_task("tests.testapp.workers.steps", task_name="../bad")
    with pytest.raises(ValueError, match="cannot be imported"):
        manager.launch_async_task(lambda: None)
    assert manager.active_tasks() == []


def _public_modules():
    for info in pkgutil.walk_packages(realtime_async.__path__, "realtime_async."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or ".migrations" in info.name or ".management" in info.name:
            continue
        module = importlib.import_module(info.name)
        if hasattr(module, "__all__"):
            yield module


@pytest.mark.parametrize("module", list(_public_modules()), ids=lambda m: m.__name__)
def test_dunder_all_is_sorted_and_complete(module):
    names = module.__all__
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n))
    for name in names:
        assert hasattr(module, name), name
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
        and (callable(value) or isinstance(value, type))
    }
    assert public <= set(names), public - set(names)
