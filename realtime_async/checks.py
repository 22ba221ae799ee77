"""System checks. IDs are stable and documented in the README.

- ``realtime_async.E001``: the cache cannot hold locks across processes (outside DEBUG).
- ``realtime_async.E002``: no channel layer under ``CHANNEL_LAYER_ALIAS``.
- ``realtime_async.E003``: ``InMemoryChannelLayer`` outside DEBUG.
- ``realtime_async.E004``: the ``REALTIME_ASYNC`` setting is invalid.
- ``realtime_async.E005``: no cache under ``CACHE_ALIAS``.
- ``realtime_async.E010``: ``SHARDS`` is empty or malformed (the message names the entry).
- ``realtime_async.E011``: a server of ``SHARDS`` cannot be reached (named by its place in the list).
- ``realtime_async.E012``: another process runs with a different ``SHARDS`` list: a
  server's fingerprint key (``realtime_async:shards`` through the cache's ``make_key``) holds another list's digest.
- ``realtime_async.W001``: a Redis channel layer host whose socket timeout can
  expire while the layer waits for messages, closing idle WebSockets (channels_redis issue 422).
- ``realtime_async.W002``: the channel of each server's fan-out hub holds fewer
  than ``HUB_CAPACITY`` messages; the layer drops what does not fit.
- ``realtime_async.W003``: Celery's soft time limit, hard time limit and the
  broker's visibility timeout are not in increasing order.
- ``realtime_async.W004``: ``CELERY_BEAT_SCHEDULE`` names a ``realtime_async.*``
  task that realtime_async does not define (a typo, or a name from an old release).
- ``realtime_async.W005``: uvicorn is installed without a WebSocket library
  (websockets or wsproto): it would answer every WebSocket handshake as plain HTTP.
- ``realtime_async.W010``: the channel layer is ``RedisPubSubChannelLayer`` but
  the write script cannot publish its messages itself (another Redis server,
  encryption, another serializer, several hosts): every update then costs a
  ``group_send`` per group besides the write (``_core.publishing``).

The ASGI server's own options are on its command line, out of ``manage.py
check``'s sight: the first WebSocket connection of each server process checks
them (``_delivery.servers.check_running_server``) and logs what it finds, in
the format of this command and honouring ``SILENCED_SYSTEM_CHECKS``:

- ``realtime_async.W006``: the server refuses client messages smaller than
  ``MAX_MESSAGE_BYTES`` (uvicorn ``--ws-max-size``).
- ``realtime_async.W007``: the server accepts client messages over 1 MiB
  (daphne's limit; uvicorn's default is 16 MiB) and buffers each whole.
- ``realtime_async.W008``: no keepalive pings, or no timeout for their answer
  (uvicorn ``--ws-ping-interval``, ``--ws-ping-timeout``): vanished clients linger.
- ``realtime_async.W009``: per-message deflate is on (uvicorn's default): a
  compression per frame and watcher, and its state per connection.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from realtime_async._core.naming import CLEANUP_TASK_NAME, HUB_CHANNEL_PREFIX, RUN_TASK_NAME
from realtime_async._core.publishing import PUBSUB_LAYER, why_not_direct
from realtime_async.conf import get_settings
from realtime_async.exceptions import ImproperlyConfiguredError

__all__ = [
    "HUB_CAPACITY",
    "check_asgi_server",
    "check_beat_schedule",
    "check_cache",
    "check_channel_layer",
    "check_settings",
    "check_shards",
    "check_time_limits",
]

_PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.filebased.FileBasedCache",
    "django.core.cache.backends.db.DatabaseCache",
)
_REDIS_LAYERS = ("channels_redis.core.RedisChannelLayer", PUBSUB_LAYER)
#: channels_redis blocks this long on Redis while waiting for a message.
_LAYER_BLOCK_SECONDS = 5
#: Messages the hub's channel should hold: every watched task's updates of a server go through it.
HUB_CAPACITY = 1000


def _settings_or_error() -> tuple[Any, list[CheckMessage]]:
    try:
        return get_settings(), []
    except ImproperlyConfiguredError as exc:
        return None, [Error(str(exc), hint="Fix the REALTIME_ASYNC setting.", id="realtime_async.E004")]


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``REALTIME_ASYNC`` parses."""
    return _settings_or_error()[1]


@register()
def check_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The cache holding state and locks is shared by every process."""
    conf, errors = _settings_or_error()
    if errors:
        return []
    cache = settings.CACHES.get(conf.cache_alias)
    if cache is None:
        return [
            Error(
                f"No cache named {conf.cache_alias!r} in CACHES.",
                hint="Add it or set REALTIME_ASYNC['CACHE_ALIAS'].",
                id="realtime_async.E005",
            )
        ]
    if cache.get("BACKEND") in _PROCESS_LOCAL_CACHES and not settings.DEBUG and conf.shards is None:
        return [
            Error(
                f"The cache {conf.cache_alias!r} ({cache['BACKEND']}) cannot hold locks and progress across processes.",
                hint="Use django.core.cache.backends.redis.RedisCache (or django-redis) for this alias.",
                id="realtime_async.E001",
            )
        ]
    return []


@register()
def check_shards(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``SHARDS`` names servers that answer, and the same list as every other process (its fingerprint)."""
    conf, errors = _settings_or_error()
    if errors or conf.shards is None or conf.cache_alias not in settings.CACHES:
        return []
    from realtime_async._core.store import get_store, redis_shards
    from realtime_async._core.store.shards import decode_shards, fingerprint

    hint = "Each entry is a redis:// URL, a dict of connection arguments, or a Sentinel service (README, Scaling)."
    try:
        ours = fingerprint(decode_shards(conf.shards))
    except ImproperlyConfiguredError as exc:
        return [Error(str(exc), hint=hint, id="realtime_async.E010")]
    messages: list[CheckMessage] = []
    for index, shard in enumerate(redis_shards(get_store())):
        key = f"{shard.prefix}:shards"
        try:
            shard.client.set(key, ours, nx=True)
            theirs = shard.client.get(key)
        except Exception as exc:
            messages.append(
                Error(
                    f"REALTIME_ASYNC['SHARDS'][{index}] cannot be reached ({type(exc).__name__}: {exc}).",
                    hint="Start that server, or fix its entry.",
                    id="realtime_async.E011",
                )
            )
            continue
        if theirs is not None and theirs.decode() != ours:
            messages.append(
                Error(
                    f"REALTIME_ASYNC['SHARDS'][{index}] was last used with another list of servers: "
                    "processes that disagree on SHARDS look for the same task on different servers.",
                    hint=f"Give every process the same SHARDS. After changing it on purpose, once no process "
                    f"runs the old list, delete the key {key!r} on each server (README, Scaling).",
                    id="realtime_async.E012",
                )
            )
    return messages


def _timeout_is_safe(host: Any) -> bool:
    if isinstance(host, dict):
        if "socket_timeout" in host:
            timeout = host["socket_timeout"]
            return timeout is None or timeout > 2 * _LAYER_BLOCK_SECONDS
        address = host.get("address")
    else:
        address = host
    if isinstance(address, str):
        values = parse_qs(urlsplit(address).query).get("socket_timeout")
        if values:
            try:
                return float(values[-1]) > 2 * _LAYER_BLOCK_SECONDS
            except ValueError:
                return False
    return False


@register()
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A channel layer exists, is shared outside DEBUG and cannot time out idle sockets."""
    conf, errors = _settings_or_error()
    if errors:
        return []
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    layer = layers.get(conf.channel_layer_alias)
    if layer is None:
        return [
            Error(
                f"No channel layer named {conf.channel_layer_alias!r} in CHANNEL_LAYERS.",
                hint="Configure channels_redis, or set REALTIME_ASYNC['CHANNEL_LAYER_ALIAS'].",
                id="realtime_async.E002",
            )
        ]
    backend = layer.get("BACKEND", "")
    if backend == "channels.layers.InMemoryChannelLayer" and not settings.DEBUG:
        return [
            Error(
                "InMemoryChannelLayer delivers nothing from Celery workers to web servers.",
                hint="Use channels_redis.core.RedisChannelLayer.",
                id="realtime_async.E003",
            )
        ]
    messages: list[CheckMessage] = []
    if backend == "channels_redis.core.RedisChannelLayer":
        messages += _check_hub_capacity(layer.get("CONFIG") or {})
    if backend == PUBSUB_LAYER:
        messages += _check_direct(conf)
    if backend in _REDIS_LAYERS:
        hosts = (layer.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
        unsafe = [host for host in hosts if not _timeout_is_safe(host)]
        if unsafe:
            messages.append(
                Warning(
                    f"Channel layer host(s) {unsafe!r} may time out socket reads while the layer waits "
                    f"{_LAYER_BLOCK_SECONDS} s for messages; idle WebSockets then close with 1011.",
                    hint='Give each host as a dict with "socket_timeout": None, e.g. '
                    '{"address": "redis://localhost:6379/0", "socket_timeout": None}.',
                    id="realtime_async.W001",
                )
            )
    return messages


def _check_direct(conf: Any) -> list[CheckMessage]:
    if not conf.fast_broadcast or conf.cache_alias not in settings.CACHES:
        return []
    from channels.layers import get_channel_layer

    from realtime_async._core.store import get_store, redis_shards

    try:
        store = get_store()
    except ImproperlyConfiguredError:
        return []  # E010 says what is wrong with SHARDS
    if not redis_shards(store):
        return []  # E001 outside DEBUG; in DEBUG nothing is published anyway
    try:
        reason = why_not_direct(get_channel_layer(conf.channel_layer_alias), store)
    except Exception as exc:  # a CONFIG the layer itself refuses: channels says so when it is used
        reason = f"the layer could not be made ({type(exc).__name__})"
    if reason is None:
        return []
    return [
        Warning(
            f"Each progress update costs a group_send per group besides its write: {reason}.",
            hint="Put RedisPubSubChannelLayer on the store's Redis server (or SHARDS' servers, in the same "
            "order), with the msgpack serializer and no symmetric_encryption_keys, so that the write script "
            "publishes its messages itself (see the README's Scaling section).",
            id="realtime_async.W010",
        )
    ]


def _check_hub_capacity(config: dict[str, Any]) -> list[CheckMessage]:
    from channels.layers import BaseChannelLayer

    # Sized the way channels_redis sizes its channels (glob patterns, first match wins).
    sizing = BaseChannelLayer(capacity=config.get("capacity", 100))
    sizing.channel_capacity = sizing.compile_capacities(config.get("channel_capacity") or {})
    if sizing.get_capacity(f"{HUB_CHANNEL_PREFIX}.example!channel") >= HUB_CAPACITY:
        return []
    return [
        Warning(
            f"The fan-out hub's channel ({HUB_CHANNEL_PREFIX}*) holds fewer than {HUB_CAPACITY} messages; "
            "a burst of updates beyond that is dropped by the channel layer.",
            hint=f'Add "channel_capacity": {{"{HUB_CHANNEL_PREFIX}*": {HUB_CAPACITY}}} to the layer\'s CONFIG.',
            id="realtime_async.W002",
        )
    ]


#: Brokers that redeliver an unacknowledged message after the visibility timeout, and their default.
_VISIBILITY_BROKERS = {"redis": 3600.0, "rediss": 3600.0, "sqs": 30.0}


@register()
def check_time_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """soft time limit < hard time limit < visibility timeout, each when set.

    A soft limit at or past the hard one never fires (the task is killed without
    a chance to end ``failure`` cleanly); a task still running past the broker's
    visibility timeout is delivered again and runs twice.
    """
    from celery import current_app

    conf = current_app.conf
    soft, hard = conf.task_soft_time_limit, conf.task_time_limit
    scheme = urlsplit(str(conf.broker_url or "")).scheme
    visibility = (conf.broker_transport_options or {}).get("visibility_timeout", _VISIBILITY_BROKERS.get(scheme))
    if visibility is not None and scheme not in _VISIBILITY_BROKERS:
        visibility = None
    limits = [
        (name, value)
        for name, value in (("soft time limit", soft), ("hard time limit", hard), ("visibility timeout", visibility))
        if value
    ]
    for (name_a, a), (name_b, b) in zip(limits, limits[1:], strict=False):
        if a >= b:
            return [
                Warning(
                    f"Celery's {name_a} ({a:g} s) is not below its {name_b} ({b:g} s).",
                    hint="Keep task_soft_time_limit < task_time_limit < broker_transport_options"
                    "['visibility_timeout'] so tasks end `failure` cleanly and are never run twice.",
                    id="realtime_async.W003",
                )
            ]
    return []


#: Every Celery task realtime_async defines (``realtime_async.tasks``), by name.
_TASK_NAMES = (RUN_TASK_NAME, CLEANUP_TASK_NAME)


@register()
def check_beat_schedule(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Each ``realtime_async.*`` task in the beat schedule is one that workers register.

    Workers register realtime_async's tasks when ``autodiscover_tasks()`` imports
    ``realtime_async.tasks``; a schedule entry naming any other
    ``realtime_async.*`` task is refused by every worker, at every beat.
    """
    from celery import current_app

    schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", None) or current_app.conf.beat_schedule or {}
    unknown = sorted(
        {
            str(entry.get("task"))
            for entry in schedule.values()
            if isinstance(entry, dict)
            and str(entry.get("task", "")).startswith("realtime_async.")
            and entry.get("task") not in _TASK_NAMES
        }
    )
    if not unknown:
        return []
    return [
        Warning(
            f"CELERY_BEAT_SCHEDULE names {', '.join(map(repr, unknown))}, which realtime_async does not define; "
            "workers refuse it as an unregistered task.",
            hint=f"Schedule {_TASK_NAMES[1]!r}. To see what a worker knows: celery -A <project> inspect registered.",
            id="realtime_async.W004",
        )
    ]


@register()
def check_asgi_server(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """uvicorn, where installed, can serve WebSockets: it needs websockets or wsproto beside it.

    Without either, uvicorn answers every WebSocket handshake as a plain HTTP
    request (a 404 here), so clients only ever poll.
    """
    if find_spec("uvicorn") is None or find_spec("websockets") is not None or find_spec("wsproto") is not None:
        return []
    return [
        Warning(
            "uvicorn is installed without a WebSocket library (websockets or wsproto): served by uvicorn, every "
            "WebSocket handshake is answered as plain HTTP and clients fall back to polling.",
            hint='pip install "django-realtime-async[uvicorn]" (websockets, httptools, uvloop); if you serve '
            "with daphne, silence realtime_async.W005.",
            id="realtime_async.W005",
        )
    ]
