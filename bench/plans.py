"""The sizes of a run: ``FULL`` (about twelve minutes) and ``QUICK`` (seconds; the smoke test's)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one run; ``FULL`` and ``QUICK`` below."""

    name: str
    reps: int
    cost_n: int  # timed calls per worker-side measurement
    cost_gap: float  # seconds between timed calls (the sender thread gets to run)
    cost_budget: float  # seconds at most per measurement
    cost_n_group_send: int
    hot_seconds: float
    hot_max: int
    launch_n: int
    e2e_count: int
    e2e_rate: float
    e2e_servers: tuple[str, ...]  # realtime_async end to end (WebSocket, SSE) on each other server too, beside daphne
    fanout_watchers: tuple[int, ...]
    fanout_rates: tuple[float, ...]
    fanout_servers: tuple[str, ...]  # realtime_async's largest fan-out on each (daphne's every size, with the tutorial)
    step_seconds: float
    min_updates: int
    drain: float  # seconds a step waits for every final state after the publisher finished
    multi_tasks: int
    multi_per_task: int
    multi_rate: float
    multi_count: int
    poll_seconds: float
    poll_concurrency: int
    poll_servers: tuple[str, ...]  # unchanged polls: ProgressHttpRouter against the plain Django app on each
    poll_many_clients: int  # pollers on one server, each on its own connection ...
    poll_many_tasks: int  # ... over this many tasks ...
    poll_many_interval: float  # ... once every this many seconds ...
    poll_many_seconds: float  # ... for this long ...
    poll_many_updates: float  # ... while the tasks are updated this many times a second in all (one after the other)
    sse_watchers: int  # SSE streams of one task on one server ...
    sse_rate: float  # ... updated this many times a second ...
    sse_servers: tuple[str, ...]  # ... on each of these
    staleness_seconds: float
    profile_seconds: float
    profile_rate: float
    profile_targets: tuple[str, ...]
    rss_settle: float  # seconds before each RSS reading
    split_at: int  # watchers from which two client processes share the connections
    fresh_daphne: bool  # a new daphne for each fan-out block (clean RSS, no backlog carried over)
    calibration_watchers: int
    calibration_rate: float
    max_seconds: float  # the whole run stops starting scenarios after this
    slow_stalled: int  # slow readers: clients that stop reading, each subscribed to every task
    slow_tasks: int
    slow_bystanders: int  # reading clients, one task each, measured meanwhile
    slow_rate: float  # updates a second per task
    slow_seconds: float  # how long updates flow while the stalled clients read nothing
    slow_message_chars: int  # each update's message (the demo: 600 characters)
    group_sizes: tuple[int, ...]  # groups (``--only groups``): a part's update_progress in a group of each size
    group_cost_n: int  # timed calls per key (plain task, each group size), in group_cost_slices turns
    group_cost_slices: int
    group_launch_parts: int  # launch cost: one group of this many parts, beside as many apply_async calls
    group_launch_reps: int
    group_rate_parts: int  # parent updates a second: this many parts updated as fast as they go ...
    group_rate_seconds: float  # ... for this long ...
    group_writers: int  # ... by this many publisher processes ...
    group_watchers: int  # ... watched by this many WebSocket watchers of the parent
    redis_cost_updates: int  # Redis cost (``--only redis_cost``): updates counted per configuration ...
    redis_cost_rate: float  # ... published this many a second ...
    redis_cost_servers: tuple[int, ...]  # ... with realtime_async watched on this many servers (one watcher each) ...
    redis_cost_cp_servers: tuple[int, ...]  # ... and celery-progress on this many ...
    redis_cost_idle: float  # ... after this many seconds of the same setup, nothing published (the background) ...
    redis_cost_monitor: int  # ... and this many more under MONITOR (which commands ran inside a script or EXEC) ...
    redis_cost_busy_rate: float  # ... and once more with one server, at this many a second (a busier Redis)
    hub_reader_messages: int  # the hub's reader (``--only hub_reader``): messages read per round ...
    hub_reader_rounds: int  # ... in this many rounds of each way


FULL = Plan(
    name="full", reps=2,
    cost_n=300, cost_gap=0.002, cost_budget=5, cost_n_group_send=150, hot_seconds=1.0, hot_max=200_000,
    launch_n=150, e2e_count=150, e2e_rate=50, e2e_servers=("uvicorn",),
    fanout_watchers=(1, 100, 1000), fanout_rates=(2, 5, 10, 15, 20, 30, 40, 50, 100),
    fanout_servers=("daphne", "uvicorn"),
    step_seconds=2.0, min_updates=6, drain=5.0,
    multi_tasks=100, multi_per_task=10, multi_rate=2, multi_count=6,
    poll_seconds=1.5, poll_concurrency=8, staleness_seconds=5.0, poll_servers=("daphne", "uvicorn"),
    poll_many_clients=1000, poll_many_tasks=100, poll_many_interval=1.0, poll_many_seconds=5.0, poll_many_updates=1.0,
    sse_watchers=1000, sse_rate=10, sse_servers=("daphne", "uvicorn"),
    profile_seconds=6.0, profile_rate=10, rss_settle=1.0,
    profile_targets=("ours@daphne", "naive@daphne", "ours@uvicorn", "poll304@daphne"),
    split_at=500, fresh_daphne=True,
    calibration_watchers=1000, calibration_rate=5, max_seconds=1000,
    slow_stalled=20, slow_tasks=50, slow_bystanders=10, slow_rate=10, slow_seconds=15.0, slow_message_chars=600,
    group_sizes=(10, 1000), group_cost_n=300, group_cost_slices=5, group_launch_parts=1000, group_launch_reps=3,
    group_rate_parts=1000, group_rate_seconds=5.0, group_writers=2, group_watchers=10,
    redis_cost_updates=2000, redis_cost_rate=400, redis_cost_servers=(0, 1, 2, 4), redis_cost_cp_servers=(0, 1, 2),
    redis_cost_idle=4.0, redis_cost_monitor=200, redis_cost_busy_rate=2000,
    hub_reader_messages=10_000, hub_reader_rounds=5,
)  # fmt: skip
QUICK = Plan(
    name="quick", reps=1,
    cost_n=30, cost_gap=0.001, cost_budget=2, cost_n_group_send=10, hot_seconds=0.2, hot_max=5000,
    launch_n=5, e2e_count=10, e2e_rate=100, e2e_servers=("uvicorn",),
    fanout_watchers=(1, 20), fanout_rates=(10, 100), fanout_servers=("daphne", "uvicorn"),
    step_seconds=0.2, min_updates=3, drain=5.0,
    multi_tasks=5, multi_per_task=4, multi_rate=10, multi_count=3,
    poll_seconds=0.2, poll_concurrency=4, staleness_seconds=1.2, poll_servers=("daphne", "uvicorn"),
    poll_many_clients=50, poll_many_tasks=5, poll_many_interval=0.5, poll_many_seconds=1.0, poll_many_updates=2.0,
    sse_watchers=20, sse_rate=10, sse_servers=("daphne",),
    profile_seconds=1.0, profile_rate=10, rss_settle=0.2, profile_targets=("ours@daphne", "poll304@daphne"),
    split_at=20, fresh_daphne=False,
    calibration_watchers=20, calibration_rate=10, max_seconds=120,
    slow_stalled=3, slow_tasks=5, slow_bystanders=2, slow_rate=10, slow_seconds=1.5, slow_message_chars=600,
    group_sizes=(10, 200), group_cost_n=30, group_cost_slices=3, group_launch_parts=200, group_launch_reps=1,
    group_rate_parts=200, group_rate_seconds=1.0, group_writers=2, group_watchers=2,
    redis_cost_updates=100, redis_cost_rate=500, redis_cost_servers=(0, 1, 2), redis_cost_cp_servers=(0, 1),
    redis_cost_idle=0.3, redis_cost_monitor=20, redis_cost_busy_rate=1000,
    hub_reader_messages=200, hub_reader_rounds=1,
)  # fmt: skip
