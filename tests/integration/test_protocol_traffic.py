"""Real traffic of a connection, in-process against real Redis, against ``protocol.schema.json``."""

from __future__ import annotations

import asyncio
import importlib.resources
import json

import pytest
from jsonschema import Draft202012Validator

from realtime_async._writing.sender import broadcast, wait_sent
from realtime_async.async_manager import AsyncManager
from tests.ws_helpers import acommit, connected, fake_user, new_task, recv, subscribe, task_path

SCHEMA = json.loads(importlib.resources.files("realtime_async").joinpath("protocol.schema.json").read_text())
#: Every frame the server sends (``unit/test_protocol.py`` checks the schema itself).
SERVER = Draft202012Validator({"$ref": "#/$defs/serverMessage", "$defs": SCHEMA["$defs"]})


pytestmark = pytest.mark.usefixtures("hub_cleanup")


async def test_real_server_traffic_matches_the_schema():
    alice = fake_user()
    name = await new_task(alice.pk, created_at=1764382000.5)
    manager = AsyncManager.resolve_manager()
    frames = []
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    frames.append(await recv(comm))
    updates = [
        {"state": "running", "message": "Step 1/4", "current": 1, "total": 4, "percent": 25.0, "rate": 0.8,
         "eta": 3.8, "started_at": 1764382001.0, "updated_at": 1764382002.0, "data": {"rows": [1, 2]}},
        {"state": "running", "message": None, "percent": None},
        {"state": "success", "percent": 100.0, "result": {"steps": 4, "nested": [None, True]},
         "finished_at": 1764382009.0},
    ]  # fmt: skip
    for fields in updates:
        await acommit(name, owner=alice.pk, **fields)
        frames.append(await recv(comm))
    failed = await new_task(alice.pk, state="failure", error="The CSV file has no header row.")
    pings = [{"v": 1, "type": "ping", "id": "a"}, {"v": 1, "type": "ping", "id": 3}, {"v": 1, "type": "ping"}]
    for message in (subscribe(failed), subscribe("ws-unknown"), *pings, {"v": 1, "type": "launch"}):
        await comm.send_json_to(message)
        frames.append(await recv(comm))
    await comm.send_input({"type": "websocket.receive", "bytes": b"\x00"})
    frames.append(await recv(comm))
    await comm.disconnect()
    token_comm = await connected(task_path(name, f"token={manager.make_watch_token(name)}"))
    frames.append(await recv(token_comm))
    await token_comm.disconnect()

    kinds = {(frame["type"], frame.get("code"), frame.get("data", {}).get("state")) for frame in frames}
    assert {("progress", None, "queued"), ("progress", None, "failure"), ("error", "not_found", None),
            ("error", "bad_request", None), ("pong", None, None)} <= kinds  # fmt: skip
    for frame in frames:
        errors = [error.message for error in SERVER.iter_errors(frame)]
        assert not errors, (frame, errors)


async def test_feed_and_cancel_traffic_matches_the_schema(settings):
    alice = fake_user()
    name = await new_task(alice.pk)
    # Broadcasts leave in order: once this empty one has, the task's has too, before the feed starts.
    await asyncio.to_thread(wait_sent, broadcast((), {}))
    frames = []
    comm = await connected(user=alice)
    await comm.send_json_to({"v": 1, "type": "subscribe_feed"})
    await comm.send_json_to({"v": 1, "type": "cancel", "task": name})
    frames.append(await recv(comm))  # the feed's cancelled state
    await comm.send_json_to({"v": 1, "type": "cancel", "task": "ws-unknown"})
    frames.append(await recv(comm))
    await comm.disconnect()
    anonymous = await connected(user=None)
    await anonymous.send_json_to({"v": 1, "type": "subscribe_feed"})
    frames.append(await recv(anonymous))
    await anonymous.disconnect()
    settings.REALTIME_ASYNC = {
        **settings.REALTIME_ASYNC,
        "ASYNC_MANAGER_CLASS_PATH": "tests.testapp.managers.NoCancelManager",
    }
    refused = await connected(user=alice)
    await refused.send_json_to({"v": 1, "type": "cancel", "task": await new_task(alice.pk)})
    frames.append(await recv(refused))
    await refused.disconnect()

    kinds = [(frame["type"], frame.get("code"), frame.get("data", {}).get("state")) for frame in frames]
    assert kinds == [("progress", None, "cancelled"), ("error", "not_found", None), ("error", "not_found", None),
                     ("error", "forbidden", None)]  # fmt: skip
    for frame in frames:
        errors = [error.message for error in SERVER.iter_errors(frame)]
        assert not errors, (frame, errors)


async def test_limit_error_matches_the_schema(settings):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "MAX_SUBSCRIPTIONS": 1}
    alice = fake_user()
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(await new_task(alice.pk)))
    await recv(comm)
    await comm.send_json_to(subscribe(await new_task(alice.pk)))
    frame = await recv(comm)
    assert frame["code"] == "limit"
    SERVER.validate(frame)
    await comm.disconnect()
