"""The pure parts of the event stream: the query, ``Last-Event-ID``, the waiting records, the poll ETags."""

from __future__ import annotations

import asyncio

import pytest

from realtime_async._delivery.events import parse_query
from realtime_async._delivery.streams import HEARTBEAT, EventStream
from realtime_async._web import etags


class FakeHub:
    def __init__(self) -> None:
        self.watching: set[str] = set()

    async def watch(self, task, watcher) -> None:
        self.watching.add(task)

    async def unwatch(self, task, watcher) -> None:
        self.watching.discard(task)


def test_the_query_keeps_each_task_once_in_order_and_pairs_tokens_with_their_tasks():
    query = parse_query(
        [("task", "b"), ("task", "a"), ("task", "b"), ("token", "a:1kx:sig"), ("token", "junk"), ("x", "y")], None
    )
    assert query.tasks == ["b", "a"]
    assert query.tokens == {"a": "a:1kx:sig"}
    assert query.resume is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("job-1:7", ("job-1", 7)),
        ("a:b:c:12", ("a:b:c", 12)),  # task names may hold colons: the seq is after the last one
        ("job-1:0", None),
        ("job-1:-3", None),
        ("job-1:7.5", None),
        ("job-1:" + "9" * 40, None),
        ("job-1", None),
        ("", None),
        (None, None),
    ],
)
def test_last_event_id_is_task_and_seq_or_nothing(header, expected):
    assert parse_query([("task", "x")], header).resume == expected


def run(coro):
    return asyncio.run(coro)


async def _stream(*tasks: str, heartbeat: float = 0.05, max_bytes: int = 10_000) -> tuple[EventStream, FakeHub]:
    hub = FakeHub()
    stream = EventStream(hub, heartbeat=heartbeat, max_bytes=max_bytes)
    await stream.watch(list(tasks))
    return stream, hub


def test_a_slow_client_costs_one_waiting_record_per_task_and_finals_stay():
    async def scenario():
        stream, hub = await _stream("a", "b")
        await stream.start("a", ("{}", 1, False), "A1")
        await stream.start("b", ("{}", 1, False), "B1")
        for seq in range(2, 50):
            await stream.hub_deliver("a", seq, f"A{seq}", False)
        await stream.hub_deliver("b", 2, "B2", True)
        await stream.hub_deliver("b", 3, "B3", False)  # after a final: nothing more of that run
        await stream.hub_deliver("a", 49, "A49 again", False)  # the same seq twice: once
        assert stream.pending == {"a": (49, "A49", False), "b": (2, "B2", True)}
        chunks = stream.chunks()
        first = await anext(chunks)
        assert first == (
            b"retry: 2000\n\nid: a:1\ndata: A1\n\nid: b:1\ndata: B1\n\nid: a:49\ndata: A49\n\nid: b:2\ndata: B2\n\n"
        )
        assert await anext(chunks) == HEARTBEAT  # nothing waits: a heartbeat after the interval
        assert hub.watching == {"a"}, "the final record ended b's watch once written"
        await stream.hub_deliver("a", 10, "old", False)  # older than what was sent: dropped
        await stream.hub_deliver("a", 50, "A50", False)
        assert await anext(chunks) == b"id: a:50\ndata: A50\n\n"
        await chunks.aclose()
        assert hub.watching == set(), "closing leaves every group"

    run(scenario())


def test_a_heartbeat_comes_after_a_whole_quiet_interval_and_records_keep_it_away():
    async def scenario():
        stream, hub = await _stream("a", heartbeat=0.3, max_bytes=10_000)
        await stream.start("a", ("{}", 1, False), "A1")
        loop = asyncio.get_running_loop()
        chunks = stream.chunks()
        await anext(chunks)  # the start
        began = loop.time()

        async def records():
            for seq in range(2, 6):  # one every 0.2 s: never a quiet interval of 0.3 s
                await asyncio.sleep(0.2)
                await stream.hub_deliver("a", seq, f"A{seq}", False)

        feeding = asyncio.ensure_future(records())
        got = [await anext(chunks) for _ in range(4)]
        assert got == [f"id: a:{seq}\ndata: A{seq}\n\n".encode() for seq in range(2, 6)], "no heartbeat between"
        last = loop.time()
        assert await anext(chunks) == HEARTBEAT
        assert loop.time() - last >= 0.29, "a heartbeat only after a whole interval without records"
        assert loop.time() - began < 5
        await feeding
        await chunks.aclose()
        assert stream._beat_timer is None, "closing cancels the heartbeat's timer"

    run(scenario())


def test_a_waiting_writer_lets_records_go_out_at_once_and_takes_over_when_the_client_is_behind():
    async def scenario():
        stream, hub = await _stream("a", heartbeat=5, max_bytes=200)
        await stream.start("a", ("{}", 1, False), "A1")
        now: list[bytes] = []
        taking = True
        stream.write_now = lambda chunk: taking and (now.append(chunk) or True)
        chunks = stream.chunks()
        await anext(chunks)  # the start
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0)  # the writer waits
        await stream.hub_deliver("a", 2, "A2", False)
        await stream.hub_deliver("a", 3, "A3", False)
        assert now == [b"id: a:2\ndata: A2\n\n", b"id: a:3\ndata: A3\n\n"], "written at once, in order"
        assert stream.pending == {} and stream.sent["a"] == 3 and not waiting.done()
        await stream.hub_deliver("a", 3, "A3 again", False)  # already sent: nothing
        taking = False  # the client is behind: the writer takes the record and waits for it
        await stream.hub_deliver("a", 4, "A4", False)
        assert await waiting == b"id: a:4\ndata: A4\n\n"
        taking = True
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0)
        await stream.hub_deliver("a", 5, "A5", True)  # a final record: through the writer, which leaves the group
        assert await waiting == b"id: a:5\ndata: A5\n\n"
        assert len(now) == 2, "a final record is not written at once"
        await chunks.aclose()

    run(scenario())


def test_records_written_at_once_count_towards_the_streams_byte_limit():
    async def scenario():
        stream, hub = await _stream("a", heartbeat=5, max_bytes=100)
        await stream.start("a", ("{}", 1, False), None)
        stream.write_now = lambda chunk: True
        chunks = stream.chunks()
        await anext(chunks)
        ending = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0)
        for seq in range(2, 12):
            await stream.hub_deliver("a", seq, "x" * 20, False)
        with pytest.raises(StopAsyncIteration):  # past max_bytes: the stream ends, the client resumes
            await asyncio.wait_for(ending, 2)
        assert stream.written >= 100
        assert hub.watching == set()

    run(scenario())


def test_the_snapshot_decides_what_is_new_and_a_known_seq_sends_nothing():
    async def scenario():
        stream, _ = await _stream("a")
        await stream.hub_deliver("a", 3, "A3 before the snapshot", False)
        await stream.start("a", ("{}", 4, False), None)  # the client has seq 4 (Last-Event-ID)
        chunks = stream.chunks()
        assert await anext(chunks) == b"retry: 2000\n\n"
        await stream.hub_deliver("a", 5, "A5", False)
        assert await anext(chunks) == b"id: a:5\ndata: A5\n\n"
        await chunks.aclose()

    run(scenario())


def test_a_stream_ends_after_its_byte_budget_and_when_the_hub_fails():
    async def scenario():
        stream, hub = await _stream("a", heartbeat=5, max_bytes=40)
        await stream.start("a", ("{}", 1, False), "x" * 50)
        assert [chunk async for chunk in stream.chunks()] == [b"retry: 2000\n\nid: a:1\ndata: " + b"x" * 50 + b"\n\n"]
        stream, hub = await _stream("a")
        await stream.start("a", ("{}", 1, False), None)
        chunks = stream.chunks()
        await anext(chunks)
        await stream.hub_failed()
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)
        assert stream.live == set(), "a failed hub forgot its watchers: nothing to leave"

    run(scenario())


RECORD = {"seq": 7, "created_at": 1700000000.25}


def test_a_poll_etag_names_one_state_one_representation_one_viewer():
    viewer = etags.credentials("session-1", None)
    tag = etags.issue("job", RECORD, etags.json_variant(None), viewer, now=1000)
    assert tag.startswith('"7-')
    same = {"task": "job", "record": RECORD, "variant": etags.json_variant(None), "viewer": viewer}
    assert etags.matches([tag], **same, now=1001) == tag
    assert etags.matches(["W/" + tag], **same, now=1001) == tag, "a weak validator names the same state"
    for change in (
        {"task": "job2"},
        {"record": {**RECORD, "seq": 8}},
        {"record": {**RECORD, "created_at": 1.0}},  # a relaunch under the same name
        {"variant": etags.json_variant(3)},
        {"viewer": etags.credentials("session-2", None)},
        {"viewer": etags.credentials("session-1", "a token")},
    ):
        assert etags.matches([tag], **{**same, **change}, now=1001) is None, change
    assert etags.matches([tag], **same, max_age=60, now=1060) == tag
    assert etags.matches([tag], **same, max_age=60, now=1061) is None, "the fast path asks Django again after a minute"
    forged = tag[:-3] + ('0"' if tag[-2] != "0" else '1"')
    for bad in (forged, '"7-3e8"', '"7-zz-abc"', '"7-' + "f" * 13 + '-abc"', "*", ""):
        assert etags.matches([bad], **same, now=1001) is None, bad


def test_names_past_twice_the_limit_are_not_even_answered(monkeypatch):
    from realtime_async._delivery import events

    async def scenario():
        hub = FakeHub()
        monkeypatch.setattr(events, "get_hub", lambda: hub)
        monkeypatch.setattr(events, "_read_all", lambda user, tasks, tokens: dict.fromkeys(tasks))
        query = parse_query([("task", f"t{i}") for i in range(5000)], None)
        opened = await events.open_stream(None, ("10.0.0.9", 1), query)
        assert isinstance(opened, events.Opened)
        head = b"".join(opened.stream.head)
        await opened.release()
        return head

    from django.test import override_settings

    with override_settings(REALTIME_ASYNC={"MAX_SUBSCRIPTIONS": 3}):
        head = run(scenario())
    assert head.count(b'"code":"not_found"') == 3  # served, but unknown
    assert head.count(b'"code":"limit"') == 3
    assert b'"t6"' not in head


def test_a_stream_stops_counting_before_it_leaves_its_groups(monkeypatch):
    """Leaving may wait for Redis or be cancelled (the server gave up on the app): the client may be back already."""
    from realtime_async._delivery import events
    from realtime_async._delivery.limits import CONNECTIONS

    class StuckHub(FakeHub):
        async def unwatch(self, task, watcher) -> None:
            await asyncio.Event().wait()  # Redis away

    async def scenario():
        monkeypatch.setattr(events, "get_hub", StuckHub)
        monkeypatch.setattr(events, "_read_all", lambda user, tasks, tokens: {"t": ("{}", 1, False)})
        opened = await events.open_stream(None, ("10.0.0.8", 1), parse_query([("task", "t")], None))
        assert isinstance(opened, events.Opened)
        assert CONNECTIONS["anon:10.0.0.8"] == 1
        release = asyncio.ensure_future(opened.release())
        await asyncio.sleep(0.05)
        assert CONNECTIONS["anon:10.0.0.8"] == 0, "still counted while it leaves its groups"
        release.cancel()
        await asyncio.gather(release, return_exceptions=True)
        await opened.release()  # once, however often called
        assert CONNECTIONS["anon:10.0.0.8"] == 0

    run(scenario())
