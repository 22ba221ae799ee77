"""The worker side: a plain Django process publishing updates, the way a Celery task body would.

One process per configuration (``RA_BENCH_RESULT_BACKEND`` set for the
celery-progress publisher only). Commands (see ``bench.agent``) measure the
worker-side cost of each way to publish, launch tasks, and publish paced
updates for the end-to-end and fan-out scenarios. Every loop is bounded by a
count and a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import statistics
import time
import uuid
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

import redis  # noqa: E402
from asgiref.sync import async_to_sync  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from django.conf import settings  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from bench import celery as _celery  # noqa: E402,F401 - makes the bench's Celery app the current one
from bench import hub_reader  # noqa: E402
from bench.agent import serve  # noqa: E402
from bench.naive import EVENT_TYPE, naive_group  # noqa: E402
from realtime_async import Part  # noqa: E402
from realtime_async._core.naming import group_for_task  # noqa: E402
from realtime_async._core.store import get_store  # noqa: E402
from realtime_async._writing import writer as writer_module  # noqa: E402
from realtime_async._writing.sender import broadcast, wait_sent  # noqa: E402
from realtime_async._writing.writer import get_writer, log_line, progress_change  # noqa: E402
from realtime_async.async_manager import AsyncManager  # noqa: E402

#: What update_progress is compared with: a state record of about the same size.
_RECORD_LIKE = json.dumps({"seq": 1, "task": "x" * 30, "state": "running", "message": "Step 3/5", "data": {"t": 0}})
_redis = redis.Redis.from_url(settings.REDIS_URL)


def noop() -> None:
    """The function launched tasks name (no worker runs them)."""


def _manager() -> AsyncManager:
    return AsyncManager.resolve_manager()


def _rate(progress_rate: float):
    return override_settings(REALTIME_ASYNC={**settings.REALTIME_ASYNC, "PROGRESS_RATE": progress_rate})


def _drain_broadcasts() -> None:
    # The sender sends in order: once an empty broadcast is through, so is every earlier one.
    wait_sent(broadcast((), {}), timeout=30)


def _pace(count: int, rate: float, deadline: float, spread: int = 1):
    """Yield ``(i, j)`` for ``count`` rounds at ``rate`` a second of ``spread`` slots each, spaced evenly
    (many tasks are not updated in one burst), stopping at ``deadline`` (monotonic)."""
    start = time.monotonic()
    for i in range(count):
        for j in range(spread):
            wait = start + (i + j / spread) / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if time.monotonic() > deadline:
                return
            yield i, j


def _timed(call, n: int, gap: float, budget: float) -> tuple[list[float], float]:
    """Time ``call(i)`` n times (µs, wall) with ``gap`` s between calls; also answer CPU µs per call."""
    samples: list[float] = []
    deadline = time.monotonic() + budget
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t0) * 1e6)
        if time.monotonic() > deadline:
            break
        if gap:
            time.sleep(gap)
    return samples, (time.process_time() - cpu0) * 1e6 / max(1, len(samples))


def _summary(samples: list[float], cpu: float | None = None) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_us": statistics.median(ordered),
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "mean_us": statistics.fmean(ordered),
        "cpu_us": cpu,
    }


#: The stages of the task the stage measurement runs in (the issue's example).
_STAGES = ["Load", "Process", "Save"]


def _new_task(manager: AsyncManager, prefix: str, stages: list[str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    return manager.launch_async_task("bench.publisher.noop", task_name=name, stages=stages)


def _start(manager: AsyncManager, task: str) -> None:
    """Mark ``task`` running and track it in this process, as ``realtime_async._writing.worker.run`` does before
    calling the task's function (its heartbeat aside): ``update_progress`` then has the launch metadata
    at hand instead of reading it from Redis at every write."""
    record = manager.get_progress(task)
    assert record is not None
    now = time.time()
    record.update(state="running", started_at=now, updated_at=now)
    writer = get_writer()
    stored = writer.commit(record).record()
    assert stored is not None
    writer.track(stored, get_store().read_meta(task))


def _started_task(manager: AsyncManager, prefix: str, stages: list[str] | None = None) -> str:
    task = _new_task(manager, prefix, stages)
    _start(manager, task)
    return task


def _seq(manager: AsyncManager, task: str) -> int:
    return (manager.get_progress(task) or {}).get("seq", 0)


def _hot(calls: dict[str, Any], seconds: float, max_calls: int, slices: int = 5) -> dict[str, Any]:
    """Time each ``calls[key](i)`` back to back (µs, wall), ``seconds`` and ``max_calls`` in all per key, in
    ``slices`` turns taken one key after the other (a neighbour's burst of load then weighs on every key alike).

    Answers ``{key: (samples, CPU µs per call, last i)}``, once the trailing write of every last call is stored.
    """
    samples: dict[str, list[float]] = {key: [] for key in calls}
    cpu: dict[str, float] = dict.fromkeys(calls, 0.0)
    for _ in range(slices):
        for key, call in calls.items():
            done = samples[key]
            deadline = time.monotonic() + seconds / slices
            cpu0 = time.process_time()
            for i in range(len(done), min(max_calls, len(done) + max_calls // slices)):
                t0 = time.perf_counter()
                call(i)
                done.append((time.perf_counter() - t0) * 1e6)
                if time.monotonic() > deadline:
                    break
            cpu[key] += time.process_time() - cpu0
    # Coalescing must keep the last update: the scheduler thread writes it within one interval.
    time.sleep(0.35)
    _drain_broadcasts()
    return {key: (done, cpu[key] * 1e6 / len(done), len(done) - 1) for key, done in samples.items()}


# -- commands ---------------------------------------------------------------------
def worker_cost(cmd: dict[str, Any]) -> dict[str, Any]:
    """Per call: raw SET, update_progress and log() publishing, the same coalesced (plain, inside a stage,
    log()), async_to_sync(group_send)."""
    n, gap, budget = cmd["n"], cmd["gap"], cmd["budget"]
    manager = _manager()
    out: dict[str, Any] = {}
    key = f"{settings.PREFIX}:bench-set"
    for _ in range(20):  # connections and caches warm
        _redis.set(key, _RECORD_LIKE)
    samples, cpu = _timed(lambda i: _redis.set(key, _RECORD_LIKE), n, gap, budget)
    out["raw_set"] = _summary(samples, cpu)

    def progress(task: str, i: int, total: int, message: str = "Step") -> None:
        manager.update_progress(task, message, current=i, total=total, data={"t": time.time(), "i": i})

    def log(task: str, i: int) -> None:
        manager.log(task, f"Row {i} skipped", level="info")

    with _rate(1e9):
        # As in a worker (the task started in this process), then from a process that did not start it;
        # then log() alone: every call a write that carries one log line (update_progress's carry none).
        for key, make, call in (
            ("update_progress_publish", _started_task, progress),
            ("update_progress_untracked", _new_task, progress),
            ("log_publish", _started_task, None),
        ):
            task = make(manager, "cost")
            for i in range(20):
                progress(task, i, n, "warm-up")
            if call is None:
                for i in range(20):
                    log(task, -i)
            _drain_broadcasts()
            cpu0 = time.process_time()
            if call is None:
                samples, _ = _timed(lambda i, task=task: log(task, i), n, gap, budget)
            else:
                samples, _ = _timed(lambda i, task=task: progress(task, i, n), n, gap, budget)
            _drain_broadcasts()  # the sender thread's work belongs to the call's cost
            out[key] = _summary(samples, (time.process_time() - cpu0) * 1e6 / len(samples))
            manager.finish(task, "success")

    hot_seconds, hot_max = cmd["hot_seconds"], cmd["hot_max"]
    with _rate(10):  # the default PROGRESS_RATE: at most 10 writes a second, the latest wins
        # The same loop three ways, in turns: update_progress, the same inside a stage, log() alone.
        plain, staged, logged = (
            _started_task(manager, "hot"),
            _started_task(manager, "stage", stages=_STAGES),
            _started_task(manager, "log"),
        )
        with manager.stage(staged, "Process"):
            time.sleep(0.15)  # past the interval of the write that entered the stage
            seq0 = {task: _seq(manager, task) for task in (plain, staged, logged)}
            timed = _hot(
                {
                    "update_progress_hot": lambda i: progress(plain, i, hot_max),
                    "update_progress_stage_hot": lambda i: progress(staged, i, hot_max),
                    "log_hot": lambda i: log(logged, i),
                },
                hot_seconds,
                hot_max,
            )
            stored = {task: manager.get_progress(task) or {} for task in (plain, staged, logged)}
        for key, task in (("update_progress_hot", plain), ("update_progress_stage_hot", staged), ("log_hot", logged)):
            hot, cpu, last = timed[key]
            out[key] = {
                **_summary(hot, cpu),
                "calls": len(hot),
                "writes": stored[task].get("seq", 0) - seq0[task],
                "last_kept": (stored[task].get("data") or {}).get("i") == last,
            }
        stage = next((s for s in stored[staged].get("stages") or () if s["name"] == "Process"), {})
        out["update_progress_stage_hot"]["last_kept"] &= stored[staged].get("stage") == "Process" and (
            stage.get("state") == "active"
        )
        written = get_store().read_log(logged)
        newest = json.loads(written.lines[-1]) if written.lines else {}
        out["log_hot"].update(
            last_kept=newest.get("text") == f"Row {timed['log_hot'][2]} skipped",
            lines_numbered=written.last,  # the store numbers every line, kept or dropped by the bound
            lines_kept=len(written.lines),
            lines_dropped=written.dropped,
        )
        for task in (plain, staged, logged):
            manager.finish(task, "success")

    layer = get_channel_layer()
    group = group_for_task("bench-cost")
    message = {"type": "bench.noop", "data": {"t": 0.0}}
    send = async_to_sync(layer.group_send)
    for _ in range(5):
        send(group, message)
    samples, cpu = _timed(lambda i: send(group, message), cmd["n_group_send"], gap, budget)
    out["async_to_sync_group_send"] = _summary(samples, cpu)
    return out


def launch_cost(cmd: dict[str, Any]) -> dict[str, Any]:
    """launch_async_task, with and without a conflict lock, against Celery's own apply_async."""
    from realtime_async.tasks import run_async_task

    manager = _manager()
    n, budget = cmd["n"], cmd["budget"]
    tag = uuid.uuid4().hex[:8]
    for i in range(5):
        _new_task(manager, f"warm-{tag}-{i}")
    plain, cpu_plain = _timed(lambda i: _new_task(manager, f"launch-{tag}-{i}"), n, 0, budget)
    locked, cpu_locked = _timed(
        lambda i: manager.launch_async_task(
            "bench.publisher.noop", task_name=f"lock-{tag}-{i}", conflict_ids={"bench.item": [f"{tag}-{i}"]}
        ),
        n,
        0,
        budget,
    )
    kwargs = {"func_path": "bench.publisher.noop", "args": [], "kwargs": {}, "manager_path": ""}
    celery, cpu_celery = _timed(
        lambda i: run_async_task.apply_async(
            kwargs={**kwargs, "task_name": f"raw-{tag}-{i}"}, task_id=f"raw-{tag}-{i}"
        ),
        n,
        0,
        budget,
    )
    return {
        "launch": _summary(plain, cpu_plain),
        "launch_locked": _summary(locked, cpu_locked),
        "celery_apply_async": _summary(celery, cpu_celery),
    }


def create_tasks(cmd: dict[str, Any]) -> dict[str, Any]:
    manager = _manager()
    names = [_started_task(manager, cmd.get("prefix", "bench")) for _ in range(cmd["n"])]
    return {"tasks": [[name, manager.make_watch_token(name)] for name in names]}


def run_ours(cmd: dict[str, Any]) -> dict[str, Any]:
    """update_progress on every task at ``rate`` a second, ``count`` times, then finish them all.

    ``message_chars`` pads each update's message to that length (the slow-readers scenario's 600).
    ``with_log``: every update also logs one line, carried by the same write (what ``update_progress``
    then ``log()`` write together at the default ``PROGRESS_RATE``; at 1e9 each call would write alone,
    and the log-only write would repeat the update before it to the watchers).
    """
    manager = _manager()
    tasks: list[str] = cmd["tasks"]
    count, rate, pad = cmd["count"], cmd["rate"], cmd.get("message_chars", 0)
    deadline = time.monotonic() + count / rate * 2 + 10
    times: list[float] = []
    with_log = cmd.get("with_log", False)
    with _rate(cmd.get("progress_rate", 1e9)):
        t0 = time.time()
        for i, j in _pace(count, rate, deadline, len(tasks)):
            now = time.time()
            message = f"t={now:.6f}".ljust(pad, ".")
            if with_log:  # one write: the progress change and the line (manager.log's own path, writer.change)
                change = progress_change(message, i + 1, count, None, {"t": now, "i": i})
                written, tracker = get_writer().change(tasks[j], change, line=log_line(f"Row {i} skipped", "info"))
                manager._written(tasks[j], written, tracker)
            else:
                manager.update_progress(tasks[j], message, current=i + 1, total=count, data={"t": now, "i": i})
            if j == 0:
                times.append(now)
        published = time.time()
        for task in tasks:
            manager.finish(task, "success", result={"n": count})
    return {"sent": len(times), "t0": t0, "published": published, "done": time.time(), "times": times}


def run_events(cmd: dict[str, Any]) -> dict[str, Any]:
    """The tutorial way (``async_to_sync(group_send)`` per update), the floor (redis-py PUBLISH), or
    realtime_async's sender thread to a bare channels_redis receiver (the channel layer without daphne)."""
    count, rate, step = cmd["count"], cmd["rate"], cmd["step"]
    deadline = time.monotonic() + count / rate * 2 + 10
    if cmd["via"] == "floor":
        channel = cmd["channel"]

        def send(event: dict[str, Any]) -> None:
            _redis.publish(channel, json.dumps(event))
    elif cmd["via"] == "layer":
        # realtime_async's own sender (one persistent loop) straight to a channels_redis receiver.
        group = cmd["group"]

        def send(event: dict[str, Any]) -> None:
            broadcast((group,), {"type": "bench.event", "data": event})
    else:
        layer = get_channel_layer()
        group_send = async_to_sync(layer.group_send)
        groups = [naive_group(g) for g in cmd["groups"]]

        def send(event: dict[str, Any], j: int | None = None) -> None:
            for group in groups if j is None else groups[j : j + 1]:
                group_send(group, {"type": EVENT_TYPE, "data": event})

    spread = len(cmd.get("groups") or [None])
    t0 = time.time()
    sent = 0
    for i, j in _pace(count, rate, deadline, spread):
        if spread > 1:
            send({"t": time.time(), "i": i, "step": step, "final": False}, j)
        else:
            send({"t": time.time(), "i": i, "step": step, "final": False})
        if j == 0:
            sent += 1
    published = time.time()
    send({"t": time.time(), "i": count, "step": step, "final": True})
    if cmd["via"] == "layer":
        _drain_broadcasts()
    return {"sent": sent, "t0": t0, "published": published, "done": time.time()}


# -- celery-progress -----------------------------------------------------------------
class _TaskStub:
    """What celery-progress's recorders use of a bound Celery task: ``request.id`` and ``update_state``."""

    def __init__(self, task_id: str) -> None:
        from celery import current_app

        self.request = type("Request", (), {"id": task_id})()
        self.backend = current_app.backend

    def update_state(self, task_id: str | None = None, state: str | None = None, meta: Any = None) -> None:
        self.backend.store_result(task_id or self.request.id, meta, state)


def _celery_progress_final(task_id: str, result: Any) -> None:
    """What the worker does at the end: store SUCCESS, then celery-progress's task_postrun push."""
    from celery_progress.backend import KnownResult, Progress
    from celery_progress.websockets.backend import WebSocketProgressRecorder

    _TaskStub(task_id).backend.store_result(task_id, result, "SUCCESS")
    data = Progress(KnownResult(task_id, result, "SUCCESS")).get_info()
    WebSocketProgressRecorder.push_update(task_id, data=data, final=True)


def celery_progress_cost(cmd: dict[str, Any]) -> dict[str, Any]:
    from celery_progress.backend import ProgressRecorder
    from celery_progress.websockets.backend import WebSocketProgressRecorder

    n, gap, budget = cmd["n"], cmd["gap"], cmd["budget"]
    out = {}
    for name, cls in (("celery_progress_poll", ProgressRecorder), ("celery_progress_ws", WebSocketProgressRecorder)):
        recorder = cls(_TaskStub(str(uuid.uuid4())))
        for i in range(5):
            recorder.set_progress(i, n, "warm-up")
        samples, cpu = _timed(lambda i, r=recorder: r.set_progress(i, n, f"x 0 {time.time()}"), n, gap, budget)
        out[name] = _summary(samples, cpu)
    return out


def run_celery_progress(cmd: dict[str, Any]) -> dict[str, Any]:
    """celery-progress's recorder at ``rate`` a second (WebSocket or polling mode), then its final push."""
    from celery_progress.backend import ProgressRecorder
    from celery_progress.websockets.backend import WebSocketProgressRecorder

    count, rate, step, task_id = cmd["count"], cmd["rate"], cmd["step"], cmd["task_id"]
    recorder = (WebSocketProgressRecorder if cmd["mode"] == "ws" else ProgressRecorder)(_TaskStub(task_id))
    deadline = time.monotonic() + count / rate * 2 + 10
    t0 = time.time()
    times = []
    for i, _ in _pace(count, rate, deadline):
        now = time.time()
        recorder.set_progress(i + 1, count, f"{step} {i} {now:.6f}")
        times.append(now)
    published = time.time()
    if cmd["mode"] == "ws":
        _celery_progress_final(task_id, {"t": time.time(), "step": step})
    return {"sent": len(times), "t0": t0, "published": published, "done": time.time(), "times": times}


def redis_cost_updates(cmd: dict[str, Any]) -> dict[str, Any]:
    """Updates ``first`` .. ``first + count - 1`` at ``rate`` a second, each one write that publishes, and nothing
    else: what the Redis-cost scenario counts (``bench.redis_cost``); with ``final``, then the final state.

    ``kind``: ``ours`` (``update_progress``, ``PROGRESS_RATE`` 1e9, answered once the sender thread has sent every
    broadcast), ``celery_progress`` (its ``WebSocketProgressRecorder``: ``update_state`` on the result backend,
    then ``group_send``), ``floor`` (redis-py ``SET`` of a record-sized value, then ``PUBLISH``).
    """
    kind, count, rate, step, first = cmd["kind"], cmd["count"], cmd["rate"], cmd["step"], cmd.get("first", 0)
    total = cmd.get("total", 100_000)
    deadline = time.monotonic() + count / rate * 2 + 10
    if kind == "ours":
        manager, task = _manager(), cmd["task"]

        def update(i: int, now: float) -> None:
            manager.update_progress(task, f"t={now:.6f}", current=i + 1, total=total, data={"t": now, "i": i})

        def final() -> None:
            manager.finish(task, "success", result={"n": first + count})
    elif kind == "celery_progress":
        from celery_progress.websockets.backend import WebSocketProgressRecorder

        recorder = WebSocketProgressRecorder(_TaskStub(cmd["task_id"]))

        def update(i: int, now: float) -> None:
            recorder.set_progress(i + 1, total, f"{step} {i} {now:.6f}")

        def final() -> None:
            _celery_progress_final(cmd["task_id"], {"t": time.time(), "step": step})
    else:
        key, channel = f"{settings.PREFIX}:bench-floor-{step}", cmd["channel"]

        def update(i: int, now: float) -> None:
            _redis.set(key, _RECORD_LIKE)
            _redis.publish(channel, json.dumps({"t": now, "i": i, "step": step, "final": False}))

        def final() -> None:
            _redis.publish(channel, json.dumps({"t": time.time(), "i": first + count, "step": step, "final": True}))

    sent = 0
    with _rate(1e9):
        t0 = time.time()
        for i, _ in _pace(count, rate, deadline):
            update(first + i, time.time())
            sent += 1
        if kind == "ours":
            _drain_broadcasts()
        published = time.time()
        if cmd.get("final"):
            final()
            if kind == "ours":
                _drain_broadcasts()
    return {"sent": sent, "t0": t0, "published": published, "done": time.time()}


def poll_setup(cmd: dict[str, Any]) -> dict[str, Any]:
    """A running task to poll (realtime_async) or a task id in PROGRESS (celery-progress)."""
    if cmd["kind"] == "celery_progress":
        from celery_progress.backend import ProgressRecorder

        task_id = str(uuid.uuid4())
        ProgressRecorder(_TaskStub(task_id)).set_progress(3, 10, f"x 0 {time.time()}")
        return {"task_id": task_id}
    manager = _manager()
    with _rate(1e9):
        task = _started_task(manager, "poll")
        manager.update_progress(task, "Step 3/10", current=3, total=10, data={"t": time.time(), "i": 0})
        _drain_broadcasts()
    return {"task": task, "token": manager.make_watch_token(task)}


def jitter_updates(cmd: dict[str, Any]) -> dict[str, Any]:
    """Updates at random gaps for ``seconds`` (what a poller sees, and how late): answers their times."""
    gap_min, gap_max, seconds = cmd["gap_min"], cmd["gap_max"], cmd["seconds"]
    deadline = time.monotonic() + seconds
    times: list[float] = []
    if cmd["kind"] == "celery_progress":
        from celery_progress.backend import ProgressRecorder

        recorder = ProgressRecorder(_TaskStub(cmd["task_id"]))

        def update(i: int, now: float) -> None:
            recorder.set_progress(i + 1, 10_000, f"x {i} {now:.6f}")
    else:
        manager = _manager()

        def update(i: int, now: float) -> None:
            manager.update_progress(cmd["task"], f"t={now:.6f}", current=i + 1, total=10_000, data={"t": now, "i": i})

    with _rate(1e9):
        for i in range(10_000):
            if time.monotonic() > deadline:
                break
            now = time.time()
            update(i, now)
            times.append(now)
            time.sleep(random.uniform(gap_min, gap_max))
    return {"times": times}


def poll_tasks(cmd: dict[str, Any]) -> dict[str, Any]:
    """``n`` running tasks with one update each, as ``poll_setup`` makes one (the many pollers' tasks)."""
    manager = _manager()
    out = []
    with _rate(1e9):
        for _ in range(cmd["n"]):
            task = _started_task(manager, "polls")
            manager.update_progress(task, "Step 3/10", current=3, total=10, data={"t": time.time(), "i": 0})
            out.append([task, manager.make_watch_token(task)])
        _drain_broadcasts()
    return {"tasks": out}


def rotate_updates(cmd: dict[str, Any]) -> dict[str, Any]:
    """One task after the other updated at ``rate`` a second in all, for ``seconds`` (at most ``max`` updates)."""
    manager = _manager()
    tasks: list[str] = cmd["tasks"]
    count = min(cmd.get("max", 100_000), round(cmd["rate"] * cmd["seconds"]))
    deadline = time.monotonic() + cmd["seconds"] + 5
    sent = 0
    with _rate(1e9):
        for i, _ in _pace(count, cmd["rate"], deadline):
            now = time.time()
            manager.update_progress(tasks[i % len(tasks)], f"t={now:.6f}", current=4, total=10, data={"t": now})
            sent += 1
    return {"sent": sent}


def features(cmd: dict[str, Any]) -> dict[str, Any]:
    """What the package under test offers: the runner leaves out, and reports, what it lacks."""
    from realtime_async import routing

    return {"http_router": hasattr(routing, "ProgressHttpRouter")}


# -- groups (``--only groups``) -----------------------------------------------------
#: The Celery queue the groups scenario enqueues to: nothing consumes it, ``purge_nowhere`` empties it.
NOWHERE = "realtime-async-bench-nowhere"


def _launch_group(manager: AsyncManager, size: int, prefix: str) -> str:
    parts = [Part("bench.publisher.noop", weight=1 + i % 3, title=f"Chunk {i}") for i in range(size)]
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    return manager.launch_async_group(parts, task_name=name, title=f"{size} chunks", queue=NOWHERE)


def _start_part(name: str) -> int:
    """Mark a queued part running and track it here, as its worker would (``_start`` for a part): its seq."""
    raw = get_store().read_state(name)
    assert raw is not None, name
    record = json.loads(raw)
    now = time.time()
    record.update(state="running", started_at=now, updated_at=now)
    writer = get_writer()
    stored = writer.commit(record).record()
    assert stored is not None
    writer.track(stored, {})
    return int(stored["seq"])


def _part_seq(name: str) -> int:
    raw = get_store().read_state(name)
    return int(json.loads(raw).get("seq", 0)) if raw else 0


@contextlib.contextmanager
def _parent_interval(interval: float | None):
    """Parents published at most once per ``interval`` s whatever ``PROGRESS_RATE`` says (None: as it says):
    the part's own writes at ``PROGRESS_RATE`` 1e9, its parent at the default rate's interval."""
    if interval is None:
        yield
        return
    original = writer_module.group_link
    writer_module.group_link = lambda parent, owner: dataclasses.replace(original(parent, owner), interval=interval)
    try:
        yield
    finally:
        writer_module.group_link = original


def group_cost(cmd: dict[str, Any]) -> dict[str, Any]:
    """A part's publishing ``update_progress`` (``PROGRESS_RATE`` 1e9: every call writes the part and its
    parent) in a group of each size, beside a plain task's, in interleaved slices (one after the other,
    ``slices`` turns, the order rotated each turn) so that a neighbour's burst of load weighs on all alike;
    then the same three in a hot loop at the default rate (coalesced, ``_hot``'s turns)."""
    n, gap, budget, slices = cmd["n"], cmd["gap"], cmd["budget"], cmd.get("slices", 5)
    manager = _manager()
    out: dict[str, Any] = {}
    with _rate(1e9):
        tasks = {"group_update_plain": _started_task(manager, "gcost")}
        parents: dict[str, str] = {}
        for size in cmd["sizes"]:
            parent = _launch_group(manager, size, f"gcost{size}")
            part = f"{parent}.{size // 2}"
            _start_part(part)
            tasks[f"group_update_part_{size}"] = part
            parents[f"group_update_part_{size}"] = parent
            # Diagnostic: another part of the same group, its percent never changing after the first call, so
            # that its writes leave the aggregate alone and never publish the parent (the link's own cost).
            quiet = f"{parent}.{size // 2 + 1}"
            _start_part(quiet)
            tasks[f"group_quiet_part_{size}"] = quiet
            # Diagnostic: a part of another group of the same size whose parent keeps the default interval
            # (published at most 10 times a second), the part's own writes still publishing at every call.
            other = _launch_group(manager, size, f"gthrottled{size}")
            throttled = f"{other}.{size // 2}"
            _start_part(throttled)
            tasks[f"group_throttled_part_{size}"] = throttled
            parents[f"group_throttled_part_{size}"] = other
        total = n + 100
        counter = dict.fromkeys(tasks, 0)

        def progress(key: str) -> None:
            counter[key] += 1  # a new percent at every call: the parent's aggregate changes every time
            i = counter[key]
            current = 1 if key.startswith("group_quiet") else i
            manager.update_progress(
                tasks[key], f"Step {i}", current=current, total=total, data={"t": time.time(), "i": i}
            )

        for key in tasks:
            with _parent_interval(0.1 if key.startswith("group_throttled") else None):
                for _ in range(20):
                    progress(key)
        _drain_broadcasts()
        time.sleep(0.15)  # the throttled parents' last flush
        seq0 = {key: _seq(manager, parent) for key, parent in parents.items()}
        samples: dict[str, list[float]] = {key: [] for key in tasks}
        cpu = dict.fromkeys(tasks, 0.0)
        keys = list(tasks)
        per_slice = max(1, n // slices)
        for turn in range(slices):
            for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
                cpu0 = time.process_time()
                with _parent_interval(0.1 if key.startswith("group_throttled") else None):
                    got, _ = _timed(lambda i, key=key: progress(key), per_slice, gap, budget / slices)
                    _drain_broadcasts()  # the sender thread's work belongs to the call's cost
                cpu[key] += time.process_time() - cpu0
                samples[key] += got
        for key, got in samples.items():
            out[key] = _summary(got, cpu[key] * 1e6 / max(1, len(got)))
        time.sleep(0.15)  # the throttled parents' last flush
        for key, parent in parents.items():
            record = manager.get_progress(parent) or {}
            out[key].update(
                group_size=int(key.rsplit("_", 1)[1]),
                parent_writes=record.get("seq", 0) - seq0[key],
                parent_running=((record.get("group") or {}).get("counts") or {}).get("running"),
            )
    hot_seconds, hot_max = cmd["hot_seconds"], cmd["hot_max"]
    with _rate(10):  # the default PROGRESS_RATE: each task (part) coalesced, its parent at most 10 a second
        time.sleep(0.15)  # past the interval of the last publishing write
        timed = _hot(
            {
                key.replace("group_update", "group_hot"): (
                    lambda i, task=task: manager.update_progress(task, "Hot", current=i, total=hot_max, data={"i": i})
                )
                for key, task in tasks.items()
                if key.startswith("group_update")
            },
            hot_seconds,
            hot_max,
        )
        for key, task in tasks.items():
            if not key.startswith("group_update"):
                continue
            hot, cpu_us, last = timed[key.replace("group_update", "group_hot")]
            stored = manager.get_progress(task) or {}
            out[key.replace("group_update", "group_hot")] = {
                **_summary(hot, cpu_us),
                "calls": len(hot),
                "last_kept": (stored.get("data") or {}).get("i") == last,
            }
        for task in tasks.values():
            manager.finish(task, "success")
    return out


def group_launch_cost(cmd: dict[str, Any]) -> dict[str, Any]:
    """Wall time of one ``launch_async_group`` of ``parts`` parts, beside as many Celery ``apply_async`` calls
    of the same task to the same queue (the anchor) and as many ``launch_async_task`` calls; ``reps`` times
    each, in turns. Every message goes to the nowhere queue, purged afterwards."""
    from realtime_async.tasks import run_async_task

    manager = _manager()
    size, reps = cmd["parts"], cmd["reps"]
    tag = uuid.uuid4().hex[:8]
    kwargs = {"func_path": "bench.publisher.noop", "args": [], "kwargs": {}, "manager_path": ""}

    def apply_async(rep: int) -> None:
        for i in range(size):
            name = f"graw-{tag}-{rep}-{i}"
            run_async_task.apply_async(kwargs={**kwargs, "task_name": name}, task_id=name, queue=NOWHERE)

    def launch_tasks(rep: int) -> None:
        for i in range(size):
            manager.launch_async_task("bench.publisher.noop", task_name=f"gtask-{tag}-{rep}-{i}", queue=NOWHERE)

    def launch_group(rep: int) -> None:
        _launch_group(manager, size, f"glaunch-{rep}")

    ways = {"apply_async": apply_async, "launch_async_task": launch_tasks, "launch_async_group": launch_group}
    for i in range(5):  # connections, imports and scripts warm
        run_async_task.apply_async(kwargs={**kwargs, "task_name": f"gwarm-{tag}-{i}"}, queue=NOWHERE)
        manager.launch_async_task("bench.publisher.noop", task_name=f"gwarm-{tag}-t{i}", queue=NOWHERE)
    _launch_group(manager, 5, "gwarm")
    seconds: dict[str, list[float]] = {key: [] for key in ways}
    cpu: dict[str, list[float]] = {key: [] for key in ways}
    for rep in range(reps):
        for key, way in ways.items():
            cpu0, t0 = time.process_time(), time.perf_counter()
            way(rep)
            seconds[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - cpu0)
    out: dict[str, Any] = {"parts": size, "reps": reps}
    for key in ways:
        median = statistics.median(seconds[key])
        out[key] = {
            "seconds": seconds[key],
            "median_s": median,
            "per_part_us": median * 1e6 / size,
            "cpu_s": statistics.median(cpu[key]),
        }
    out["purged"] = _purge_nowhere()
    return out


def _purge_nowhere() -> int:
    from celery import current_app

    with current_app.connection_for_write() as conn:
        return int(conn.default_channel.queue_purge(NOWHERE) or 0)


def purge_nowhere(cmd: dict[str, Any]) -> dict[str, Any]:
    return {"purged": _purge_nowhere()}


def group_setup(cmd: dict[str, Any]) -> dict[str, Any]:
    """A group of ``size`` queued parts (nothing consumes them): its parent, a watch token, the parts' names."""
    manager = _manager()
    parent = _launch_group(manager, cmd["size"], "grate")
    return {
        "parent": parent,
        "token": manager.make_watch_token(parent),
        "parts": [f"{parent}.{i}" for i in range(cmd["size"])],
    }


_my_parts: dict[str, int] = {}


def group_start(cmd: dict[str, Any]) -> dict[str, Any]:
    """Start ``parts`` here (running, tracked), as their workers would: answers how long it took."""
    t0 = time.monotonic()
    for name in cmd["parts"]:
        _my_parts[name] = _start_part(name)
    return {"started": len(cmd["parts"]), "seconds": time.monotonic() - t0}


def group_write(cmd: dict[str, Any]) -> dict[str, Any]:
    """From wall time ``at``, ``update_progress`` on every part started here, round after round, for ``seconds``
    (at the default ``PROGRESS_RATE``: each part coalesced to at most 10 writes a second); then finish each."""
    manager = _manager()
    parts = [name for name in cmd["parts"] if name in _my_parts]
    rounds = cmd.get("max_rounds", 10_000)
    wait = cmd["at"] - time.time()
    if wait > 0:
        time.sleep(min(wait, 10))
    deadline = time.monotonic() + cmd["seconds"]
    calls = done = 0
    for r in range(rounds):
        if time.monotonic() > deadline:
            break
        for name in parts:
            manager.update_progress(name, f"Round {r}", current=r + 1, total=rounds)
            calls += 1
        done = r + 1
    wrote_until = time.time()
    time.sleep(0.35)  # the coalesced last updates go out before the final states
    for name in parts:
        manager.finish(name, "success")
    _drain_broadcasts()
    writes = sum(_part_seq(name) - _my_parts.pop(name) - 1 for name in parts)  # the final write aside
    return {"calls": calls, "rounds": done, "part_writes": writes, "wrote_until": wrote_until, "done": time.time()}


def group_state(cmd: dict[str, Any]) -> dict[str, Any]:
    """The parent's stored record (state, counts, percent, seq) and its parts' states as the store holds them."""
    record = _manager().get_progress(cmd["parent"]) or {}
    parts = get_store().group_parts(cmd["parent"])
    states: dict[str, int] = {}
    for state in parts.values():
        states[state] = states.get(state, 0) + 1
    return {
        "state": record.get("state"),
        "seq": record.get("seq"),
        "percent": record.get("percent"),
        "counts": (record.get("group") or {}).get("counts"),
        "part_states": states,
    }


def store_stats(cmd: dict[str, Any]) -> dict[str, Any]:
    return {"keys": _redis.dbsize(), "prefix": get_store().prefix}


COMMANDS = {
    f.__name__: f
    for f in (
        worker_cost,
        launch_cost,
        create_tasks,
        run_ours,
        run_events,
        celery_progress_cost,
        run_celery_progress,
        redis_cost_updates,
        poll_setup,
        jitter_updates,
        poll_tasks,
        rotate_updates,
        features,
        store_stats,
        group_cost,
        group_launch_cost,
        purge_nowhere,
        group_setup,
        group_start,
        group_write,
        group_state,
    )
}
COMMANDS["hub_reader"] = hub_reader.measure


def handle(cmd: dict[str, Any]) -> dict[str, Any]:
    return COMMANDS[cmd["op"]](cmd)


if __name__ == "__main__":
    serve(handle)
