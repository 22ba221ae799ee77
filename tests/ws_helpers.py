"""Helpers for the WebSocket tests: communicators, task records written without a worker."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from realtime_async._core.naming import group_for_task, new_task_name
from realtime_async._core.store import WriteMode, get_store
from realtime_async._writing.writer import get_writer
from realtime_async.routing import websocket_urlpatterns

MULTI = "/ws/realtime-async/"
#: Every ``message`` a ``bad_request`` error may carry: fixed texts, never the client's input.
BAD_REQUEST_MESSAGES = frozenset(
    {
        "Malformed JSON.",
        "A message must be a JSON object.",
        "Unsupported or missing protocol version v.",
        "Unknown message type.",
        "Unknown field.",
        "Invalid or missing field: task.",
        "Invalid field: seq.",
        "Invalid field: token.",
        "Invalid field: id.",
        "Binary frames are not supported.",
        "Only ping is accepted on a per-task URL.",
    }
)
_pks = itertools.count(2_000_000)


def fake_user(*, staff: bool = False) -> User:
    """An unsaved user with a fresh pk: ``can_view`` needs only ``pk`` and ``is_staff``."""
    pk = next(_pks)
    return User(pk=pk, username=f"user{pk}", is_staff=staff)


def communicator(path: str = MULTI, user: Any = None, client: str = "127.0.0.1") -> WebsocketCommunicator:
    """A communicator on the package's URL patterns with ``user`` put in the scope (as AuthMiddleware would)."""
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    if user is not None:
        comm.scope["user"] = user
    comm.scope["client"] = (client, 50000)
    return comm


def task_path(name: str, query: str = "") -> str:
    return f"/ws/realtime-async/task/{name}/" + (f"?{query}" if query else "")


def commit(name: str, state: str, owner: Any = None, *, mode: WriteMode = WriteMode.UPDATE, **fields: Any) -> int:
    """Write a record as the core does (stored, then broadcast to the task's group); return its seq (0: not written).

    It returns once the channel layer has the broadcast too: with the pub/sub
    fast path the update may reach a watcher before that, and the sender thread
    must not run on behind the test (hypothesis, for one, refuses a strategy
    during which another thread draws from ``random``, as channels_redis does).
    """
    record = {"task": name, "state": state, "owner": owner, **fields}
    return get_writer().commit(record, mode=mode, wait=True).seq


async def acommit(name: str, state: str, owner: Any = None, **kwargs: Any) -> int:
    return await asyncio.to_thread(commit, name, state, owner, **kwargs)


async def new_task(owner: Any = None, state: str = "queued", **fields: Any) -> str:
    name = new_task_name("ws")
    await acommit(name, state, owner, mode=WriteMode.CREATE, **fields)
    return name


def subscribe(name: str, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "type": "subscribe", "task": name, **extra}


async def connected(path: str = MULTI, user: Any = None, client: str = "127.0.0.1") -> WebsocketCommunicator:
    comm = communicator(path, user, client)
    ok, _ = await comm.connect(timeout=3)
    assert ok
    return comm


async def recv(comm: WebsocketCommunicator, within: float = 3) -> dict[str, Any]:
    return json.loads(await comm.receive_from(within))  # type: ignore[no-any-return]


async def watching(user: Any) -> tuple[str, WebsocketCommunicator, dict[str, Any]]:
    """A new task of ``user``'s and a connection subscribed to it; returns ``(name, comm, snapshot)``."""
    name = await new_task(user.pk)
    comm = await connected(user=user)
    await comm.send_json_to(subscribe(name))
    return name, comm, (await recv(comm))["data"]


async def recv_close(comm: WebsocketCommunicator, within: float = 3) -> int:
    """The close code the server sent next (skipping nothing: a data frame fails the test)."""
    out = await comm.receive_output(within)
    assert out["type"] == "websocket.close", out
    return int(out.get("code", 1000))


async def stop_hub() -> None:
    """Stop this loop's hub and let channels_redis finish its cleanups before the loop closes.

    Otherwise a test that fails half-way leaves a receive in flight whose locks
    belong to a closed loop, and every later test on the same layer fails.
    """
    from realtime_async._delivery import hub as hub_module

    hub = hub_module._hub
    if hub is not None and hub.loop is asyncio.get_running_loop():
        await hub.stop()
    wait_received = getattr(get_channel_layer(), "wait_received", None)
    if wait_received is not None:
        await wait_received()


async def until(predicate: Callable[[], object], within: float = 5.0, what: str = "condition") -> None:
    """Wait until ``predicate`` (a blocking call, run in a thread) is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def pubsub_subscribers(group: str) -> int:
    """How many connections Redis counts on ``group``'s pub/sub channel: the layer's (direct) or the hubs' own."""
    from realtime_async._core.publishing import direct_layer

    store, direct = get_store(), direct_layer()
    channel = direct.channel(group) if direct is not None else store.broadcast_channel(group)
    return int(dict(store.client.pubsub_numsub(channel))[channel.encode()])


async def group_members(group: str) -> int:
    """How many servers' hubs are in ``group``: the layer's members, or (direct) the subscribers of its channel."""
    from realtime_async._core.publishing import direct_layer

    if direct_layer() is not None:
        return await asyncio.to_thread(pubsub_subscribers, group)
    layer = get_channel_layer()
    return int(await layer.connection(layer.consistent_hash(group)).zcard(layer._group_key(group)))


async def group_send(name: str, message: dict[str, Any]) -> None:
    await get_channel_layer().group_send(group_for_task(name), message)
