"""Where a written record is published, and in what form: the one place that decides.

There are two ways, chosen per process from the settings:

*Direct* (channels_redis' ``RedisPubSubChannelLayer`` on the store's Redis
server, or on ``SHARDS``' servers in the same order, with its default msgpack
serializer and no encryption): the store's write script publishes the layer's
own ``realtime_async.progress`` message, packed as the layer packs it, to the
layer's pub/sub channel of each of the task's groups, in the same script as
the write, on the task's shard. Nothing else sends: an update is one round
trip and one script on Redis, and every consumer in the task's group gets it
exactly as if it had been ``group_send`` (on shards, the layer places the
task's group channel on the task's shard: ``store.shards``; a group part's
and the feeds' channels are heard by the hubs alone, which subscribe where the
script publishes). The servers' hubs subscribe to those channels themselves
(``_delivery.hub``), and read the store again by ``seq`` after a lost
connection.

*Layered* (any other layer, or a pub/sub layer that the script cannot speak
for): the write script publishes the bare record to the hubs' own channels
(``FAST_BROADCAST``, ``RedisStore.broadcast_channel``, on the task's shard) and
the sender thread ``group_send``s the message through the layer, as before.

``FAST_BROADCAST = False`` turns both kinds of publishing by the script off:
then every update goes through the layer's ``group_send`` alone.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer

from realtime_async._core.naming import STAFF_FEED_GROUP, group_for_task, group_for_user
from realtime_async._core.store import Publication, get_store, redis_shards, shard_of
from realtime_async._core.store.shards import server_identity
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


def why_not_direct(layer: Any, store: Any) -> str | None:
    """Why the write script cannot publish ``layer``'s group messages itself; None when it can."""
    cls = type(layer)
    if f"{cls.__module__}.{cls.__qualname__}" != PUBSUB_LAYER:
        return "the channel layer is not RedisPubSubChannelLayer"
    shards = redis_shards(store)
    if not shards:
        return "the cache is not on Redis"
    from channels_redis.serializers import MsgPackSerializer
    from channels_redis.utils import decode_hosts

    serializer: Any = getattr(layer, "_serializer", None)
    if type(serializer) is not MsgPackSerializer:
        return "the layer's serializer_format is not msgpack"
    if serializer.crypter is not None or serializer.random_prefix_length:
        return "the layer encrypts its messages (symmetric_encryption_keys)"
    kwargs = getattr(layer, "_kwargs", {})
    hosts = [server_identity(host) for host in decode_hosts(kwargs.get("hosts"))]
    ours = [shard.identity() for shard in shards]
    if len(ours) == 1 and hosts != ours:
        return "the layer's Redis server is not the store's" if len(hosts) == 1 else "the layer has several hosts"
    if hosts != ours:
        return "the layer's hosts are not SHARDS' servers in the same order"
    if len(ours) > 1 and str(kwargs.get("prefix", "asgi")) != getattr(store, "channel_prefix", None):
        return "the store placed its tasks for another layer's prefix"
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
    shard = shard_of(get_store(), task_name)
    if get_settings().fast_broadcast and shard is not None:
        return Publication(tuple(map(shard.broadcast_channel, groups)))
    return None
