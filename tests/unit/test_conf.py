from __future__ import annotations

import pytest
from django.test import override_settings

from realtime_async.conf import Settings, get_settings
from realtime_async.exceptions import ImproperlyConfiguredError


def test_defaults():
    with override_settings(REALTIME_ASYNC={}):
        conf = get_settings()
    assert conf == Settings()
    assert conf.heartbeat_timeout == 3 * conf.heartbeat_interval
    assert conf.async_manager_class_path == "realtime_async.async_manager.AsyncManager"


def test_unknown_key_fails_loudly_naming_valid_keys():
    with override_settings(REALTIME_ASYNC={"PROGRES_RATE": 5}), pytest.raises(ImproperlyConfiguredError) as excinfo:
        get_settings()
    assert "PROGRES_RATE" in str(excinfo.value) and "PROGRESS_RATE" in str(excinfo.value)


@pytest.mark.parametrize("value", [0, -1, "10", None])
def test_numbers_must_be_positive(value):
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": value}), pytest.raises(ImproperlyConfiguredError):
        get_settings()


def test_heartbeat_timeout_must_exceed_interval():
    with (
        override_settings(REALTIME_ASYNC={"HEARTBEAT_INTERVAL": 10, "HEARTBEAT_TIMEOUT": 5}),
        pytest.raises(ImproperlyConfiguredError),
    ):
        get_settings()


def test_cached_and_reset_on_setting_changed():
    first = get_settings()
    assert get_settings() is first
    with override_settings(REALTIME_ASYNC={"PROGRESS_RATE": 3}):
        assert get_settings().progress_rate == 3
    assert get_settings().progress_rate == first.progress_rate


def test_not_a_dict():
    with override_settings(REALTIME_ASYNC=["nope"]), pytest.raises(ImproperlyConfiguredError):
        get_settings()


@pytest.mark.parametrize("value", [0, 1, "yes", None])
def test_fast_broadcast_must_be_a_bool(value):
    with override_settings(REALTIME_ASYNC={"FAST_BROADCAST": value}), pytest.raises(ImproperlyConfiguredError):
        get_settings()
