"""Thousands of random hostile frames through ``WebsocketCommunicator``, in-process against real Redis.

The frames and their documented answers come from ``tests/hostile.py``;
``system/test_hostile_daphne.py`` sends them to a real daphne as well.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings

from realtime_async._core.naming import new_task_name
from tests.hostile import EXAMPLES, FRAMES, Answer, Frame, check_answer, expected, sentinel, text_frame
from tests.ws_helpers import MULTI, commit, connected, fake_user, stop_hub, task_path


class Local:
    """A hostile client through ``WebsocketCommunicator``: reconnects after a close."""

    def __init__(self, path: str, user: Any, snapshot: bool = False) -> None:
        self.path, self.user, self.snapshot = path, user, snapshot
        self.comm: WebsocketCommunicator | None = None
        self.count = 0

    async def exchange(self, frame: Frame) -> Answer:
        if self.comm is None:
            self.comm = await connected(self.path, self.user)
            if self.snapshot:
                assert json.loads(await self.comm.receive_from(5))["type"] == "progress"
        self.count += 1
        ping, pong = sentinel(self.count)
        kind, payload = frame
        await self.comm.send_input({"type": "websocket.receive", kind: payload})
        await self.comm.send_input({"type": "websocket.receive", "text": ping})
        frames = []
        while (out := await self.comm.receive_output(5))["type"] == "websocket.send":
            if out.get("text") == pong:
                return Answer(frames=tuple(frames))
            frames.append(out.get("text"))
        assert out["type"] == "websocket.close", out
        await self.close()
        return Answer(close=out.get("code", 1000), frames=tuple(frames))

    async def close(self) -> None:
        if self.comm is not None:
            await self.comm.disconnect()
            self.comm = None


@pytest.mark.reliability
def test_thousands_of_random_frames_in_process(settings, reliability):
    # No flood limit here: every frame reaches the parser on one connection.
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "MAX_MESSAGES_PER_SECOND": 1_000_000}
    seen: dict[str, int] = {}
    hostile, alice = fake_user(), fake_user()
    watched = new_task_name("ws")
    commit(watched, "running", alice.pk, percent=0)
    own = new_task_name("ws")
    commit(own, "running", hostile.pk, percent=0)
    with asyncio.Runner() as runner:
        bystander = runner.run(connected(user=alice))
        runner.run(bystander.send_json_to({"v": 1, "type": "subscribe", "task": watched}))
        seqs = [json.loads(runner.run(bystander.receive_from(5)))["data"]["seq"]]
        multi = Local(MULTI, hostile)
        per_task = Local(task_path(own), hostile, snapshot=True)

        @hypothesis_settings(
            max_examples=2000,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(frame=FRAMES)
        def check(frame: Frame) -> None:
            got = runner.run(multi.exchange(frame))
            check_answer(frame, got, expected(frame, signed_in=True))
            got_per_task = runner.run(per_task.exchange(frame))
            check_answer(frame, got_per_task, expected(frame, per_task=True))
            seen[got.kind()] = seen.get(got.kind(), 0) + 1
            if sum(seen.values()) % 250 == 0:
                seq = commit(watched, "running", alice.pk, percent=len(seqs))
                seqs.append(json.loads(runner.run(bystander.receive_from(10)))["data"]["seq"])
                assert seqs[-1] == seq

        for frame in EXAMPLES + [text_frame("\ud800"), text_frame('{"v": 1, "type": "ping", "id": "\ud800"}')]:
            check = example(frame=frame)(check)
        check()
        runner.run(multi.close())
        runner.run(per_task.close())
        assert runner.run(bystander.receive_nothing(0.2))
        runner.run(bystander.disconnect())
        runner.run(stop_hub())
    frames = sum(seen.values())
    assert frames >= 2000 and seqs == list(range(1, len(seqs) + 1))
    reliability(
        "Thousands of random hostile WebSocket frames (hypothesis), in-process",
        "WebsocketCommunicator sends each frame to ws/realtime-async/ and to a per-task URL; rate limit lifted",
        f"each of {frames} frames got its documented answer on both URLs ({', '.join(sorted(seen))}); no 1011, "
        "no other "
        f"close; bystander got all {len(seqs)} updates and nothing else",
    )
