"""The check-and-set connection packs its commands itself: byte for byte what redis-py would send."""

from __future__ import annotations

import pytest
import redis

from realtime_async._core.store import watched

RECORD = '{"seq":5,"task":"import-1","message":"Ligne 7 : café ☕, \\"quoted\\"","data":{"t":1.5}}'


def _update(record: str = RECORD) -> list[tuple[object, ...]]:
    key = "ra:test:task:import-1"
    return [
        ("MULTI",),
        ("HSET", key, "rec", record, "seq", 5, "state", "running"),
        ("PEXPIRE", key, 86_400_000),
        ("PUBLISH", "ra:test:chan", b"\x86\xa4type\x00" + b"\xff" * 40),
        ("EXISTS", "ra:test:cancel:import-1"),
        ("EXEC",),
        ("WATCH", key),
        ("HMGET", key, "state", "seq", "logn", "logd"),
        ("PUBLISH", "ra:test:empty", b""),
        ("EVALSHA", "0" * 40, 1, key, -3, 0),
    ]


def _sent(packed: object) -> bytes:
    return b"".join(bytes(part) for part in packed)  # type: ignore[attr-defined]


@pytest.mark.parametrize("record", [RECORD, "x" * 70_000], ids=["record", "large"])
def test_plain_commands_are_packed_as_redis_py_packs_them(record):
    connection = redis.Connection()
    commands = _update(record)
    assert _sent(watched._packed(connection, commands)) == _sent(connection.pack_commands(commands))


@pytest.mark.parametrize("odd", [1.25, memoryview(b"view"), bytearray(b"array")])
def test_other_arguments_are_left_to_redis_py(odd):
    connection = redis.Connection()
    commands = [*_update(), ("HSET", "ra:test:k", "f", odd)]
    assert _sent(watched._packed(connection, commands)) == _sent(connection.pack_commands(commands))


def test_a_bool_is_refused_as_redis_py_refuses_it():
    connection = redis.Connection()
    with pytest.raises(redis.DataError):
        watched._packed(connection, [("SET", "ra:test:k", True)])


def test_a_connection_with_another_encoding_is_left_to_redis_py():
    connection = redis.Connection(encoding="latin-1")
    commands = [("SET", "ra:test:k", "café")]
    assert _sent(watched._packed(connection, commands)) == _sent(connection.pack_commands(commands))
    assert b"caf\xe9" in _sent(watched._packed(connection, commands))
