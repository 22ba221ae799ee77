"""The report's tables, one per scenario, and the profile sections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.figures import (
    dig,
    fan_step,
    num,
    per_run,
    rates_of,
    ratio_text,
    row,
)


def _sent(frames: Any, sent: Any) -> str:
    return f"{frames} ({sent})"


def worker_table(runs: Sequence[dict[str, Any]]) -> list[str]:
    rows = [
        ("raw redis-py `SET` of a record-sized value (anchor)", "raw_set"),
        ("`update_progress`, every call publishes (`PROGRESS_RATE` 1e9), task started here", "update_progress_publish"),
        ("… the same from a process that did not start the task", "update_progress_untracked"),
        ("`log()`, every call publishes a write carrying its one line (`PROGRESS_RATE` 1e9)", "log_publish"),
        ("`update_progress` in a hot loop, coalesced at the default 10/s", "update_progress_hot"),
        ('… the same inside a stage (`with manager.stage(task, "Process")`, 3 stages)', "update_progress_stage_hot"),
        ('`log(task, f"Row {i} skipped")` in the same hot loop (lines ride the next write)', "log_hot"),
        ("`async_to_sync(channel_layer.group_send)` (anchor)", "async_to_sync_group_send"),
        ("celery-progress `ProgressRecorder.set_progress` (polling mode)", "celery_progress_poll"),
        ("celery-progress `WebSocketProgressRecorder.set_progress`", "celery_progress_ws"),
    ]
    lines = [
        "| per call | median µs | p99 µs | CPU µs / call (incl. sender thread) | median ÷ SET | group_send ÷ median |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in rows:

        def get(run: dict[str, Any], key: str = key, field: str = "median_us") -> float | None:
            return dig(run, "worker", key, field)

        if all(get(run) is None for run in runs):
            continue
        lines.append(
            f"| {label} | {per_run(runs, get)} | {per_run(runs, lambda r, k=key: get(r, k, 'p99_us'))} "
            f"| {per_run(runs, lambda r, k=key: get(r, k, 'cpu_us'))} "
            f"| {ratio_text(runs, get, lambda r: get(r, 'raw_set'))} "
            f"| {ratio_text(runs, lambda r: get(r, 'async_to_sync_group_send'), get)} |"
        )
    lines.append("")
    for key, label, kept in (
        ("update_progress_hot", "Hot loop", "last update kept"),
        ("update_progress_stage_hot", "Inside a stage", "last update kept, stage still active"),
        ("log_hot", "`log()` loop", "last line kept"),
    ):
        hot = [dig(run, "worker", key) for run in runs]
        if not any(hot):
            continue
        lines.append(
            f"{label}: "
            + " / ".join(_hot_text(h or {}, kept) for h in hot)
            + ("." if key != "log_hot" else f" (a write carries at most `LOG_MAX_LINES` lines, {_bound(hot)}).")
        )
        lines.append("")
    return lines[:-1]


def _hot_text(h: dict[str, Any], kept: str) -> str:
    text = (
        f"{h.get('calls', 0):,} calls in {h.get('calls', 0) * (h.get('mean_us') or 0) / 1e6:.2f} s wrote "
        f"{h.get('writes', '?')} states, {kept}: {'yes' if h.get('last_kept') else '**no**'}"
    )
    if "lines_numbered" in h:
        text += f", {h['lines_numbered']:,} lines numbered, {h.get('lines_kept', 0):,} kept"
    return text


def _bound(hot: Sequence[dict[str, Any] | None]) -> str:
    dropped = [(h or {}).get("lines_dropped") for h in hot]
    return "the oldest dropped: " + " / ".join(f"{d:,}" if d is not None else "–" for d in dropped)


def launch_table(runs: Sequence[dict[str, Any]]) -> list[str]:
    rows = [
        ("Celery `apply_async` of the same task, alone (anchor)", "celery_apply_async"),
        ("`launch_async_task`", "launch"),
        ("`launch_async_task` with one conflict lock", "launch_locked"),
    ]
    lines = ["| per call | median µs | p99 µs | CPU µs / call | ÷ apply_async |", "|---|---|---|---|---|"]
    for label, key in rows:

        def get(run: dict[str, Any], key: str = key, field: str = "median_us") -> float | None:
            return dig(run, "worker", key, field)

        lines.append(
            f"| {label} | {per_run(runs, get)} | {per_run(runs, lambda r, k=key: get(r, k, 'p99_us'))} "
            f"| {per_run(runs, lambda r, k=key: get(r, k, 'cpu_us'))} "
            f"| {ratio_text(runs, get, lambda r: get(r, 'celery_apply_async'))} |"
        )
    return lines


def e2e_table(runs: Sequence[dict[str, Any]]) -> list[str]:
    rows = [
        ("Redis pub/sub floor: redis-py `PUBLISH` → raw subscriber (anchor)", "floor"),
        ("channel layer alone: realtime_async's sender → a bare channels_redis receiver (no daphne)", "layer"),
        ("realtime_async: `update_progress` → hub → `ProgressConsumer`", "ours"),
        ("realtime_async over SSE: `update_progress` → hub → the stream of `ProgressHttpRouter`", "sse"),
        ("realtime_async on a fresh uvicorn: `update_progress` → hub → `ProgressConsumer`", "ours@uvicorn"),
        ("realtime_async over SSE on a fresh uvicorn: the same, to the stream of `ProgressHttpRouter`", "sse@uvicorn"),
        ("tutorial consumer: `async_to_sync(group_send)` → `send_json` (anchor)", "naive"),
        ("celery-progress WebSocket: `WebSocketProgressRecorder` → its `ProgressConsumer`", "celery_progress_ws"),
    ]
    lines = [
        "| 1 watcher | median ms | p99 ms | max ms | frames (sent) | final state ms | lost finals "
        "| median ÷ floor | median ÷ tutorial |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, key in rows:
        if all(dig(run, "e2e", key) is None for run in runs):
            continue

        def get(run: dict[str, Any], *path: str, key: str = key) -> Any:
            return dig(run, "e2e", key, *path)

        def median(run: dict[str, Any], key: str = key) -> Any:
            return dig(run, "e2e", key, "lat", "median")

        cells = [
            label,
            per_run(runs, median),
            per_run(runs, lambda r: get(r, "lat", "p99")),
            per_run(runs, lambda r: get(r, "lat", "max")),
            " / ".join(_sent(get(r, "frames"), get(r, "sent")) for r in runs),
            per_run(runs, lambda r: get(r, "final_lat", "median")),
            per_run(runs, lambda r: get(r, "missing_finals"), 0),
            ratio_text(runs, median, lambda r: median(r, "floor")),
            ratio_text(runs, median, lambda r: median(r, "naive")),
        ]
        lines.append(row(cells))
    for label, key in (
        ("HTMX polling our endpoint every 1 s (time until a poll shows the update)", "ours_htmx_1s"),
        ("celery-progress polling every 500 ms, its default (same measure)", "celery_progress_500ms"),
    ):
        if all(dig(run, "polling", "staleness", key) is None for run in runs):
            continue

        def stale(run: dict[str, Any], field: str, key: str = key) -> float | None:
            return dig(run, "polling", "staleness", key, field)

        cells = [
            label,
            per_run(runs, lambda r: stale(r, "median")),
            per_run(runs, lambda r: stale(r, "p99")),
            per_run(runs, lambda r: stale(r, "max")),
            per_run(runs, lambda r: stale(r, "n"), 0) + " updates",
            "–",
            "–",
            ratio_text(runs, lambda r: stale(r, "median"), lambda r: dig(r, "e2e", "floor", "lat", "median")),
            ratio_text(runs, lambda r: stale(r, "median"), lambda r: dig(r, "e2e", "naive", "lat", "median")),
        ]
        lines.append(row(cells))
    return lines


def _cpu_per_frame(step: dict[str, Any] | None) -> float | None:
    """daphne µs per frame, when daphne used enough CPU (10 ms clock ticks) for the figure to mean something."""
    if not step or (step.get("daphne_cpu") or 0) < 0.1:
        return None
    return step.get("daphne_us_per_frame")


def fanout_table(results: dict[str, Any], watchers: int) -> list[str]:
    runs = results["runs"]
    lines = [
        "| updates/s (frames/s offered) | ours p50 ms | ours p99 ms | ours frames/s | ours delivered "
        "| ours lost finals | ours daphne µs/frame | tutorial p50 ms | tutorial p99 ms | tutorial frames/s "
        "| tutorial lost finals | tutorial daphne µs/frame | p50 ours ÷ tutorial |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in rates_of(results):

        def g(run: dict[str, Any], target: str, *path: str, rate: str = rate) -> Any:
            return dig(fan_step(run, target, watchers, rate), *path)

        cells = [f"{rate} ({float(rate) * watchers:,.0f})"]
        for target in ("ours", "naive"):
            cells += [
                per_run(runs, lambda r, t=target: g(r, t, "lat", "median")),
                per_run(runs, lambda r, t=target: g(r, t, "lat", "p99")),
                per_run(runs, lambda r, t=target: g(r, t, "fps"), 0),
            ]
            if target == "ours":
                cells.append(per_run(runs, lambda r: 100 * (g(r, "ours", "delivered_share") or 0), 0, " %"))
            cells += [
                per_run(runs, lambda r, t=target: g(r, t, "missing_finals"), 0),
                per_run(runs, lambda r, t=target, q=rate: _cpu_per_frame(fan_step(r, t, watchers, q)), 0),
            ]
        cells.append(
            ratio_text(runs, lambda r: g(r, "ours", "lat", "median"), lambda r: g(r, "naive", "lat", "median"))
        )
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def fanout_servers_table(results: dict[str, Any]) -> list[str]:
    """realtime_async's largest fan-out on daphne and on each other server of the run, side by side."""
    runs = results["runs"]
    big = results["plan"]["fanout_watchers"][-1]
    servers = ["daphne", *(k for k in results["plan"].get("fanout_servers") or () if k != "daphne")]
    targets = {kind: "ours" if kind == "daphne" else f"ours@{kind}" for kind in servers}
    head = ["updates/s (frames/s offered)"]
    for kind in servers:
        head += [f"{kind} p50 ms", f"{kind} p99 ms", f"{kind} frames/s", f"{kind} delivered", f"{kind} lost finals",
                 f"{kind} µs/frame"]  # fmt: skip
    head += [f"p50 {kind} ÷ daphne" for kind in servers[1:]]
    lines = [row(head), "|" + "---|" * len(head)]
    for rate in rates_of(results):

        def g(run: dict[str, Any], kind: str, *path: str, rate: str = rate) -> Any:
            return dig(fan_step(run, targets[kind], big, rate), *path)

        cells = [f"{rate} ({float(rate) * big:,.0f})"]
        for kind in servers:
            cells += [
                per_run(runs, lambda r, k=kind: g(r, k, "lat", "median")),
                per_run(runs, lambda r, k=kind: g(r, k, "lat", "p99")),
                per_run(runs, lambda r, k=kind: g(r, k, "fps"), 0),
                per_run(runs, lambda r, k=kind: 100 * (g(r, k, "delivered_share") or 0), 0, " %"),
                per_run(runs, lambda r, k=kind: g(r, k, "missing_finals"), 0),
                per_run(runs, lambda r, k=kind, q=rate: _cpu_per_frame(fan_step(r, targets[k], big, q)), 0),
            ]
        cells += [
            ratio_text(runs, lambda r, k=kind: g(r, k, "lat", "median"), lambda r: g(r, "daphne", "lat", "median"))
            for kind in servers[1:]
        ]
        lines.append(row(cells))
    return lines


def fanout_log_table(results: dict[str, Any]) -> list[str]:
    """``--only fanout_log``: the same watchers and daphne, at the same rate, without and with a log line per update."""
    runs = results["runs"]
    watchers = results["plan"]["fanout_watchers"][-1]
    block = f"ours/{watchers}"
    steps = sorted({step for run in runs for step in dig(run, "fanout_log", block) or {} if step[0].isdigit()})
    if not steps:
        return ["(not run)"]
    lines = [
        "| watchers @ updates/s | variant | p50 ms | p99 ms | frames/s | delivered | lost finals "
        "| daphne µs/frame | p50 ÷ without | p99 ÷ without |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        rate, _, with_log = step.partition("+")

        def g(run: dict[str, Any], *path: str, step: str = step) -> Any:
            return dig(run, "fanout_log", block, step, *path)

        def plain(run: dict[str, Any], *path: str, rate: str = rate) -> Any:
            return dig(run, "fanout_log", block, rate, *path)

        cells = [
            f"{watchers:,} @ {rate}",
            "one log line in every update" if with_log else "without log lines (anchor)",
            per_run(runs, lambda r: g(r, "lat", "median")),
            per_run(runs, lambda r: g(r, "lat", "p99")),
            per_run(runs, lambda r: g(r, "fps"), 0),
            per_run(runs, lambda r: 100 * (g(r, "delivered_share") or 0), 0, " %"),
            per_run(runs, lambda r: g(r, "missing_finals"), 0),
            per_run(runs, lambda r, s=step: _cpu_per_frame(dig(r, "fanout_log", block, s)), 0),
            ratio_text(runs, lambda r: g(r, "lat", "median"), lambda r: plain(r, "lat", "median")),
            ratio_text(runs, lambda r: g(r, "lat", "p99"), lambda r: plain(r, "lat", "p99")),
        ]
        lines.append(row(cells))
    return lines


def multi_table(results: dict[str, Any]) -> list[str]:
    runs = results["runs"]
    lines = [
        "| 100 tasks × 10 watchers | p50 ms | p99 ms | frames/s | lost finals | daphne µs/frame "
        "| RSS before → after connecting (MB) | RSS per idle watcher KB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target, label in (("ours", "realtime_async"), ("naive", "tutorial consumer (anchor)")):

        def g(run: dict[str, Any], *path: str, t: str = target) -> Any:
            return dig(run, "multi", t, *path)

        rss = " / ".join(
            f"{(g(r, 'rss_before_kb') or 0) / 1024:.1f} → {(g(r, 'rss_after_kb') or 0) / 1024:.1f}" for r in runs
        )
        cells = [
            label,
            per_run(runs, lambda r: g(r, "step", "lat", "median")),
            per_run(runs, lambda r: g(r, "step", "lat", "p99")),
            per_run(runs, lambda r: g(r, "step", "fps"), 0),
            per_run(runs, lambda r: g(r, "step", "missing_finals"), 0),
            per_run(runs, lambda r: g(r, "step", "daphne_us_per_frame"), 0),
            rss,
            per_run(runs, lambda r: g(r, "rss_per_watcher_kb"), 1),
        ]
        lines.append(row(cells))
    lines.append("")
    bursts = [dig(run, "multi", "ours", "burst") for run in runs]
    if any(bursts):
        lines.append(
            "Burst check (after the step): every watcher subscribes to one of 100 new tasks at the same moment "
            "(no window): "
            + " / ".join(
                f"{b['snapshots']:,} answered, closed {b['close_codes'] or 'none'}" for b in bursts if b is not None
            )
            + ". The measured step above subscribes at most 32 at a time per client process."
        )
    return lines


def calibration_table(results: dict[str, Any]) -> list[str]:
    cal = results.get("calibration") or {}
    if not cal:
        return ["(not run)"]
    lines = [
        "| client | watchers | connect s | client CPU µs / frame | frames/s | p50 ms | p99 ms | lost finals |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("raw", "hand-rolled (`bench/wsclient.py`, used)"), ("websockets", "`websockets` 17 library")):
        c = cal.get(name) or {}
        cells = [
            f"{label}, {c.get('loop')} loop",
            str(c.get("watchers")),
            num(c.get("connect_seconds")),
            num(c.get("client_us_per_frame"), 1),
            num(c.get("fps"), 0),
            num(dig(c, "lat", "median")),
            num(dig(c, "lat", "p99")),
            str(c.get("missing_finals")),
        ]
        lines.append(row(cells))
    return lines


def _profile_title(prof: dict[str, Any]) -> str:
    if prof["target"] == "poll304":
        behind = ", behind `ProgressHttpRouter`" if prof.get("app") == "router" else ""
        clients = prof["watchers"]
        return f"polling: {clients} clients polling our JSON endpoint with a matching ETag (304) on daphne{behind}"
    name = "realtime_async" if prof["target"] == "ours" else "the tutorial consumer"
    return f"{name} on {prof.get('server', 'daphne')}: {prof['watchers']:,} watchers at {prof['rate']:g} updates/s"


def profile_section(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for prof in results.get("profiles") or []:
        unit = "request" if prof["target"] == "poll304" else "frame"
        per_unit = prof.get("daphne_us_per_frame")
        server = prof.get("server", "daphne")
        lines += [
            f"#### {_profile_title(prof)}",
            "",
            f"{server} busy {100 * prof['daphne_cpu_share']:.0f} % of one core, "
            f"{num(prof['fps'], 0)} {unit}s/s, **{num(per_unit, 1)} µs of {server} CPU per {unit}**; "
            f"{prof['samples']:,} samples ({prof.get('idle_samples', 0):,} idle apart, `{prof['file']}`); "
            f"p50 {num(dig(prof, 'lat', 'median'))} ms, "
            f"p99 {num(dig(prof, 'lat', 'p99'))} ms while sampled (py-spy costs a little).",
            "",
            f"| whose code the CPU is in (innermost non-stdlib frame) | share | µs per {unit} |",
            "|---|---|---|",
        ]
        for package, share in prof["packages"]:
            lines.append(f"| {package} | {share:.1f} % | {num(per_unit * share / 100 if per_unit else None, 1)} |")
        lines += ["", "| top lines, self time | share |", "|---|---|"]
        lines += [f"| `{fn}` | {share:.1f} % |" for fn, share in prof["self_lines"][:15]]
        lines += ["", "| top functions, inclusive (on the stack) | share |", "|---|---|"]
        lines += [f"| `{fn}` | {share:.1f} % |" for fn, share in prof["inclusive"][:22]]
        lines.append("")
    return lines or ["(not run)"]


def _group_sizes(runs: Sequence[dict[str, Any]]) -> list[int]:
    prefix = "group_update_part_"
    keys = {key for run in runs for key in dig(run, "groups", "cost") or {} if key.startswith(prefix)}
    return sorted(int(key[len(prefix) :]) for key in keys)


def groups_table(runs: Sequence[dict[str, Any]]) -> list[str]:
    """``--only groups``: a part's ``update_progress`` beside a plain task's, the launch of a group beside
    as many ``apply_async`` and ``launch_async_task`` calls, the parent's updates a second under load."""
    if not any(run.get("groups") for run in runs):
        return ["(not run)"]
    sizes = _group_sizes(runs)
    rows = [("plain task (anchor)", "plain")] + [(f"part of a {size:,}-part group", f"part_{size}") for size in sizes]
    lines = [
        "| per call | median µs | p99 µs | CPU µs / call (incl. sender thread) | median ÷ plain task "
        "| parent writes / calls |",
        "|---|---|---|---|---|---|",
    ]
    quiet = [
        (f"part of a {size:,}-part group, its percent unchanged (no parent write)", f"part_{size}") for size in sizes
    ]
    throttled = [
        (f"part of a {size:,}-part group, its parent published at most 10/s (the default interval)", f"part_{size}")
        for size in sizes
    ]
    for mode, label, names in (
        ("update", "`update_progress`, every call publishes (`PROGRESS_RATE` 1e9)", rows),
        ("quiet", "… the same, diagnostic", quiet),
        ("throttled", "… the same, diagnostic", throttled),
        ("hot", "`update_progress` in a hot loop, coalesced at the default 10/s", rows),
    ):
        for name, key in names:

            def get(run: dict[str, Any], field: str = "median_us", key: str = f"group_{mode}_{key}") -> Any:
                return dig(run, "groups", "cost", key, field)

            def writes(run: dict[str, Any], get=get) -> str:
                done, n = get(run, "parent_writes"), get(run, "n")
                return "–" if done is None else f"{done:,} of {n:,}"

            if all(get(run) is None for run in runs):
                continue
            lines.append(
                row(
                    [
                        f"{label}: {name}",
                        per_run(runs, get),
                        per_run(runs, lambda r, get=get: get(r, "p99_us")),
                        per_run(runs, lambda r, get=get: get(r, "cpu_us")),
                        ratio_text(runs, get, lambda r, mode=mode: plain_median(r, mode)),
                        " / ".join(writes(run) for run in runs),
                    ]
                )
            )
    lines.append("")
    lines.append(
        "The diagnostic rows: another part of the same group whose `current` stays the same, so its writes change "
        "nothing in the aggregate and never publish the parent (what the link to the group costs by itself); and a "
        "part of another group whose parent keeps the default interval (0.1 s) while the part writes at every call "
        "(a busy group's usual case: most part writes update the aggregate without publishing the parent)."
    )
    lines.append("")
    parts = dig(runs[0], "groups", "launch", "parts") or 0
    reps = dig(runs[0], "groups", "launch", "reps") or 0
    lines += [
        f"Launch: wall time of {parts:,} calls or one group of {parts:,} parts (median of {reps} turns; every message "
        "to a queue nothing consumes, purged afterwards).",
        "",
        "| launch | wall s | µs per part | CPU s | ÷ apply_async | ÷ launch_async_task |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("apply_async", f"{parts:,} × Celery `apply_async` of `realtime_async.run` (anchor)"),
        ("launch_async_task", f"{parts:,} × `launch_async_task`"),
        ("launch_async_group", f"`launch_async_group` of {parts:,} parts"),
    ):

        def launch(run: dict[str, Any], field: str = "median_s", key: str = key) -> Any:
            return dig(run, "groups", "launch", key, field)

        lines.append(
            row(
                [
                    label,
                    per_run(runs, launch, 3),
                    per_run(runs, lambda r, launch=launch: launch(r, "per_part_us"), 0),
                    per_run(runs, lambda r, launch=launch: launch(r, "cpu_s"), 3),
                    ratio_text(runs, launch, lambda r: dig(r, "groups", "launch", "apply_async", "median_s")),
                    ratio_text(runs, launch, lambda r: dig(r, "groups", "launch", "launch_async_task", "median_s")),
                ]
            )
        )
    lines.append("")
    for i, run in enumerate(runs):
        rate = dig(run, "groups", "rate")
        if not rate:
            continue
        frames = rate.get("frames_per_watcher") or [0]
        lines.append(
            f"Parent under load (run {i + 1}): {rate['writers']} processes updated all {rate['parts']:,} parts "
            f"({rate['calls']:,} calls, {rate['part_writes']:,} part writes in {rate['write_seconds']:.1f} s, "
            f"after {rate['start_seconds']:.1f} s starting them), then finished them; {rate['watchers']} WebSocket "
            f"watchers of the parent got {min(frames)}–{max(frames)} parent records each besides the final one: "
            f"at most **{rate['most_per_s_written']}** written and {rate['most_per_s_arrived']} arrived in any "
            f"second, {num(rate['mean_per_s'], 1)} a second on average; {rate['missing_finals']} final states "
            f"missing, {rate['out_of_order']} out of order, {rate['repeats']} repeated; final counts "
            f"{_counts_text(rate.get('final_counts'))} ({'exact' if rate.get('counts_exact') else '**not exact**'}"
            f", the stored parts agree: {rate['stored']['part_states']})."
        )
        lines.append("")
    return lines[:-1]


def plain_median(run: dict[str, Any], mode: str) -> float | None:
    return dig(run, "groups", "cost", f"group_{'hot' if mode == 'hot' else 'update'}_plain", "median_us")


def _counts_text(counts: dict[str, int] | None) -> str:
    if not counts:
        return "–"
    return ", ".join(f"{state} {n:,}" for state, n in counts.items() if n) or "all zero"
