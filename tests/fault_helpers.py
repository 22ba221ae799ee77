"""Helpers for fault tests: a driver subprocess and a reconnecting WebSocket watcher."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import websockets

from tests.services import ROOT

FINAL = {"success", "failure", "cancelled", "lost"}
#: Close codes after which a client reconnects (docs/protocol.md).
RETRYABLE = {1001, 1006, 1011, 1012, 1013, 4503}


def driver(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "tests.fault_driver", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, input=stdin,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(done.stderr[-3000:])
    out = done.stdout.strip().splitlines()[-1]
    return json.loads(out) if out[:1] in "{[n" else out


@dataclass
class Watch:
    """What one reconnecting watcher saw."""

    seqs: list[int] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)

    @property
    def final(self) -> str | None:
        return self.states[-1] if self.states and self.states[-1] in FINAL else None


async def watch(
    url: str,
    task: str,
    *,
    token: str | None = None,
    origin: str,
    deadline: float,
    headers: dict[str, str] | None = None,
    seen: Watch | None = None,
) -> Watch:
    """Follow ``task`` to a final state, reconnecting and resuming with the last seq like the JS client.

    ``seen``: the `Watch` to fill (and return), for the test to look at while it follows.
    """
    seen = Watch() if seen is None else seen
    attempt = 0
    while time.monotonic() < deadline and seen.final is None:
        try:
            async with websockets.connect(
                url, origin=origin, additional_headers=headers or {}, open_timeout=5, close_timeout=2
            ) as ws:
                subscribe = {
                    "v": 1,
                    "type": "subscribe",
                    "task": task,
                    "token": token,
                    "seq": seen.seqs[-1] if seen.seqs else None,
                }
                await ws.send(json.dumps(subscribe))
                while time.monotonic() < deadline:
                    raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
                    seen.frames.append(raw)
                    message = json.loads(raw)
                    if message["type"] == "error":
                        seen.errors.append(message)
                        break  # e.g. not_found while Redis has just restarted: retry
                    if message["type"] == "progress":
                        attempt = 0
                        seen.seqs.append(message["data"]["seq"])
                        seen.states.append(message["data"]["state"])
                        if message["data"]["state"] in FINAL:
                            return seen
        except websockets.ConnectionClosed as exc:
            seen.closes.append(exc.rcvd.code if exc.rcvd else None)
            if exc.rcvd and exc.rcvd.code not in RETRYABLE:
                return seen
        except (OSError, TimeoutError, websockets.InvalidStatus):
            seen.closes.append(None)
        attempt += 1
        await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))
    return seen


def watch_all(port: int, tasks: dict[str, str], each: int, deadline: float) -> tuple[list[asyncio.Task], list[Watch]]:
    """``each`` reconnecting watchers (``watch``) of each of ``tasks`` (name: token) on the server at ``port``, and
    what each has seen so far."""
    origin, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws/realtime-async/"
    watchers, views = [], []
    for name, token in tasks.items():
        for _ in range(each):
            views.append(Watch())
            watchers.append(
                asyncio.create_task(watch(url, name, token=token, origin=origin, deadline=deadline, seen=views[-1]))
            )
    return watchers, views


async def following(views: list[Watch]) -> None:
    """Until every watcher has had a record of its task (its snapshot): they follow it."""
    from tests.ws_helpers import until

    await until(lambda: all(view.seqs for view in views), 30, "every watcher to follow its task")
