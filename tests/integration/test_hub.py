"""The process-local fan-out hub: one group membership per task, coalescing, layer failures.

``_delivery.hub`` holds the hub and its layer; ``_delivery.fanout`` its routing and passes.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from channels.layers import get_channel_layer

from realtime_async import consumers
from realtime_async._core.naming import PROGRESS_TYPE, group_for_task, new_task_name
from realtime_async._delivery import fanout, receiving, subscription
from realtime_async._delivery import hub as hub_module
from realtime_async._delivery.hub import Hub, get_hub
from realtime_async._delivery.limits import CONNECTIONS
from realtime_async._delivery.receiving import MEMBERSHIP_CALLS
from realtime_async.protocol import CLOSE_UNAVAILABLE
from tests.ws_helpers import (
    acommit,
    connected,
    fake_user,
    group_send,
    new_task,
    recv,
    recv_close,
    stop_hub,
    subscribe,
    task_path,
    watching,
)

#: The layered delivery (RedisChannelLayer); ``test_direct.py`` covers RedisPubSubChannelLayer.
pytestmark = pytest.mark.usefixtures("core_layer", "hub_cleanup")


class FlakyLayer:
    """The real channel layer, with failures switched on by the test."""

    def __init__(self, real):
        self.real = real
        self.fail_group_add = False
        self.drop_probes = False
        self.failing_receives = 0
        self.broken = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self.real, name)

    async def group_add(self, group, channel):
        if self.fail_group_add:
            raise ConnectionError("Error 111 connecting to 10.9.9.9:6379. Connection refused.")
        await self.real.group_add(group, channel)

    async def group_send(self, group, message):
        if self.drop_probes and message.get("type") == "realtime_async.hub_probe":
            return  # as if Redis restarted and forgot the hub's groups
        await self.real.group_send(group, message)

    async def receive(self, channel):
        if self.failing_receives:
            self.failing_receives -= 1
            raise ConnectionError("Connection closed by server.")
        receive = asyncio.ensure_future(self.real.receive(channel))
        broken = asyncio.ensure_future(self.broken.wait())
        try:
            await asyncio.wait({receive, broken}, return_when=asyncio.FIRST_COMPLETED)
            if receive.done():
                return receive.result()
            raise ConnectionError("Connection closed by server.")
        finally:
            for task in (receive, broken):
                task.cancel()
            await asyncio.gather(receive, broken, return_exceptions=True)


@pytest.fixture
def flaky(monkeypatch):
    layer = FlakyLayer(get_channel_layer())
    monkeypatch.setattr(hub_module, "get_channel_layer", lambda alias: layer)
    return layer


async def members(name):
    """Channels in the task's group, read from Redis."""
    layer = get_channel_layer()
    return await layer.connection(layer.consistent_hash(group_for_task(name))).zcard(
        layer._group_key(group_for_task(name))
    )


async def test_many_local_watchers_share_one_group_membership():
    alice = fake_user()
    name = await new_task(alice.pk)
    comms = [await connected(user=alice) for _ in range(5)]
    per_task = await connected(task_path(name), user=alice)
    await recv(per_task)
    for comm in comms:
        await comm.send_json_to(subscribe(name))
        await recv(comm)
    assert get_hub().watchers(name) == 6
    assert await members(name) == 1  # the hub's channel, not one per connection
    await acommit(name, "running", alice.pk, percent=5)
    for comm in (*comms, per_task):
        assert (await recv(comm))["data"]["seq"] == 2
    for comm in (*comms, per_task):
        await comm.disconnect()
    assert await members(name) == 0
    assert not get_hub().running


async def test_anyone_may_group_send_to_the_task_group():
    name, comm, _ = await watching(fake_user())
    record = json.dumps({"seq": 9, "task": name, "state": "running", "note": "from elsewhere"})
    for junk in ({"type": PROGRESS_TYPE, "task": name, "seq": "10", "record": record},
                 {"type": PROGRESS_TYPE, "task": name, "seq": 11, "record": {"seq": 11}},
                 {"type": PROGRESS_TYPE, "seq": 12, "record": record},
                 {"type": "something.else", "task": name}):  # fmt: skip
        await group_send(name, junk)  # dropped, and the hub lives on
    await group_send(name, {"type": PROGRESS_TYPE, "task": name, "seq": 9, "state": "running", "record": record})
    frame = await recv(comm)
    assert frame == {"v": 1, "type": "progress", "task": name, "data": json.loads(record)}
    await group_send(name, {"type": PROGRESS_TYPE, "task": name, "seq": 8, "state": "running", "record": record})
    assert await comm.receive_nothing(0.3)  # older than what was sent
    await comm.disconnect()


async def test_a_lagging_fan_out_sends_the_latest_state_and_every_final_one():
    hub = get_hub()
    name = new_task_name("ws")
    gate, got = asyncio.Event(), []

    class SlowWatcher:
        async def hub_deliver(self, task, seq, frame, final):
            got.append((seq, final, json.loads(frame)["data"]["seq"]))
            if len(got) == 1:
                await gate.wait()

        async def hub_failed(self):
            raise AssertionError("no failure expected")

    watcher = SlowWatcher()
    await hub.watch(name, watcher)

    def update(seq, state):
        return {"type": PROGRESS_TYPE, "task": name, "seq": seq, "state": state, "record": json.dumps({"seq": seq})}

    await group_send(name, update(1, "running"))
    await asyncio.wait_for(_until(lambda: got), 3)
    for seq in range(2, 6):
        await group_send(name, update(seq, "running"))
    await group_send(name, update(6, "success"))
    await group_send(name, update(7, "queued"))  # the same name launched again
    await group_send(name, update(8, "running"))
    await asyncio.wait_for(_until(lambda: [u.seq for u in hub._run.pending.get(name, [])][-1:] == [8]), 3)
    gate.set()
    await asyncio.wait_for(_until(lambda: got[-1][0] == 8), 3)
    assert got == [(1, False, 1), (6, True, 6), (8, False, 8)]
    await hub.unwatch(name, watcher)
    assert not hub.running


async def _until(predicate):
    while True:
        if predicate():
            return
        await asyncio.sleep(0.01)


# -- channel layer failures: 4503, never 1011 --------------------------------
async def test_group_add_failure_closes_4503(flaky):
    alice = fake_user()
    name = await new_task(alice.pk)
    flaky.fail_group_add = True
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    assert await recv_close(comm) == CLOSE_UNAVAILABLE
    await comm.disconnect()
    per_task = await connected(task_path(name), user=alice)
    assert await recv_close(per_task) == CLOSE_UNAVAILABLE
    await per_task.disconnect()


async def test_receive_failure_closes_watchers_4503_and_the_hub_restarts(flaky):
    alice = fake_user()
    name = await new_task(alice.pk)
    watchers = [await connected(user=alice), await connected(task_path(name), user=alice)]
    await watchers[0].send_json_to(subscribe(name))
    for comm in watchers:
        await recv(comm)
    idle = await connected(user=alice)  # no subscription: nothing to lose, stays open
    flaky.broken.set()
    for comm in watchers:
        assert await recv_close(comm) == CLOSE_UNAVAILABLE
        await comm.disconnect()
    assert not get_hub().running
    flaky.broken.clear()
    # Clients reconnect and resubscribe: the hub starts again and the cache has the state.
    await idle.send_json_to(subscribe(name, seq=1))
    assert (await recv(idle))["data"]["seq"] == 1
    await acommit(name, "running", alice.pk)
    assert (await recv(idle))["data"]["seq"] == 2
    await idle.disconnect()


async def test_one_failed_receive_with_groups_intact_disturbs_nobody(flaky, caplog):
    """A pooled connection to a restarted server fails once; the probe shows nothing was lost."""
    alice = fake_user()
    name, comm, _ = await watching(alice)
    flaky.failing_receives = 1
    await acommit(name, "running", alice.pk)  # wakes the reader, whose receive then fails once
    assert (await recv(comm))["data"]["seq"] == 2
    await asyncio.sleep(0.3)  # the probe went out and came back
    await acommit(name, "running", alice.pk)
    assert (await recv(comm))["data"]["seq"] == 3
    assert get_hub().running
    assert "probing the layer" in caplog.text and "channel layer failed" not in caplog.text
    await comm.disconnect()


async def test_a_lost_group_membership_is_found_by_the_probe(flaky, monkeypatch):
    monkeypatch.setattr(Hub, "probe_interval", 0.2)
    monkeypatch.setattr(Hub, "layer_timeout", 0.5)
    name, comm, _ = await watching(fake_user())
    await asyncio.sleep(0.6)  # probes come back: all is well
    assert get_hub().running
    flaky.drop_probes = True
    assert await recv_close(comm, within=3) == CLOSE_UNAVAILABLE
    await comm.disconnect()


async def test_group_memberships_are_renewed_before_the_layer_expires_them(monkeypatch, settings):
    # A layer that forgets members after 2 s, as channels_redis does after group_expiry (a day by default).
    from channels_redis.core import RedisChannelLayer

    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layer = RedisChannelLayer(**config, group_expiry=2)
    monkeypatch.setattr(hub_module, "get_channel_layer", lambda alias: layer)
    monkeypatch.setattr(Hub, "probe_interval", 0.2)
    name, comm, _ = await watching(fake_user())
    await asyncio.sleep(3.5)  # past the expiry: only renewed memberships are still there
    record = json.dumps({"seq": 50, "task": name, "state": "running"})
    # Through the layer only (a group_send, not a commit): the pub/sub path cannot bring it.
    await layer.group_send(
        group_for_task(name), {"type": PROGRESS_TYPE, "task": name, "seq": 50, "state": "running", "record": record}
    )
    assert (await recv(comm))["data"]["seq"] == 50
    assert get_hub().running  # the probe group was renewed too: no 4503
    await comm.disconnect()
    await stop_hub()
    await layer.close_pools()


@pytest.mark.reliability
async def test_a_connection_closed_4503_stops_counting_at_once(flaky, settings, monkeypatch, reliability):
    """Its place is free as soon as it is closed, while the handler that was running still waits for Redis.

    On 4503 the client reconnects at once. During a Sentinel failover such
    handlers waited 5 s each; their connections, counted until then, filled
    ``MAX_CONNECTIONS_PER_USER`` and the next reconnect got 4429.
    """
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "MAX_CONNECTIONS_PER_USER": 1}
    alice = fake_user()
    key = f"user:{alice.pk}"
    name = await new_task(alice.pk)
    reading, redis_back = threading.Event(), threading.Event()

    def read_while_redis_is_away(user, task, token):
        reading.set()
        redis_back.wait(10)
        return subscription.read_snapshot(user, task, token)

    monkeypatch.setattr(consumers, "read_snapshot", read_while_redis_is_away)
    cut_off = await connected(user=alice)
    await cut_off.send_json_to(subscribe(name))
    assert await asyncio.to_thread(reading.wait, 5)  # in the task's group; its state read waits
    flaky.broken.set()
    assert await recv_close(cut_off) == CLOSE_UNAVAILABLE
    flaky.broken.clear()
    try:
        assert CONNECTIONS[key] == 0, "a connection closed by the server still counts"
        again = await connected(user=alice)  # the client reconnects: served, not 4429
        await again.send_json_to({"v": 1, "type": "ping"})
        assert await recv(again) == {"v": 1, "type": "pong"}
    finally:
        redis_back.set()
    await cut_off.disconnect()
    assert CONNECTIONS[key] == 1, "released once: the reconnected one still counts"
    await again.disconnect()
    assert CONNECTIONS[key] == 0
    reliability(
        "A WebSocket closed with 4503 while its handler still waits for Redis",
        "MAX_CONNECTIONS_PER_USER = 1; the hub's layer receive fails while a subscribe's state read is held back "
        "(WebsocketCommunicator, in-process)",
        "closed 4503 and no longer counted at once; the client's reconnection was served (pong), not closed 4429; "
        "released once: the reconnection still counted after the first connection ended",
    )


async def test_no_channel_layer_closes_4503(monkeypatch):
    monkeypatch.setattr(hub_module, "get_channel_layer", lambda alias: None)
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    assert await recv_close(comm) == CLOSE_UNAVAILABLE
    await comm.disconnect()


# -- long passes: the reader keeps reading, newer updates overtake -----------
class Recorder:
    """A watcher that records the seqs it was handed; ``on_deliver`` runs inside the pass."""

    def __init__(self, on_deliver=None):
        self.seqs = []
        self.on_deliver = on_deliver

    async def hub_deliver(self, task, seq, frame, final):
        assert json.loads(frame)["data"]["seq"] == seq
        self.seqs.append(seq)
        if self.on_deliver is not None:
            self.on_deliver(seq)

    async def hub_failed(self):
        raise AssertionError("no failure expected")


def _update(name, seq, state="running"):
    return {"type": PROGRESS_TYPE, "task": name, "seq": seq, "state": state, "record": json.dumps({"seq": seq})}


async def test_a_long_pass_yields_and_switches_to_the_newest_update():
    hub = get_hub()
    name = new_task_name("ws")
    count = 10 * fanout._CHUNK
    arrived = []

    def arrive(seq):
        # Mid-pass, as the reader would route it while the pass yields.
        if seq == 1 and not arrived:
            arrived.append(2)
            hub._route(hub._run, _update(name, 2))

    watchers = [Recorder(arrive if i == 2 else None) for i in range(count)]
    for watcher in watchers:
        await hub.watch(name, watcher)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    hub._route(hub._run, _update(name, 1))
    await asyncio.wait_for(_until(lambda: all(w.seqs[-1:] == [2] for w in watchers)), 3)
    tick.cancel()
    served_old = [w for w in watchers if 1 in w.seqs]
    assert len(served_old) == fanout._CHUNK  # the first chunk only: the rest got seq 2 alone
    assert all(w.seqs == [1, 2] for w in served_old)
    assert all(w.seqs == [2] for w in watchers if w not in served_old)
    assert ticks >= 10  # the pass let the loop run
    for watcher in watchers:
        await hub.unwatch(name, watcher)


async def test_a_final_state_arriving_mid_pass_waits_for_the_pass():
    hub = get_hub()
    name = new_task_name("ws")
    count = 4 * fanout._CHUNK

    def arrive(seq):
        if seq == 4:
            hub._route(hub._run, _update(name, 5, "success"))

    watchers = [Recorder(arrive if i == 0 else None) for i in range(count)]
    for watcher in watchers:
        await hub.watch(name, watcher)
    hub._route(hub._run, _update(name, 4))
    await asyncio.wait_for(_until(lambda: all(w.seqs[-1:] == [5] for w in watchers)), 3)
    assert all(w.seqs == [4, 5] for w in watchers)  # the last update is not taken from anyone
    for watcher in watchers:
        await hub.unwatch(name, watcher)


async def test_a_final_state_is_never_replaced_mid_pass():
    hub = get_hub()
    name = new_task_name("ws")
    count = 4 * fanout._CHUNK

    def arrive(seq):
        if seq == 5:
            hub._route(hub._run, _update(name, 6, "running"))  # a relaunch under the same name

    watchers = [Recorder(arrive if i == 0 else None) for i in range(count)]
    for watcher in watchers:
        await hub.watch(name, watcher)
    hub._route(hub._run, _update(name, 5, "success"))
    await asyncio.wait_for(_until(lambda: all(w.seqs[-1:] == [6] for w in watchers)), 3)
    assert all(w.seqs == [5, 6] for w in watchers)
    for watcher in watchers:
        await hub.unwatch(name, watcher)


async def test_a_burst_of_subscriptions_to_many_new_tasks_closes_nobody(settings, monkeypatch, caplog):
    """1,000 subscriptions over 100 new tasks at once: group_adds are bounded, so redis-py's pool holds.

    redis-py's asyncio pool raises ``MaxConnectionsError`` instead of waiting. Here
    the pool (100 by default) and the bound (``MEMBERSHIP_CALLS``) are scaled down
    together, so that the burst overflows the pool every time without the bound
    (in-process, about 30 group_adds overlap; on a loaded daphne, up to 100).
    """
    assert MEMBERSHIP_CALLS + 8 <= 100  # the reader and the probe need connections too
    monkeypatch.setattr(receiving, "MEMBERSHIP_CALLS", 4)
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "MAX_CONNECTIONS_PER_USER": 2000}
    get_channel_layer().connection(0).connection_pool.max_connections = 12
    alice = fake_user()
    names = [await new_task(alice.pk) for _ in range(100)]
    comms = await asyncio.gather(*(connected(user=alice) for _ in range(1000)))
    await asyncio.gather(*(comm.send_json_to(subscribe(names[i % 100])) for i, comm in enumerate(comms)))
    frames = await asyncio.gather(*(comm.receive_output(10) for comm in comms))
    assert [f for f in frames if f["type"] != "websocket.send"] == []  # no close (4503)
    assert all(json.loads(f["text"])["type"] == "progress" for f in frames)
    assert {await members(name) for name in names} == {1}
    await asyncio.gather(*(comm.disconnect() for comm in comms))
    assert {await members(name) for name in names} == {0}
    assert "MaxConnectionsError" not in caplog.text
