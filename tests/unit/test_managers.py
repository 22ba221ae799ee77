"""Which manager class answers: the configured one wherever the base class is used, a subclass as given."""

from __future__ import annotations

import logging

from django.test import override_settings

from realtime_async import AsyncManager
from realtime_async._core.managers import configured_class, resolve_manager
from tests.testapp.managers import OtherManager, RecordingManager

CONFIGURED = "tests.testapp.managers.RecordingManager"


@override_settings(REALTIME_ASYNC={"ASYNC_MANAGER_CLASS_PATH": CONFIGURED})
def test_the_base_class_builds_the_configured_class():
    assert configured_class() is RecordingManager
    assert type(AsyncManager()) is RecordingManager
    assert type(AsyncManager.resolve_manager()) is RecordingManager
    assert type(resolve_manager(AsyncManager)) is RecordingManager
    assert type(resolve_manager("realtime_async.async_manager.AsyncManager")) is RecordingManager
    # The worker is told the configured class, whichever instance launched.
    assert type(AsyncManager()).class_path() == CONFIGURED


@override_settings(REALTIME_ASYNC={"ASYNC_MANAGER_CLASS_PATH": CONFIGURED})
def test_a_subclass_or_an_explicit_class_is_used_as_given():
    assert type(OtherManager()) is OtherManager
    assert type(resolve_manager(OtherManager)) is OtherManager
    assert type(resolve_manager("tests.testapp.managers.OtherManager")) is OtherManager


@override_settings(REALTIME_ASYNC={})
def test_without_a_setting_the_base_class_is_itself():
    assert type(AsyncManager()) is AsyncManager


@override_settings(REALTIME_ASYNC={"ASYNC_MANAGER_CLASS_PATH": "tests.testapp.nowhere.Manager"})
def test_an_unimportable_setting_falls_back_loudly(caplog):
    with caplog.at_level(logging.ERROR, logger="realtime_async"):
        assert type(AsyncManager()) is AsyncManager
    assert "cannot import manager 'tests.testapp.nowhere.Manager'; using realtime_async.async_manager.AsyncManager" in (
        caplog.text
    )


@override_settings(REALTIME_ASYNC={"ASYNC_MANAGER_CLASS_PATH": "tests.testapp.managers.recorded_events"})
def test_a_setting_that_is_no_manager_falls_back_loudly(caplog):
    with caplog.at_level(logging.ERROR, logger="realtime_async"):
        assert type(resolve_manager()) is AsyncManager
    assert "is not an AsyncManager subclass" in caplog.text
