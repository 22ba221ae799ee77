"""The WebSocket consumers, driven by ``WebsocketCommunicator`` against real Redis."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import signing
from django.test import Client
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime_async import consumers
from realtime_async._core import access
from realtime_async._delivery import subscription
from realtime_async._delivery.hub import get_hub
from realtime_async.async_manager import AsyncManager
from realtime_async.protocol import (
    CLOSE_FINAL,
    CLOSE_NOT_FOUND,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_LARGE,
    CLOSE_UNAVAILABLE,
)
from tests.hostile import HOSTILE
from tests.ws_helpers import (
    BAD_REQUEST_MESSAGES,
    MULTI,
    acommit,
    commit,
    connected,
    fake_user,
    new_task,
    recv,
    recv_close,
    stop_hub,
    subscribe,
    task_path,
)

NOT_FOUND = {"v": 1, "type": "error", "code": "not_found", "message": "No such task."}


@pytest.fixture(autouse=True)
async def _stop_hub():
    yield
    await stop_hub()


def limits(settings, **values):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, **values}


async def progress_seqs(comm):
    """Progress frames' (seq, state) up to a final state."""
    frames = []
    while True:
        msg = await recv(comm, 5)
        assert msg["type"] == "progress", msg
        frames.append((msg["data"]["seq"], msg["data"]["state"]))
        if msg["data"]["state"] in ("success", "failure", "cancelled", "lost"):
            return frames


# -- subscribe: snapshot, then stream ----------------------------------------
async def test_subscribe_sends_snapshot_then_live_updates_in_order():
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    snapshot = await recv(comm)
    assert snapshot == {"v": 1, "type": "progress", "task": name, "data": snapshot["data"]}
    assert (snapshot["data"]["seq"], snapshot["data"]["state"]) == (1, "queued")
    frames = []
    for percent in (10, 20, 30):  # paced like a worker: one update per frame
        await acommit(name, "running", alice.pk, percent=percent)
        frames.append(await recv(comm))
    await acommit(name, "success", alice.pk, percent=100, result={"ok": True})
    frames.append(await recv(comm))
    assert [f["data"]["seq"] for f in frames] == [2, 3, 4, 5]
    assert [f["data"]["percent"] for f in frames] == [10, 20, 30, 100]
    assert frames[-1]["data"]["result"] == {"ok": True}
    # After the final state the subscription ended: it no longer counts, nothing more comes.
    assert get_hub().watchers(name) == 0
    assert await comm.receive_nothing(0.2)
    await comm.disconnect()
    assert not get_hub().running


async def test_update_between_join_and_read_is_sent_once(monkeypatch):
    """The group is joined before the state is read: an update in between is not lost."""
    alice = fake_user()
    name = await new_task(alice.pk)
    original = subscription.read_snapshot

    def read_after_a_final_write(user, task, token):
        commit(task, "success", alice.pk, percent=100)
        return original(user, task, token)

    monkeypatch.setattr(consumers, "read_snapshot", read_after_a_final_write)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    assert await progress_seqs(comm) == [(2, "success")]
    assert await comm.receive_nothing(0.5)  # the live copy of seq 2 was dropped
    await comm.disconnect()


async def test_update_after_read_follows_the_snapshot(monkeypatch):
    alice = fake_user()
    name = await new_task(alice.pk)
    original = subscription.read_snapshot

    def read_then_write(user, task, token):
        loaded = original(user, task, token)
        commit(task, "running", alice.pk, percent=50)
        commit(task, "success", alice.pk, percent=100)
        return loaded

    monkeypatch.setattr(consumers, "read_snapshot", read_then_write)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    frames = await progress_seqs(comm)
    assert frames[0] == (1, "queued")
    assert frames[-1] == (3, "success")
    assert [seq for seq, _ in frames] == sorted({seq for seq, _ in frames})
    await comm.disconnect()


async def test_subscribing_during_a_burst_of_writes_loses_and_reorders_nothing():
    alice = fake_user()
    name = await new_task(alice.pk)
    started = threading.Event()

    def writer():
        for i in range(60):
            commit(name, "running", alice.pk, current=i, total=60)
            if i == 10:
                started.set()
            time.sleep(0.003)
        commit(name, "success", alice.pk, current=60, total=60)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        await asyncio.to_thread(started.wait, 5)
        comm = await connected(user=alice)
        await comm.send_json_to(subscribe(name))
        frames = await progress_seqs(comm)
    finally:
        await asyncio.to_thread(thread.join, 10)
    seqs = [seq for seq, _ in frames]
    assert seqs == sorted(set(seqs)), seqs
    assert frames[-1] == (62, "success")
    await comm.disconnect()


async def test_resubscribe_with_last_seq_gets_the_current_state_at_once():
    alice = fake_user()
    name = await new_task(alice.pk)
    await acommit(name, "running", alice.pk, percent=40)
    # A reconnecting client tells its last seq, which is the current one: it still gets the state.
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name, seq=2))
    assert (await recv(comm))["data"]["seq"] == 2
    # Asking again on the same connection answers again, even with nothing new...
    await comm.send_json_to(subscribe(name, seq=2))
    assert (await recv(comm))["data"]["seq"] == 2
    # ...and the stream goes on once.
    await acommit(name, "running", alice.pk, percent=50)
    assert (await recv(comm))["data"]["seq"] == 3
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_already_final_task_gets_its_final_state():
    alice = fake_user()
    name = await new_task(alice.pk)
    await acommit(name, "failure", alice.pk, error="The CSV file has no header row.")
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    final = await recv(comm)
    assert (final["data"]["state"], final["data"]["error"]) == ("failure", "The CSV file has no header row.")
    assert get_hub().watchers(name) == 0
    await comm.disconnect()


async def test_unsubscribe_stops_updates_and_the_hub_leaves():
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    await recv(comm)
    assert get_hub().watchers(name) == 1
    await comm.send_json_to({"v": 1, "type": "unsubscribe", "task": name})
    await comm.send_json_to({"v": 1, "type": "ping"})
    assert (await recv(comm))["type"] == "pong"
    assert get_hub().watchers(name) == 0
    await acommit(name, "running", alice.pk)
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


# -- who may watch ----------------------------------------------------------
async def test_unknown_and_foreign_tasks_get_the_same_not_found():
    alice, bob = fake_user(), fake_user()
    foreign = await new_task(alice.pk)
    unknown = "ws-does-not-exist"
    comm = await connected(user=bob)
    await comm.send_json_to(subscribe(foreign))
    first = await recv(comm)
    await comm.send_json_to(subscribe(unknown))
    second = await recv(comm)
    assert first == {**NOT_FOUND, "task": foreign}
    assert {**second, "task": foreign} == first
    # A refused subscribe leaves nothing behind: updates of the task are not delivered.
    await acommit(foreign, "running", alice.pk)
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_anonymous_users_see_nothing_without_a_token():
    name = await new_task(fake_user().pk)
    comm = await connected(user=None)
    await comm.send_json_to(subscribe(name))
    assert (await recv(comm))["code"] == "not_found"
    await comm.disconnect()


async def test_staff_can_watch_any_task():
    name = await new_task(fake_user().pk)
    comm = await connected(user=fake_user(staff=True))
    await comm.send_json_to(subscribe(name))
    assert (await recv(comm))["type"] == "progress"
    await comm.disconnect()


def _expired_token(name):
    class Past(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(int(time.time()) - 7200)

    return Past(salt=access.WATCH_SALT).sign(name)


async def test_watch_tokens():
    name = await new_task(fake_user().pk)
    other = await new_task(fake_user().pk)
    manager = AsyncManager.resolve_manager()
    comm = await connected(user=None)
    await comm.send_json_to(subscribe(name, token=manager.make_watch_token(name)))
    assert (await recv(comm))["type"] == "progress"
    for task, token in [(other, manager.make_watch_token(name)), (other, _expired_token(other)), (other, "junk")]:
        await comm.send_json_to(subscribe(task, token=token))
        assert await recv(comm) == {**NOT_FOUND, "task": other}
    await comm.disconnect()
    # The per-task URL takes the token from its query string.
    per_task = await connected(task_path(name, f"token={manager.make_watch_token(name)}&seq=1"))
    assert (await recv(per_task))["data"]["task"] == name
    await per_task.disconnect()
    refused = await connected(task_path(other, f"token={_expired_token(other)}"))
    assert await recv_close(refused) == CLOSE_NOT_FOUND
    await refused.disconnect()


class ExplodingManager(AsyncManager):
    def can_view(self, user, record):
        raise RuntimeError("database password is hunter2-SECRET")


async def test_a_failing_permission_hook_refuses_without_leaking(settings, caplog):
    limits(settings, ASYNC_MANAGER_CLASS_PATH="tests.integration.test_consumer.ExplodingManager")
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    reply = await recv(comm)
    assert reply["code"] == "not_found"
    assert "hunter2" not in json.dumps(reply)
    assert "permission check" in caplog.text
    await comm.disconnect()


# -- per-task URL ------------------------------------------------------------
async def test_per_task_url_closes_1000_after_the_final_state():
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(task_path(name), user=alice)
    assert (await recv(comm))["data"]["state"] == "queued"
    await comm.send_json_to({"v": 1, "type": "ping", "id": 7})
    assert await recv(comm) == {"v": 1, "type": "pong", "id": 7}
    await acommit(name, "running", alice.pk, percent=50)
    assert (await recv(comm))["data"]["state"] == "running"
    await acommit(name, "success", alice.pk, percent=100)
    assert (await recv(comm))["data"]["state"] == "success"
    assert await recv_close(comm) == CLOSE_FINAL
    await comm.disconnect()


async def test_per_task_url_on_a_final_task_sends_it_and_closes():
    alice = fake_user()
    name = await new_task(alice.pk, state="success")
    comm = await connected(task_path(name), user=alice)
    assert (await recv(comm))["data"]["state"] == "success"
    assert await recv_close(comm) == CLOSE_FINAL
    await comm.disconnect()


@pytest.mark.parametrize("kind", ["unknown", "foreign", "invalid name"])
async def test_per_task_url_refuses_with_4404(kind):
    alice = fake_user()
    name = {"unknown": "ws-nope", "foreign": await new_task(fake_user().pk), "invalid name": "-bad%20name"}[kind]
    comm = await connected(task_path(name), user=alice)
    assert await recv_close(comm) == CLOSE_NOT_FOUND
    await comm.disconnect()


async def test_per_task_url_accepts_only_ping():
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(task_path(name), user=alice)
    await recv(comm)
    await comm.send_json_to(subscribe(await new_task(alice.pk)))
    assert (await recv(comm))["code"] == "bad_request"
    await comm.disconnect()


# -- hostile input -----------------------------------------------------------


async def test_hostile_frames_get_bad_request_and_the_connection_lives_on():
    alice = fake_user()
    name = await new_task(alice.pk)
    bystander = await connected(user=alice)
    await bystander.send_json_to(subscribe(name))
    await recv(bystander)
    comm = await connected(user=fake_user())
    for text in HOSTILE:
        await comm.send_input({"type": "websocket.receive", "text": text})
        reply = await recv(comm)
        assert reply["type"] == "error" and reply["code"] == "bad_request", (text, reply)
        assert reply["message"] in BAD_REQUEST_MESSAGES, reply
    for frame in ({"type": "websocket.receive", "bytes": b"\x00\x01"}, {"type": "websocket.receive"}):
        await comm.send_input(frame)
        assert (await recv(comm))["message"] == "Binary frames are not supported."
    await comm.send_json_to({"v": 1, "type": "ping", "id": "still here"})
    assert await recv(comm) == {"v": 1, "type": "pong", "id": "still here"}
    await acommit(name, "running", alice.pk)
    assert (await recv(bystander))["data"]["seq"] == 2
    await comm.disconnect()
    await bystander.disconnect()


@pytest.mark.parametrize(
    "frame",
    [{"text": "x" * 4097}, {"text": "€" * 1400}, {"bytes": b"\x00" * 4097}],
    ids=["ascii", "multibyte", "binary"],
)
async def test_oversized_frames_close_4400(frame):
    comm = await connected(user=fake_user())
    await comm.send_input({"type": "websocket.receive", "text": "{" + "x" * 4095})  # 4096 bytes: allowed
    assert (await recv(comm))["code"] == "bad_request"
    await comm.send_input({"type": "websocket.receive", **frame})
    assert await recv_close(comm) == CLOSE_TOO_LARGE
    await comm.disconnect()


async def test_subscription_limit(settings):
    limits(settings, MAX_SUBSCRIPTIONS=2)
    alice = fake_user()
    names = [await new_task(alice.pk) for _ in range(3)]
    comm = await connected(user=alice)
    for name in names[:2]:
        await comm.send_json_to(subscribe(name))
        await recv(comm)
    await comm.send_json_to(subscribe(names[2]))
    limit = {"v": 1, "type": "error", "code": "limit", "message": "Too many subscriptions on this connection."}
    assert await recv(comm) == {**limit, "task": names[2]}
    await comm.send_json_to({"v": 1, "type": "unsubscribe", "task": names[0]})
    await comm.send_json_to(subscribe(names[2]))
    assert (await recv(comm))["task"] == names[2]
    await comm.disconnect()


async def test_message_flood_closes_4429_without_touching_others(settings):
    limits(settings, MAX_MESSAGES_PER_SECOND=5, MAX_SUBSCRIPTIONS=5)  # bursts of 10
    alice = fake_user()
    name = await new_task(alice.pk)
    bystander = await connected(user=alice)
    await bystander.send_json_to(subscribe(name))
    await recv(bystander)
    comm = await connected(user=fake_user())
    for i in range(30):
        await comm.send_json_to({"v": 1, "type": "ping", "id": i})
    pongs = 0
    while (out := await comm.receive_output(3))["type"] == "websocket.send":
        pongs += 1
    assert (out["type"], out["code"]) == ("websocket.close", CLOSE_RATE_LIMITED)
    assert 10 <= pongs <= 11
    await acommit(name, "running", alice.pk)
    assert (await recv(bystander))["data"]["seq"] == 2
    await comm.disconnect()
    await bystander.disconnect()


async def test_too_many_connections_per_user_close_4429(settings):
    limits(settings, MAX_CONNECTIONS_PER_USER=2)
    alice, bob = fake_user(), fake_user()
    first, second = await connected(user=alice), await connected(user=alice)
    third = await connected(user=alice)
    assert await recv_close(third) == CLOSE_RATE_LIMITED
    await third.disconnect()
    other = await connected(user=bob)  # other users are not affected
    await other.send_json_to({"v": 1, "type": "ping"})
    assert await recv(other) == {"v": 1, "type": "pong"}
    await first.disconnect()
    again = await connected(user=alice)  # a closed connection frees its place
    await again.send_json_to({"v": 1, "type": "ping"})
    assert (await recv(again))["type"] == "pong"
    for comm in (second, other, again):
        await comm.disconnect()
    # Anonymous connections are counted per client address.
    anonymous = [await connected(client="10.0.0.1") for _ in range(2)]
    refused = await connected(client="10.0.0.1")
    assert await recv_close(refused) == CLOSE_RATE_LIMITED
    elsewhere = await connected(client="10.0.0.2")
    for comm in (*anonymous, refused, elsewhere):
        await comm.disconnect()


async def test_ping_pong():
    comm = await connected(user=None)
    for ident, expected in [(None, {"v": 1, "type": "pong"}), ("abc", {"v": 1, "type": "pong", "id": "abc"}),
                            (12, {"v": 1, "type": "pong", "id": 12})]:  # fmt: skip
        await comm.send_json_to({"v": 1, "type": "ping", **({} if ident is None else {"id": ident})})
        assert await recv(comm) == expected
    await comm.disconnect()


# -- failures ----------------------------------------------------------------
async def test_cache_failure_on_subscribe_closes_4503(monkeypatch):
    alice = fake_user()
    name = await new_task(alice.pk)

    class DownStore:
        def read_state(self, task):
            raise RedisConnectionError("Error 111 connecting to 10.1.2.3:6379. Connection refused.")

    monkeypatch.setattr(subscription, "get_store", DownStore)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    assert await recv_close(comm) == CLOSE_UNAVAILABLE
    await comm.disconnect()
    assert get_hub().watchers(name) == 0


async def test_progress_events_skip_the_database_thread_hop(monkeypatch):
    """Channels' dispatch closes old DB connections in a thread per event; progress must not."""
    import channels.db

    calls = []
    original = channels.db.close_old_connections
    monkeypatch.setattr(channels.db, "close_old_connections", lambda: calls.append(1) or original())
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    await recv(comm)
    calls.clear()
    for percent in range(5):
        await acommit(name, "running", alice.pk, percent=percent)
        await recv(comm)
        await comm.send_json_to({"v": 1, "type": "ping"})
        await recv(comm)
    assert calls == []
    await comm.disconnect()


# -- the project's full ASGI stack -------------------------------------------
@pytest.fixture
def alice_session(django_user_model):
    user = django_user_model.objects.create_user("alice-ws", password="x")
    client = Client()
    client.force_login(user)
    return user, client.cookies["sessionid"].value


@pytest.mark.django_db(transaction=True)
async def test_project_asgi_stack_session_user_and_origin(alice_session):
    from tests.project.asgi import application

    user, cookie = alice_session
    name = await new_task(user.pk)
    headers = [(b"host", b"127.0.0.1"), (b"cookie", f"sessionid={cookie}".encode())]
    comm = WebsocketCommunicator(application, MULTI, headers=[*headers, (b"origin", b"http://127.0.0.1")])
    assert (await comm.connect(3))[0]
    await comm.send_json_to(subscribe(name))
    assert (await recv(comm))["data"]["owner"] == user.pk
    await comm.disconnect()
    for origin in ([(b"origin", b"http://evil.example")], []):
        denied = WebsocketCommunicator(application, MULTI, headers=[*headers, *origin])
        assert (await denied.connect(3))[0] is False
        await denied.disconnect()
    assert await sync_to_async(lambda: AsyncManager.resolve_manager().get_progress(name))() is not None


# Channels' own consumer for a refused handshake closes old database connections (a thread left one open
# when an earlier test used the database), so this test may touch the database too.
@pytest.mark.django_db
async def test_exact_origins_refuse_other_ports_and_schemes():
    """The stricter configuration docs/protocol.md recommends: Channels' OriginValidator with exact origins."""
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.security.websocket import OriginValidator

    from realtime_async.routing import websocket_urlpatterns

    application = OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), ["https://example.com"])
    accepted = {}
    for origin in ("https://example.com", "https://example.com:443", "http://example.com", "https://example.com:8443",
                   "https://evil.example.com", "", "null"):  # fmt: skip
        comm = WebsocketCommunicator(
            application, MULTI, headers=[(b"host", b"example.com"), (b"origin", origin.encode())]
        )
        accepted[origin], _ = await comm.connect(5)
        await comm.disconnect()
    assert accepted == {
        "https://example.com": True,
        "https://example.com:443": True,
        "http://example.com": False,
        "https://example.com:8443": False,
        "https://evil.example.com": False,
        "": False,
        "null": False,
    }


@pytest.mark.parametrize("url", ["multi", "per-task"])
async def test_a_bug_closes_1011_and_tells_the_client_nothing(monkeypatch, caplog, url):
    async def broken(self, request):
        raise RuntimeError("database password is hunter2-SECRET")

    monkeypatch.setattr(consumers.ProgressConsumer, "subscribe", broken)
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(task_path(name) if url == "per-task" else MULTI, user=alice)
    if url == "multi":
        await comm.send_json_to(subscribe(name))
    assert await recv_close(comm) == 1011  # not a crash: a close the client retries after
    assert "hunter2" in caplog.text  # in the server log only
    await comm.disconnect()
