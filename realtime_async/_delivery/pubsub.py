"""A hub's Redis pub/sub connection: one per server process, whatever it watches.

The write script publishes each stored record in the same round trip as the
write (``_core.publishing``). A hub subscribes to the channels of the groups it
is in through a ``Subscriber``:

- *direct* (``RedisPubSubChannelLayer`` on the cache's Redis): the channels are
  the layer's own group channels, and this is how the hub receives everything.
  After a lost connection, once it is subscribed again, ``on_connected`` tells
  the hub, which reads its tasks' records from the store and delivers what it
  missed (by ``seq``). When a new connection cannot be made (Redis is away),
  ``on_unreachable`` tells it instead: the hub then closes its watchers with
  4503, as when the layer fails, so that clients show it and come back. An
  idle connection is pinged, so that a silent one (a peer gone without a
  reset) is found and replaced too.
- *layered* (any other layer, ``FAST_BROADCAST``): the hubs' own channels
  (``Store.broadcast_channel``) carry the bare record, sooner than the layer,
  which still carries every update: the hub keeps the first copy of each
  ``(task, seq)``, and nothing is lost while this connection is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any, Final

from realtime_async._core.process import Throttled

__all__ = ["CLIENT_NAME_PREFIX", "Subscriber", "Subscribers", "async_pool_for"]

logger = logging.getLogger("realtime_async")

# What a pub/sub connection needs from the cache's connection settings: where
# the server is and how to log in; not the cache's parser, timeouts or pool size.
_CONNECTION_KEYS = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_password",
    }
)


def _accepted(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names


#: The data of the ping that follows a new connection's subscriptions (see ``Subscriber._handle``).
_READY: Final = b"realtime_async.subscribed"

#: The client name of every hub's pub/sub connection (``CLIENT LIST`` shows ``realtime_async.hub.<pid>``).
CLIENT_NAME_PREFIX = "realtime_async.hub."


def async_pool_for(client: Any, shard: dict[str, Any] | None = None) -> Any:
    """An asyncio connection pool to the server of the synchronous redis-py ``client``, with its login.

    ``shard`` is the ``SHARDS`` entry ``client`` was made from, if any: a
    Sentinel service's pool asks the Sentinels where the primary is now, on
    each new connection. Its connections are named ``CLIENT_NAME_PREFIX`` and
    the process id.
    """
    import redis.asyncio.connection as aio
    import redis.connection as sync

    name = f"{CLIENT_NAME_PREFIX}{os.getpid()}"
    if shard is not None and "sentinels" in shard:
        import redis.asyncio.sentinel as aio_sentinel

        from realtime_async._core.store.shards import connection_kwargs

        given = connection_kwargs(shard)
        options = {key: value for key, value in given.items() if key in _CONNECTION_KEYS}
        watchers = shard.get("sentinel_kwargs") or {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
        sentinel = aio_sentinel.Sentinel(shard["sentinels"], sentinel_kwargs=watchers)  # type: ignore[no-untyped-call,unused-ignore]
        return aio_sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
            shard["master_name"], sentinel, client_name=name, protocol=2, **options
        )

    kind = client.connection_pool.connection_class
    if issubclass(kind, sync.UnixDomainSocketConnection):
        cls: type = aio.UnixDomainSocketConnection
    elif issubclass(kind, sync.SSLConnection):
        cls = aio.SSLConnection
    else:
        cls = aio.Connection
    accepted = _accepted(cls)
    kwargs = {
        key: value
        for key, value in client.connection_pool.connection_kwargs.items()
        if key in _CONNECTION_KEYS and key in accepted
    }
    # RESP2, not redis-py 8's RESP3: a message is a plain reply for ``Subscriber._receive``, not a push notification.
    kwargs.update(client_name=name, protocol=2)
    return aio.ConnectionPool(connection_class=cls, **kwargs)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _parser_of(pubsub: Any) -> Any:
    """The reply parser of ``pubsub``'s connection, when it is one ``Subscriber._receive`` may read; else None."""
    connection = pubsub.connection
    parser = getattr(connection, "_parser", None)
    if connection is None or str(getattr(connection, "protocol", 2) or 2) != "2":
        return None
    return parser if callable(getattr(parser, "read_response", None)) else None


async def _close(obj: Any) -> None:
    # redis-py 5.0.0 has close(); later releases call it aclose().
    closer = getattr(obj, "aclose", None) or obj.close
    with contextlib.suppress(Exception):
        await closer()


class Subscriber:
    """One pub/sub connection that reconnects on its own; ``run`` is its reading task.

    It subscribes to the channel ``channel_of(group)`` of each group added.
    ``control`` is a group only this subscriber uses: its channel is subscribed
    first and always, so the connection is in subscribed mode even while the
    hub is in no group, and its messages are not handed on.
    """

    #: Seconds a connection or subscription attempt may take.
    timeout: float = 5.0
    #: Seconds ``add`` waits for Redis to confirm a subscription; the layer alone delivers until it does.
    confirm_timeout: float = 1.0
    #: Longest wait between two reconnection attempts.
    max_backoff: float = 5.0
    #: Seconds without a message before the connection is pinged (and ``timeout`` more before it is replaced).
    ping_after: float = 20.0

    def __init__(
        self,
        pool: Any,
        channel_of: Callable[[str], str],
        control: str,
        on_message: Callable[[bytes], None],
        on_connected: Callable[[bool], None] | None = None,
        on_unreachable: Callable[[BaseException], None] | None = None,
    ) -> None:
        import redis.asyncio

        self._pool = pool
        self._client = redis.asyncio.Redis(connection_pool=pool)
        self._channel_of = channel_of
        self.control = channel_of(control)
        self._control = self.control.encode()
        self._on_message = on_message
        self._on_connected = on_connected
        #: Told when a connection attempt fails (Redis is away, not just one connection).
        self._on_unreachable = on_unreachable
        #: Connections confirmed so far: after the first, ``on_connected`` says the subscriber was away.
        self._connections = 0
        self._wanted: set[str] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._pubsub: Any = None
        self._parser: Any = None  # the connection's, once per connection (``_parser_of``); None: ``get_message``
        #: True from a lost connection until the next one is confirmed: ``add`` does not wait meanwhile.
        self._failing = False
        # A Redis outage must not flood the logs.
        self._log = Throttled(logger)

    async def add(self, group: str, *, required: bool = False) -> None:
        """Subscribe to ``group``'s channel and wait until Redis confirms it.

        Updates published after it returns reach this subscriber, unless the
        connection is away: then the reader subscribes again once it is back.
        Without ``required`` it waits ``confirm_timeout`` at most and never
        raises; with it, it waits ``timeout`` and raises ``ConnectionError``
        unless Redis confirmed the subscription.
        """
        channel = self._channel_of(group)
        key = channel.encode()
        self._wanted.add(channel)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            await self._command("subscribe", channel)
            if required:
                await asyncio.wait({waiter}, timeout=self.timeout)
                if not waiter.done():
                    raise ConnectionError(f"Redis did not confirm the subscription to {channel!r}")
            elif not self._failing:
                await asyncio.wait({waiter}, timeout=self.confirm_timeout)
        finally:
            waiters = self._waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(key, None)

    async def discard(self, group: str) -> None:
        """Unsubscribe from ``group``'s channel; never raises."""
        channel = self._channel_of(group)
        self._wanted.discard(channel)
        await self._command("unsubscribe", channel)

    async def _command(self, name: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # the reader subscribes to what is wanted when it connects
        try:
            async with asyncio.timeout(self.timeout):
                await getattr(pubsub, name)(channel)
        except Exception as exc:  # the reader finds the connection broken and starts a new one
            if self._pubsub is pubsub:  # else the reader dropped it meanwhile (a stop, a reconnect): nothing to say
                self._warn(f"{name} failed", exc)

    async def run(self) -> None:
        """Read until cancelled, reconnecting with backoff; hand each message's data to ``on_message``."""
        delay = 0.1
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        try:
            while True:
                if _cancelling():
                    # redis-py can swallow a cancellation (seen while it connects): honour it anyway.
                    raise asyncio.CancelledError
                connecting = self._pubsub is None
                try:
                    if connecting:
                        async with asyncio.timeout(self.timeout):
                            await self._connect()
                        heard = pinged = loop.time()
                        connecting = False
                    received = await self._receive()
                    if received:
                        heard = loop.time()
                    elif loop.time() - heard > self.ping_after + self.timeout:
                        raise ConnectionError("no answer to a ping")
                    elif loop.time() - max(heard, pinged) > self.ping_after:
                        pinged = loop.time()
                        await self._pubsub.ping()
                except Exception as exc:
                    if _cancelling():
                        raise  # redis-py can turn a cancellation into a timeout or a connection error
                    self._failing = True
                    self._warn("connection failed" if connecting else "connection lost", exc)
                    await self._drop()
                    if connecting and self._on_unreachable is not None:
                        self._on_unreachable(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
                    continue
                delay = 0.1
                if received:
                    # Buffered messages are read without yielding: let the hub's fan-out run
                    # between two, so that "latest wins" only drops what it is really behind on.
                    await asyncio.sleep(0)
        finally:
            await self._drop()
            await _close(self._client)
            with contextlib.suppress(Exception):
                await self._pool.disconnect()

    async def _receive(self) -> bool:
        """Wait a second at most for the connection's next reply and handle it; whether one came.

        A message is read off the connection's own parser and handed on: with redis-py's ``get_message`` (its
        health check, retry and timeout wrappers, its telemetry hooks) the reader took about 25 µs of CPU a message,
        now about 15 (``python -m bench --only hub_reader``). Other replies (confirmations, pongs) still go through
        ``handle_message``, which keeps redis-py's bookkeeping of the channels.
        """
        pubsub, parser = self._pubsub, self._parser
        if parser is None:  # not a RESP2 connection with the parser this knows: redis-py's own way
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                self._handle(message)
            return message is not None
        try:
            async with asyncio.timeout(1.0):
                reply = await parser.read_response()
        except TimeoutError:
            return False
        if isinstance(reply, Exception):
            raise reply  # an error reply on a pub/sub connection: start a new one
        if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
            if reply[1] != self._control:
                self._deliver(reply[2])
        else:
            message = await pubsub.handle_message(reply)
            if message is not None:
                self._handle(message)
        return True

    def _deliver(self, data: bytes) -> None:
        try:
            self._on_message(data)
        except Exception:
            logger.exception("realtime_async: a pub/sub update could not be routed")

    def _handle(self, message: dict[str, Any]) -> None:
        kind, channel = message.get("type"), message.get("channel")
        if kind == "subscribe" and isinstance(channel, bytes):
            if channel == self._control:
                self._failing = False
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == "pong" and message.get("data") == _READY:
            # Sent after every subscription of a new connection: all of them are in place.
            self._connections += 1
            if self._on_connected is not None:
                try:
                    self._on_connected(self._connections > 1)
                except Exception:
                    logger.exception("realtime_async: a pub/sub reconnection could not be handled")
        elif kind == "message" and channel != self._control:
            self._deliver(message["data"])

    async def _connect(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self.control)
        except BaseException:
            await _close(pubsub)
            raise
        # No await between these two lines: a channel added meanwhile is either
        # in the list below or sent by ``add`` on this new connection.
        self._pubsub, self._parser = pubsub, _parser_of(pubsub)
        wanted = sorted(self._wanted)
        if wanted:
            await pubsub.subscribe(*wanted)
        # Redis answers a connection's commands in order: this pong comes after every confirmation.
        await pubsub.ping(_READY)

    async def _drop(self) -> None:
        pubsub, self._pubsub, self._parser = self._pubsub, None, None
        if pubsub is not None:
            await _close(pubsub)

    def _warn(self, what: str, exc: BaseException) -> None:
        self._log.warning(
            "realtime_async: pub/sub %s (%s: %s); the channel layer delivers meanwhile", what, type(exc).__name__, exc
        )


class Subscribers:
    """A ``Subscriber`` per Redis server of the store: a task's group is heard on its shard, a feed's on all.

    With one server (no ``SHARDS``, or one) it is that server's ``Subscriber``
    alone. ``place`` gives a task's shard (``ShardedStore.shard``'s index).
    """

    def __init__(self, subscribers: list[Subscriber], place: Callable[[str], int]) -> None:
        self.each = subscribers
        self._place = place

    def of(self, task: str | None) -> list[Subscriber]:
        """Where ``task``'s group is heard; every server for a feed (``task`` None)."""
        if task is None or len(self.each) == 1:
            return self.each
        return [self.each[self._place(task)]]

    def index(self, task: str) -> int:
        return self._place(task) if len(self.each) > 1 else 0

    async def add(self, group: str, task: str | None, *, required: bool = False) -> None:
        """``Subscriber.add`` on each server ``group`` is heard on; raises the first ``ConnectionError``."""
        answers = await asyncio.gather(
            *(subscriber.add(group, required=required) for subscriber in self.of(task)), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer

    async def discard(self, group: str, task: str | None) -> None:
        for subscriber in self.of(task):
            await subscriber.discard(group)
