"""tests.sentinel_helpers works: a key written through Sentinel survives a crash of the primary."""

from __future__ import annotations

import time

import pytest
import redis
from redis.sentinel import Sentinel

from tests.sentinel_helpers import sentinel_cluster
from tests.services import wait_for

pytestmark = pytest.mark.slow


def test_failover_keeps_a_replicated_key():
    with sentinel_cluster() as cluster:
        sentinel = Sentinel(cluster.sentinels, socket_timeout=2, socket_connect_timeout=2)
        master = sentinel.master_for(cluster.master_name, decode_responses=True)
        try:
            assert cluster.master_port() == cluster.primary_port
            master.set("ra-sentinel-probe", "kept")
            assert master.execute_command("WAIT", 1, 2000) == 1

            started = time.monotonic()
            assert cluster.kill_primary() == cluster.primary_port
            assert cluster.wait_failover() == cluster.replica_port
            failover = time.monotonic() - started

            def read() -> str | None:
                try:
                    return master.get("ra-sentinel-probe")
                except redis.ConnectionError:  # the client reconnects to the new master
                    return None

            assert wait_for(read, 10, 0.2, "the key through the new master") == "kept"
            assert cluster.master_port() == cluster.replica_port
            assert cluster.primary.popen.poll() is not None, "the old primary stays dead"
            assert failover < 30
        finally:
            master.connection_pool.disconnect()
            for client in sentinel.sentinels:
                client.close()
