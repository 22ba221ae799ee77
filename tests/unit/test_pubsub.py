"""The hub's pub/sub connections (``_delivery.pubsub``), made from the cache's client without connecting."""

from __future__ import annotations

import redis

from realtime_async._delivery.pubsub import CLIENT_NAME_PREFIX, async_pool_for


def test_async_pool_keeps_the_server_and_login_of_the_cache_client():
    import redis.asyncio.connection as aio

    tcp = async_pool_for(redis.Redis(host="10.1.2.3", port=6390, db=4, username="u", password="p", socket_timeout=3))
    assert tcp.connection_class is aio.Connection
    kwargs = tcp.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["username"], kwargs["password"]) == (
        "10.1.2.3", 6390, 4, "u", "p",
    )  # fmt: skip
    assert "socket_timeout" not in kwargs  # a subscriber waits as long as it likes
    assert kwargs["client_name"].startswith(CLIENT_NAME_PREFIX)
    unix = async_pool_for(redis.Redis(unix_socket_path="/run/redis.sock", password="p"))
    assert unix.connection_class is aio.UnixDomainSocketConnection
    assert (unix.connection_kwargs["path"], unix.connection_kwargs["password"]) == ("/run/redis.sock", "p")
    tls = async_pool_for(redis.Redis.from_url("rediss://:p@cache.internal:6380/2", ssl_cert_reqs="required"))
    assert tls.connection_class is aio.SSLConnection
    assert (tls.connection_kwargs["host"], tls.connection_kwargs["ssl_cert_reqs"]) == ("cache.internal", "required")
