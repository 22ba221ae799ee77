"""Direct delivery: with RedisPubSubChannelLayer on the cache's Redis, the write script publishes the layer's messages.

``_core.publishing`` decides it, ``write.lua``/``group.lua`` publish, the hub
receives on the layer's channels itself (``_delivery.receiving``) and reads the
store back after its connection was away. The layered delivery is
``test_pubsub.py``'s and ``test_hub.py``'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

import msgpack
import pytest
from channels.layers import get_channel_layer

from realtime_async._core import publishing
from realtime_async._core.naming import PROGRESS_TYPE, STAFF_FEED_GROUP, group_for_task, group_for_user, new_task_name
from realtime_async._core.store import WriteMode, get_store
from realtime_async._delivery.hub import get_hub
from realtime_async._delivery.pubsub import CLIENT_NAME_PREFIX, Subscriber
from realtime_async._writing import writer as writer_module
from realtime_async.protocol import CLOSE_UNAVAILABLE
from tests.ws_helpers import (
    acommit,
    commit,
    connected,
    fake_user,
    group_members,
    new_task,
    recv,
    recv_close,
    until,
    watching,
)

pytestmark = pytest.mark.usefixtures("pubsub_layer", "hub_cleanup")


@pytest.fixture
def no_group_send(monkeypatch):
    """Fail the test if anything is sent through the sender thread: in direct mode the script publishes all."""
    sent = []
    monkeypatch.setattr(writer_module, "broadcast", lambda groups, message: sent.append(groups))
    yield
    assert sent == []


def _hub_connections() -> list[dict]:
    name = f"{CLIENT_NAME_PREFIX}{os.getpid()}"
    return [c for c in get_store().client.client_list(_type="pubsub") if c.get("name") == name]


def test_direct_is_chosen_for_the_pubsub_layer_on_the_caches_redis():
    direct = publishing.direct_layer()
    assert direct is not None
    assert direct.channel("g") == f"{get_channel_layer()._kwargs['prefix']}__group__g"


def test_layered_without_fast_broadcast_or_with_the_core_layer(settings, core_layer):
    assert publishing.direct_layer() is None
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FAST_BROADCAST": False}
    assert publishing.direct_layer() is None
    assert publishing.publication("t", None, ("g",)) is None


@pytest.mark.parametrize("owner", [4242, "team-7", None])
async def test_each_group_gets_the_layers_own_message_from_the_write_script(owner, no_group_send):
    """A consumer that joined the task's groups with the layer gets what ``group_send`` would have given it."""
    layer = get_channel_layer()
    name = new_task_name("direct")
    groups = [group_for_task(name), STAFF_FEED_GROUP] + ([group_for_user(owner)] if owner is not None else [])
    channels = []
    for group in groups:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        channels.append(channel)
    seqs = [await acommit(name, "queued", owner, mode=WriteMode.CREATE)]
    seqs.append(await acommit(name, "running", owner, percent=40, message="ünïcode ✓"))
    seqs.append(await acommit(name, "success", owner))
    stored = json.loads(get_store().read_state(name))
    for channel in channels:
        got = [await asyncio.wait_for(layer.receive(channel), 3) for _ in seqs]
        assert [(m["type"], m["task"], m["seq"], m["owner"]) for m in got] == [
            (PROGRESS_TYPE, name, seq, owner) for seq in seqs
        ]
        assert [m["state"] for m in got] == ["queued", "running", "success"]
        assert sorted(got[0]) == ["owner", "record", "seq", "state", "task", "type"]
        assert json.loads(got[1]["record"])["message"] == "ünïcode ✓"
        assert json.loads(got[2]["record"]) == stored
    for group, channel in zip(groups, channels, strict=True):
        await layer.group_discard(group, channel)


def test_the_message_is_byte_for_byte_what_the_layer_packs():
    """The write script's bytes decode as the layer's, and the layer's own packing of them is the same bytes."""
    store, direct = get_store(), publishing.direct_layer()
    name = new_task_name("direct")
    channel = direct.channel(group_for_task(name))
    listener = store.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel)
    try:
        seq = commit(name, "running", 7, mode=WriteMode.CREATE, percent=1)
        got = None
        for _ in range(30):  # the first calls may only take the subscription's confirmation
            got = got or listener.get_message(timeout=0.1)
        data = got["data"]
    finally:
        listener.close()
    message = direct.decode(data)
    assert message["seq"] == seq
    assert msgpack.packb(message) == data  # keys in the same order, the same integer and string encodings


@pytest.mark.parametrize("size", [10, 200, 5_000, 70_000])  # fixstr, str8, str16, str32 records
def test_every_script_packs_the_message_as_msgpack_does(size):
    """write.lua's packing (a create, a wrong guess) and the worker's (update.lua, a right one) give the same bytes."""
    store, direct = get_store(), publishing.direct_layer()
    name = new_task_name("direct")
    publish = publishing.publication(name, "owner-1", (group_for_task(name),))
    listener = store.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(publish.channels[0])

    def write(state, floor, mode=WriteMode.UPDATE):
        body = json.dumps({"task": name, "state": state, "message": "x" * size})[1:]
        written = store.write_state(name, state, body, ttl=60, mode=mode, floor=floor, publish=publish)
        got = None
        for _ in range(50):
            got = got or listener.get_message(timeout=0.1)
        return written, got["data"]

    try:
        cases = [write("queued", 0, WriteMode.CREATE)]  # write.lua
        cases.append(write("running", cases[0][0].seq))  # update.lua, the worker's guess right
        cases.append(write("running", 0))  # the guess wrong: write.lua packs it
        cases.append(write("running", 300))  # a seq of two bytes, by write.lua...
        cases.append(write("running", 301))  # ... and guessed
        cases.append(write("running", 70_000))  # a seq of four bytes, by write.lua...
        cases.append(write("running", 70_001))  # ... and guessed
    finally:
        listener.close()
    for written, data in cases:
        message = direct.decode(data)
        assert (message["seq"], message["record"]) == (written.seq, written.record_json)
        assert msgpack.packb(message) == data
        assert publish.message(written.seq, message["state"], written.record_json) == data
    assert [written.seq for written, _ in cases][-4:] == [301, 302, 70_001, 70_002]


async def test_the_hub_subscribes_to_the_layers_channels_and_nothing_else(no_group_send):
    alice = fake_user()
    name, comm, snapshot = await watching(alice)
    run = get_hub()._run
    assert run.direct is not None and run.channel == ""  # no layer channel, no BZPOPMIN loop
    assert await group_members(group_for_task(name)) == 1
    assert len(await asyncio.to_thread(_hub_connections)) == 1
    seq = await acommit(name, "running", alice.pk, percent=30)
    assert (await recv(comm))["data"]["seq"] == seq
    hub = get_hub()
    await comm.disconnect()
    await until(lambda: hub._run is None, what="the hub's stop")
    assert await group_members(group_for_task(name)) == 0


async def test_anyones_group_send_reaches_the_watchers_and_junk_is_dropped():
    alice = fake_user()
    name, comm, snapshot = await watching(alice)
    record = json.dumps({**snapshot, "seq": snapshot["seq"] + 1, "state": "running", "percent": 12})
    message = {"type": PROGRESS_TYPE, "task": name, "seq": snapshot["seq"] + 1, "state": "running", "record": record}
    await get_channel_layer().group_send(group_for_task(name), message)
    frame = await recv(comm)
    assert (frame["data"]["seq"], frame["data"]["percent"]) == (snapshot["seq"] + 1, 12)
    channel = publishing.direct_layer().channel(group_for_task(name))
    for junk in (b"\xc1", b"not msgpack", msgpack.packb([1, 2]), msgpack.packb({"type": PROGRESS_TYPE, "seq": "9"})):
        await asyncio.to_thread(get_store().client.publish, channel, junk)
    # Above the group_send's seq, which the store never saw (the writer's floor).
    seq = await acommit(name, "running", alice.pk, percent=70, seq=snapshot["seq"] + 5)
    assert (await recv(comm))["data"]["seq"] == seq  # the hub lived on
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


@pytest.mark.reliability
async def test_a_killed_connection_is_read_back_from_the_store(monkeypatch, caplog, reliability):
    """An update published while the hub's connection was away reaches the watchers from the store."""
    caplog.set_level(logging.INFO, logger="realtime_async")
    alice = fake_user()
    name, comm, _ = await watching(alice)
    follower = await connected(user=alice)
    await follower.send_json_to({"v": 1, "type": "subscribe_feed"})
    await follower.send_json_to({"v": 1, "type": "ping", "id": "settled"})
    assert await recv(follower) == {"v": 1, "type": "pong", "id": "settled"}
    hub = get_hub()
    run = hub._run
    # The hub misses the next update, as if its connection had dropped just before it was published.
    real, missed = hub._route_layer_message, []
    monkeypatch.setattr(hub, "_route_layer_message", lambda run, data: missed.append(data))
    seq = await acommit(name, "running", alice.pk, percent=55)
    await until(lambda: len(missed) >= 1, what="the update the hub missed")
    assert await comm.receive_nothing(0.2)
    monkeypatch.setattr(hub, "_route_layer_message", real)
    killed = [c["id"] for c in await asyncio.to_thread(_hub_connections)]
    assert len(killed) == 1
    await asyncio.to_thread(get_store().client.client_kill_filter, _id=killed[0])
    frame = await recv(comm, within=10)
    assert (frame["data"]["seq"], frame["data"]["percent"]) == (seq, 55)
    assert await recv_close(follower, within=5) == CLOSE_UNAVAILABLE  # a feed cannot be read back: resubscribe
    assert "read back from the store" in caplog.text
    assert hub._run is run  # the watcher stayed; nobody was closed but the feed
    final = await acommit(name, "success", alice.pk)
    assert (await recv(comm))["data"]["seq"] == final  # live again
    await comm.disconnect()
    reliability(
        "The hub's pub/sub connection dropped (direct delivery, RedisPubSubChannelLayer)",
        "an update published while the hub was not listening, then CLIENT KILL of the hub's pub/sub connection",
        "the hub reconnected, subscribed again and read its watched tasks back from the store: the watcher got "
        "the missed update without being closed, then the final state live; the feed's follower was closed "
        "with 4503 to resubscribe",
    )


async def test_a_silent_connection_is_found_by_its_ping(monkeypatch, caplog):
    """A connection on which Redis answers nothing (paused) is replaced once a ping goes unanswered."""
    monkeypatch.setattr(Subscriber, "ping_after", 0.3)
    monkeypatch.setattr(Subscriber, "timeout", 0.5)
    alice = fake_user()
    name, comm, _ = await watching(alice)
    killed = [c["id"] for c in await asyncio.to_thread(_hub_connections)]
    store = get_store()
    # Only the hub's connection stops hearing: its messages are dropped unread, as on a dead link.
    subscriber = get_hub()._run.subscribers.each[0]
    real = subscriber._pubsub.get_message

    async def deaf(*args, **kwargs):
        await real(*args, **kwargs)
        await asyncio.sleep(0.1)
        return None

    monkeypatch.setattr(subscriber._pubsub, "get_message", deaf)
    await until(lambda: "no answer to a ping" in caplog.text, within=5, what="the unanswered ping")
    await until(lambda: [c["id"] for c in _hub_connections()] not in ([], killed), what="a new connection")
    seq = await acommit(name, "running", alice.pk, percent=80)
    assert (await recv(comm))["data"]["seq"] == seq
    assert store is get_store()
    await comm.disconnect()


async def test_a_parts_parent_is_published_by_the_group_script(manager, no_group_send):
    from tests.integration.test_groups import NOWHERE, STEPS, _parts, _start

    parent = await asyncio.to_thread(manager.launch_async_group, [STEPS, STEPS], **NOWHERE)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_for_task(parent), channel)
    parts = await asyncio.to_thread(_parts, manager, parent)
    for part in parts:
        await asyncio.to_thread(_start, part)
        await asyncio.to_thread(manager.finish, part, "success")
    states = []
    while not states or states[-1] != "success":
        message = await asyncio.wait_for(layer.receive(channel), 5)
        assert message["task"] == parent and json.loads(message["record"])["seq"] == message["seq"]
        states.append(message["state"])
    assert states[-1] == "success"
    await layer.group_discard(group_for_task(parent), channel)


async def test_a_subscription_redis_does_not_confirm_is_a_4503(monkeypatch):
    """In direct mode the subscription is all a watcher relies on: unconfirmed, the watch fails like the layer."""
    alice = fake_user()
    name, comm, _ = await watching(alice)  # the hub runs
    other = await new_task(alice.pk)
    monkeypatch.setattr(Subscriber, "timeout", 0.3)

    async def never(self, name, channel):
        return None  # the SUBSCRIBE is lost

    monkeypatch.setattr(Subscriber, "_command", never)
    await comm.send_json_to({"v": 1, "type": "subscribe", "task": other})
    assert await recv_close(comm, within=5) == CLOSE_UNAVAILABLE
