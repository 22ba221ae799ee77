"""The pub/sub fast path: the write script publishes each record, hubs subscribe, the layer stays the safety net."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

import pytest
from channels.layers import get_channel_layer

from realtime_async._core.naming import PROGRESS_TYPE, STAFF_FEED_GROUP, group_for_task, group_for_user, new_task_name
from realtime_async._core.store import Outcome, WriteMode, get_store
from realtime_async._delivery import hub as hub_module
from realtime_async._delivery.hub import get_hub
from realtime_async._delivery.pubsub import CLIENT_NAME_PREFIX, Subscriber, async_pool_for
from realtime_async._writing.writer import get_writer
from tests.ws_helpers import (
    acommit,
    commit,
    connected,
    fake_user,
    new_task,
    pubsub_subscribers,
    recv,
    until,
    watching,
)

#: The layered delivery (RedisChannelLayer); ``test_direct.py`` covers RedisPubSubChannelLayer.
pytestmark = pytest.mark.usefixtures("core_layer")


class MutedLayer:
    """The real channel layer, except that the hub's receive drops progress messages while ``muted``."""

    def __init__(self, real):
        self.real = real
        self.muted = False
        self.dropped = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    async def receive(self, channel):
        while True:
            message = await self.real.receive(channel)
            if self.muted and message.get("type") == PROGRESS_TYPE:
                self.dropped += 1
                continue
            return message


@pytest.fixture
def muted(monkeypatch, hub_cleanup):
    layer = MutedLayer(get_channel_layer())
    monkeypatch.setattr(hub_module, "get_channel_layer", lambda alias: layer)
    return layer


async def _hub_subscribed(name: str) -> None:
    await until(lambda: pubsub_subscribers(group_for_task(name)) == 1, what="the hub's subscription")


def _hub_connections() -> list[dict]:
    """This process's hub pub/sub connections, as Redis lists them."""
    name = f"{CLIENT_NAME_PREFIX}{os.getpid()}"
    return [c for c in get_store().client.client_list(_type="pubsub") if c.get("name") == name]


def test_the_write_script_publishes_each_written_record_to_its_groups():
    store = get_store()
    name, owner = new_task_name("ps"), 4242
    groups = (group_for_task(name), STAFF_FEED_GROUP, group_for_user(owner))
    channels = [store.broadcast_channel(group) for group in groups]
    db = store.client.connection_pool.connection_kwargs.get("db") or 0
    # Pub/sub spans a server's databases; the names must not.
    assert all(channel.startswith(f"{store.prefix}:bc:{db}:") for channel in channels)
    listener = store.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(*channels)
    try:
        seq = commit(name, "running", owner, mode=WriteMode.CREATE, percent=5)
        final = commit(name, "success", owner)
        late = get_writer().commit({"task": name, "state": "running", "owner": owner, "percent": 99}, wait=True)
        assert (late.outcome, late.seq) == (Outcome.FINAL_KEPT, 0)  # a kept final state is not published again
        received, deadline = [], time.monotonic() + 5
        while len(received) < 6 and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.5)
            if message is not None:
                received.append((message["channel"].decode(), json.loads(message["data"])))
        assert listener.get_message(timeout=0.3) is None
    finally:
        listener.close()
    stored_final = json.loads(store.read_state(name))
    assert sorted((channel, record["seq"]) for channel, record in received) == sorted(
        (channel, s) for channel in channels for s in (seq, final)
    )
    assert [record for _, record in received if record["seq"] == final] == [stored_final] * 3


async def test_updates_reach_watchers_by_pubsub_alone(muted):
    alice = fake_user()
    name, comm, snapshot = await watching(alice)
    assert snapshot["state"] == "queued"
    await _hub_subscribed(name)
    muted.muted = True
    seq = await acommit(name, "running", alice.pk, percent=40)
    frame = await recv(comm)
    assert frame["data"]["seq"] == seq and frame["data"]["percent"] == 40
    await until(lambda: muted.dropped >= 1, what="the layer's copy")  # it did come, and was not needed
    await comm.disconnect()
    await until(lambda: pubsub_subscribers(group_for_task(name)) == 0, what="the unsubscription")


async def test_each_update_reaches_a_watcher_once_though_it_comes_both_ways(hub_cleanup):
    alice = fake_user()
    name, comm, snapshot = await watching(alice)
    first = snapshot["seq"]
    await _hub_subscribed(name)
    for percent in range(10, 60, 10):
        await acommit(name, "running", alice.pk, percent=percent)
    final = await acommit(name, "success", alice.pk)
    seqs = [(await recv(comm))["data"]["seq"] for _ in range(final - first)]
    assert seqs == list(range(first + 1, final + 1))
    assert await comm.receive_nothing(0.5)  # the copies through the layer were dropped
    await comm.disconnect()


@pytest.mark.reliability
async def test_a_killed_pubsub_connection_loses_nothing_and_comes_back(muted, caplog, reliability):
    alice = fake_user()
    name, comm, _ = await watching(alice)
    await _hub_subscribed(name)
    killed = [c["id"] for c in await asyncio.to_thread(_hub_connections)]
    assert len(killed) == 1
    await asyncio.to_thread(get_store().client.client_kill_filter, _id=killed[0])
    # Meanwhile the layer delivers, and nobody is closed.
    seq = await acommit(name, "running", alice.pk, percent=20)
    assert (await recv(comm))["data"]["seq"] == seq
    # The subscriber reconnects and subscribes again to what the hub is in. Redis's count alone
    # is not enough: redis-py reconnects and resubscribes a dropped pub/sub connection once by
    # itself before it raises, and the subscriber then closes that connection and opens its own.
    subscriber = get_hub()._run.subscribers.each[0]

    def subscribed_again() -> bool:
        noticed = "pub/sub connection lost" in caplog.text
        confirmed = noticed and subscriber._pubsub is not None and not subscriber._failing
        return confirmed and pubsub_subscribers(group_for_task(name)) == 1

    await until(subscribed_again, what="the subscription again")
    assert [c["id"] for c in await asyncio.to_thread(_hub_connections)] != killed
    muted.muted = True
    seq = await acommit(name, "running", alice.pk, percent=30)
    assert (await recv(comm))["data"]["seq"] == seq  # by pub/sub, the layer being muted
    await comm.disconnect()
    reliability(
        "The hub's pub/sub connection (fast path) dropped",
        "CLIENT KILL of the hub's pub/sub connection in Redis while a WebSocket watches a task",
        "the next update arrived through the channel layer and nobody was closed; the hub reconnected "
        "and subscribed again, and an update sent with the layer's delivery muted arrived by pub/sub alone",
    )


async def test_feeds_are_published_too(muted):
    alice, staff = fake_user(), fake_user(staff=True)
    mine, everyone = await connected(user=alice), await connected(user=staff)
    for comm in (mine, everyone):
        await comm.send_json_to({"v": 1, "type": "subscribe_feed"})
        await comm.send_json_to({"v": 1, "type": "ping", "id": "settled"})  # answered once the feed is followed
        assert await recv(comm) == {"v": 1, "type": "pong", "id": "settled"}
    await until(
        lambda: pubsub_subscribers(group_for_user(alice.pk)) == 1 and pubsub_subscribers(STAFF_FEED_GROUP) == 1,
        what="feeds",
    )
    muted.muted = True
    name = await new_task(alice.pk)
    for comm in (mine, everyone):
        frame = await recv(comm)
        assert (frame["type"], frame["task"], frame["data"]["state"]) == ("progress", name, "queued")
    for comm in (mine, everyone):
        await comm.disconnect()


async def test_without_fast_broadcast_nothing_is_published_and_the_layer_delivers(settings, hub_cleanup):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FAST_BROADCAST": False}
    alice = fake_user()
    name, comm, _ = await watching(alice)
    assert get_hub()._run.subscribers is None
    assert await asyncio.to_thread(pubsub_subscribers, group_for_task(name)) == 0
    store = get_store()
    listener = store.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(store.broadcast_channel(group_for_task(name)))
    try:
        seq = await acommit(name, "running", alice.pk, percent=50)
        assert (await recv(comm))["data"]["seq"] == seq
        assert await asyncio.to_thread(listener.get_message, timeout=0.3) is None
    finally:
        listener.close()
    await comm.disconnect()


async def test_a_published_record_is_checked_like_any_layer_message(hub_cleanup):
    # Whoever can PUBLISH on the cache's Redis can also group_send: the same checks apply.
    alice = fake_user()
    name, comm, _ = await watching(alice)
    await _hub_subscribed(name)
    store, channel = get_store(), get_store().broadcast_channel(group_for_task(name))
    for junk in (b"\xff\xfe", b"not json", b"[1, 2]", json.dumps({"task": name, "seq": "9"}).encode(), b"[" * 5000):
        await asyncio.to_thread(store.client.publish, channel, junk)
    seq = await acommit(name, "running", alice.pk, percent=70)
    assert (await recv(comm))["data"]["seq"] == seq  # the hub lived on
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_a_subscriber_reads_messages_off_the_parser_and_keeps_redis_pys_bookkeeping_bounded():
    """Messages bypass redis-py's get_message (its cost per message); confirmations still go through it."""
    store = get_store()
    prefix = f"{store.prefix}:sub-{new_task_name('x')}:"
    received = []
    subscriber = Subscriber(async_pool_for(store.client), lambda group: prefix + group, "control", received.append)
    reader = asyncio.create_task(subscriber.run())
    try:
        groups = [f"g{i}" for i in range(50)]
        for group in groups:
            await subscriber.add(group, required=True)
        assert subscriber._parser is not None  # the fast read is the one that runs here
        for i, group in enumerate(groups):
            await asyncio.to_thread(store.client.publish, prefix + group, f"m{i}".encode())
        await asyncio.to_thread(store.client.publish, prefix + "control", b"never handed on")
        await until(lambda: len(received) == len(groups), what="every message")
        assert received == [f"m{i}".encode() for i in range(len(groups))]
        for group in groups:
            await subscriber.discard(group)
        pubsub = subscriber._pubsub
        # redis-py forgets a channel once Redis confirms its unsubscription (handle_message): nothing piles up.
        await until(lambda: not pubsub.pending_unsubscribe_channels, what="the unsubscriptions confirmed")
        assert set(pubsub.channels) == {(prefix + "control").encode()}
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
