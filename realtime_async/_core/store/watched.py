"""Plain updates without a script: Redis' check-and-set (``WATCH``, ``MULTI``/``EXEC``) on a connection of their own.

``update.lua`` only checks the writer's guess of the stored record (its seq and log counts, and
that the task is not final) and writes what the writer made. Most of its cost is Lua's own: every
``redis.call`` from a script costs several times the command (``docs/benchmarks.md``). A
transaction of the same commands costs a few microseconds, but cannot check anything. ``WATCH``
lets it: the connection watches the task's hash, and ``EXEC`` does nothing if anyone (another
process, a ``FLUSHALL``, the key's expiry, this thread's own scripts) touched it since.

So each process that writes keeps one connection (``CheckAndSet``, per Redis server) that watches
the hash of the task it last wrote through it, and each round trip ends by watching it again and
reading what was stored (``WATCH`` then ``HMGET``: whatever the read says stays true until
``EXEC`` proves otherwise). When that read matches the writer's guess, the next update is::

    MULTI, HSET rec/state/seq, [PEXPIRE], PUBLISH…, EXISTS cancel, EXEC, WATCH, HMGET

in one round trip. Otherwise (first write of a task, another task in between, a guess that does
not match, an ``EXEC`` that found the hash touched twice in a row) it is ``update.lua``, and the
same ``WATCH``/``HMGET`` in the same round trip. A guess the read shows wrong goes to
``write.lua`` at once, through the pool like every other script.
Any error on this connection (a lost server, a script the server does not have, a proxy that
refuses ``WATCH``) makes the caller call the script the usual way, which raises or recovers as
it always did (a script that ran before the connection broke runs again, as with redis-py's own
retry); a server that refuses ``WATCH`` is not asked again. So does a thread that finds the
connection in use by another thread of the process: writes never wait for each other here, and
the other thread's write is one more that ``EXEC`` notices.

Cost: one more connection per writing process and Redis server, outside the connection pool (and
its ``max_connections``), held until the store is replaced (``close``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from redis.exceptions import RedisError, ResponseError

from realtime_async._core.records import FINAL_STATES

_pack_command: Any
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - a dependency (redis[hiredis]); without it, redis-py packs
    _pack_command = None

__all__ = ["WRONG_GUESS", "CheckAndSet"]

#: What a guess is made of, read after each ``WATCH``: the task's state, seq, and the log's counts.
_FIELDS = ("state", "seq", "logn", "logd")
_FINAL = frozenset(state.encode() for state in FINAL_STATES)
#: The seq ``update.lua`` answers when the writer's guess was wrong; ``update`` answers the same
#: (``[WRONG_GUESS, b"", 0]``) when what the connection read shows it wrong.
WRONG_GUESS = -3
#: How many transactions one update tries: a second only when the first found the hash touched
#: while it still held the writer's guess (a heartbeat's ``PEXPIRE``, say).
_TRIES = 2

Guess = tuple[str, int, str, str]
Command = tuple[Any, ...]
#: The argument types hiredis packs as redis-py would (a float, a bool, a memoryview: redis-py packs).
_PLAIN = frozenset((bytes, str, int))
_UTF8 = frozenset(("utf-8", "utf8"))


def _failed(reply: Any) -> bool:
    """Whether ``reply`` is an error, or a transaction's replies with one in them."""
    return isinstance(reply, ResponseError) or (isinstance(reply, list) and any(map(_failed, reply)))


def _watch(key: str) -> list[Command]:
    """What ends a round trip: watch ``key`` afresh and read what the next guess is checked against."""
    return [("UNWATCH",), ("WATCH", key), ("HMGET", key, *_FIELDS)]


def _text(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


class _Line:
    """This process' connection and what it watches: (key, seq, log count, log dropped), or None."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.watching: Guess | None = None


class CheckAndSet:
    """One Redis server's plain updates by ``WATCH``/``MULTI``/``EXEC``; ``update.lua`` when it cannot."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._line: _Line | None = None
        #: False once the server (or a proxy before it) refused ``WATCH``: scripts only from then on.
        self.usable = True

    def forget(self) -> None:
        """This process wrote around the connection (another script): what it watches is no guess any more."""
        if self._line is not None:
            self._line.watching = None

    def close(self) -> None:
        """Close the connection, and use none from now on (a store being replaced; a thread may still hold it)."""
        self.usable = False
        line, self._line = self._line, None
        if line is not None and line.pid == os.getpid():
            line.connection.disconnect()

    def __del__(self) -> None:
        # A store made and dropped without close(): its socket closed now, not left to the garbage
        # collector, which may finalize it before the connection that would close it.
        self.close()

    def update(self, key: str, cancel_key: str, guess: Guess, changes: list[Command], script: Command) -> Any:
        """Write ``changes`` if ``guess`` (key, seq, log counts) holds, else run ``script`` (``update.lua``).

        Returns True or False (written; whether a cancel is asked for), the script's reply, or None
        when this connection could not be used: the caller then runs the script itself.
        """
        line = self._connect()
        if line is None or not line.lock.acquire(blocking=False):
            return None
        try:
            return self._update(line, key, cancel_key, guess, changes, script)
        except (RedisError, OSError):  # the connection is lost: the caller's call reports it
            line.watching = None
            line.connection.disconnect()
            return None
        finally:
            line.lock.release()

    def _update(
        self, line: _Line, key: str, cancel_key: str, guess: Guess, changes: list[Command], script: Command
    ) -> Any:
        for _ in range(_TRIES):
            watching = line.watching
            if watching is None or watching[0] != key:
                break
            if watching != guess:  # what the connection read since is the truth: no need to ask the script
                return [WRONG_GUESS, b"", 0]
            commands = [("MULTI",), *changes, ("EXISTS", cancel_key), ("EXEC",), *_watch(key)[1:]]
            replies = self._send(line, commands)
            done = replies[-3]
            lost = self._watched(line, key, replies[-2:])
            if _failed(done):
                return None  # the caller's script says what it is
            if done is not None:
                return bool(done[-1])
            if lost:
                return None
        return self._run(line, key, script)

    def _run(self, line: _Line, key: str, script: Command) -> Any:
        replies = self._send(line, [script, *_watch(key)])
        if self._watched(line, key, replies[-2:]) and "WATCH" in str(replies[-2]).upper():
            self.usable = False  # a server, or a proxy, without WATCH: scripts alone from now on
        return None if isinstance(replies[0], ResponseError) else replies[0]

    def _connect(self) -> _Line | None:
        if not self.usable:
            return None
        line = self._line
        if line is None or line.pid != os.getpid():  # a forked child makes its own (the parent's lock may be held)
            # Made like the pool's, not taken from it: the pool neither counts it against its
            # max_connections nor waits for it back. It connects on first use, and closes when this
            # object goes (a store made again drops its CheckAndSet). Named for CLIENT LIST, unless the
            # cache names its connections itself.
            kwargs = {"client_name": f"realtime_async:watch:{os.getpid()}", **self._pool.connection_kwargs}
            line = self._line = _Line(self._pool.connection_class(**kwargs))
        return line

    @staticmethod
    def _watched(line: _Line, key: str, replies: list[Any]) -> bool:
        """Note what ``WATCH`` then ``HMGET`` read; True when either failed (nothing is watched then)."""
        watched, fields = replies
        if _failed(watched) or _failed(fields):
            line.watching = None
            return True
        state, seq, last, dropped = fields
        alive = state is not None and seq is not None and state not in _FINAL
        line.watching = (key, int(seq), _text(last), _text(dropped)) if alive else None
        return False

    @staticmethod
    def _send(line: _Line, commands: list[Command]) -> list[Any]:
        """The replies of ``commands``, sent at once: error replies are returned, not raised."""
        connection = line.connection
        connection.send_packed_command(_packed(connection, commands))
        replies = []
        for _ in commands:
            try:
                replies.append(connection.read_response(disconnect_on_error=False))
            except ResponseError as error:
                replies.append(error)
        return replies


def _packed(connection: Any, commands: list[Command]) -> Any:
    """``commands`` in RESP, as ``connection.pack_commands`` would pack them, about ten times faster.

    redis-py encodes each argument in Python before hiredis packs the command (about 20 µs for
    an update's ten commands); hiredis alone packs bytes, str (UTF-8) and int the same way in 2.
    Anything else, or a connection that encodes text otherwise, is left to redis-py.
    """
    if _pack_command is None or str(getattr(connection.encoder, "encoding", "")).lower() not in _UTF8:
        return connection.pack_commands(commands)
    for command in commands:
        for argument in command:
            if type(argument) not in _PLAIN:
                return connection.pack_commands(commands)
    return [b"".join(map(_pack_command, commands))]
