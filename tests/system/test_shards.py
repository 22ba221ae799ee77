"""A deployment beyond one Redis, for real: two shards with one killed, and a Sentinel failover.

Each test runs a prefork Celery worker and a web server whose store and
channel layer are on servers of the test's own (``RA_TEST_SHARDS``, see
``tests/project/settings.py``); the broker stays on the session's Redis.
Watchers are reconnecting WebSocket clients (``fault_helpers.watch``).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from realtime_async._core.access import make_watch_token
from realtime_async._core.naming import new_task_name
from realtime_async._core.store.shards import placement
from tests.fault_helpers import driver, following, watch_all
from tests.sentinel_helpers import sentinel_cluster
from tests.services import private_redis, start_server, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

TASK = "tests.testapp.workers.sleep_then_finish"


def _name_on(index: int, prefix: str) -> str:
    while True:
        name = new_task_name("sharded")
        if placement(name, 2, f"{prefix}:asgi") == index:
            return name


def test_a_killed_shard_interrupts_only_its_tasks_watchers(server, reliability, gate):
    """Shard 1 stops for 2 s mid-task: the task on shard 0 streams on untouched, the other recovers."""
    with private_redis() as (url_a, _proc_a, _), private_redis() as (url_b, proc_b, port_b):
        prefix = f"shards-{port_b}"
        env = {"RA_TEST_SHARDS": json.dumps([url_a, url_b]), "RA_TEST_PREFIX": prefix}
        worker = start_worker(env=env, name="worker-shards")
        web, web_port = start_server(server, env=env, name=f"{server}-shards")
        try:
            kept, lost = _name_on(0, prefix), _name_on(1, prefix)
            tokens = {name: make_watch_token(name) for name in (kept, lost)}  # signed here: no task needed
            # Their 6 s begin once every watcher follows its task (the gate), however long they took to come.
            for name in (kept, lost):
                kwargs = json.dumps({"_task_name": name, "wait_for": str(gate)})
                assert driver(env, "launch", TASK, "[6]", kwargs) == name

            async def scenario():
                watchers, views = watch_all(web_port, tokens, 3, time.monotonic() + 45)
                await following(views)
                gate.open()
                await asyncio.sleep(2)
                await asyncio.to_thread(proc_b.stop)
                await asyncio.sleep(2)
                with private_redis(port_b):
                    seen = await asyncio.gather(*watchers)
                    return seen, {name: driver(env, "state", name) for name in (kept, lost)}

            results, finals = asyncio.run(scenario())
        finally:
            web.stop()
            worker.stop()
    on_kept, on_lost = results[:3], results[3:]
    for seen in results:
        assert seen.final == "success", (seen.states[-5:], seen.closes, seen.errors)
        assert seen.seqs == sorted(seen.seqs), seen.seqs
        assert 1011 not in seen.closes
    for seen in on_kept:
        assert seen.closes in ([], [1000], [None]), seen.closes  # never cut off: its shard stayed up
        assert seen.errors == []
    assert all(any(code in (4503, 1006, None) for code in seen.closes) or seen.errors for seen in on_lost)
    assert finals[kept]["state"] == finals[lost]["state"] == "success"
    reliability(
        "A Redis shard stopped mid-task (SHARDS of two)",
        "one of two private redis-servers stopped for 2 s while 3 WebSocket watchers follow a task on each shard",
        "the other shard's watchers streamed on, never closed; the stopped shard's watchers were cut off (4503) "
        "and reached the true final state once it came back empty; seq never went backwards",
    )


def test_a_sentinel_failover_mid_task_ends_every_watcher_on_the_true_final_state(server, reliability, gate):
    """The primary is killed mid-task; Sentinel promotes its replica; store, hub and layer follow it."""
    with sentinel_cluster() as cluster:
        shard = {"sentinels": [list(address) for address in cluster.sentinels], "master_name": cluster.master_name}
        env = {"RA_TEST_SHARDS": json.dumps([shard]), "RA_TEST_PREFIX": f"sentinel-{cluster.primary_port}"}
        worker = start_worker(env=env, name="worker-sentinel")
        web, web_port = start_server(server, env=env, name=f"{server}-sentinel")
        try:
            # Its 8 s begin once every watcher follows it (the gate), however long they took to come.
            name = driver(env, "launch", TASK, "[8]", json.dumps({"wait_for": str(gate)}))
            tokens = {name: make_watch_token(name)}

            async def scenario():
                watchers, views = watch_all(web_port, tokens, 5, time.monotonic() + 60)
                await following(views)
                gate.open()
                await asyncio.sleep(2)
                cluster.kill_primary()
                await asyncio.to_thread(cluster.wait_failover)
                seen = await asyncio.gather(*watchers)
                return seen, driver(env, "state", name)

            results, final = asyncio.run(scenario())
            assert cluster.master_port() == cluster.replica_port
        finally:
            web.stop()
            worker.stop()
    assert final["state"] == "success" and final["result"]["ticks"] > 40, final
    for seen in results:
        assert seen.final == "success", (seen.states[-5:], seen.closes, seen.errors)
        assert seen.seqs == sorted(seen.seqs), seen.seqs
        assert 1011 not in seen.closes
        assert seen.seqs[-1] == final["seq"]
    assert "progress write failed" in worker.output() or "restoring it" in worker.output()  # it saw the primary go
    reliability(
        "Redis Sentinel failover mid-task (SHARDS names the Sentinel service)",
        "a primary, its replica and redis-server --sentinel on loopback; the primary killed (SIGKILL) 2 s into "
        "an 8 s task while 5 WebSocket watchers follow it",
        f"the replica was promoted; the task ended `{final['state']}` with its result and every watcher reached "
        "it (cut off by 4503 or a dropped socket, never 1011); seq never went backwards",
    )
