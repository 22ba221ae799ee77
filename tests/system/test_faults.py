"""Faults injected for real: Redis restarts, killed workers, frozen lock holders, time limits.

The faults a web server lives through (Redis going away under its hub, its own
restart) are injected on daphne and on uvicorn (``server``); the others are the
workers' and run once, on daphne.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from tests.fault_helpers import driver, following, watch, watch_all
from tests.services import private_redis, start_daphne, start_server, start_worker, wait_for

# The workers, servers and drivers these tests start record into the session's
# database, so it must exist: pytest-django creates it only for a run that holds
# a database test (run alone, the subprocesses' dashboard writes failed and the
# driver waited out their retries at exit). transaction=True: the test holds no
# transaction that would lock the SQLite file against them.
pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def test_redis_restart_mid_task(tmp_path, server, reliability, gate):
    """The task keeps running, ends in its true final state, and every watcher reaches it."""
    with private_redis() as (url, redis_proc, port):
        env = {"RA_TEST_REDIS_URL": url, "RA_TEST_PREFIX": f"fault-{port}"}
        worker = start_worker(env=env, name="worker-redis-restart")
        daphne, web_port = start_server(server, env=env, name=f"{server}-redis-restart")
        try:
            # Its 6 s begin once every watcher follows it (the gate), however long they took to come.
            kwargs = json.dumps({"wait_for": str(gate)})
            name = driver(env, "launch", "tests.testapp.workers.sleep_then_finish", "[6]", kwargs)
            token = driver(env, "token", name)

            async def scenario():
                watchers, views = watch_all(web_port, {name: token}, 5, time.monotonic() + 45)
                await following(views)
                gate.open()
                await asyncio.sleep(2)  # watchers are following the running task
                redis_proc.stop()
                await asyncio.sleep(1)
                with private_redis(port) as _restarted:
                    seen = await asyncio.gather(*watchers)
                    return seen, driver(env, "state", name)

            results, final = asyncio.run(scenario())
        finally:
            daphne.stop()
            worker.stop()
    for seen in results:
        assert seen.final == "success", (seen.states[-5:], seen.closes, seen.errors)
        assert seen.seqs == sorted(seen.seqs), seen.seqs  # never backwards, across reconnects
        assert any(code in (4503, 1006, None) for code in seen.closes), seen.closes  # it was cut off
        assert 1011 not in seen.closes
    # The worker function ran to its end (progress calls never raised into it), and the
    # record Redis lost was written again above its last seq.
    assert final["state"] == "success" and final["result"]["ticks"] > 30, final
    assert "progress write failed" in worker.output() or "restoring it" in worker.output()  # it saw Redis go
    assert final["seq"] >= max(max(seen.seqs) for seen in results)
    reliability(
        "Redis restarted mid-task (no persistence: every key lost)",
        "private redis-server stopped for 1 s and started on the same port while 5 WebSocket watchers follow a task",
        f"task ended `{final['state']}` with its result; {len(results)} of {len(results)} watchers reached it "
        "after reconnecting (close 4503 or a dropped socket, never 1011); seq never went backwards",
    )


def _pid(path):
    return int(wait_for(lambda: path.exists() and path.read_text(), 30, what=f"a pid in {path}"))


@pytest.mark.parametrize("victim", ["child", "whole worker"])
def test_killed_worker_ends_lost_everywhere(tmp_path, victim, reliability):
    """SIGKILL a worker child, or the worker's main process and its children: lost, locks free, fail once."""
    with private_redis() as (url, _redis, port):
        env = {"RA_TEST_REDIS_URL": url, "RA_TEST_PREFIX": f"fault-{port}"}
        worker = start_worker(env=env, name=f"worker-kill-{victim.replace(' ', '-')}")
        daphne, web_port = start_daphne(env=env, name="daphne-kill")
        try:
            pid_file = tmp_path / "pid"
            ids = {"testapp.Project": [1]}
            name = driver(
                env,
                "launch",
                "tests.testapp.workers.write_pid_and_wait",
                json.dumps([str(pid_file), 60]),
                json.dumps({"_conflict_ids": ids}),
            )
            child = _pid(pid_file)
            token = driver(env, "token", name)
            origin, ws_url = f"http://127.0.0.1:{web_port}", f"ws://127.0.0.1:{web_port}/ws/realtime-async/"

            async def scenario():
                watcher = asyncio.create_task(
                    watch(ws_url, name, token=token, origin=origin, deadline=time.monotonic() + 40)
                )
                await asyncio.sleep(1)
                if victim == "child":
                    os.kill(child, signal.SIGKILL)
                else:
                    os.killpg(worker.popen.pid, signal.SIGKILL)  # the main process and its children
                # HEARTBEAT_TIMEOUT is 3 s in the test settings: then one cleanup pass finds it.
                await asyncio.sleep(3.5)
                summary = driver(env, "cleanup")
                return await watcher, summary

            seen, summary = asyncio.run(scenario())
            assert [item["task"] for item in summary["cleaned"]] == [name], summary
            state = driver(env, "state", name)
            assert state["state"] == "lost" and state["error"]
            assert driver(env, "conflicts", json.dumps(ids)) == {}
            assert seen.final == "lost"  # the WebSocket watcher
            import urllib.request

            with urllib.request.urlopen(f"{origin}/realtime-async/progress/{name}/?token={token}") as response:
                assert response.status == 286 and json.load(response)["data"]["state"] == "lost"  # polling
            assert driver(env, "cleanup")["cleaned"] == []
            assert driver(env, "events", name).count("fail") == 1
            reliability(
                f"Worker killed mid-task ({victim})",
                "SIGKILL to the worker child" if victim == "child" else "SIGKILL to the worker's process group",
                "after the heartbeat timeout one cleanup pass ended it `lost`: on the WebSocket, on polling (286), "
                "locks free, `fail` fired once, a second pass found nothing",
            )
        finally:
            daphne.stop()
            worker.stop()


def test_frozen_lock_holder_loses_its_lock_and_learns_it(tmp_path, reliability):
    """SIGSTOP a lock holder past LOCK_TTL: another task takes the lock; the first cannot free it and knows."""
    with private_redis() as (url, _redis, port):
        env = {"RA_TEST_REDIS_URL": url, "RA_TEST_PREFIX": f"fault-{port}"}
        worker = start_worker(env=env, name="worker-frozen")
        try:
            ids = json.dumps({"_conflict_ids": {"testapp.Thing": [1]}})
            first = driver(
                env, "launch", "tests.testapp.workers.hold_and_check", json.dumps([str(tmp_path / "a"), 5]), ids
            )
            child = _pid(tmp_path / "a")
            os.kill(child, signal.SIGSTOP)
            try:
                time.sleep(4.5)  # LOCK_TTL is 3 s in the test settings; the frozen heartbeat cannot renew it
                second = driver(env, "launch", "tests.testapp.workers.sleep_then_finish", "[30]", ids)
            finally:
                os.kill(child, signal.SIGCONT)
            final = wait_for(
                lambda: (r := driver(env, "state", first)) and r["state"] == "success" and r, 30, 0.5, "first to end"
            )
            assert final["result"] == {"held": False}  # it learned it lost the lock
            # Its release after finishing did not free the lock the second task holds.
            assert driver(env, "conflicts", json.dumps({"testapp.Thing": [1]})) == {"testapp.thing": {"1": second}}
            # It kept working after SIGCONT, and its next heartbeat noticed the loss too.
            wait_for(lambda: "lost its locks" in worker.output(), 10, what="the heartbeat's log of the loss")
            reliability(
                "Lock holder frozen past the lock's TTL",
                "SIGSTOP to the worker child for 4.5 s (LOCK_TTL 3 s), another task launched on the same object, "
                "then SIGCONT",
                "the second task took the lock; the first saw `holds_locks() == False`, its heartbeat logged the "
                "loss, and its release left the second task's lock in place",
            )
        finally:
            worker.stop()


def test_soft_time_limit_ends_in_failure_with_locks_released(celery_worker_proc, manager, reliability):
    from realtime_async.tasks import TIME_LIMIT_ERROR

    ids = {"testapp.Project": {77}}
    name = manager.launch_async_task("tests.testapp.workers.sleep_then_finish", 20, conflict_ids=ids, soft_time_limit=1)
    record = wait_for(lambda: (r := manager.get_progress(name))["state"] not in ("queued", "running") and r, 30)
    assert (record["state"], record["error"]) == ("failure", TIME_LIMIT_ERROR)
    assert manager.check_conflict(ids) == {}
    reliability(
        "Task past its soft time limit",
        "`launch_async_task(..., soft_time_limit=1)` on a 20 s task, real prefork worker",
        f'ended `{record["state"]}` with the public error "{record["error"]}"; locks released',
    )


def test_idle_task_restores_what_redis_lost(tmp_path, reliability):
    """Redis loses every key (a restart without persistence) while a task sleeps: its heartbeat writes them back."""
    import redis

    with private_redis() as (url, _redis, port):
        env = {"RA_TEST_REDIS_URL": url, "RA_TEST_PREFIX": f"fault-{port}"}
        worker = start_worker(env=env, name="worker-restore")
        try:
            ids = {"testapp.Project": [3]}
            name = driver(
                env,
                "launch",
                "tests.testapp.workers.write_pid_and_wait",
                json.dumps([str(tmp_path / "pid"), 30]),
                json.dumps({"_conflict_ids": ids}),
            )
            _pid(tmp_path / "pid")
            before = wait_for(lambda: (r := driver(env, "state", name)) and r["percent"] == 10 and r, 10)
            client = redis.Redis.from_url(url)
            client.flushall()
            assert client.dbsize() == 0 or "restoring it" in worker.output()
            # HEARTBEAT_INTERVAL is 1 s in the test settings.
            after = wait_for(lambda: driver(env, "state", name), 10, 0.3, "the record to come back")
            assert after["state"] == "running" and after["seq"] > before["seq"]
            assert after["message"] == "waiting to be killed" and after["created_at"] == before["created_at"]
            assert driver(env, "conflicts", json.dumps(ids)) == {"testapp.project": {"3": name}}
            assert "restoring it" in worker.output()
            reliability(
                "Redis loses every key while a task is idle",
                "FLUSHALL on the private Redis while the worker sleeps between updates",
                "within one heartbeat the worker wrote the record back above its last seq, took its lock back and "
                "re-registered the task",
            )
        finally:
            worker.stop()


def test_server_restart_while_clients_watch(server, reliability, gate):
    """The server goes away mid-task: clients reconnect, resume with their last seq, reach the final state."""
    with private_redis() as (url, _redis, port):
        env = {"RA_TEST_REDIS_URL": url, "RA_TEST_PREFIX": f"fault-{port}"}
        worker = start_worker(env=env, name="worker-daphne-restart")
        daphne, web_port = start_server(server, env=env, name=f"{server}-restart-1")
        try:
            # Its 6 s begin once every watcher follows it (the gate), however long they took to come.
            kwargs = json.dumps({"wait_for": str(gate)})
            name = driver(env, "launch", "tests.testapp.workers.sleep_then_finish", "[6]", kwargs)
            token = driver(env, "token", name)

            async def scenario():
                nonlocal daphne
                watchers, views = watch_all(web_port, {name: token}, 5, time.monotonic() + 45)
                await following(views)
                gate.open()
                await asyncio.sleep(2)
                daphne.stop()
                await asyncio.sleep(0.5)
                daphne, _same = await asyncio.to_thread(
                    start_server, server, env=env, port=web_port, name=f"{server}-restart-2"
                )
                return await asyncio.gather(*watchers)

            results = asyncio.run(scenario())
        finally:
            daphne.stop()
            worker.stop()
    for seen in results:
        assert seen.final == "success", (seen.states[-3:], seen.closes)
        assert seen.seqs == sorted(seen.seqs) and len(set(seen.seqs)) == len(seen.seqs)
        assert seen.closes, "the restart cut every watcher off"
    reliability(
        f"{server} restarted while clients watch",
        f"SIGTERM to {server} 2 s into a 6 s task, a new {server} on the same port 0.5 s later; 5 watchers",
        f"{len(results)} of {len(results)} watchers reconnected, resumed with their last seq (no repeats, "
        "nothing out of order) and reached `success`",
    )
