"""Two Redis shards (``SHARDS``), each a private redis-server: placement, one shard per update, locks, a lost shard.

The layer is RedisPubSubChannelLayer on the same two servers in the same
order, so delivery is direct: each task's write script publishes on the task's
shard, and the hub listens on both. A whole deployment on shards (a worker, a
server, a shard killed under them) is ``tests/system/test_shards.py``'s.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import redis
from channels.layers import get_channel_layer
from django.core.checks import run_checks

from realtime_async._core import publishing
from realtime_async._core.locks import to_lock_ids
from realtime_async._core.naming import group_for_task, new_task_name
from realtime_async._core.store import ShardedStore, WriteMode, get_store
from realtime_async._core.store.shards import fingerprint
from realtime_async._writing.writer import get_writer
from realtime_async.protocol import CLOSE_UNAVAILABLE
from tests.services import free_port, private_redis
from tests.ws_helpers import acommit, commit, connected, fake_user, recv, recv_close, subscribe

pytestmark = pytest.mark.usefixtures("hub_cleanup")


@pytest.fixture
def shards(settings):
    """Two private redis-servers as SHARDS and as the layer's hosts; yields the store, their clients and processes."""
    with private_redis() as (url_a, proc_a, _), private_redis() as (url_b, proc_b, _):
        settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "SHARDS": [url_a, url_b]}
        layer = settings.CHANNEL_LAYERS["default"]
        hosts = [{"address": url_a, "socket_timeout": None}, {"address": url_b, "socket_timeout": None}]
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {**layer["CONFIG"], "hosts": hosts},
            }
        }
        store = get_store()
        assert isinstance(store, ShardedStore)
        clients = [redis.Redis.from_url(url_a), redis.Redis.from_url(url_b)]
        yield store, clients, [proc_a, proc_b]
        for client in clients:
            client.close()


def _names_on(store: ShardedStore, index: int, count: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = new_task_name("shard")
        if store.shards.index(store.shard(name)) == index:
            names.append(name)
    return names


def _commands(client: redis.Redis) -> int:
    """Commands the server ran since its last ``CONFIG RESETSTAT``, not counting these two."""
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config|resetstat"))


def test_tasks_spread_across_both_shards_and_each_update_touches_one(shards):
    store, clients, _ = shards
    names = [new_task_name("spread") for _ in range(60)]
    for name in names:
        commit(name, "queued", mode=WriteMode.CREATE)
    placed = [store.shards.index(store.shard(name)) for name in names]
    assert 10 < placed.count(0) < 50, placed  # both hold some (crc32 over 60 names)
    for name, index in zip(names, placed, strict=True):
        key = store.shard(name).state_key(name)
        assert clients[index].exists(key) and not clients[1 - index].exists(key)
    store.add_active_many(names)  # one registry per shard, read as one
    assert sorted(store.active()) == sorted(names)
    assert clients[0].zcard(f"{store.locks.prefix}:a:tasks") == placed.count(0)

    (on_b,) = _names_on(store, 1, 1)
    commit(on_b, "queued", mode=WriteMode.CREATE)
    for client in clients:
        client.config_resetstat()
    for percent in range(1, 21):
        commit(on_b, "running", percent=percent)
    assert _commands(clients[0]) == 0
    assert _commands(clients[1]) >= 20
    assert json.loads(store.read_state(on_b))["percent"] == 20
    assert [json.loads(r)["task"] for r in store.read_states([names[0], on_b, names[1]])] == [names[0], on_b, names[1]]


async def test_direct_delivery_over_both_shards_to_watchers_feeds_and_the_layers_consumers(shards):
    store, _, _ = shards
    assert publishing.direct_layer() is not None, publishing.why_not_direct(get_channel_layer(), store)
    alice = fake_user()
    layer = get_channel_layer()
    names = [_names_on(store, 0, 1)[0], _names_on(store, 1, 1)[0]]
    for name in names:
        await acommit(name, "queued", alice.pk, mode=WriteMode.CREATE)
    # A consumer that joined the task's group through the layer hears the write script's publication.
    channel = await layer.new_channel()
    await layer.group_add(group_for_task(names[1]), channel)
    comm = await connected(user=alice)
    feed = await connected(user=alice)
    await feed.send_json_to({"v": 1, "type": "subscribe_feed"})
    await feed.send_json_to({"v": 1, "type": "ping", "id": "settled"})
    assert (await recv(feed))["type"] == "pong"
    for name in names:
        await comm.send_json_to(subscribe(name))
        assert (await recv(comm))["data"]["task"] == name
    seqs = [await acommit(name, "running", alice.pk, percent=40) for name in names]
    got = {(frame["data"]["task"], frame["data"]["seq"]) for frame in [await recv(comm), await recv(comm)]}
    assert got == set(zip(names, seqs, strict=True))
    followed = set()
    while len(followed) < 2:
        frame = await recv(feed)
        if frame["type"] == "progress":
            followed.add(frame["data"]["task"])
    assert followed == set(names)  # the owner's feed hears both shards
    message = await asyncio.wait_for(layer.receive(channel), 3)
    assert (message["task"], message["seq"]) == (names[1], seqs[1])
    await layer.group_discard(group_for_task(names[1]), channel)
    await comm.disconnect()
    await feed.disconnect()


@pytest.mark.reliability
async def test_a_killed_shard_closes_only_its_tasks_watchers_and_comes_back_empty(shards, reliability):
    """Shard 1 goes away: its task's watcher and the feed get 4503; the task on shard 0 is served on."""
    store, clients, procs = shards
    alice = fake_user()
    kept, lost = _names_on(store, 0, 1)[0], _names_on(store, 1, 1)[0]
    for name in (kept, lost):
        await acommit(name, "running", alice.pk, mode=WriteMode.CREATE, percent=1)
    watchers = {}
    for name in (kept, lost):
        watchers[name] = await connected(user=alice)
        await watchers[name].send_json_to(subscribe(name))
        assert (await recv(watchers[name]))["data"]["task"] == name
    feed = await connected(user=alice)
    await feed.send_json_to({"v": 1, "type": "subscribe_feed"})
    await feed.send_json_to({"v": 1, "type": "ping", "id": "settled"})
    assert (await recv(feed))["type"] == "pong"

    port = procs[1].popen.args[2]
    await asyncio.to_thread(procs[1].stop)
    assert await recv_close(watchers[lost], within=15) == CLOSE_UNAVAILABLE
    assert await recv_close(feed, within=5) == CLOSE_UNAVAILABLE
    with pytest.raises(redis.ConnectionError):
        await asyncio.to_thread(store.read_state, lost)
    seq = await acommit(kept, "running", alice.pk, percent=50)
    frame = await recv(watchers[kept])
    assert (frame["data"]["seq"], frame["data"]["percent"]) == (seq, 50)  # the other shard's task lives on

    with private_redis(int(port)):  # back, empty, as after a Redis restart
        again = await connected(user=alice)
        await again.send_json_to(subscribe(lost))
        first = await recv(again, within=10)
        assert first["type"] == "error" or first["data"]["state"] in ("running", "lost", None), first
        floor = 7  # the worker's last seq: the record comes back above it
        body = json.dumps({"task": lost, "state": "running", "percent": 60})[1:]
        publish = publishing.publication(lost, alice.pk, (group_for_task(lost),))
        written = await asyncio.to_thread(
            lambda: store.write_state(lost, "running", body, ttl=60, floor=floor, publish=publish)
        )
        assert written.seq == floor + 1
        await again.disconnect()
    await watchers[kept].disconnect()
    reliability(
        "A Redis shard killed mid-run (SHARDS of two)",
        "one of two private redis-servers stopped while a watcher follows a task on each and a feed follows both",
        "the lost shard's task watcher and the feed closed with 4503; the other shard's task kept streaming; "
        "the shard back empty took the task's next write above its last seq",
    )


def test_locks_are_atomic_across_the_shards_tasks(shards):
    """Locks live on the first shard: a launch takes all of its objects or none, whichever shard its task is on."""
    store, clients, _ = shards
    first, second = _names_on(store, 1, 1)[0], _names_on(store, 0, 1)[0]
    assert store.acquire(first, ["obj:1", "obj:2"], ttl=60) == {}
    assert store.acquire(second, ["obj:2", "obj:3"], ttl=60) == {"obj:2": first}
    assert store.holders(["obj:1", "obj:2", "obj:3"]) == {"obj:1": first, "obj:2": first}
    assert not any(clients[1].scan_iter(match=f"{store.locks.prefix}:l:*"))  # none on the task's own shard
    commit(first, "running", mode=WriteMode.CREATE)
    assert store.renew(first, lock_ttl=60, heartbeat_timeout=30, state_ttl=60) == []
    assert store.is_alive(first)
    # Ending the task on shard 1 frees its locks on shard 0.
    store.write_state(first, "success", f'"task":"{first}","state":"success"}}', ttl=60, end=True)
    assert store.holders(["obj:1", "obj:2"]) == {}
    assert store.acquire(second, ["obj:2", "obj:3"], ttl=60) == {}

    # Launches racing for overlapping objects from tasks on both shards: no two hold one object.
    contenders = _names_on(store, 0, 4) + _names_on(store, 1, 4)
    barrier, won = threading.Barrier(len(contenders)), {}

    def race(name: str, index: int) -> None:
        barrier.wait(5)
        if store.acquire(name, [f"race:{index % 3}", f"race:{(index + 1) % 3}"], ttl=60) == {}:
            won[name] = index

    threads = [threading.Thread(target=race, args=(name, i)) for i, name in enumerate(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(won) == 1, won  # any two contenders share an object: exactly one takes its pair
    (winner, index) = next(iter(won.items()))
    assert store.holders([f"race:{i}" for i in range(3)]) == {
        f"race:{index % 3}": winner,
        f"race:{(index + 1) % 3}": winner,
    }


@pytest.mark.django_db(transaction=True)
def test_a_groups_parts_live_on_the_parents_shard_and_its_end_frees_its_locks(shards, manager):
    from realtime_async import Part
    from tests.testapp.models import Widget

    store, clients, _ = shards
    parent = _names_on(store, 1, 1)[0]
    assert {store.shard(name) for name in [f"{parent}.0", f"{parent}.then", f"{parent}.2.1"]} == {store.shard(parent)}
    widget = {"testapp.widget": {Widget.objects.create(name="sharded").pk}}
    steps = "tests.testapp.workers.steps"
    manager.launch_async_group(
        [Part(steps, (1,)), Part(steps, (1,))], task_name=parent, conflict_ids=widget,
        queue="realtime-async-tests-nowhere",
    )  # fmt: skip
    assert store.holders(to_lock_ids(widget)) != {}  # held on shard 0 for a task on shard 1
    for index in range(2):
        part = f"{parent}.{index}"
        assert clients[1].exists(store.shard(part).state_key(part)) and store.shard(part) is store.shards[1]
        record = json.loads(store.read_state(part))
        get_writer().commit({**record, "state": "running"})
        get_writer().track(json.loads(store.read_state(part)), {})
        manager.finish(part, "success")
    assert manager.get_progress(parent)["state"] == "success"
    assert manager.get_progress(parent)["group"]["counts"]["success"] == 2
    assert store.holders(to_lock_ids(widget)) == {}  # the group's end freed them on the lock shard


def test_checks_name_a_malformed_list_an_unreachable_server_and_another_processes_list(shards, settings):
    store, clients, _ = shards
    ids = lambda: sorted(m.id for m in run_checks() if m.id[-4:] in ("E004", "E010", "E011", "E012"))  # noqa: E731
    assert ids() == []
    key = f"{store.locks.prefix}:shards"
    assert (
        clients[0].get(key).decode()
        == clients[1].get(key).decode()
        == fingerprint([{"address": url} for url in settings.REALTIME_ASYNC["SHARDS"]])
    )
    clients[1].set(key, "0123456789abcdef")  # a process with another list was here
    assert ids() == ["realtime_async.E012"]
    good = settings.REALTIME_ASYNC["SHARDS"]
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "SHARDS": [good[0], f"redis://127.0.0.1:{free_port()}/0"]}
    messages = [m for m in run_checks() if m.id == "realtime_async.E011"]
    assert len(messages) == 1 and "SHARDS'][1]" in messages[0].msg
    for bad in ([], ["http://x"], [{"sentinels": [("h", 1)]}], [good[0], good[0]]):
        settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "SHARDS": bad}
        assert "realtime_async.E010" in ids() or "realtime_async.E004" in ids(), bad
