"""``protocol.schema.json`` against real traffic, the parser and ``docs/protocol.md``."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import re
import typing

import pytest
from jsonschema import Draft202012Validator

from realtime_async import protocol
from realtime_async.async_manager import AsyncManager
from realtime_async.broadcast import broadcast, wait_sent
from realtime_async.protocol import BadRequest, parse_client_message
from tests.services import ROOT
from tests.test_consumer import HOSTILE
from tests.ws_helpers import acommit, connected, fake_user, new_task, recv, stop_hub, subscribe, task_path

SCHEMA = json.loads(importlib.resources.files("realtime_async").joinpath("protocol.schema.json").read_text())


def validator(definition: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]})


CLIENT, SERVER = validator("clientMessage"), validator("serverMessage")


@pytest.fixture(autouse=True)
async def _stop_hub():
    yield
    await stop_hub()


def test_the_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


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


RECORD = {
    "seq": 1, "task": "t-1", "state": "queued", "message": None, "current": None, "total": None, "percent": None,
    "rate": None, "eta": None, "owner": 1, "created_at": 1.0, "started_at": None, "updated_at": 1.0,
    "finished_at": None, "result": None, "error": None, "data": None,
}  # fmt: skip
PROGRESS = {"v": 1, "type": "progress", "task": "t-1", "data": RECORD}


@pytest.mark.parametrize(
    "message",
    [
        {**PROGRESS, "v": 2},
        {**PROGRESS, "type": "update"},
        {k: v for k, v in PROGRESS.items() if k != "data"},
        {**PROGRESS, "extra": 1},
        {**PROGRESS, "data": {**RECORD, "state": "paused"}},
        {**PROGRESS, "data": {**RECORD, "seq": 0}},
        {**PROGRESS, "data": {**RECORD, "percent": 101}},
        {**PROGRESS, "data": {**RECORD, "message": "x" * 1001}},
        {**PROGRESS, "data": {k: v for k, v in RECORD.items() if k != "eta"}},
        {**PROGRESS, "data": {**RECORD, "surprise": True}},
        {**PROGRESS, "task": "bad name"},
        {"v": 1, "type": "error", "code": "oops", "message": "x"},
        {"v": 1, "type": "error", "code": "not_found"},
        {"v": 1, "type": "error", "code": "not_found", "message": "x", "traceback": "..."},
        {"v": 1, "type": "pong", "id": None},
        {"v": 1, "type": "pong", "id": 1.5},
    ],
)
def test_invalid_server_messages_are_rejected(message):
    assert not SERVER.is_valid(message)
    SERVER.validate(PROGRESS)  # the baseline they were derived from is valid


VALID_CLIENT = [
    {"v": 1, "type": "subscribe", "task": "rebuild-42"},
    {"v": 1, "type": "subscribe", "task": "rebuild-42", "seq": 17, "token": "abc:def"},
    {"v": 1, "type": "subscribe", "task": "a", "seq": 0, "token": None},
    {"v": 1, "type": "subscribe", "task": "a", "seq": None},
    {"v": 1, "type": "subscribe", "task": "a", "seq": 2**53 - 1},
    {"v": 1, "type": "subscribe", "task": "A.b_c:d@e+f-" + "x" * 116},
    {"v": 1, "type": "unsubscribe", "task": "rebuild-42"},
    {"v": 1, "type": "ping"},
    {"v": 1, "type": "ping", "id": "x" * 128},
    {"v": 1, "type": "ping", "id": 5},
    {"v": 1, "type": "ping", "id": None},
    {"v": 1.0, "type": "ping", "id": 5.0},
    {"v": 1, "type": "subscribe_feed"},
    {"v": 1, "type": "unsubscribe_feed"},
    {"v": 1, "type": "cancel", "task": "rebuild-42"},
]
INVALID_CLIENT = [
    {"v": 1, "type": "subscribe", "task": "x" * 129},
    {"v": 1, "type": "subscribe", "task": "abc\n"},
    {"v": 1, "type": "subscribe", "task": "a", "seq": 2**53},
    {"v": 1, "type": "subscribe", "task": "a", "token": "t" * 513},
    {"v": 1, "type": "unsubscribe", "task": "a", "seq": 1},
    {"v": 1, "type": "ping", "id": True},
    {"v": False, "type": "ping"},
    {"v": 1, "type": "subscribe", "task": "a", "seq": True},
    {"v": 1, "type": "subscribe_feed", "task": "a"},
    {"v": 1, "type": "unsubscribe_feed", "id": 1},
    {"v": 2, "type": "subscribe_feed"},
    {"v": 1, "type": "cancel"},
    {"v": 1, "type": "cancel", "task": "bad name"},
    {"v": 1, "type": "cancel", "task": "a", "token": "t"},
]


@pytest.mark.parametrize("message", VALID_CLIENT, ids=range(len(VALID_CLIENT)))
def test_valid_client_messages_are_accepted_by_schema_and_parser(message):
    CLIENT.validate(message)
    parse_client_message(json.dumps(message))


@pytest.mark.parametrize(
    "text", [*map(json.dumps, INVALID_CLIENT), *HOSTILE], ids=range(len(INVALID_CLIENT) + len(HOSTILE))
)
def test_invalid_client_messages_are_rejected_by_schema_and_parser(text):
    with pytest.raises(BadRequest):
        parse_client_message(text)
    try:
        content = json.loads(text)
    except (ValueError, RecursionError):
        return  # not JSON at all
    assert not CLIENT.is_valid(content)


def test_the_docs_list_the_codes_the_code_uses():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    error_table = doc[doc.index("Error codes:") : doc.index("## Ordering")]
    documented_errors = set(re.findall(r"^\| `(\w+)` \|", error_table, re.M))
    assert (
        documented_errors
        == set(typing.get_args(protocol.ErrorCode))
        == set(SCHEMA["$defs"]["error"]["properties"]["code"]["enum"])
    )
    documented_closes = {int(code) for code in re.findall(r"^\| (\d{4}) \|", doc, re.M)}
    constants = {value for key, value in vars(protocol).items() if key.startswith("CLOSE_")}
    assert constants == documented_closes
    client_types = {ref["$ref"].rsplit("/", 1)[1] for ref in SCHEMA["$defs"]["clientMessage"]["oneOf"]}
    assert client_types == {SCHEMA["$defs"][name]["properties"]["type"]["const"] for name in client_types}
    assert client_types == set(typing.get_args(protocol.ClientMessageType)) == set(protocol._ALLOWED_FIELDS)
    # Every client message type is shown in the docs as a JSON example.
    client_docs = doc[doc.index("## Client messages") : doc.index("## Server messages")]
    client_docs += doc[doc.index("## The feed and cancellation") : doc.index("## Ordering")]
    documented_client_types = set(re.findall(r'^\{"v": 1, "type": "(\w+)"', client_docs, re.M))
    assert documented_client_types == client_types
    server_types = {
        d["properties"]["type"]["const"] for d in (SCHEMA["$defs"][k] for k in ("progress", "error", "pong"))
    }
    assert server_types == set(typing.get_args(protocol.ServerMessageType))
