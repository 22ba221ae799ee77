"""Log lines from a real prefork worker, over real daphne and Redis: every line once, in order, across reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from django.db import connections
from django.test import Client
from websockets.exceptions import ConnectionClosed

from realtime_async._core.store import get_store
from tests.browser_helpers import session_key
from tests.services import start_daphne, wait_for
from tests.system.test_ws_e2e import recv, ws

pytestmark = pytest.mark.django_db(transaction=True)
LINES = 400


@pytest.fixture(scope="module")
def daphne_port(django_db_setup, django_db_blocker):
    proc, port = start_daphne(name="daphne-log")
    yield port
    proc.stop()


def _final(manager, name, timeout=60):
    return wait_for(
        lambda: (r := manager.get_progress(name)) and r["state"] in ("success", "failure", "cancelled", "lost") and r,
        timeout,
        0.1,
        "a final state",
    )


async def _follow(conn, name, got, *, stop_after=None):
    """Read frames, keeping log lines in order as client.js does, asking for gaps; return the final record."""
    asked = False
    while True:
        message = await recv(conn, 20)
        if message["type"] == "log":
            asked = False
            got.extend(line for line in message["lines"] if line["n"] > (got[-1]["n"] if got else 0))
        elif message["type"] == "progress":
            log = message["data"].get("log") or {}
            last = got[-1]["n"] if got else 0
            fresh = [line for line in log.get("lines", []) if line["n"] > last]
            if not asked and log.get("last", 0) > last:
                if fresh and fresh[0]["n"] == last + 1:
                    got.extend(fresh)
                else:  # a gap (or a snapshot without lines): ask, as client.js does
                    asked = True
                    await conn.send(json.dumps({"v": 1, "type": "log", "task": name, "after": last}))
            if message["data"]["state"] in ("success", "failure") and not asked:
                return message["data"]
        if stop_after is not None and len(got) >= stop_after:
            return None


async def _in_thread(func, *args, **kwargs):
    """``func`` in a worker thread that closes its own database connection after (no stray SQLite handle)."""

    def call():
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("log-alice")


async def test_every_line_arrives_once_in_order_across_a_reconnect(celery_worker_proc, manager, daphne_port, alice):
    cookie = await _in_thread(session_key, alice)
    name = await _in_thread(
        manager.launch_async_task, "tests.testapp.workers.chatty", LINES, user=alice, task_kwargs={"delay": 0.005}
    )
    got: list[dict] = []
    async with ws(daphne_port, "/ws/realtime-async/", cookie) as conn:
        await conn.send(json.dumps({"v": 1, "type": "subscribe", "task": name, "log_after": 0}))
        await _follow(conn, name, got, stop_after=LINES // 4)
    # Reconnect with the last line seen, as client.js does: exactly the lines after it, then the stream.
    async with ws(daphne_port, "/ws/realtime-async/", cookie) as conn:
        after = got[-1]["n"]
        await conn.send(json.dumps({"v": 1, "type": "subscribe", "task": name, "log_after": after}))
        final = await _follow(conn, name, got)
    assert final["state"] == "success" and final["log"]["last"] == LINES
    assert [line["n"] for line in got] == list(range(1, LINES + 1))
    assert [line["text"] for line in got[:2]] == ["Row 1 <b>done</b>", "Row 2 <b>done</b>"]
    assert {line["level"] for line in got} == {"info", "warning"}


async def test_no_line_is_lost_or_repeated_across_a_daphne_restart(celery_worker_proc, manager, alice):
    cookie = await _in_thread(session_key, alice)
    daphne, port = await asyncio.to_thread(start_daphne, name="daphne-log-restart-1")
    try:
        name = await _in_thread(
            manager.launch_async_task, "tests.testapp.workers.chatty", 600, user=alice, task_kwargs={"delay": 0.01}
        )
        got: list[dict] = []
        async with ws(port, "/ws/realtime-async/", cookie) as conn:
            await conn.send(json.dumps({"v": 1, "type": "subscribe", "task": name, "log_after": 0}))
            await _follow(conn, name, got, stop_after=100)
            await asyncio.to_thread(daphne.stop)  # the server goes away mid-stream
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await _follow(conn, name, got)  # whatever was on its way, up to the close
        daphne, _ = await asyncio.to_thread(start_daphne, port=port, name="daphne-log-restart-2")
        async with ws(port, "/ws/realtime-async/", cookie) as conn:
            await conn.send(json.dumps({"v": 1, "type": "subscribe", "task": name, "log_after": got[-1]["n"]}))
            final = await _follow(conn, name, got)
    finally:
        await asyncio.to_thread(daphne.stop)
    assert final["state"] == "success"
    assert [line["n"] for line in got] == list(range(1, 601))  # every line once, in order


def test_the_log_outlives_the_task_and_polling_serves_it(celery_worker_proc, manager, django_user_model):
    bob = django_user_model.objects.create_user("log-bob")
    name = manager.launch_async_task("tests.testapp.workers.chatty", 7, user=bob)
    record = _final(manager, name)
    assert record["state"] == "failure" and record["error"] == "Odd number of rows."
    assert record["log"] == {"last": 7, "dropped": 0}
    client = Client()
    client.force_login(bob)
    answer = client.get(f"/realtime-async/progress/{name}/", {"log_after": 5})
    assert answer.status_code == 286
    lines = answer.json()["data"]["log"]["lines"]
    assert [line["text"] for line in lines] == ["Row 6 <b>done</b>", "Row 7 <b>done</b>"]


def test_the_bound_holds_for_a_worker_that_logs_more(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.chatty", 1200)
    record = _final(manager, name)
    # The worker's settings are the test settings: 500 lines kept by default.
    assert record["state"] == "success" and record["log"]["last"] == 1200 and record["log"]["dropped"] == 700
    read = get_store().read_log(name)
    assert [json.loads(line)["n"] for line in read.lines] == list(range(701, 1201))
