"""The hub's pub/sub reader (``--only hub_reader``): the server's CPU per message it reads and hands on.

Run in the publisher process (a plain Django process on the run's private redis-server): a
``Subscriber`` (``realtime_async._delivery.pubsub``, what each server's hub reads with) subscribed to
one channel of its own; ``hub_reader_messages`` record-sized messages published in one pipeline
while its loop is busy elsewhere (they wait in the socket and in Redis); then the process CPU and
the wall time until it has handed on the last one, per message. Two ways, in turns,
``hub_reader_rounds`` times each, on the same code:

- *hub*: as the hub reads, off the connection's reply parser, on a RESP2 connection (``async_pool_for``);
- *get_message*: through redis-py's ``PubSub.get_message``, on a RESP3 connection (redis-py 8's
  default), which the ``Subscriber`` falls back to (``_parser_of`` declines RESP3): how every hub read
  before this scenario was added.

The turn of the event loop the ``Subscriber`` takes between two messages is in both.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from bench.figures import dig, num, per_run, ratio_text
from bench.harness import Bench

__all__ = ["measure", "scenario_hub_reader", "section"]

#: The two ways, in the order of each round.
WAYS = ("get_message", "hub")


async def _once(way: str, messages: int) -> tuple[float, float, bool]:
    from realtime_async._core.store import get_store
    from realtime_async._delivery.pubsub import Subscriber, async_pool_for

    client = get_store().client
    pool = async_pool_for(client)
    if way == "get_message":
        pool.connection_kwargs["protocol"] = 3
    prefix = f"bench:hub-reader:{uuid.uuid4().hex}:"
    received = 0
    done = asyncio.get_running_loop().create_future()

    def handed_on(data: bytes) -> None:
        nonlocal received
        received += 1
        if received == messages and not done.done():
            done.set_result(None)

    subscriber = Subscriber(pool, lambda group: prefix + group, "control", handed_on)
    reader = asyncio.create_task(subscriber.run())
    try:
        await subscriber.add("task", required=True)
        off_the_parser = subscriber._parser is not None  # which way this round really read
        pipe = client.pipeline(transaction=False)
        payload = b"x" * 400
        for _ in range(messages):
            pipe.publish(prefix + "task", payload)
        pipe.execute()  # blocks this loop: the subscriber reads nothing meanwhile
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.wait_for(done, 60)
        cpu, wall = (time.process_time() - cpu) / messages * 1e6, (time.perf_counter() - wall) / messages * 1e6
        return cpu, wall, off_the_parser
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await pool.disconnect()


def measure(cmd: dict[str, Any]) -> dict[str, Any]:
    """The publisher's command: ``rounds`` turns of both ways, ``messages`` each; medians and every round."""
    rounds: dict[str, list[tuple[float, float, bool]]] = {way: [] for way in WAYS}
    for _ in range(cmd["rounds"]):
        for way in WAYS:
            rounds[way].append(asyncio.run(_once(way, cmd["messages"])))
    return {
        way: {
            "cpu_us": statistics.median(cpu for cpu, _, _ in done),
            "wall_us": statistics.median(wall for _, wall, _ in done),
            "off_the_parser": all(parser for _, _, parser in done),
            "rounds": [(cpu, wall) for cpu, wall, _ in done],
        }
        for way, done in rounds.items()
    }


def scenario_hub_reader(b: Bench, rep: int) -> dict[str, Any]:
    p = b.plan
    return b.pub.call("hub_reader", 120, messages=p.hub_reader_messages, rounds=p.hub_reader_rounds)


def section(results: dict[str, Any]) -> list[str]:
    """The scenario's part of the report."""
    runs: Sequence[dict[str, Any]] = [run for run in results["runs"] if run.get("hub_reader")]
    if not runs:
        return []
    plan = results["plan"]

    def get(way: str, field: str) -> Any:
        return lambda run: dig(run, "hub_reader", way, field)

    lines = [
        "### The hub's pub/sub reader",
        "",
        f"`--only hub_reader`: {plan['hub_reader_messages']:,} messages of 400 bytes waiting for a `Subscriber`, "
        "then its process CPU and wall time until it handed on the last one, per message; the two ways in turns, "
        f"{plan['hub_reader_rounds']} rounds each, medians (cells are run 1 / run 2 / …).",
        "",
        "| per message | CPU µs | wall µs | CPU ÷ `get_message` |",
        "|---|---|---|---|",
    ]
    labels = {"get_message": "redis-py `get_message`, RESP3 (before)", "hub": "the hub's read off the parser, RESP2"}
    for way in WAYS:
        lines.append(
            f"| {labels[way]} | {per_run(runs, get(way, 'cpu_us'), 1)} | {per_run(runs, get(way, 'wall_us'), 1)} "
            f"| {ratio_text(runs, get(way, 'cpu_us'), get('get_message', 'cpu_us'))} |"
        )
    every = "; ".join(
        f"{way}: " + ", ".join(num(cpu, 1) for cpu, _ in dig(runs[0], "hub_reader", way, "rounds") or [])
        for way in WAYS
    )
    return [*lines, "", f"CPU µs of each round (run 1): {every}."]
