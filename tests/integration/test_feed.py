"""The feed (``subscribe_feed``): who gets which task, permissions asked once, no duplicates."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser

from realtime_async import consumers
from realtime_async._core.naming import PROGRESS_TYPE, STAFF_FEED_GROUP, group_for_user, new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._delivery import fanout
from realtime_async._delivery.hub import Hub, get_hub
from realtime_async._writing.writer import get_writer
from realtime_async.async_manager import AsyncManager
from realtime_async.protocol import CLOSE_UNAVAILABLE
from tests.testapp.managers import HidingManager
from tests.ws_helpers import (
    acommit,
    connected,
    fake_user,
    group_members,
    recv,
    recv_close,
    subscribe,
    task_path,
)

FEED = {"v": 1, "type": "subscribe_feed"}
UNFEED = {"v": 1, "type": "unsubscribe_feed"}
FINAL = ("success", "failure", "cancelled", "lost")


pytestmark = pytest.mark.usefixtures("hub_cleanup")


@pytest.fixture
def hiding(settings):
    settings.REALTIME_ASYNC = {
        **settings.REALTIME_ASYNC,
        "ASYNC_MANAGER_CLASS_PATH": "tests.testapp.managers.HidingManager",
    }
    HidingManager.calls.clear()
    return HidingManager.calls


async def new_task(owner=None, prefix="ws"):
    """A queued task whose broadcast has left, so a feed followed afterwards cannot get it late."""
    name = new_task_name(prefix)
    record = {"task": name, "state": "queued", "owner": owner}
    await asyncio.to_thread(get_writer().commit, record, mode=WriteMode.CREATE, wait=True)
    return name


async def settled(comm):
    """Wait until the connection handled everything sent so far (messages are handled in order)."""
    await comm.send_json_to({"v": 1, "type": "ping", "id": "settled"})
    assert await recv(comm) == {"v": 1, "type": "pong", "id": "settled"}


async def following(user, **kwargs):
    comm = await connected(user=user, **kwargs)
    await comm.send_json_to(FEED)
    await settled(comm)
    return comm


async def frames_until_final(comm, task, within=5):
    """``(seq, state)`` of ``task``'s progress frames up to its final state; fails on any other frame."""
    frames = []
    while True:
        msg = await recv(comm, within)
        assert msg["type"] == "progress" and msg["task"] == task, msg
        frames.append((msg["data"]["seq"], msg["data"]["state"]))
        if msg["data"]["state"] in FINAL:
            return frames


# -- who gets what -----------------------------------------------------------
async def test_a_user_feed_carries_their_own_tasks_only():
    alice, bob = fake_user(), fake_user()
    comm = await following(alice)
    assert get_hub().feed_watchers(group_for_user(alice.pk)) == 1
    bobs = await new_task(bob.pk)  # broadcast before alice's: had it been sent, it would come first
    await acommit(bobs, "running", bob.pk, percent=10)
    mine = await new_task(alice.pk)
    first = await recv(comm)
    assert (first["type"], first["task"], first["data"]["state"], first["data"]["owner"]) == (
        "progress", mine, "queued", alice.pk,
    )  # fmt: skip
    await acommit(mine, "running", alice.pk, percent=50)
    assert (await recv(comm))["data"]["percent"] == 50
    await acommit(bobs, "success", bob.pk)
    await acommit(mine, "success", alice.pk)
    assert (await recv(comm))["data"]["state"] == "success"
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()
    assert not get_hub().running


async def test_a_staff_feed_carries_every_task():
    staff, alice, bob = fake_user(staff=True), fake_user(), fake_user()
    comm = await following(staff)
    assert get_hub().feed_watchers(STAFF_FEED_GROUP) == 1
    assert get_hub().feed_watchers(group_for_user(staff.pk)) == 0  # the staff group covers their own
    names = [await new_task(alice.pk), await new_task(bob.pk), await new_task(None)]
    got = [(msg["task"], msg["data"]["state"]) for msg in [await recv(comm) for _ in names]]
    assert got == [(name, "queued") for name in names]
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_anonymous_connections_get_not_found_without_a_task():
    for user in (None, AnonymousUser()):
        comm = await connected(user=user)
        await comm.send_json_to(FEED)
        assert await recv(comm) == {
            "v": 1,
            "type": "error",
            "code": "not_found",
            "message": "No feed without a signed-in user.",
        }
        await comm.send_json_to(UNFEED)  # not following: nothing to stop, no answer
        await settled(comm)
        await comm.disconnect()
    assert not get_hub().running


async def test_a_second_subscribe_feed_changes_nothing():
    alice = fake_user()
    comm = await following(alice)
    await comm.send_json_to(FEED)
    await settled(comm)
    assert get_hub().feed_watchers(group_for_user(alice.pk)) == 1
    name = await new_task(alice.pk)
    assert (await recv(comm))["task"] == name
    assert await comm.receive_nothing(0.3)  # once, not once per subscribe_feed
    await comm.disconnect()


async def test_unsubscribe_feed_stops_delivery_and_the_hub_leaves():
    alice = fake_user()
    comm = await following(alice)
    name = await new_task(alice.pk)
    assert (await recv(comm))["task"] == name
    await comm.send_json_to(UNFEED)
    await settled(comm)
    assert get_hub().feed_watchers(group_for_user(alice.pk)) == 0
    assert not get_hub().running  # nothing else to watch: the hub stopped
    await acommit(name, "running", alice.pk)
    await new_task(alice.pk)
    assert await comm.receive_nothing(0.5)
    # Following again works, without a snapshot: the next change arrives.
    await comm.send_json_to(FEED)
    await settled(comm)
    await acommit(name, "success", alice.pk)
    assert (await recv(comm))["data"]["state"] == "success"
    await comm.disconnect()


async def test_the_hub_follows_a_user_group_once_for_all_local_connections():
    alice = fake_user()
    comms = [await following(alice) for _ in range(3)]
    assert get_hub().feed_watchers(group_for_user(alice.pk)) == 3
    group = group_for_user(alice.pk)
    assert await group_members(group) == 1
    name = await new_task(alice.pk)
    for comm in comms:
        assert (await recv(comm))["task"] == name
    for comm in comms:
        await comm.disconnect()
    assert get_hub().feed_watchers(group) == 0
    assert await group_members(group) == 0


async def test_a_task_subscriber_without_the_feed_gets_no_feed_traffic():
    alice = fake_user()
    name = await new_task(alice.pk)
    watcher = await connected(user=alice)
    await watcher.send_json_to(subscribe(name))
    await recv(watcher)
    feed = await following(alice)  # the hub now also follows alice's group, in this process
    other = await new_task(alice.pk)
    assert (await recv(feed))["task"] == other
    await acommit(name, "running", alice.pk)
    assert (await recv(watcher))["task"] == name
    assert (await recv(feed))["task"] == name
    assert await watcher.receive_nothing(0.3)  # never `other`
    for comm in (watcher, feed):
        await comm.disconnect()


async def test_the_per_task_url_refuses_feed_messages():
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(task_path(name), user=alice)
    await recv(comm)
    await comm.send_json_to(FEED)
    assert (await recv(comm))["code"] == "bad_request"
    assert get_hub().feed_watchers(group_for_user(alice.pk)) == 0
    await comm.disconnect()


# -- permissions: can_view, asked once per task and run --------------------
async def test_the_feed_honours_an_overridden_can_view(hiding):
    staff, alice = fake_user(staff=True), fake_user()
    comms = [await following(staff), await following(alice)]
    hidden = await new_task(alice.pk, prefix="hidden")
    shown = await new_task(alice.pk)
    for comm in comms:
        assert (await recv(comm))["task"] == shown  # the hidden task's queued state was not sent
    await acommit(hidden, "running", alice.pk, percent=50)
    await acommit(hidden, "success", alice.pk)
    await acommit(shown, "success", alice.pk)
    for comm in comms:
        assert (await recv(comm))["data"]["state"] == "success"
        assert await comm.receive_nothing(0.3)
    # Asked once per task and connection, however many updates followed.
    assert sorted(hiding) == sorted([(staff.pk, hidden), (staff.pk, shown), (alice.pk, hidden), (alice.pk, shown)])
    for comm in comms:
        await comm.disconnect()


async def test_a_new_run_under_the_same_name_is_asked_about_again(hiding):
    alice = fake_user()
    comm = await following(alice)
    name = await new_task(alice.pk)
    assert (await recv(comm))["data"]["state"] == "queued"
    for state in ("running", "running", "success"):
        await acommit(name, state, alice.pk)
        assert (await recv(comm))["data"]["state"] == state
    assert hiding == [(alice.pk, name)]
    await acommit(name, "queued", alice.pk, mode=WriteMode.CREATE)  # launched again
    assert (await recv(comm))["data"]["state"] == "queued"
    assert hiding == [(alice.pk, name), (alice.pk, name)]
    await comm.disconnect()


async def test_a_slow_permission_check_holds_up_no_one_else(settings):
    settings.REALTIME_ASYNC = {
        **settings.REALTIME_ASYNC,
        "ASYNC_MANAGER_CLASS_PATH": "tests.integration.test_feed.SlowManager",
    }
    SlowManager.asked.clear()
    SlowManager.release.clear()
    alice = fake_user()
    name = await new_task(alice.pk)
    watcher = await connected(user=fake_user(staff=True))
    await watcher.send_json_to(subscribe(name))  # asked before the slow one starts
    await recv(watcher)
    slow = await following(alice)
    other = await new_task(alice.pk)  # the feed asks can_view about it, which blocks
    await asyncio.to_thread(SlowManager.asked.wait, 5)
    started = time.monotonic()
    await acommit(name, "running", alice.pk, percent=5)
    assert (await recv(watcher))["data"]["percent"] == 5  # the hub's fan-out did not wait
    assert time.monotonic() - started < 2
    for percent in (10, 20):  # held while asking: the latest wins
        await acommit(other, "running", alice.pk, percent=percent)
    await acommit(name, "running", alice.pk, percent=30)  # the hub delivered this to the slow one too
    assert (await recv(watcher))["data"]["percent"] == 30
    SlowManager.release.set()
    got = [await recv(slow) for _ in range(2)]
    assert {(msg["task"], msg["data"]["percent"]) for msg in got} == {(other, 20), (name, 30)}
    assert await slow.receive_nothing(0.3)
    for comm in (watcher, slow):
        await comm.disconnect()


class SlowManager(AsyncManager):
    asked = threading.Event()
    release = threading.Event()

    def can_view(self, user, record):
        if not getattr(user, "is_staff", False):
            SlowManager.asked.set()
            SlowManager.release.wait(10)
        return super().can_view(user, record)


# -- no duplicates, in order, across a subscription and the feed ------------
async def test_a_task_subscribed_and_in_the_feed_is_sent_once_per_seq():
    alice, staff = fake_user(), fake_user(staff=True)
    name = await new_task(alice.pk)
    # The hub is in the task's group, alice's group and the staff group: every update reaches it three times.
    staff_feed = await following(staff)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    assert (await recv(comm))["data"]["seq"] == 1
    await comm.send_json_to(FEED)
    await settled(comm)
    sent = []
    for state in ("running", "running", "running", "success"):
        sent.append((await acommit(name, state, alice.pk), state))
        # One at a time: a feed holds updates while it asks can_view, and the latest wins meanwhile.
        for c in (comm, staff_feed):
            msg = await recv(c)
            assert (msg["task"], msg["data"]["seq"], msg["data"]["state"]) == (name, *sent[-1])
    assert [seq for seq, _ in sent] == [2, 3, 4, 5]
    assert get_hub().watchers(name) == 0  # the subscription ended with the final state; the feed goes on
    await acommit(name, "queued", alice.pk, mode=WriteMode.CREATE)  # launched again: the feed has it
    for c in (comm, staff_feed):
        assert ((msg := await recv(c))["task"], msg["data"]["seq"]) == (name, 6)
    for c in (comm, staff_feed):
        assert await c.receive_nothing(0.3)
        await c.disconnect()


async def test_copies_and_stale_updates_are_dropped_per_connection(monkeypatch):
    """With the hub's own dedupe off, the connection's per-task seq still drops copies and older updates."""
    monkeypatch.setattr(fanout, "_RECENT", 0)
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    await recv(comm)
    await comm.send_json_to(FEED)
    await settled(comm)
    await acommit(name, "success", alice.pk)
    assert await frames_until_final(comm, name) == [(2, "success")]
    # The subscription ended with the final state; a late copy of it, and an older update, come via the feed.
    layer = get_channel_layer()
    record = json.dumps({"seq": 2, "task": name, "state": "success", "owner": alice.pk})
    for seq, state in ((2, "success"), (1, "queued")):
        message = {"type": PROGRESS_TYPE, "task": name, "seq": seq, "state": state, "record": record}
        await layer.group_send(group_for_user(alice.pk), message)
    assert await comm.receive_nothing(0.5)
    newer = json.dumps({"seq": 3, "task": name, "state": "queued", "owner": alice.pk})
    await layer.group_send(group_for_user(alice.pk), {"type": PROGRESS_TYPE, "task": name, "seq": 3, "record": newer})
    assert (await recv(comm))["data"]["seq"] == 3
    await comm.disconnect()


async def test_the_hub_forwards_each_broadcast_once(monkeypatch):
    alice, staff = fake_user(), fake_user(staff=True)
    name = await new_task(alice.pk)
    fan_outs = []
    original_watchers_of, original_deliver = Hub._watchers_of, consumers.ProgressConsumer.hub_deliver

    def counting(self, task, update):
        watchers = original_watchers_of(self, task, update)
        fan_outs.append((task, update.seq, len(watchers)))
        return watchers

    async def slow_deliver(self, task, seq, frame, final):
        await asyncio.sleep(0.2)  # the other copies arrive meanwhile, after the first left the queue
        await original_deliver(self, task, seq, frame, final)

    monkeypatch.setattr(Hub, "_watchers_of", counting)
    monkeypatch.setattr(consumers.ProgressConsumer, "hub_deliver", slow_deliver)
    comms = [await following(staff), await following(alice), await connected(user=alice)]
    await comms[2].send_json_to(subscribe(name))
    await recv(comms[2])
    await acommit(name, "running", alice.pk)
    for comm in comms:
        assert (await recv(comm))["data"]["seq"] == 2
        assert await comm.receive_nothing(0.2)
    assert fan_outs == [(name, 2, 3)]  # three copies in, one fan-out to three connections
    for comm in comms:
        await comm.disconnect()


async def test_feed_followers_are_closed_4503_when_the_layer_fails():
    alice = fake_user()
    comm = await following(alice)
    hub = get_hub()
    await hub._fail(hub._run, ConnectionError("Connection closed by server."))
    assert await recv_close(comm) == CLOSE_UNAVAILABLE
    await comm.disconnect()
    assert not hub.running
