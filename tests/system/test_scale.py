"""Scale-out on one machine: several servers and workers on one Redis, and many tasks at once.

Each runs on daphne and on uvicorn (``server``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest

from tests.fault_helpers import driver, watch
from tests.services import private_redis, start_server, start_worker

# The servers, workers and drivers record into the session's database, which
# pytest-django creates only for a run that holds a database test; see test_faults.
pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def test_two_servers_two_workers(server, reliability):
    """A client on either server follows a task run by either worker, to its final state."""
    with private_redis() as (url, _redis, port):
        env = {"RA_TEST_REDIS_URL": url, "RA_TEST_PREFIX": f"scale-{port}", "RA_TEST_PREFETCH": "1"}
        workers = [start_worker(env=env, concurrency=1, name=f"worker-scale-{i}") for i in range(2)]
        servers = [start_server(server, env=env, name=f"{server}-scale-{i}") for i in range(2)]
        try:
            tasks = [driver(env, "launch", "tests.testapp.workers.steps", "[10]", '{"delay": 0.4}') for _ in range(4)]
            tokens = {name: driver(env, "token", name) for name in tasks}

            async def scenario():
                deadline = time.monotonic() + 60
                jobs = [
                    watch(f"ws://127.0.0.1:{web}/ws/realtime-async/", name, token=tokens[name],
                          origin=f"http://127.0.0.1:{web}", deadline=deadline)
                    for name in tasks for _proc, web in servers
                ]  # fmt: skip
                return await asyncio.gather(*jobs)

            results = asyncio.run(scenario())
            finals = [driver(env, "state", name) for name in tasks]
        finally:
            for proc, _web in servers:
                proc.stop()
            for worker in workers:
                worker.stop()
    assert [seen.final for seen in results] == ["success"] * len(results)
    ran_on = {final["result"]["pid"] for final in finals}
    assert len(ran_on) >= 2, "both workers ran tasks"
    for seen in results:
        assert seen.seqs == sorted(seen.seqs)
    reliability(
        f"Two {server} servers and two Celery workers on one Redis",
        "4 tasks spread over 2 workers (prefetch 1); each task watched by one client on each server",
        f"{len(results)} of {len(results)} watchers reached `success`; tasks ran in {len(ran_on)} worker processes",
    )


def test_a_thousand_short_tasks_each_watched(server, reliability):
    """1,000 tasks launched at once, one watcher each: every watcher ends on its task's true final state."""
    count = 1000
    with private_redis() as (url, _redis, port):
        env = {"RA_TEST_REDIS_URL": url, "RA_TEST_PREFIX": f"many-{port}", "RA_TEST_MAX_CONNECTIONS": "2000"}
        workers = [start_worker(env=env, concurrency=2, name=f"worker-many-{i}") for i in range(2)]
        daphne, web = start_server(server, env=env, name=f"{server}-many")
        try:
            launched = driver(env, "launch_many", str(count), timeout=120)
            gate = asyncio.Semaphore(200)  # connections opened at a time, not watchers at once

            async def one(name, token):
                async with gate:
                    return await watch(
                        f"ws://127.0.0.1:{web}/ws/realtime-async/",
                        name,
                        token=token,
                        origin=f"http://127.0.0.1:{web}",
                        deadline=time.monotonic() + 120,
                    )

            async def scenario():
                return await asyncio.gather(*(one(name, token) for name, token, _expected in launched))

            results = asyncio.run(scenario())
            truth = driver(env, "states", stdin=json.dumps([name for name, _t, _e in launched]), timeout=60)
        finally:
            daphne.stop()
            for worker in workers:
                worker.stop()
    outcomes = Counter(seen.final for seen in results)
    mismatched = [
        (name, seen.final, truth[name], expected)
        for (name, _token, expected), seen in zip(launched, results, strict=True)
        if not (seen.final == truth[name] == expected)
    ]
    assert not mismatched, (len(mismatched), mismatched[:5])
    assert outcomes == {"success": count * 9 // 10, "failure": count // 10}
    reliability(
        "1,000 short tasks launched at once, each watched by one client",
        f"one launcher process, 2 workers x 2 children, one {server}, 1,000 WebSocket watchers (watch tokens)",
        f"{outcomes['success']} watchers ended `success` and {outcomes['failure']} `failure`, each its task's "
        "true final state; none lost, none stuck",
    )
