from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.test import override_settings

REDIS = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/11"}
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
# Model checks (the dashboard's JSONFields) ask the database what it supports.
pytestmark = pytest.mark.django_db

SAFE_HOSTS = [{"address": "redis://127.0.0.1:6379/11", "socket_timeout": None}]


def _ids(**overrides):
    with override_settings(**overrides):
        return sorted(message.id for message in run_checks() if message.id.startswith("realtime_async"))


def test_test_settings_pass():
    assert _ids() == []


@pytest.mark.parametrize(
    "backend", ["locmem.LocMemCache", "dummy.DummyCache", "filebased.FileBasedCache", "db.DatabaseCache"]
)
def test_process_local_cache_is_an_error_outside_debug(backend):
    cache = {"BACKEND": f"django.core.cache.backends.{backend}", "LOCATION": "/tmp/ra-check"}
    assert _ids(CACHES={"default": cache}) == ["realtime_async.E001"]
    assert _ids(CACHES={"default": cache}, DEBUG=True) == []


def test_missing_cache_alias():
    assert _ids(REALTIME_ASYNC={"CACHE_ALIAS": "progress"}) == ["realtime_async.E005"]


def test_missing_channel_layer():
    assert _ids(CHANNEL_LAYERS={}) == ["realtime_async.E002"]


def test_in_memory_layer_outside_debug():
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert _ids(CHANNEL_LAYERS=layers) == ["realtime_async.E003"]
    assert _ids(CHANNEL_LAYERS=layers, DEBUG=True) == []


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (["redis://127.0.0.1:6379"], ["realtime_async.W001"]),
        ([("127.0.0.1", 6379)], ["realtime_async.W001"]),
        ([{"address": "redis://127.0.0.1:6379"}], ["realtime_async.W001"]),
        ([{"address": "redis://127.0.0.1:6379", "socket_timeout": 5}], ["realtime_async.W001"]),
        ([{"address": "redis://127.0.0.1:6379", "socket_timeout": None}], []),
        ([{"address": "redis://127.0.0.1:6379", "socket_timeout": 30}], []),
        (["redis://127.0.0.1:6379?socket_timeout=60"], []),
        (None, ["realtime_async.W001"]),
    ],
)
def test_layer_socket_timeout(hosts, expected):
    layer = {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": hosts}}
    assert _ids(CHANNEL_LAYERS={"default": layer}) == expected


PUBSUB = "channels_redis.pubsub.RedisPubSubChannelLayer"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, []),  # the cache's server, named another way
        ({"hosts": [{"address": "redis://localhost:6379/3", "socket_timeout": None}]}, []),
        ({"hosts": [{"address": "redis://127.0.0.1:6390/11", "socket_timeout": None}]}, ["realtime_async.W010"]),
        ({"hosts": SAFE_HOSTS * 2}, ["realtime_async.W010"]),
        ({"serializer_format": "json"}, ["realtime_async.W010"]),
        ({"symmetric_encryption_keys": ["k"]}, ["realtime_async.W010"]),
    ],
)
def test_a_pubsub_layer_the_write_script_cannot_publish_for(config, expected):
    layer = {"BACKEND": PUBSUB, "CONFIG": {"hosts": SAFE_HOSTS, **config}}
    assert _ids(CHANNEL_LAYERS={"default": layer}, CACHES={"default": REDIS}) == expected


def test_no_direct_check_without_fast_broadcast():
    layer = {"BACKEND": PUBSUB, "CONFIG": {"hosts": SAFE_HOSTS, "serializer_format": "json"}}
    settings = {"CHANNEL_LAYERS": {"default": layer}, "CACHES": {"default": REDIS}}
    assert _ids(**settings, REALTIME_ASYNC={"FAST_BROADCAST": False}) == []


def test_invalid_settings_are_an_error():
    assert _ids(REALTIME_ASYNC={"PROGRES_RATE": 5}) == ["realtime_async.E004"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, ["realtime_async.W002"]),
        ({"capacity": 200}, ["realtime_async.W002"]),
        ({"channel_capacity": {"realtime_async.hub*": 500}}, ["realtime_async.W002"]),
        ({"channel_capacity": {"other*": 5000}}, ["realtime_async.W002"]),
        ({"channel_capacity": {"realtime_async.hub*": 1000}}, []),
        ({"capacity": 2000}, []),
    ],
)
def test_hub_channel_capacity(config, expected):
    layer = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": SAFE_HOSTS, **config}}
    assert _ids(CHANNEL_LAYERS={"default": layer}) == expected


@pytest.fixture
def celery_conf():
    from celery import current_app

    conf = current_app.conf
    saved = (conf.task_soft_time_limit, conf.task_time_limit, dict(conf.broker_transport_options or {}))
    yield conf
    conf.task_soft_time_limit, conf.task_time_limit, conf.broker_transport_options = saved


@pytest.mark.parametrize(
    ("soft", "hard", "visibility", "expected"),
    [
        (None, None, None, []),
        (60, 120, None, []),
        (60, 120, 300, []),
        (120, 60, None, ["realtime_async.W003"]),
        (60, 60, None, ["realtime_async.W003"]),
        (60, 7200, None, ["realtime_async.W003"]),  # past Redis' default visibility timeout (1 h)
        (60, 120, 90, ["realtime_async.W003"]),
        (600, None, 300, ["realtime_async.W003"]),
    ],
)
def test_time_limits_in_order(celery_conf, soft, hard, visibility, expected):
    celery_conf.task_soft_time_limit, celery_conf.task_time_limit = soft, hard
    options = dict(celery_conf.broker_transport_options or {})
    if visibility is not None:
        options["visibility_timeout"] = visibility
    celery_conf.broker_transport_options = options
    assert _ids() == expected
