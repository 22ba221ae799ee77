"""The Server-Sent Events endpoint on real servers (daphne, then uvicorn), with real Redis and sessions.

What ``docs/protocol.md`` ("Server-Sent Events") promises: the WebSocket's records,
snapshot then stream, resume by ``Last-Event-ID``, the same authorization and
limits, heartbeats, the end of a stream after ``SSE_MAX_BYTES``, and a client that
stops reading held to one record per task and cut off after ``STALLED_CLOSE_AFTER``.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from realtime_async._core.access import make_watch_token
from tests.browser_helpers import session_key
from tests.fault_helpers import driver
from tests.services import private_redis, start_server, start_worker
from tests.sse_helpers import Stream, events_path
from tests.ws_helpers import acommit, new_task, until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def port(server, django_db_setup, django_db_blocker):
    """The module's server (daphne, then uvicorn), with short heartbeats and a small stream budget."""
    env = {
        "RA_TEST_SSE_HEARTBEAT": "0.5",
        "RA_TEST_SSE_MAX_BYTES": "20000",
        "RA_TEST_MAX_SUBSCRIPTIONS": "3",
    }
    proc, port = start_server(server, env=env, name=f"{server}-sse")
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def stalling(server, django_db_setup, django_db_blocker):
    """A server with a short stall bound and a budget far above what the stall test sends; (process, port)."""
    env = {"RA_TEST_STALLED_CLOSE_AFTER": "2", "RA_TEST_SSE_MAX_BYTES": str(100 * 2**20)}
    proc, port = start_server(server, env=env, name=f"{server}-sse-stall")
    yield proc, port
    proc.stop()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice-sse", password="x")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob-sse", password="x")


@pytest.fixture
def as_alice(alice) -> dict[str, str]:
    """The headers of alice's session (sessions live in the shared cache, users in the shared database)."""
    return {"Cookie": f"sessionid={session_key(alice)}"}


async def test_snapshot_then_every_update_in_order_with_the_websocket_messages(port, alice, as_alice):
    name = await new_task(alice.pk, message="waiting")
    stream = await Stream.open(port, events_path(name), as_alice)
    try:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["x-accel-buffering"] == "no"
        assert "no-cache" in stream.headers["cache-control"]
        assert "Cookie" in stream.headers["vary"]
        assert (await stream.event()) == {"retry": 2000}
        first = await stream.progress()
        assert first["id"] == f"{name}:1"
        assert first["data"]["type"] == "progress" and first["data"]["task"] == name
        assert first["data"]["data"]["message"] == "waiting"
        for percent in (10, 20, 30):
            await acommit(name, "running", alice.pk, percent=percent)
        seqs = []
        while not seqs or seqs[-1] < 4:
            event = await stream.progress()
            seq = event["data"]["data"]["seq"]
            assert event["id"] == f"{name}:{seq}"
            seqs.append(seq)
        assert seqs == sorted(set(seqs)), "in order, none twice"
        await acommit(name, "success", alice.pk, result={"rows": 3})
        final = await stream.progress()
        assert final["data"]["data"]["state"] == "success" and final["data"]["data"]["result"] == {"rows": 3}
        # The final record ended the task's part; the stream stays open with heartbeats only.
        await acommit(name, "running", alice.pk, percent=1)
        before = stream.comments
        with pytest.raises(TimeoutError):
            await stream.progress(within=1.5)
        assert stream.comments > before, "heartbeats keep the stream alive"
    finally:
        await stream.close()


async def test_one_answer_for_unknown_foreign_and_invalid_tasks_and_the_limit(port, alice, as_alice, bob):
    mine = [await new_task(alice.pk) for _ in range(2)]
    theirs = await new_task(bob.pk)
    # MAX_SUBSCRIPTIONS is 3 on this server: the first three valid names are served, found or not.
    tasks = [mine[0], theirs, "no-such-task-here", "bad name/", mine[1]]
    stream = await Stream.open(port, events_path(*tasks), as_alice)
    try:
        assert stream.status == 200
        answers = [(await stream.progress())["data"] for _ in range(len(tasks))]
        by_kind = sorted((a["type"], a.get("code", ""), a.get("task", "")) for a in answers)
        assert by_kind == sorted(
            [("progress", "", mine[0])]
            + [("error", "not_found", theirs), ("error", "not_found", "no-such-task-here")]
            + [("error", "not_found", "")]  # an invalid name is not repeated back
            + [("error", "limit", mine[1])]
        )
        errors = [a for a in answers if a["type"] == "error"]
        assert {a["message"] for a in errors if a["code"] == "not_found"} == {"No such task."}
    finally:
        await stream.close()


async def test_watch_tokens_open_their_own_task_only(port, alice, as_alice):
    shown, other = await new_task(alice.pk), await new_task(alice.pk)
    path = events_path(shown, other, tokens=(make_watch_token(shown),))
    stream = await Stream.open(port, path)  # anonymous
    try:
        answers = {(a := (await stream.progress())["data"])["type"]: a for _ in range(2)}
        assert answers["progress"]["task"] == shown
        refusal = {"v": 1, "type": "error", "code": "not_found", "message": "No such task.", "task": other}
        assert answers["error"] == refusal
    finally:
        await stream.close()


async def test_last_event_id_skips_the_snapshot_the_client_has_and_nothing_else(port, alice, as_alice):
    name, other = await new_task(alice.pk), await new_task(alice.pk)
    seq = await acommit(name, "running", alice.pk, percent=5)
    for last_event_id, expect_snapshot in [
        (f"{name}:{seq}", False),
        (f"{name}:{seq - 1}", True),  # older: the client is behind
        (f"{name}:{seq + 50}", True),  # a seq the task has not reached: as absent
        ("garbage", True),
        (f"{name}:-1", True),
        (f"{other}:1", True),  # another task's id says nothing about this one
    ]:
        stream = await Stream.open(port, events_path(name), {**as_alice, "Last-Event-ID": last_event_id})
        try:
            await stream.event()  # retry
            if expect_snapshot:
                assert (await stream.progress())["id"] == f"{name}:{seq}", last_event_id
            else:
                with pytest.raises(TimeoutError):
                    await stream.progress(within=1)
            await acommit(name, "running", alice.pk, percent=6)
            seq = (await stream.progress())["data"]["data"]["seq"]  # the stream goes on either way
        finally:
            await stream.close()


async def test_refusals_come_before_the_stream(port, alice, as_alice):
    stream = await Stream.open(port, "/ra/realtime-async/events/", as_alice)
    assert stream.status == 400
    assert b'"bad_request"' in await stream.body()
    await stream.close()


async def test_a_stream_ends_after_its_byte_budget_and_the_client_resumes(port, alice, as_alice):
    name = await new_task(alice.pk)
    stream = await Stream.open(port, events_path(name), as_alice)
    last = None
    try:
        with pytest.raises(EOFError):  # SSE_MAX_BYTES is 20,000 on this server
            for percent in range(200):
                await acommit(name, "running", alice.pk, percent=percent / 2, message="x" * 400)
                while True:
                    event = await stream.progress()
                    last = event["id"]
                    if event["data"]["data"]["percent"] == percent / 2:
                        break
    finally:
        await stream.close()
    assert last is not None
    resumed = await Stream.open(port, events_path(name), {**as_alice, "Last-Event-ID": last})
    try:
        await resumed.event()
        await acommit(name, "success", alice.pk)
        seen = int(last.rpartition(":")[2])
        while (event := await resumed.progress())["data"]["data"]["state"] != "success":
            # What the ended stream had not sent yet comes first (its snapshot), never what it had.
            assert event["data"]["data"]["seq"] > seen
            seen = event["data"]["data"]["seq"]
    finally:
        await resumed.close()


async def test_streams_and_websockets_count_against_one_connection_limit(port, alice, as_alice):
    name = await new_task(alice.pk)
    opened = []
    try:
        for _ in range(20):  # MAX_CONNECTIONS_PER_USER on the test project
            opened.append(stream := await Stream.open(port, events_path(name), as_alice))
            assert stream.status == 200
        refused = await Stream.open(port, events_path(name), as_alice)
        assert refused.status == 429 and refused.headers["retry-after"]
        await refused.close()
        await opened.pop().close()
        await asyncio.sleep(0.5)  # the server sees the close
        again = await Stream.open(port, events_path(name), as_alice)
        opened.append(again)
        assert again.status == 200
    finally:
        for stream in opened:
            await stream.close()


@pytest.mark.reliability
async def test_a_client_that_stops_reading_costs_one_record_per_task_and_is_cut_off(
    stalling, server, alice, as_alice, reliability
):
    proc, port = stalling
    name = await new_task(alice.pk)
    stream = await Stream.open(port, events_path(name), as_alice, rcvbuf=4096)
    pad = "x" * 30_000
    try:
        await stream.progress()  # the snapshot; from now on the client reads nothing
        written = 0
        for percent in range(600):  # about 18 MB of records
            await acommit(name, "running", alice.pk, percent=percent / 6, data={"pad": pad})
            written += len(pad)
        await asyncio.sleep(2 + 3)  # STALLED_CLOSE_AFTER is 2 on this server
        received = 0
        with pytest.raises((EOFError, ConnectionError, asyncio.IncompleteReadError)):
            while True:
                event = await stream.progress(within=10)
                received += len(event["data"]["data"]["data"]["pad"])
        # What the buffers held when the client stopped (the kernel's on loopback grow to a few MB), not every
        # record: the rest was superseded and dropped.
        assert received < written / 2, (received, written)
        assert "an event stream's client read nothing for 2.0s; aborted" in proc.output()
        reliability(
            f"An event stream's client stops reading ({server})",
            "a client with a 4 KiB receive buffer reads the snapshot, then nothing while 600 records of 30 KB "
            "(18 MB) are written; STALLED_CLOSE_AFTER 2 s",
            "the connection was aborted after the stall bound; the client got less than half the bytes written "
            "(superseded records dropped); a new stream got the latest record at once",
        )
    finally:
        await stream.close()
    # The server goes on serving everyone else.
    again = await Stream.open(port, events_path(name), as_alice)
    try:
        assert again.status == 200
        assert (await again.progress())["data"]["data"]["percent"] == 599 / 6
    finally:
        await again.close()


async def test_an_unchanged_poll_is_answered_by_the_router_with_the_tag_it_was_given(port, alice, as_alice):
    name = await new_task(alice.pk)
    path = f"/ra/realtime-async/progress/{name}/"
    first = await Stream.open(port, path, {**as_alice, "Accept": "application/json"})
    assert first.status == 200
    await first.body()
    await first.close()
    tag = first.headers["etag"]
    await asyncio.sleep(1.1)  # Django would issue a new tag now (another second); the router gives it back
    for _ in range(3):
        again = await Stream.open(port, path, {**as_alice, "Accept": "application/json", "If-None-Match": tag})
        assert (again.status, again.headers["etag"]) == (304, tag)
        assert "no-store" in again.headers["cache-control"]
        await again.close()
    await acommit(name, "running", alice.pk, percent=3)
    changed = await Stream.open(port, path, {**as_alice, "Accept": "application/json", "If-None-Match": tag})
    assert changed.status == 200 and changed.headers["etag"] != tag
    assert b'"percent":3' in await changed.body()
    await changed.close()


async def follow(port: int, name: str, token: str, deadline: float, seen: dict) -> dict:
    """Watch ``name`` as ``EventSource`` would: on an ended stream reconnect with ``Last-Event-ID``, on 503 retry.

    What it sees goes into ``seen`` (``new_seen()``), which the test may look at meanwhile; it returns it.
    """
    last_id: str | None = None
    while time.monotonic() < deadline:
        try:
            stream = await Stream.open(port, events_path(name, tokens=(token,)), {"Last-Event-ID": last_id or ""})
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            if stream.status != 200:
                seen["refused"] += 1
                await asyncio.sleep(1)
                continue
            while True:
                event = await stream.progress(within=max(0.1, deadline - time.monotonic()))
                record = event["data"]["data"]
                last_id = event["id"]
                seen["seqs"].append(record["seq"])
                seen["states"].append(record["state"])
                if record["state"] in ("success", "failure", "cancelled", "lost"):
                    return seen
        except (EOFError, ConnectionError, asyncio.IncompleteReadError):
            seen["ends"] += 1
            await asyncio.sleep(0.5)  # the stream's retry, shortened
        finally:
            await stream.close()
    return seen


def new_seen() -> dict:
    return {"seqs": [], "states": [], "ends": 0, "refused": 0}


@pytest.mark.slow
@pytest.mark.reliability
def test_streams_end_when_redis_restarts_and_their_clients_resume_to_the_final_state(server, reliability, gate):
    with private_redis() as (url, redis_proc, port):
        env = {"RA_TEST_REDIS_URL": url, "RA_TEST_PREFIX": f"sse-fault-{port}"}
        worker = start_worker(env=env, name="worker-sse-redis-restart")
        web, web_port = start_server(server, env=env, name=f"{server}-sse-redis-restart")
        try:
            # Its 6 s begin once every stream follows it (the gate), however long they took to come.
            kwargs = json.dumps({"wait_for": str(gate)})
            name = driver(env, "launch", "tests.testapp.workers.sleep_then_finish", "[6]", kwargs)
            token = driver(env, "token", name)

            async def scenario():
                deadline = time.monotonic() + 45
                views = [new_seen() for _ in range(3)]
                watchers = [asyncio.create_task(follow(web_port, name, token, deadline, seen)) for seen in views]
                await until(lambda: all(seen["seqs"] for seen in views), 30, "every stream to follow the task")
                gate.open()
                await asyncio.sleep(2)  # the streams are following the running task
                redis_proc.stop()
                await asyncio.sleep(1)
                with private_redis(port) as _restarted:
                    return await asyncio.gather(*watchers), driver(env, "state", name)

            results, final = asyncio.run(scenario())
        finally:
            web.stop()
            worker.stop()
    assert final["state"] == "success", final
    for seen in results:
        assert seen["states"][-1] == "success", seen
        assert seen["seqs"] == sorted(seen["seqs"]), seen["seqs"]  # never backwards, across reconnects
        assert seen["ends"] >= 1, seen  # the stream was cut off and resumed
    assert "Traceback" not in web.output(), web.output()[-3000:]
    reliability(
        f"Redis restarted under event streams ({server})",
        "private redis-server stopped for 1 s and started on the same port while 3 SSE clients follow a task, "
        "reconnecting with Last-Event-ID as EventSource does",
        f"task ended `{final['state']}`; {len(results)} of {len(results)} streams were ended by the server and "
        "resumed to it; seq never went backwards; no traceback in the server's log",
    )


async def test_log_lines_ride_in_the_streamed_records(port, alice, as_alice):
    from realtime_async.async_manager import AsyncManager

    name = await new_task(alice.pk)
    stream = await Stream.open(port, events_path(name), as_alice)
    manager = AsyncManager.resolve_manager()
    try:
        await stream.progress()  # the snapshot

        def report() -> None:
            manager.log(name, "Row 31 skipped: no e-mail", level="warning")
            manager.update_progress(name, "Importing", current=31, total=40)

        await asyncio.to_thread(report)
        lines = []
        while not lines:
            record = (await stream.progress())["data"]["data"]
            lines = (record.get("log") or {}).get("lines") or []
        assert [(line["level"], line["text"]) for line in lines] == [("warning", "Row 31 skipped: no e-mail")]
    finally:
        await stream.close()
