"""The wire protocol: ``protocol.schema.json`` against the parser and ``docs/protocol.md``.

``integration/test_protocol_traffic.py`` checks the frames a real connection gets against the same schema.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import typing

import pytest
from jsonschema import Draft202012Validator

from realtime_async import protocol
from realtime_async.protocol import BadRequest, Ping, parse_client_message
from tests.hostile import HOSTILE
from tests.services import ROOT

SCHEMA = json.loads(importlib.resources.files("realtime_async").joinpath("protocol.schema.json").read_text())


def validator(definition: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]})


CLIENT, SERVER = validator("clientMessage"), validator("serverMessage")


def test_the_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


RECORD = {
    "seq": 1, "task": "t-1", "title": "Test", "state": "queued", "message": None, "current": None, "total": None,
    "percent": None, "stage": None, "stages": None, "rate": None, "eta": None, "owner": 1, "created_at": 1.0,
    "started_at": None, "updated_at": 1.0, "finished_at": None, "result": None, "error": None, "data": None,
}  # fmt: skip
PROGRESS = {"v": 1, "type": "progress", "task": "t-1", "data": RECORD}
LOAD = {"name": "Load", "state": "active", "weight": 1.0, "percent": 40.0}
STAGED = {**PROGRESS, "data": {**RECORD, "stage": "Load", "stages": [LOAD]}}


def test_a_record_with_stages_is_valid():
    SERVER.validate(STAGED)


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
        {**PROGRESS, "data": {**RECORD, "stages": []}},
        {**PROGRESS, "data": {**RECORD, "stages": [{**LOAD, "state": "paused"}]}},
        {**PROGRESS, "data": {**RECORD, "stages": [{**LOAD, "weight": 0}]}},
        {**PROGRESS, "data": {**RECORD, "stages": [{k: v for k, v in LOAD.items() if k != "percent"}]}},
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
    {"v": 1, "type": "subscribe", "task": "a", "log_after": 0},
    {"v": 1, "type": "subscribe", "task": "a", "seq": 3, "log_after": 2**53 - 1},
    {"v": 1, "type": "subscribe", "task": "a", "log_after": None},
    {"v": 1, "type": "log", "task": "rebuild-42", "after": 0},
    {"v": 1, "type": "log", "task": "rebuild-42", "after": 31.0},
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
    {"v": 1, "type": "subscribe", "task": "a", "log_after": -1},
    {"v": 1, "type": "subscribe", "task": "a", "log_after": "3"},
    {"v": 1, "type": "subscribe", "task": "a", "log_after": 2**53},
    {"v": 1, "type": "log", "task": "a"},
    {"v": 1, "type": "log", "task": "a", "after": None},
    {"v": 1, "type": "log", "task": "a", "after": 1.5},
    {"v": 1, "type": "log", "task": "a", "after": 1, "seq": 1},
    {"v": 1, "type": "log", "after": 1},
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
    server_kinds = ("progress", "logLines", "error", "pong")
    server_types = {SCHEMA["$defs"][kind]["properties"]["type"]["const"] for kind in server_kinds}
    assert server_types == set(typing.get_args(protocol.ServerMessageType))


def test_nesting_is_bounded_whatever_the_stack():
    """A message nested deeper than 32 is malformed, however much stack the server has left."""
    for text in ("[" * 33 + "]" * 33, '{"a":' * 33 + "1" + "}" * 33, '{"v": 1, "type": "ping", "id": ' + "[" * 40):
        with pytest.raises(BadRequest) as refused:
            parse_client_message(text)
        assert refused.value.message == "Malformed JSON."
    with pytest.raises(BadRequest) as refused:
        parse_client_message("[" * 32 + "]" * 32)
    assert refused.value.message == "A message must be a JSON object."
    # Brackets inside strings are text, not nesting.
    assert parse_client_message(json.dumps({"v": 1, "type": "ping", "id": '"[\\' + "[{" * 60})) == Ping(
        '"[\\' + "[{" * 60
    )


@pytest.mark.parametrize(
    ("text", "number"),
    [("0", 0), ("17", 17), (str(2**53 - 1), 2**53 - 1), (str(2**53), None), ("-1", None), ("1.5", None),
     ("", None), ("١٢", None), ("9" * 5000, None), (" 1", None)],
)  # fmt: skip
def test_a_counter_given_as_text_is_a_plain_number_within_the_protocol_bound(text, number):
    assert protocol.counter_text(text) == number
