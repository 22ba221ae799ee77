"""The slow-readers scenario: clients that stop reading, daphne's memory, and a bystander's latency.

``slow_stalled`` clients (``bench.stalled``) subscribe to the same ``slow_tasks``
tasks with watch tokens, read their snapshots and then read nothing (4 KiB
receive buffers), while the publisher updates every task ``slow_rate`` times a
second with a ``slow_message_chars``-character message for ``slow_seconds``;
``slow_bystanders`` reading clients (one task each) are measured meanwhile.
Run twice, each on a fresh daphne: without per-connection backpressure (the
behaviour before it, ``RA_BENCH_BACKPRESSURE=0``) and with it; both with
``STALLED_CLOSE_AFTER`` off, so the stalled clients stay for the whole step and
the figures show what backpressure alone holds. Reported: daphne's RSS growth
(peak during the step minus before it) and the bystanders' latency.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from bench.agent import Agent
from bench.figures import dig, num, per_run, ratio_text
from bench.harness import MULTI_PATH, Bench, connect, log, proc_rss_kb, run_step, subscribe

#: ``variant``: (label in the report, the daphne's extra environment).
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "none": ("without backpressure (before)", {"RA_BENCH_BACKPRESSURE": "0", "RA_BENCH_STALLED_CLOSE_AFTER": "none"}),
    "backpressure": ("with backpressure", {"RA_BENCH_STALLED_CLOSE_AFTER": "none"}),
}
#: The RSS growth the target allows, whatever the number of stalled clients (MB).
RSS_TARGET_MB = 10
BEGIN = "<!-- bench:slow-readers:begin -->"
END = "<!-- bench:slow-readers:end -->"


class _PeakRss(threading.Thread):
    """Samples a process's RSS every 0.25 s until stopped; ``peak`` is the highest (KB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss", daemon=True)
        self.pid, self.peak = pid, proc_rss_kb(pid)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.25):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, proc_rss_kb(self.pid))

    def stop(self) -> int:
        self._done.set()
        self.join(5)
        return self.peak


@contextlib.contextmanager
def _stalled_agent(b: Bench) -> Iterator[Agent]:
    agent = Agent("stalled", "bench.stalled", b.env)
    try:
        agent.ready()
        yield agent
    finally:
        with contextlib.suppress(Exception):
            agent.call("close", 20)
        agent.stop()


def scenario_slow_readers(b: Bench, rep: int) -> dict[str, Any]:
    p = b.plan
    out: dict[str, Any] = {}
    count = round(p.slow_rate * p.slow_seconds)
    for variant, (_, env) in VARIANTS.items():
        label = f"slow-{variant}-r{rep}"
        with (
            b.daphne(label, **env) as server,
            b.watchers(p.slow_bystanders, processes=1) as agents,
            _stalled_agent(b) as stalled,
        ):
            tasks = b.pub.call("create_tasks", 60, n=p.slow_tasks, prefix="slow")["tasks"]
            connect(agents, "ours", server.port, [MULTI_PATH] * p.slow_bystanders)
            subscribe(agents, tasks, p.slow_bystanders)
            stalled.call(
                "connect", 70, port=server.port, path=MULTI_PATH, n=p.slow_stalled, tasks=tasks, rcvbuf=4096, timeout=60
            )
            time.sleep(p.rss_settle)
            rss0 = proc_rss_kb(server.pid)
            sampler = _PeakRss(server.pid)
            sampler.start()
            try:
                publish = {"tasks": [name for name, _ in tasks], "message_chars": p.slow_message_chars}
                step = run_step(
                    b, agents, b.pub, "run_ours", publish, b.step_id(label),
                    daphne=server, rate=p.slow_rate, count=count, drain=p.drain,
                )  # fmt: skip
            finally:
                peak = sampler.stop()
        growth = peak - rss0
        out[variant] = {
            "stalled": p.slow_stalled,
            "tasks": p.slow_tasks,
            "rate": p.slow_rate,
            "seconds": p.slow_seconds,
            "message_chars": p.slow_message_chars,
            "rss_before_kb": rss0,
            "rss_peak_kb": peak,
            "growth_kb": growth,
            "per_stalled_kb": growth / p.slow_stalled,
            "step": step,
        }
        lat = step["lat"]
        log(
            f"  slow readers, {variant}: RSS +{growth / 1024:.1f} MB, bystanders p50 {lat['median']} ms "
            f"p99 {lat['p99']} ms, lost finals {step['missing_finals']}"
        )
    return out


# -- the report -----------------------------------------------------------------------
def growth_mb(variant: str) -> Any:
    def get(run: dict[str, Any]) -> float | None:
        kb = dig(run, "slow_readers", variant, "growth_kb")
        return None if kb is None else kb / 1024

    return get


def bystander(variant: str, key: str) -> Any:
    return lambda run: dig(run, "slow_readers", variant, "step", "lat", key)


def section(results: dict[str, Any]) -> list[str]:
    """The scenario's part of the report, between its own markers (``python -m bench --only slow_readers``)."""
    runs: Sequence[dict[str, Any]] = [run for run in results["runs"] if "slow_readers" in run]
    meta, plan = results["meta"], results["plan"]
    lines = [BEGIN, "", "### Clients that stop reading", ""]
    if not runs:
        return [*lines, "Not measured in this run.", "", END]
    first = runs[0]["slow_readers"]["backpressure"]
    lines += [
        f"{first['stalled']} clients (4 KiB receive buffers) subscribe to the same {first['tasks']} tasks, read "
        f"their snapshots, then read nothing for {first['seconds']:g} s while every task is updated "
        f"{first['rate']:g} times a second with a {first['message_chars']}-character message; "
        f"{plan['slow_bystanders']} bystanders read one task each. A fresh daphne for each row, "
        "`STALLED_CLOSE_AFTER` off (the default, 10 s, would close the stalled clients with 4408). "
        f"Measured {meta['started']} ({plan['name']} plan) on commit `{meta['commit']}`"
        + (" with uncommitted changes" if meta.get("dirty") else "")
        + ".",
        "",
        "| daphne | RSS before → peak (MB) | RSS growth MB | per stalled client KB | bystanders p50 ms "
        "| bystanders p99 ms | lost finals | daphne CPU s in the step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, (label, _) in VARIANTS.items():

        def block(run: dict[str, Any], variant: str = variant) -> dict[str, Any]:
            return dig(run, "slow_readers", variant) or {}

        rss = " / ".join(
            f"{num(block(run).get('rss_before_kb', 0) / 1024)} → {num(block(run).get('rss_peak_kb', 0) / 1024)}"
            for run in runs
        )
        lines.append(
            f"| {label} | {rss} | {per_run(runs, growth_mb(variant))} "
            f"| {per_run(runs, lambda r, v=variant: dig(r, 'slow_readers', v, 'per_stalled_kb'), 0)} "
            f"| {per_run(runs, bystander(variant, 'median'))} | {per_run(runs, bystander(variant, 'p99'))} "
            f"| {per_run(runs, lambda r, v=variant: dig(r, 'slow_readers', v, 'step', 'missing_finals'), 0)} "
            f"| {per_run(runs, lambda r, v=variant: dig(r, 'slow_readers', v, 'step', 'daphne_cpu'))} |"
        )
    lines += [
        "",
        "RSS growth with backpressure ÷ without: "
        + ratio_text(runs, growth_mb("backpressure"), growth_mb("none"))
        + f" (target: under {RSS_TARGET_MB} MB).",
        "",
        END,
    ]
    return lines
