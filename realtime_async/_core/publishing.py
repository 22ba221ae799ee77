"""Where a written record is published, and in what form: the one place that decides.

There are two ways, chosen per process from the settings:

*Direct* (channels_redis' ``RedisPubSubChannelLayer`` on the cache's Redis
server, with its default msgpack serializer and no encryption): the store's
write script publishes the layer's own ``realtime_async.progress`` message,
packed as the layer packs it, to the layer's pub/sub channel of each of the
task's groups, in the same script as the write. Nothing else sends: an update
is one round trip and one script on Redis, and every consumer in a group gets
it exactly as if it had been ``group_send``. The servers' hubs subscribe to
those channels themselves (``_delivery.hub``), and read the store again by
``seq`` after a lost connection.

*Layered* (any other layer, or a pub/sub layer that the script cannot speak
for): the write script publishes the bare record to the hubs' own channels
(``FAST_BROADCAST``, ``RedisStore.broadcast_channel``) and the sender thread
``group_send``s the message through the layer, as before.

``FAST_BROADCAST = False`` turns both kinds of publishing by the script off:
then every update goes through the layer's ``group_send`` alone.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

from channels.layers import get_channel_layer

from realtime_async._core.naming import STAFF_FEED_GROUP, group_for_task, group_for_user
from realtime_async._core.store import Publication, RedisStore, get_store
from realtime_async.conf import get_settings

__all__ = ["DirectLayer", "Publication", "direct_layer", "publication", "task_groups", "why_not_direct"]

logger = logging.getLogger("realtime_async")

#: The class path of the one layer the write script can publish for.
PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"


class DirectLayer:
    """A ``RedisPubSubChannelLayer`` whose group messages the write script can publish itself."""

    def __init__(self, layer: Any, prefix: str) -> None:
        self.layer = layer
        self.prefix = prefix

    def channel(self, group: str) -> str:
        """The layer's pub/sub channel of ``group`` (``RedisPubSubLoopLayer._get_group_channel_name``)."""
        return f"{self.prefix}__group__{group}"

    def decode(self, data: bytes) -> Any:
        """A message as the layer's consumers get it; raises on bytes that are not one."""
        return self.layer.deserialize(data)


def _address(kwargs: dict[str, Any]) -> tuple[str, Any]:
    """``("unix", path)`` or ``(ip, port)`` of a redis-py connection's keyword arguments."""
    if kwargs.get("path"):
        return "unix", kwargs["path"]
    host = str(kwargs.get("host") or "localhost")
    with contextlib.suppress(OSError):
        host = socket.gethostbyname(host)
    return host, int(kwargs.get("port") or 6379)


def _layer_address(host: Any) -> tuple[str, Any] | None:
    import redis.connection

    if not isinstance(host, dict) or "sentinels" in host:
        return None
    if "address" in host:
        address = host["address"]
        if not isinstance(address, str):
            return None
        return _address(redis.connection.parse_url(address))  # type: ignore[no-untyped-call]
    return _address(host)


def why_not_direct(layer: Any, store: Any) -> str | None:
    """Why the write script cannot publish ``layer``'s group messages itself; None when it can."""
    cls = type(layer)
    if f"{cls.__module__}.{cls.__qualname__}" != PUBSUB_LAYER:
        return "the channel layer is not RedisPubSubChannelLayer"
    if not isinstance(store, RedisStore):
        return "the cache is not on Redis"
    from channels_redis.serializers import MsgPackSerializer
    from channels_redis.utils import decode_hosts

    serializer: Any = getattr(layer, "_serializer", None)
    if type(serializer) is not MsgPackSerializer:
        return "the layer's serializer_format is not msgpack"
    if serializer.crypter is not None or serializer.random_prefix_length:
        return "the layer encrypts its messages (symmetric_encryption_keys)"
    kwargs = getattr(layer, "_kwargs", {})
    hosts = decode_hosts(kwargs.get("hosts"))
    if len(hosts) != 1:
        return "the layer has several hosts"
    ours = _address(store.client.connection_pool.connection_kwargs)
    if _layer_address(hosts[0]) != ours:
        return "the layer's Redis server is not the cache's"
    return None


_known: tuple[Any, Any, DirectLayer | None] | None = None


def direct_layer() -> DirectLayer | None:
    """The layer the write script publishes for, or None (see the module's docstring)."""
    global _known
    if not get_settings().fast_broadcast:
        return None
    layer, store = get_channel_layer(get_settings().channel_layer_alias), get_store()
    known = _known
    if known is not None and known[0] is layer and known[1] is store:
        return known[2]
    reason = why_not_direct(layer, store) if layer is not None else "no channel layer"
    direct = DirectLayer(layer, getattr(layer, "_kwargs", {}).get("prefix", "asgi")) if reason is None else None
    _known = (layer, store, direct)
    return direct


def task_groups(task_name: str, owner: object) -> tuple[str, ...]:
    """The Channels groups a task's records go to: its watchers, the staff feed, its owner's feed."""
    groups: tuple[str, ...] = (group_for_task(task_name), STAFF_FEED_GROUP)
    return groups + (group_for_user(owner),) if owner is not None else groups


def publication(task_name: str, owner: object, groups: tuple[str, ...]) -> Publication | None:
    """What the write script publishes a record of ``task_name`` to; None when it publishes nothing.

    Direct: the layer's channels of ``groups`` with the message's head, and
    the caller sends nothing else. Layered: the hubs' fast channels (the
    caller ``group_send``s too). Neither without ``FAST_BROADCAST`` or Redis.
    """
    direct = direct_layer()
    if direct is not None:
        return Publication.layer_message(tuple(map(direct.channel, groups)), task_name, owner)
    store = get_store()
    if get_settings().fast_broadcast and isinstance(store, RedisStore):
        return Publication(tuple(map(store.broadcast_channel, groups)))
    return None
