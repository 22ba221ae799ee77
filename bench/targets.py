"""The table of the issue's targets, each beside its anchor from the same run, met or not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import polling, sse
from bench.figures import (
    Check,
    Getter,
    dig,
    e2e,
    fan_step,
    largest_watchers,
    max_fps,
    naive_saturation,
    overload_rate,
    per_run,
    rates_of,
    ratio_check,
    ratio_text,
    sustainable,
    sustained_rate,
    verdict,
)
from bench.scenarios import SCENARIOS
from bench.slow_readers import RSS_TARGET_MB, bystander, growth_mb

__all__ = ["fanout_rows", "groups_rows", "targets_table"]


def targets_table(results: dict[str, Any]) -> list[str]:
    runs = results["runs"]
    big, sus = largest_watchers(results), sustained_rate(results)

    def w(name: str, key: str = "median_us") -> Getter:
        return lambda run: dig(run, "worker", name, key)

    def poll(name: str, key: str) -> Getter:
        return lambda run: dig(run, "polling", "load", name, *key.split("."))

    def check(get: Getter, test: Callable[[float], bool]) -> Check:
        def ok(run: dict[str, Any]) -> bool | None:
            value = get(run)
            return None if value is None else test(value)

        return ok

    def lt(get: Getter, limit: float) -> Check:
        return check(get, lambda value: value < limit)

    c = results["plan"]["poll_concurrency"]
    stalled, stall_s = results["plan"].get("slow_stalled", "–"), f"{results['plan'].get('slow_seconds', 0):g}"
    poll_304, poll_cp = (
        poll(f"ours_json_304/c{c}", "daphne_us_per_request"),
        poll(f"celery_progress/c{c}", "daphne_us_per_request"),
    )

    publish, raw_set, group_send = w("update_progress_publish"), w("raw_set"), w("async_to_sync_group_send")
    hot, stage_hot, log_hot = w("update_progress_hot"), w("update_progress_stage_hot"), w("log_hot")
    log_publish = w("log_publish")

    def fan_log(key: str, *path: str) -> Getter:
        return lambda run: dig(run, "fanout_log", f"ours/{big}", key, *path)

    rows = [
        (
            "`update_progress` publishing call, median ≤ 3× raw redis-py `SET`",
            per_run(runs, publish, unit=" µs"),
            "SET " + per_run(runs, raw_set, unit=" µs"),
            ratio_text(runs, publish, raw_set),
            verdict(runs, ratio_check(publish, raw_set, lambda r: r <= 3)),
        ),
        (
            "… and ≥ 5× cheaper than `async_to_sync(group_send)`",
            per_run(runs, publish, unit=" µs"),
            "group_send " + per_run(runs, group_send, unit=" µs"),
            ratio_text(runs, group_send, publish) + " cheaper",
            verdict(runs, ratio_check(group_send, publish, lambda r: r >= 5)),
        ),
        (
            "`update_progress` inside a stage: median ≤ 1.5× a plain call (hot loop, coalesced)",
            per_run(runs, stage_hot, unit=" µs"),
            "plain " + per_run(runs, hot, unit=" µs"),
            ratio_text(runs, stage_hot, hot),
            verdict(runs, ratio_check(stage_hot, hot, lambda r: r <= 1.5)),
        ),
        (
            "`log()`: median ≤ 1.5× a plain `update_progress` call (hot loop, coalesced)",
            per_run(runs, log_hot, unit=" µs"),
            "`update_progress` " + per_run(runs, hot, unit=" µs"),
            ratio_text(runs, log_hot, hot),
            verdict(runs, ratio_check(log_hot, hot, lambda r: r <= 1.5)),
        ),
        (
            "`log()` publishing (a write carrying one line): median ≤ 1.5× `update_progress` publishing (none)",
            per_run(runs, log_publish, unit=" µs"),
            "`update_progress` " + per_run(runs, publish, unit=" µs"),
            ratio_text(runs, log_publish, publish),
            verdict(runs, ratio_check(log_publish, publish, lambda r: r <= 1.5)),
        ),
        *(
            (
                f"end to end, 1 watcher: median ≤ 5× the Redis pub/sub floor{on}",
                per_run(runs, e2e(key), unit=" ms"),
                "floor " + per_run(runs, e2e("floor"), unit=" ms"),
                ratio_text(runs, e2e(key), e2e("floor")),
                verdict(runs, ratio_check(e2e(key), e2e("floor"), lambda r: r <= 5)),
            )
            for key, on in sse.e2e_keys(results, "ours")
        ),
        (
            "end to end, 1 watcher: p99 < 10 ms",
            per_run(runs, e2e("ours", "p99"), unit=" ms"),
            "tutorial " + per_run(runs, e2e("naive", "p99"), unit=" ms"),
            ratio_text(runs, e2e("ours", "p99"), e2e("naive", "p99")),
            verdict(runs, lt(e2e("ours", "p99"), 10)),
        ),
        *fanout_rows(results, "daphne"),
        *(row for server in _other_servers(results) for row in fanout_rows(results, server)),
        *sse.target_rows(results),
        (
            "daphne RSS per idle watcher ≤ 40 KB",
            per_run(runs, lambda r: dig(r, "multi", "ours", "rss_per_watcher_kb"), 1, " KB"),
            "tutorial " + per_run(runs, lambda r: dig(r, "multi", "naive", "rss_per_watcher_kb"), 1, " KB"),
            ratio_text(
                runs,
                lambda r: dig(r, "multi", "ours", "rss_per_watcher_kb"),
                lambda r: dig(r, "multi", "naive", "rss_per_watcher_kb"),
            ),
            verdict(runs, lt(lambda r: dig(r, "multi", "ours", "rss_per_watcher_kb"), 40.0001)),
        ),
        (
            f"{stalled} clients that stop reading for {stall_s} s: daphne RSS growth < {RSS_TARGET_MB} MB",
            per_run(runs, growth_mb("backpressure"), unit=" MB"),
            "without backpressure " + per_run(runs, growth_mb("none"), unit=" MB"),
            ratio_text(runs, growth_mb("backpressure"), growth_mb("none")),
            verdict(runs, lt(growth_mb("backpressure"), RSS_TARGET_MB)),
        ),
        (
            "… meanwhile the reading bystanders' median latency < 50 ms",
            per_run(runs, bystander("backpressure", "median"), unit=" ms"),
            "without backpressure " + per_run(runs, bystander("none", "median"), unit=" ms"),
            ratio_text(runs, bystander("backpressure", "median"), bystander("none", "median")),
            verdict(runs, lt(bystander("backpressure", "median"), 50)),
        ),
        (
            "unchanged poll (304) cheaper than celery-progress's endpoint (daphne CPU per request)",
            per_run(runs, poll_304, unit=" µs"),
            "celery-progress " + per_run(runs, poll_cp, unit=" µs"),
            ratio_text(runs, poll_304, poll_cp),
            verdict(runs, ratio_check(poll_304, poll_cp, lambda r: r < 1)),
        ),
        *polling.target_rows(results),
    ]
    if any(run.get("fanout_log") for run in runs):  # ``--only fanout_log``: the fan-out targets with log lines
        for key, bound in (("median", 50), ("p99", 250)):
            rows.append(
                (
                    f"fan-out {big:,} watchers at {sus}/s, a log line in every update: {key} < {bound} ms",
                    per_run(runs, fan_log(f"{sus}+log", "lat", key), unit=" ms"),
                    "without log lines " + per_run(runs, fan_log(sus, "lat", key), unit=" ms"),
                    ratio_text(runs, fan_log(f"{sus}+log", "lat", key), fan_log(sus, "lat", key)),
                    verdict(runs, lt(fan_log(f"{sus}+log", "lat", key), bound)),
                )
            )
    if any(run.get("groups") for run in runs):  # ``--only groups``
        rows += groups_rows(results)
    if not any(run.get(name) for run in runs for name in SCENARIOS):  # only opt-in scenarios ran: their rows alone
        rows = [r for r in rows if r[-1] != "not measured"]
    lines = ["| target | ours (run 1 / run 2) | anchor (same run) | ratio | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return lines


def _other_servers(results: dict[str, Any]) -> list[str]:
    """The servers besides daphne on which the run measured realtime_async's largest fan-out."""
    return [kind for kind in results["plan"].get("fanout_servers") or () if kind != "daphne"]


def fanout_rows(results: dict[str, Any], server: str) -> list[tuple[str, str, str, str, str]]:
    """The fan-out targets for realtime_async on ``server``: against the tutorial consumer (on daphne), and on
    any other server beside realtime_async on daphne too (the same run's figures, side by side)."""
    runs = results["runs"]
    big, rates = largest_watchers(results), rates_of(results)
    sus, over = sustained_rate(results), overload_rate(results)
    ours = "ours" if server == "daphne" else f"ours@{server}"
    on = "" if server == "daphne" else f" on {server}"
    # Beside daphne's realtime_async on another server; beside the tutorial consumer on daphne.
    anchor, anchor_name = ("naive", "tutorial") if server == "daphne" else ("ours", "daphne")

    def fan(target: str, rate: str, *path: str) -> Getter:
        return lambda run: dig(fan_step(run, target, big, rate), *path)

    def check(get: Getter, test: Callable[[float], bool]) -> Check:
        def ok(run: dict[str, Any]) -> bool | None:
            value = get(run)
            return None if value is None else test(value)

        return ok

    def sat(run: dict[str, Any]) -> float | None:
        return naive_saturation(run, big, rates)

    def ours_sustainable(run: dict[str, Any]) -> float | None:
        best = sustainable(run, ours, big, rates)
        return best[0] if best else None

    def ours_cell(run: dict[str, Any]) -> str:
        best, top = sustainable(run, ours, big, rates), max_fps(run, ours, big, rates)
        at = f"{best[0]:,.0f} fps (at {best[1]}/s)" if best else "–"
        return at + (f", max {top:,.0f}" if top is not None else "")

    def latency(rate: str, key: str, bound: float, text: str) -> tuple[str, str, str, str, str]:
        return (
            text,
            per_run(runs, fan(ours, rate, "lat", key), unit=" ms"),
            f"{anchor_name} " + per_run(runs, fan(anchor, rate, "lat", key), unit=" ms"),
            ratio_text(runs, fan(ours, rate, "lat", key), fan(anchor, rate, "lat", key)),
            verdict(runs, check(fan(ours, rate, "lat", key), lambda value: value < bound)),
        )

    return [
        latency(sus, "median", 50, f"fan-out {big:,} watchers at {sus}/s{on}: median < 50 ms"),
        latency(sus, "p99", 250, f"fan-out {big:,} watchers at {sus}/s{on}: p99 < 250 ms"),
        (
            f"fan-out {big:,} watchers at {sus}/s{on}: delivers the offered frames (≥ 95 %)",
            per_run(runs, lambda r: 100 * (fan(ours, sus, "delivered_share")(r) or 0), 1, " %"),
            "offered " + per_run(runs, fan(ours, sus, "offered_fps"), unit=" fps"),
            "",
            verdict(runs, check(fan(ours, sus, "delivered_share"), lambda share: share >= 0.95)),
        ),
        (
            f"sustainable frame rate to {big:,} watchers{on} (≥ 95 % delivered, p99 < 250 ms) "
            "≥ 4× the tutorial consumer's saturation frame rate" + (" (on daphne)" if on else ""),
            " / ".join(ours_cell(run) for run in runs),
            "tutorial max " + per_run(runs, sat, unit=" fps"),
            ratio_text(runs, ours_sustainable, sat),
            verdict(runs, ratio_check(ours_sustainable, sat, lambda r: r >= 4)),
        ),
        latency(over, "p99", 1000, f"overload ({over}/s to {big:,} watchers{on}): p99 < 1 s"),
        (
            f"overload ({over}/s to {big:,} watchers{on}): every watcher gets the final state",
            per_run(runs, fan(ours, over, "missing_finals"), 0) + " lost",
            f"{anchor_name} " + per_run(runs, fan(anchor, over, "missing_finals"), 0) + " lost",
            "",
            verdict(runs, check(fan(ours, over, "missing_finals"), lambda lost: lost == 0)),
        ),
    ]


def groups_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Issue 12's targets: a part's ``update_progress`` ≤ 1.5× a plain task's whatever the group's size, the
    parent's updates a second at most ``PROGRESS_RATE`` (+ the final) with exact final counts, and the launch
    of a large group beside as many ``apply_async`` and ``launch_async_task`` calls (reported, no bound)."""
    runs = results["runs"]
    progress_rate = 10  # bench/settings.py's PROGRESS_RATE, the default

    def cost(key: str) -> Getter:
        return lambda run: dig(run, "groups", "cost", key, "median_us")

    def rate(*path: str) -> Getter:
        return lambda run: dig(run, "groups", "rate", *path)

    def launch(key: str) -> Getter:
        return lambda run: dig(run, "groups", "launch", key, "median_s")

    def ok(get: Getter, test: Callable[[Any], bool]) -> Check:
        return lambda run: None if get(run) is None else test(get(run))

    def within(get: Getter, anchor: Getter, bound: float) -> Check:
        def check(run: dict[str, Any]) -> bool | None:
            value, base = get(run), anchor(run)
            return None if value is None or not base else value / base <= bound

        return check

    def exact(run: dict[str, Any]) -> bool | None:
        if rate("counts_exact")(run) is None:
            return None
        return bool(rate("counts_exact")(run) and rate("finals_agree")(run) and not rate("missing_finals")(run))

    plain = cost("group_update_plain")
    sizes = sorted(
        {
            int(key.rsplit("_", 1)[1])
            for run in runs
            for key in dig(run, "groups", "cost") or {}
            if key.startswith("group_update_part_")
        }
    )
    rows: list[tuple[str, str, str, str, str]] = []
    for size in sizes:
        part = cost(f"group_update_part_{size}")
        rows.append(
            (
                f"a part's `update_progress` publishing call ({size:,}-part group): median ≤ 1.5× a plain task's",
                per_run(runs, part, unit=" µs"),
                "plain task " + per_run(runs, plain, unit=" µs"),
                ratio_text(runs, part, plain),
                verdict(runs, within(part, plain, 1.5)),
            )
        )
    parts = next((dig(run, "groups", "rate", "parts") for run in runs if dig(run, "groups", "rate")), 0)
    written = rate("most_per_s_written")
    rows += [
        (
            f"{parts:,}-part group, every part updated at once: parent records seen by a watcher "
            f"≤ PROGRESS_RATE ({progress_rate}) in any second (+ the final)",
            " / ".join(str(written(run)) for run in runs) + " most in a second",
            "arrived "
            + " / ".join(str(rate("most_per_s_arrived")(run)) for run in runs)
            + ", mean "
            + per_run(runs, rate("mean_per_s"), 1)
            + "/s, part writes "
            + per_run(runs, rate("part_writes"), 0),
            "",
            verdict(runs, ok(written, lambda n: n <= progress_rate)),
        ),
        (
            f"… the parent's final counts exact ({parts:,} succeeded, every watcher's final agrees)",
            " / ".join("exact" if dig(run, "groups", "rate", "counts_exact") else "not exact" for run in runs),
            "stored parts " + " / ".join(str(dig(run, "groups", "rate", "stored", "part_states")) for run in runs),
            "",
            verdict(runs, exact),
        ),
    ]
    n = next((dig(run, "groups", "launch", "parts") for run in runs if dig(run, "groups", "launch")), 0)
    group = launch("launch_async_group")
    rows += [
        (
            f"launch of a {n:,}-part group beside {n:,} `apply_async` calls (reported, no bound)",
            per_run(runs, group, 3, " s"),
            "apply_async " + per_run(runs, launch("apply_async"), 3, " s"),
            ratio_text(runs, group, launch("apply_async")),
            "reported",
        ),
        (
            f"… beside {n:,} `launch_async_task` calls",
            per_run(runs, group, 3, " s"),
            "launch_async_task " + per_run(runs, launch("launch_async_task"), 3, " s"),
            ratio_text(runs, group, launch("launch_async_task")),
            "reported",
        ),
    ]
    return rows
