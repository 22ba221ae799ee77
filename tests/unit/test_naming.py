"""Task names and Channels group names (``_core.naming``)."""

from __future__ import annotations

import pytest

from realtime_async._core.naming import group_for_task, group_for_user, new_task_name, validate_task_name


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
