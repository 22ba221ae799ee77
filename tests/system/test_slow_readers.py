"""Clients that stop reading, on a real daphne: bounded memory, a served bystander, a retryable close.

Each stalled client is a raw TCP socket that does the WebSocket handshake with a
4 KiB ``SO_RCVBUF``, subscribes to 50 tasks with watch tokens, reads their
snapshots and then reads nothing, while the test writes a running update of
each task ten times a second with a 600-character message (500 frames a second
per connection). Without per-connection backpressure daphne buffered every one
of them: 20 such clients grew its RSS by about 37 MB in 20 s, which
``test_stalled_readers_cost_bounded_memory`` fails on (run it with
``start_slow_reader_daphne(backpressure=False)`` to see).

These run on daphne alone, not on each ``server``: ``_delivery.backpressure``
reads daphne's (Twisted's) write buffer, and the bounds below are measured for
it. On uvicorn the package sees nothing but a ``send`` that waits while the
transport's buffer is full (``_delivery.sending``): another mechanism, tested on its own.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections import defaultdict
from typing import Any

import pytest

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._delivery import backpressure
from realtime_async._writing.writer import get_writer
from realtime_async.async_manager import AsyncManager
from realtime_async.protocol import CLOSE_STALLED
from tests.services import wait_for
from tests.slow_reader_helpers import Closed, Publisher, RawWebSocket, Reader, rss_kb, start_slow_reader_daphne

TASKS = 50
STALLED = 20
STALL_SECONDS = 20.0
#: RSS growth allowed for 20 stalled connections x 50 subscriptions: far below the ~37 MB without backpressure.
RSS_BOUND_MB = 10
#: A generous bound on the bystander's median latency while the others stall (about 1 ms here when idle).
BYSTANDER_MEDIAN_MS = 100


def _new_tasks(n: int) -> list[tuple[str, str]]:
    manager, writer = AsyncManager.resolve_manager(), get_writer()
    tasks = []
    for _ in range(n):
        name = new_task_name("slow")
        writer.commit({"task": name, "state": "running", "owner": None}, mode=WriteMode.CREATE, wait=True)  # type: ignore[typeddict-item]
        tasks.append((name, manager.make_watch_token(name)))
    return tasks


def _subscribed(port: int, tasks: list[tuple[str, str]], *, rcvbuf: int | None = 4096) -> RawWebSocket:
    """A connection subscribed to every task, its snapshots read (the burst fits the rate limit's)."""
    ws = RawWebSocket(port, rcvbuf=rcvbuf)
    for name, token in tasks:
        ws.subscribe(name, token)
    snapshots = {ws.read_json()["task"] for _ in tasks}
    assert snapshots == {name for name, _ in tasks}
    return ws


def _by_task(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for record in records:
        seqs[record["task"]].append(record["seq"])
    return seqs


def _assert_in_order_to_the_end(label: str, records: list[dict[str, Any]], finals: dict[str, int]) -> None:
    """Per task: seq only grows (nothing twice, nothing out of order) and the last record is the final one."""
    seqs = _by_task(records)
    assert set(seqs) == set(finals), label
    for task, got in seqs.items():
        assert got == sorted(set(got)), (label, task, got)
        assert got[-1] == finals[task], (label, task, got[-5:], finals[task])
    last = {record["task"]: record for record in records}
    assert {record["state"] for record in last.values()} == {"success"}, label


def _read_until_closed(ws: RawWebSocket, timeout: float) -> tuple[list[dict[str, Any]], int | None]:
    """A stalled client reading again: the progress records buffered for it (each task's seq only growing),
    then its close code."""
    records = []
    with pytest.raises(Closed) as closed:
        for _ in range(100_000):
            message = ws.read_json(timeout=timeout)
            if message["type"] == "progress":
                records.append(message["data"])
    for task, seqs in _by_task(records).items():
        assert seqs == sorted(set(seqs)), (task, seqs)
    return records, closed.value.code


def _stop(proc: Any, sockets: list[RawWebSocket], publisher: Publisher | None) -> None:
    """The end of a run: the publisher if it still runs, the sockets, the server."""
    if publisher is not None:
        with contextlib.suppress(BaseException):
            publisher.finish()
    for ws in sockets:
        ws.close()
    proc.stop()


def _until_finals(readers: list[Reader], finals: dict[str, int], within: float = 30.0) -> None:
    def done() -> bool:
        for reader in readers:
            assert reader.error is None, reader.error
            seen = {record["task"] for record in reader.progress() if record["state"] == "success"}
            if seen != set(finals):
                return False
        return True

    wait_for(done, within, 0.1, "every final state")


@pytest.mark.slow
@pytest.mark.reliability
def test_stalled_readers_cost_bounded_memory(reliability):
    # STALLED_CLOSE_AFTER off: the bound must come from backpressure alone, not from closing the stalled.
    proc, port = start_slow_reader_daphne(STALLED_CLOSE_AFTER=None)
    sockets: list[RawWebSocket] = []
    publisher: Publisher | None = None
    try:
        tasks = _new_tasks(TASKS)
        names = [name for name, _ in tasks]
        bystander = _subscribed(port, tasks, rcvbuf=None)
        sockets.append(bystander)
        stalled = [_subscribed(port, tasks) for _ in range(STALLED)]
        sockets += stalled
        watcher = Reader(bystander, "bystander")
        watcher.start()
        time.sleep(1.0)  # settled: every subscription made, nothing published yet
        rss0 = peak = rss_kb(proc.popen.pid)
        publisher = Publisher(names)
        publisher.start()
        started = time.time()
        deadline = time.monotonic() + STALL_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.5)
            peak = max(peak, rss_kb(proc.popen.pid))
            assert publisher.error is None, publisher.error
        resumed_at = time.time()
        newest = dict(publisher.last_seq)
        readers = [Reader(ws, f"stalled-{k}") for k, ws in enumerate(stalled)]
        for reader in readers:
            reader.start()
        time.sleep(3.0)  # the newest held state of each task, then the stream
        finals = publisher.finish()
        _until_finals([watcher, *readers], finals)
        for reader in (watcher, *readers):
            reader.stop()
        publisher = None
    finally:
        _stop(proc, sockets, publisher)

    growth_mb = (peak - rss0) / 1024
    assert growth_mb < RSS_BOUND_MB, f"daphne's RSS grew by {growth_mb:.1f} MB with {STALLED} stalled readers"

    # The bystander: every update in order, every final state, and low latency while the others stalled.
    _assert_in_order_to_the_end("bystander", watcher.progress(), finals)
    sent_at = [(arrived, (message["data"]["data"] or {}).get("t", 0)) for arrived, message in watcher.got]
    latencies = [(arrived - t) * 1000 for arrived, t in sent_at if started <= t <= resumed_at]
    assert len(latencies) > STALL_SECONDS * TASKS * 10 * 0.5, len(latencies)  # the publisher kept its pace
    median = statistics.median(latencies)
    assert median < BYSTANDER_MEDIAN_MS, f"bystander median {median:.1f} ms"

    # Each stalled client, once it reads again: what was in the buffers, then the newest state of each
    # task (not the backlog of every update), then the stream; in order per task, to the final state.
    bystander_frames = len(watcher.progress())
    for reader in readers:
        records = reader.progress()
        _assert_in_order_to_the_end(reader.name, records, finals)
        arrivals = [(at, message["data"]) for at, message in reader.got if message["type"] == "progress"]
        prompt = {
            record["task"] for at, record in arrivals if at < resumed_at + 5 and record["seq"] >= newest[record["task"]]
        }
        assert prompt == set(names), (reader.name, sorted(set(names) - prompt)[:3])
        assert len(records) < bystander_frames * 0.6, (reader.name, len(records), bystander_frames)
    skipped = min(bystander_frames - len(reader.progress()) for reader in readers)
    assert skipped > 1000, skipped
    reliability(
        "WebSocket clients that stop reading",
        f"{STALLED} raw sockets (4 KiB receive buffer) to a real daphne (STALLED_CLOSE_AFTER off), each "
        f"subscribed to the same {TASKS} tasks, read nothing for {STALL_SECONDS:g} s while every task reports "
        "10 times a second with a 600-character message; a bystander reads all the while; then the stalled "
        "clients read again",
        f"daphne's RSS grew by less than {RSS_BOUND_MB} MB (each stalled connection holds the newest "
        "frame per task); the bystander's updates came in order per task, every final state too, median "
        f"latency under {BYSTANDER_MEDIAN_MS} ms; each stalled client then got the newest state of every task "
        "within 5 s, then the stream, seq only growing per task, up to every final state, skipping over "
        "1,000 intermediate states",
    )


@pytest.mark.slow
@pytest.mark.reliability
def test_a_stalled_connection_is_closed_with_a_retryable_code(reliability):
    bound = 2.0
    proc, port = start_slow_reader_daphne(STALLED_CLOSE_AFTER=bound)
    sockets: list[RawWebSocket] = []
    publisher: Publisher | None = None
    try:
        tasks = _new_tasks(TASKS)
        names = [name for name, _ in tasks]
        bystander = _subscribed(port, tasks, rcvbuf=None)
        stalled = _subscribed(port, tasks)
        silent = _subscribed(port, tasks)  # never reads again
        sockets += [bystander, stalled, silent]
        stalled_port, silent_port = stalled.local_port, silent.local_port
        watcher = Reader(bystander, "bystander")
        watcher.start()
        publisher = Publisher(names)
        publisher.start()
        stopped = time.monotonic()

        def noticed(port: int) -> bool:
            return f":{port}) read nothing for {bound:g} s; closing it with {CLOSE_STALLED}" in proc.output()

        wait_for(lambda: noticed(stalled_port), 40, 0.05, "the stall to be noticed")
        assert time.monotonic() - stopped >= bound
        # It reads again within CLOSE_GRACE: what was buffered, then the close frame with the code.
        records, code = _read_until_closed(stalled, backpressure.CLOSE_GRACE)
        assert code == CLOSE_STALLED
        # The one that never reads again is closed too, and dropped after the grace (daphne logs it).
        disconnected = re.compile(rf'127\.0\.0\.1:{silent_port} - - \[[^]]+\] "WSDISCONNECT')
        wait_for(lambda: noticed(silent_port), 20, 0.1, "the silent client's stall to be noticed")
        wait_for(
            lambda: disconnected.search(proc.output()), backpressure.CLOSE_GRACE + 5, 0.1, "the silent client dropped"
        )
        # The client resumes where it was: each task's current state, newer than what it had, then the stream.
        last = {task: seqs[-1] for task, seqs in _by_task(records).items()}
        again = RawWebSocket(port)
        sockets.append(again)
        for name, token in tasks:
            again.subscribe(name, token, last.get(name))
        snapshots = [again.read_json()["data"] for _ in tasks]
        assert all(record["seq"] >= last.get(record["task"], 0) for record in snapshots)
        resumed = Reader(again, "resumed")
        resumed.start()
        time.sleep(1.0)
        finals = publisher.finish()
        publisher = None
        _until_finals([watcher, resumed], finals)
        watcher.stop()
        resumed.stop()
        assert watcher.closed is None, "the bystander was closed"
        _assert_in_order_to_the_end("bystander", watcher.progress(), finals)
        _assert_in_order_to_the_end("resumed", snapshots + resumed.progress(), finals)
        assert proc.popen.poll() is None and "Traceback" not in proc.output()
    finally:
        _stop(proc, sockets, publisher)
    reliability(
        "A WebSocket client that stays stalled",
        f"raw sockets (4 KiB receive buffer) subscribed to {TASKS} tasks on a real daphne with "
        f"STALLED_CLOSE_AFTER = {bound:g} s stop reading while every task reports 10 times a second; "
        "one reads again once the server gave up on it, one never does; a bystander reads all the while",
        f"both closed with {CLOSE_STALLED} at least {bound:g} s after they stopped reading; the one reading again "
        "got what was buffered (seq only growing per task), then the close frame; the other was dropped after "
        f"the {backpressure.CLOSE_GRACE:g} s grace; resubscribing with the last seq brought each task's "
        "current state, then the stream, to every final state; the bystander was never closed",
    )


# -- the valve alone, on a fake transport ------------------------------------------------------
class FakeTransport:
    """What a Twisted TCP transport does with a streaming producer, with a buffer of ``limit`` frames."""

    def __init__(self, limit: int = 2) -> None:
        self.limit, self.buffered, self.written = limit, 0, []
        self.producer: Any = None
        self.streamingProducer = False
        self.producerPaused = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802 - Twisted's names
        assert self.producer is None, "a producer is registered already"
        self.producer, self.streamingProducer = producer, streaming

    def unregisterProducer(self) -> None:  # noqa: N802
        self.producer = None

    def write(self, data: Any) -> None:
        self.written.append(data)
        self.buffered += 1
        if self.buffered > self.limit and self.producer is not None:
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.buffered = 0
        if self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()


class FakeProtocol:
    STATE_OPEN, STATE_CLOSED = 1, 3

    def __init__(self, transport: FakeTransport) -> None:
        self.transport, self.state = transport, self.STATE_OPEN
        self.closeHandshakeTimeout = 1
        self.dropped = False

    def sendPreparedMessage(self, prepared: str) -> None:  # noqa: N802
        self.transport.write(prepared)

    def dropConnection(self, abort: bool = False) -> None:  # noqa: N802
        self.dropped, self.state = abort, self.STATE_CLOSED


class Previous:
    """daphne's HTTP channel, which stays registered after the upgrade: the valve passes each call on."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:  # noqa: N802
        self.calls.append("pause")

    def resumeProducing(self) -> None:  # noqa: N802
        self.calls.append("resume")

    def stopProducing(self) -> None:  # noqa: N802
        self.calls.append("stop")


async def test_the_valve_holds_the_newest_frame_per_task_in_order():
    transport = FakeTransport(limit=2)
    previous = Previous()
    transport.registerProducer(previous, True)
    protocol = FakeProtocol(transport)
    valve = backpressure.attach(protocol, on_stalled=None)
    assert valve is not None and transport.producer is valve and valve.previous is previous
    for frame in ("a1", "b1", "a2"):  # the third passes the limit: paused after it is written
        valve.send(frame, frame[0], final=False)
    assert valve.paused and previous.calls == ["pause"]
    valve.send("a3", "a", False)
    valve.send("pong", None, False)  # this connection's own frame: kept, in its place
    valve.send("b2", "b", False)
    valve.send("a4", "a", False)  # replaces a3, after the pong
    valve.send("b3F", "b", True)  # a final state drops b2 and is kept
    valve.send("b4", "b", False)  # a new run under the name, after its final state
    assert list(valve.held.values()) == ["pong", "a4", "b3F", "b4"]
    transport.drain()  # writes until the buffer is over its limit again
    assert transport.written == ["a1", "b1", "a2", "pong", "a4", "b3F"]
    assert valve.paused and list(valve.held.values()) == ["b4"]
    valve.flush(force=True)  # before a close: everything, whatever the buffer
    assert transport.written[-1] == "b4" and not valve.held
    transport.drain()
    valve.send("c1", "c", False)  # not paused, nothing held: written at once
    assert transport.written[-1] == "c1"
    valve.stopProducing()
    # Passed on as the transport makes them: Twisted pauses its producer at every write past the limit.
    assert previous.calls == ["pause", "resume", "pause", "pause", "resume", "stop"]


async def test_a_valve_paused_too_long_closes_its_connection(monkeypatch):
    from django.test import override_settings

    monkeypatch.setattr(backpressure, "CLOSE_GRACE", 0.1)
    transport = FakeTransport(limit=0)
    protocol = FakeProtocol(transport)
    stalled: list[bool] = []
    with override_settings(REALTIME_ASYNC={"STALLED_CLOSE_AFTER": 0.1}):
        valve = backpressure.attach(protocol, on_stalled=lambda: stalled.append(True))
    assert valve is not None
    valve.send("a1", "a", False)
    valve.send("a2", "a", False)
    assert valve.paused and list(valve.held) == ["a"]
    transport.drain()  # a2 written: paused again, a new bound from here
    valve.send("a3", "a", False)
    await _sleep(0.06)
    transport.drain()
    valve.send("a4", "a", False)
    await _sleep(0.06)
    assert not stalled  # resumed within the bound each time
    await _sleep(0.1)
    assert stalled == [True] and not valve.held and protocol.closeHandshakeTimeout == 0.1
    valve.send("a5", "a", False)
    assert not valve.held  # closing: nothing more is kept
    await _sleep(1.2)  # CLOSE_GRACE + 1
    assert protocol.dropped  # the close frame did not go out: the connection is aborted


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_other_transports_keep_writing_as_before():
    class PullProducerTransport(FakeTransport):
        pass

    transport = PullProducerTransport()
    transport.registerProducer(Previous(), False)  # a pull producer is not ours to chain
    assert backpressure.attach(FakeProtocol(transport), on_stalled=None) is None
    assert backpressure.attach(object(), on_stalled=None) is None  # no transport at all
