"""The store's Redis servers as ``SHARDS`` names them: how each is reached, and which one holds a task.

``SHARDS`` lists servers in channels_redis' ``hosts`` format, so one list can
be given to both: a URL (``"redis://10.0.0.5:6379/0"``), a dict with an
``address`` URL, a dict of redis-py connection arguments (``host``, ``port``,
``db``, ``password``, …), or a Redis Sentinel service (``{"sentinels":
[("10.0.0.7", 26379), …], "master_name": "progress", …}``).

A task lives on one shard with everything that is its own: record, log,
heartbeat, cancel flag, registry entry and the pub/sub channels its records
are published on. Which one is the ring channels_redis' pub/sub layer uses for
the task's group channel (``ring_index``), so that, with that layer on the same
servers in the same order, the layer's own consumers of a task's group hear
the publications of the task's write script (``_core.publishing``). A group's
parts (``<parent>.<n>``, ``<parent>.then``) live on their parent's shard,
where the write script counts them (``shard_key``). Conflict locks, which one
launch takes all at once or not at all, live on the first shard.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import re
import socket
from typing import Any

from realtime_async._core.naming import group_for_task
from realtime_async.exceptions import ImproperlyConfiguredError

__all__ = [
    "CLIENT_DEFAULTS",
    "connection_kwargs",
    "decode_shards",
    "fingerprint",
    "placement",
    "ring_index",
    "server_identity",
    "shard_key",
    "sync_client",
]

#: The suffixes of a group part's name: a part is placed by its parent's name.
_PART_SUFFIX = re.compile(r"(?:\.(?:\d+|then))+$")

#: Connection arguments a shard's clients get unless the shard says otherwise (seconds): a server that
#: went silent fails a write or a read within these instead of hanging the worker or the view.
CLIENT_DEFAULTS = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0, "health_check_interval": 30}


def shard_key(task_name: str) -> str:
    """The name ``task_name`` is placed by: a group part's parent's (``report.3`` → ``report``), else its own."""
    return _PART_SUFFIX.sub("", task_name) or task_name


def ring_index(value: str, size: int) -> int:
    """The index of ``value`` on a ring of ``size`` servers, as channels_redis places a channel on its hosts."""
    if size == 1:
        return 0
    return int((binascii.crc32(value.encode()) & 0xFFF) / (4096 / size))


def placement(task_name: str, size: int, channel_prefix: str) -> int:
    """The index of the shard that holds ``task_name`` (see the module's docstring)."""
    return ring_index(f"{channel_prefix}__group__{group_for_task(shard_key(task_name))}", size)


def decode_shards(value: object) -> list[dict[str, Any]]:
    """``SHARDS`` as one dict per server; raises ``ImproperlyConfiguredError`` naming the entry that is wrong."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ImproperlyConfiguredError(
            f"REALTIME_ASYNC['SHARDS'] must be a non-empty list of Redis servers, got {value!r}."
        )
    shards = [_decode(index, entry) for index, entry in enumerate(value)]
    seen: dict[Any, int] = {}
    for index, shard in enumerate(shards):
        identity = server_identity(shard)
        if identity in seen:  # two databases of one server would share its pub/sub channels
            raise ImproperlyConfiguredError(
                f"REALTIME_ASYNC['SHARDS'][{index}] names the same Redis server as entry {seen[identity]}."
            )
        seen[identity] = index
    return shards


def _decode(index: int, entry: object) -> dict[str, Any]:
    where = f"REALTIME_ASYNC['SHARDS'][{index}]"
    if isinstance(entry, str):
        entry = {"address": entry}
    if not isinstance(entry, dict):
        raise ImproperlyConfiguredError(f"{where} must be a redis:// URL or a dict, got {entry!r}.")
    if "sentinels" in entry or "master_name" in entry:
        sentinels: Any = entry.get("sentinels")
        ok = isinstance(sentinels, (list, tuple)) and sentinels and all(_is_address(item) for item in sentinels)
        if not ok or not isinstance(entry.get("master_name"), str) or not entry["master_name"]:
            raise ImproperlyConfiguredError(
                f"{where} names a Sentinel service: it needs 'sentinels', a list of (host, port), "
                f"and 'master_name'; got {entry!r}."
            )
        return {**entry, "sentinels": [(str(host), int(port)) for host, port in sentinels]}
    if "address" in entry:
        address = entry["address"]
        if not isinstance(address, str) or not address.startswith(("redis://", "rediss://", "unix://")):
            raise ImproperlyConfiguredError(f"{where}: 'address' must be a redis://, rediss:// or unix:// URL.")
        return dict(entry)
    if not any(key in entry for key in ("host", "path")):
        raise ImproperlyConfiguredError(f"{where} must give an 'address', a 'host', a 'path' or 'sentinels'.")
    return dict(entry)


def _is_address(item: object) -> bool:
    return isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str) and str(item[1]).isdigit()


def _address(kwargs: dict[str, Any]) -> tuple[str, Any]:
    """``("unix", path)`` or ``(ip, port)`` of a redis-py connection's keyword arguments."""
    if kwargs.get("path"):
        return "unix", kwargs["path"]
    host = str(kwargs.get("host") or "localhost")
    with contextlib.suppress(OSError):
        host = socket.gethostbyname(host)
    return host, int(kwargs.get("port") or 6379)


def connection_kwargs(shard: dict[str, Any]) -> dict[str, Any]:
    """A plain shard's redis-py connection arguments (``address`` parsed), without the Sentinel keys."""
    import redis.connection

    kwargs = {key: value for key, value in shard.items() if key not in ("address", "sentinels", "sentinel_kwargs")}
    kwargs.pop("master_name", None)
    if "address" in shard:
        kwargs = {**redis.connection.parse_url(shard["address"]), **kwargs}  # type: ignore[no-untyped-call]
    return kwargs


def server_identity(shard: object) -> tuple[Any, ...] | None:
    """What says two entries name the same server for pub/sub (which ignores the db); None when unknown."""
    if not isinstance(shard, dict):
        return None
    if "sentinels" in shard:
        sentinels = sorted(_address({"host": host, "port": port}) for host, port in shard["sentinels"])
        return ("sentinel", shard.get("master_name"), *sentinels)
    if "address" in shard and not isinstance(shard["address"], str):
        return None
    return _address(connection_kwargs(shard))


def fingerprint(shards: list[dict[str, Any]]) -> str:
    """A digest of the list of servers, in order: every process of a deployment must have the same."""
    described = repr([(server_identity(shard), connection_kwargs(shard).get("db", 0)) for shard in shards])
    return hashlib.blake2b(described.encode(), digest_size=8).hexdigest()


def sync_client(shard: dict[str, Any]) -> Any:
    """A pooled redis-py client of ``shard`` (through its Sentinels when it names some)."""
    import redis
    import redis.sentinel

    if "sentinels" in shard:
        options = {**CLIENT_DEFAULTS, **connection_kwargs(shard)}
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            shard["sentinels"], sentinel_kwargs=shard.get("sentinel_kwargs"), **options
        )  # fmt: skip
        return sentinel.master_for(shard["master_name"])  # type: ignore[no-untyped-call,unused-ignore]
    return redis.Redis(connection_pool=redis.ConnectionPool(**{**CLIENT_DEFAULTS, **connection_kwargs(shard)}))
