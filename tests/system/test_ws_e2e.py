"""End to end: a real daphne or uvicorn, a real Celery worker, real Redis and a ``websockets`` client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.utils.module_loading import import_string
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime_async._core.naming import PROGRESS_TYPE, group_for_task, new_task_name
from realtime_async._core.records import encode_record_body
from realtime_async._core.store import RedisStore, WriteMode, get_store
from realtime_async.async_manager import AsyncManager
from realtime_async.protocol import CLOSE_FINAL, CLOSE_NOT_FOUND, CLOSE_UNAVAILABLE
from tests.browser_helpers import session_key
from tests.services import private_redis, start_server
from tests.ws_helpers import acommit, new_task, pubsub_subscribers, subscribe, until

pytestmark = pytest.mark.django_db(transaction=True)

FINAL = ("success", "failure", "cancelled", "lost")


@pytest.fixture(scope="module")
def served(server, django_db_setup, django_db_blocker):
    """The module's server, ``(proc, port)``: daphne, then uvicorn (``server``)."""
    proc, port = start_server(server, name=f"{server}-e2e")
    yield proc, port
    proc.stop()


@pytest.fixture(scope="module")
def daphne_port(served):
    return served[1]


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice-e2e", password="x")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob-e2e", password="x")


@pytest.fixture
def alice_cookie(alice):
    return session_key(alice)


@pytest.fixture
def bob_cookie(bob):
    return session_key(bob)


def ws(port: int, path: str, cookie: str | None = None, origin: str | None = "same") -> connect:
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        origin=f"http://127.0.0.1:{port}" if origin == "same" else origin,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"sessionid={cookie}"} if cookie else None,
        open_timeout=5, close_timeout=2, proxy=None, compression=None,
    )  # fmt: skip


def task_url(name: str, query: str = "") -> str:
    return f"/ws/realtime-async/task/{name}/" + (f"?{query}" if query else "")


async def recv(conn: ClientConnection, within: float = 5) -> dict:
    return json.loads(await asyncio.wait_for(conn.recv(), within))


async def close_code(conn: ClientConnection, within: float = 15) -> int | None:
    """Read until the server closes; return its close code."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(within):
            while True:
                await conn.recv()
    return conn.close_code


async def progress_until_final(
    conn: ClientConnection, within: float = 20, frames: list[dict] | None = None
) -> list[dict]:
    """The progress frames up to the final state, after ``frames`` (those read already)."""
    frames = list(frames or [])
    assert all(frame["type"] == "progress" for frame in frames), frames
    async with asyncio.timeout(within):
        while not frames or frames[-1]["data"]["state"] not in FINAL:
            frame = await recv(conn, within)
            assert frame["type"] == "progress", frame
            frames.append(frame)
    return frames


async def wait_state(name: str, predicate, within: float = 20) -> dict:
    manager = AsyncManager.resolve_manager()
    async with asyncio.timeout(within):
        while True:
            record = await asyncio.to_thread(manager.get_progress, name)
            if record and predicate(record):
                return record
            await asyncio.sleep(0.05)


def http_get(port: int, path: str, cookie: str | None) -> tuple[int, bytes]:
    headers = {"Accept": "application/json", **({"Cookie": f"sessionid={cookie}"} if cookie else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


# ----------------------------------------------------------------------------
async def test_mid_task_subscriber_gets_snapshot_then_every_update(
    daphne_port, celery_worker_proc, alice, alice_cookie, gate
):
    manager = AsyncManager.resolve_manager()
    # It waits after its sixth step until both subscribers have their snapshot, however slow they are to come.
    kwargs = {"delay": 0.1, "hold": [6, str(gate)]}
    name = await asyncio.to_thread(
        manager.launch_async_task, "tests.testapp.workers.steps", 20, user=alice, task_kwargs=kwargs
    )
    await wait_state(name, lambda r: r["state"] == "running" and r["seq"] >= 4)
    async with ws(daphne_port, "/ws/realtime-async/", alice_cookie) as multi, \
               ws(daphne_port, task_url(name), alice_cookie) as per_task:  # fmt: skip
        await multi.send(json.dumps(subscribe(name)))
        snapshots = [await recv(multi, 20), await recv(per_task, 20)]
        gate.open()
        frames, task_frames = await asyncio.gather(
            progress_until_final(multi, frames=snapshots[:1]), progress_until_final(per_task, frames=snapshots[1:])
        )
        assert await close_code(per_task) == CLOSE_FINAL
        await multi.send(json.dumps({"v": 1, "type": "ping", "id": "after"}))
        assert await recv(multi) == {"v": 1, "type": "pong", "id": "after"}
    for received in (frames, task_frames):
        seqs = [frame["data"]["seq"] for frame in received]
        assert seqs[0] >= 4 and received[0]["data"]["state"] == "running", "the snapshot is the state mid-task"
        assert seqs == sorted(set(seqs)), seqs
        # Every update, in order. At most one may be missing: the core's sender can put the last
        # progress write and the final state on the layer in either order (see the report).
        assert len(set(range(seqs[0], seqs[-1] + 1)) - set(seqs)) <= 1, seqs
        final = received[-1]["data"]
        assert (final["state"], final["result"]["steps"], final["percent"]) == ("success", 20, 100.0)
        assert final == (await asyncio.to_thread(manager.get_progress, name))


async def test_another_user_is_refused_on_websocket_and_polling(daphne_port, alice, alice_cookie, bob_cookie):
    name = await new_task(alice.pk, state="running")
    async with ws(daphne_port, "/ws/realtime-async/", bob_cookie) as conn:
        await conn.send(json.dumps(subscribe(name)))
        refused = await recv(conn)
        await conn.send(json.dumps(subscribe("e2e-no-such-task")))
        unknown = await recv(conn)
    assert refused == {"v": 1, "type": "error", "code": "not_found", "task": name, "message": "No such task."}
    assert {**unknown, "task": name} == refused
    async with ws(daphne_port, task_url(name), bob_cookie) as conn:
        assert await close_code(conn) == CLOSE_NOT_FOUND
    polled = f"/realtime-async/progress/{name}/"
    assert (await asyncio.to_thread(http_get, daphne_port, polled, bob_cookie))[0] == 404
    assert (await asyncio.to_thread(http_get, daphne_port, polled, None))[0] == 404
    status, body = await asyncio.to_thread(http_get, daphne_port, polled, alice_cookie)
    assert status == 200 and json.loads(body)["task"] == name
    # The owner, for contrast, is let in on both URLs.
    async with ws(daphne_port, task_url(name), alice_cookie) as conn:
        assert (await recv(conn))["data"]["task"] == name


async def test_handshake_origin_is_checked(daphne_port, alice_cookie):
    # AllowedHostsOriginValidator refuses a foreign Origin and also a missing one
    # (None passes only when ALLOWED_HOSTS contains "*"): both get HTTP 403.
    for origin in ("http://evil.example", f"http://127.0.0.1.evil.example:{daphne_port}", None):
        with pytest.raises(InvalidStatus) as refused:
            async with ws(daphne_port, "/ws/realtime-async/", alice_cookie, origin=origin):
                pass
        assert refused.value.response.status_code == 403, origin
    async with ws(daphne_port, "/ws/realtime-async/", alice_cookie) as conn:
        await conn.send(json.dumps({"v": 1, "type": "ping"}))
        assert await recv(conn) == {"v": 1, "type": "pong"}


@pytest.mark.slow
async def test_idle_watchers_stay_connected_and_get_the_next_update(daphne_port, alice, alice_cookie):
    """channels_redis blocks 5 s per BZPOPMIN; a 5 s socket timeout would kill idle sockets with 1011."""
    name = await new_task(alice.pk, state="running")
    async with ws(daphne_port, "/ws/realtime-async/", alice_cookie) as first, \
               ws(daphne_port, "/ws/realtime-async/", alice_cookie) as second, \
               ws(daphne_port, task_url(name), alice_cookie) as per_task:  # fmt: skip
        for conn in (first, second):
            await conn.send(json.dumps(subscribe(name)))
        for conn in (first, second, per_task):
            assert (await recv(conn))["data"]["seq"] == 1
        await asyncio.sleep(16)
        seq = await acommit(name, "running", alice.pk, percent=50)
        for conn in (first, second, per_task):
            assert (await recv(conn))["data"]["seq"] == seq
        await first.send(json.dumps({"v": 1, "type": "ping"}))
        assert (await recv(first))["type"] == "pong"


async def test_channel_layer_failure_closes_4503_then_service_resumes(server, alice):
    manager = AsyncManager.resolve_manager()
    layer_prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]

    async def publish(url: str, name: str, state: str, mode: WriteMode) -> None:
        """Write and broadcast a record as the core would, on the private Redis."""
        client = redis.Redis.from_url(url)
        # The configured layer's class (either kind), on the private Redis.
        layer_class = import_string(settings.CHANNEL_LAYERS["default"]["BACKEND"])
        layer = layer_class(hosts=[{"address": url, "socket_timeout": None}], prefix=layer_prefix)
        try:
            store = RedisStore(client, cache.make_key("realtime_async"))
            body = encode_record_body({"task": name, "state": state, "updated_at": time.time()})
            written = store.write_state(name, state, body, ttl=60, mode=mode)
            assert written.written
            message = {
                "type": PROGRESS_TYPE, "task": name, "seq": written.seq, "state": state, "record": written.record_json,
            }  # fmt: skip
            await layer.group_send(group_for_task(name), message)
        finally:
            await (getattr(layer, "close_pools", None) or layer.flush)()
            client.close()

    name = new_task_name("e2e")
    token = manager.make_watch_token(name)
    with private_redis() as (url, redis_proc, redis_port):
        daphne, port = start_server(server, env={"RA_TEST_REDIS_URL": url}, name=f"{server}-private-redis")
        try:
            await publish(url, name, "running", WriteMode.CREATE)
            async with ws(port, "/ws/realtime-async/") as multi, ws(port, task_url(name, f"token={token}")) as single:
                await multi.send(json.dumps(subscribe(name, token=token)))
                assert (await recv(multi))["data"]["state"] == (await recv(single))["data"]["state"] == "running"
                redis_proc.stop()
                assert await asyncio.gather(close_code(multi), close_code(single)) == [CLOSE_UNAVAILABLE] * 2
            with private_redis(port=redis_port):  # Redis is back, empty
                await publish(url, name, "running", WriteMode.CREATE)
                async with ws(port, task_url(name, f"token={token}&seq=1")) as single:
                    assert (await recv(single))["data"]["seq"] == 1
                    await publish(url, name, "success", WriteMode.UPDATE)
                    assert (await recv(single))["data"]["state"] == "success"
                    assert await close_code(single) == CLOSE_FINAL
            assert "Traceback" not in daphne.output()
        finally:
            daphne.stop()


async def test_the_servers_hub_follows_its_tasks_over_pubsub(served, daphne_port, alice, alice_cookie):
    # The server's hub subscribes to the channel the write script publishes to (either layer: see pubsub_subscribers).
    from realtime_async._delivery.pubsub import CLIENT_NAME_PREFIX

    name = await new_task(alice.pk, state="running")
    store = get_store()
    group = group_for_task(name)
    async with ws(daphne_port, task_url(name), alice_cookie) as conn:
        assert (await recv(conn))["data"]["state"] == "running"
        await until(lambda: pubsub_subscribers(group) == 1, 10, what="the server's hub to subscribe")
        # This server's hub only: other test sessions' servers may share this Redis (CI runs its passes side by side).
        hub_name = f"{CLIENT_NAME_PREFIX}{served[0].popen.pid}"
        clients = await asyncio.to_thread(store.client.client_list, _type="pubsub")
        hubs = [client for client in clients if client.get("name") == hub_name]
        assert hubs and all(int(client["sub"]) >= 2 for client in hubs)  # its control channel and the task's
        seq = await acommit(name, "success", alice.pk)
        frame = await recv(conn)
        assert (frame["data"]["seq"], frame["data"]["state"]) == (seq, "success")
    await until(lambda: pubsub_subscribers(group) == 0, 10, what="the server's hub to unsubscribe")
