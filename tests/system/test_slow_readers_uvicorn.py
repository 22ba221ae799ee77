"""A WebSocket client that stops reading, on a real uvicorn: it holds up no one and is closed after the bound.

uvicorn's ``send`` waits while a connection's write buffer is full. The hub hands
each update to every watcher in turn, so a consumer that awaited that ``send``
would hold up every other connection of the process behind one frozen tab
(until uvicorn's ping timeout, about 40 s). ``_delivery.sending._QueuedSender``
sends from a writer task per connection instead; these tests show the bystander
served at full rate and the stalled client closed after ``STALLED_CLOSE_AFTER``.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from realtime_async.protocol import CLOSE_STALLED
from tests.services import start_uvicorn, wait_for
from tests.slow_reader_helpers import SETTINGS_ENV, Publisher, RawWebSocket, Reader
from tests.system.test_slow_readers import (
    _assert_in_order_to_the_end,
    _new_tasks,
    _read_until_closed,
    _stop,
    _subscribed,
    _until_finals,
)

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

TASKS = 50
BOUND = 2.0


def test_a_stalled_websocket_on_uvicorn_holds_up_no_one_and_is_closed(reliability):
    env = {SETTINGS_ENV: json.dumps({"STALLED_CLOSE_AFTER": BOUND}), "RA_TEST_MAX_CONNECTIONS": "64"}
    proc, port = start_uvicorn(app="tests.slow_reader_helpers:application", env=env, name="uvicorn-slow-readers")
    sockets: list[RawWebSocket] = []
    publisher: Publisher | None = None
    try:
        tasks = _new_tasks(TASKS)
        names = [name for name, _ in tasks]
        bystander = _subscribed(port, tasks, rcvbuf=None)
        stalled = _subscribed(port, tasks)  # reads nothing, then again once the server gave up on it
        silent = _subscribed(port, tasks)  # never reads again
        sockets += [bystander, stalled, silent]
        watcher = Reader(bystander, "bystander")
        watcher.start()
        publisher = Publisher(names, message_chars=3000)  # the kernel's buffers fill in seconds
        publisher.start()
        started = time.monotonic()

        def noticed(ws: RawWebSocket) -> bool:
            line = f"client 127.0.0.1:{ws.local_port} read nothing for {BOUND:g} s; closing it with {CLOSE_STALLED}"
            return line in proc.output()

        wait_for(lambda: noticed(stalled) and noticed(silent), 60, 0.1, "the stalls to be noticed")
        assert time.monotonic() - started >= BOUND
        # Reading again: what was buffered, in order, then the close frame with its code.
        _, code = _read_until_closed(stalled, 10)
        assert code == CLOSE_STALLED
        # The one that never reads is dropped after the grace.
        wait_for(
            lambda: f"client 127.0.0.1:{silent.local_port} took no close frame" in proc.output(), 20, 0.1, "the drop"
        )
        finals = publisher.finish()
        publisher = None
        elapsed = time.monotonic() - started
        _until_finals([watcher], finals)
        watcher.stop()
        assert watcher.closed is None, "the bystander was closed"
        records = watcher.progress()
        _assert_in_order_to_the_end("bystander", records, finals)
        # The bystander got about every update (10 a second per task), not a trickle behind the stalled ones.
        assert len(records) >= 0.5 * TASKS * 10 * (elapsed - 1), (len(records), elapsed)
        latencies = [
            got - message["data"]["data"]["t"]
            for got, message in watcher.got
            if message.get("type") == "progress" and isinstance((message["data"].get("data") or {}).get("t"), float)
        ]
        assert latencies and statistics.median(latencies) < 1.0, "a generous bound: about 1 ms when idle"
        assert proc.popen.poll() is None and "Traceback" not in proc.output()
    finally:
        _stop(proc, sockets, publisher)
    reliability(
        "WebSocket clients that stop reading, on uvicorn",
        f"2 raw sockets (4 KiB receive buffer) subscribed to {TASKS} tasks on a real uvicorn with "
        f"STALLED_CLOSE_AFTER = {BOUND:g} s stop reading while every task reports 10 times a second; "
        "one reads again once the server gave up on it, one never does; a bystander reads all the while",
        "the bystander got at least half of every update throughout, in order, to every final state, and was "
        f"never closed; both stalled clients were closed with {CLOSE_STALLED}: the one reading again got what was "
        f"buffered (seq only growing per task), then the close frame; the other was aborted after the grace",
    )
