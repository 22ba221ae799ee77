"""Server-Sent Events: many streams of one task on one server, their table and issue 13's SSE targets.

The scenario (``--only sse``) opens ``sse_watchers`` streams
(``GET /realtime-async/events/?task=…&token=…``, ``bench/sseclient.py``) of one task on a fresh
server of each of ``sse_servers``, waits for every snapshot, then the publisher updates the task
``sse_rate`` times a second for ``step_seconds`` and finishes it: latency from the publisher's
``time.time()`` in the update to its arrival, as for the WebSocket watchers. One watcher end to end
is a row of the ``e2e`` scenario (key ``sse``), beside the Redis pub/sub floor it is held to.
The anchors are the same run's WebSocket figures: realtime_async's fan-out to as many watchers at
the same rate on the same server.
"""

from __future__ import annotations

from typing import Any

from bench.figures import Getter, dig, e2e, fan_step, num, per_run, ratio_check, ratio_text, row, verdict
from bench.harness import NO_ROUTER, Bench, connect, log, proc_rss_kb, run_step, sse_path, updates_for

#: One SSE watcher end to end: median at most this many times the Redis pub/sub floor.
E2E_FLOOR_TARGET = 3.0
#: Many streams at ``sse_rate``: median and p99 under these (ms), every final state delivered.
MEDIAN_MS, P99_MS = 50.0, 250.0


def scenario_sse(b: Bench, rep: int) -> dict[str, Any]:
    """``sse_watchers`` SSE streams of one task on one fresh server of each of ``sse_servers``, the task updated
    ``sse_rate`` times a second (key ``"<server>/<watchers>"``)."""
    if not b.features["http_router"]:
        return {"unavailable": NO_ROUTER}
    p = b.plan
    n, rate = p.sse_watchers, p.sse_rate
    out: dict[str, Any] = {}
    for kind in p.sse_servers:
        label = f"sse-{kind}-{n}-r{rep}"
        with b.daphne(label, kind) as server, b.watchers(n) as agents:
            (name, token), *_ = b.pub.call("create_tasks", 30, n=1, prefix="sse")["tasks"]
            rss0 = proc_rss_kb(server.pid)
            connected = connect(agents, "ours", server.port, [sse_path([[name, token]])] * n, "sse", [name] * n)
            rss1 = proc_rss_kb(server.pid)
            step = run_step(
                b, agents, b.pub, "run_ours", {"tasks": [name]}, b.step_id(label),
                daphne=server, rate=rate, count=updates_for(p, rate), drain=p.drain,
            )  # fmt: skip
            out[f"{kind}/{n}"] = {
                **step,
                "connect_seconds": connected["seconds"],
                "rss_before_kb": rss0,
                "rss_after_kb": rss1,
            }
        log(
            f"  sse@{kind} x{n} @{rate:g}/s: p50 {num(step['lat']['median'])} ms p99 {num(step['lat']['p99'])} ms, "
            f"{step['fps']:.0f} fps, lost finals {step['missing_finals']}"
        )
    return out


# -- the report ---------------------------------------------------------------------
def _plan(results: dict[str, Any]) -> tuple[int, float, list[str]]:
    plan = results["plan"]
    return plan.get("sse_watchers", 0), plan.get("sse_rate", 0), list(plan.get("sse_servers") or ())


def _stream(run: dict[str, Any], kind: str, n: int, *path: str) -> Any:
    return dig(run, "sse", f"{kind}/{n}", *path)


def _websocket(run: dict[str, Any], kind: str, n: int, rate: float, *path: str) -> Any:
    """The same run's WebSocket fan-out to ``n`` watchers at ``rate`` on ``kind`` (the anchor)."""
    target = "ours" if kind == "daphne" else f"ours@{kind}"
    return dig(fan_step(run, target, n, f"{rate:g}"), *path)


def table(results: dict[str, Any]) -> list[str]:
    runs = results["runs"]
    n, rate, servers = _plan(results)
    lines = [
        "| server | streams @ updates/s | p50 ms | p99 ms | frames/s | delivered | lost finals | server µs/frame "
        "| connect s (snapshots in) | RSS before → after connecting (MB) | p50 ÷ WebSocket | p99 ÷ WebSocket |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in servers:
        if all(_stream(run, kind, n) is None for run in runs):
            continue

        def g(run: dict[str, Any], *path: str, kind: str = kind) -> Any:
            return _stream(run, kind, n, *path)

        def ws(run: dict[str, Any], *path: str, kind: str = kind) -> Any:
            return _websocket(run, kind, n, rate, *path)

        def cpu(run: dict[str, Any], kind: str = kind) -> float | None:
            step = _stream(run, kind, n) or {}
            return step.get("daphne_us_per_frame") if (step.get("daphne_cpu") or 0) >= 0.1 else None

        rss = " / ".join(
            f"{(g(r, 'rss_before_kb') or 0) / 1024:.1f} → {(g(r, 'rss_after_kb') or 0) / 1024:.1f}" for r in runs
        )
        lines.append(
            row(
                [
                    kind,
                    f"{n:,} @ {rate:g}",
                    per_run(runs, lambda r: g(r, "lat", "median")),
                    per_run(runs, lambda r: g(r, "lat", "p99")),
                    per_run(runs, lambda r: g(r, "fps"), 0),
                    per_run(runs, lambda r: 100 * (g(r, "delivered_share") or 0), 0, " %"),
                    per_run(runs, lambda r: g(r, "missing_finals"), 0),
                    per_run(runs, cpu, 0),
                    per_run(runs, lambda r: g(r, "connect_seconds")),
                    rss,
                    ratio_text(runs, lambda r: g(r, "lat", "median"), lambda r: ws(r, "lat", "median")),
                    ratio_text(runs, lambda r: g(r, "lat", "p99"), lambda r: ws(r, "lat", "p99")),
                ]
            )
        )
    return lines if len(lines) > 2 else ["(not run)"]


def section(results: dict[str, Any]) -> list[str]:
    runs = results["runs"]
    if not any("sse" in run for run in runs):
        return []
    n, rate, _ = _plan(results)
    notes = sorted({dig(run, "sse", "unavailable") for run in runs} - {None})
    return [
        f"### Server-Sent Events: one task, {n:,} streams, one server process",
        "",
        f"{n:,} `EventSource`-like clients (`bench/sseclient.py`: one keep-alive GET each, the stream read as it "
        f"comes) of `/realtime-async/events/?task=…&token=…` on a fresh server, the task updated {rate:g} times a "
        "second. *÷ WebSocket*: against realtime_async's WebSocket fan-out to as many watchers at the same rate "
        "on the same server, in the same run (the fan-out tables).",
        "",
        *table(results),
        *([""] + [f"{note}." for note in notes] if notes else []),
    ]


# -- the targets ----------------------------------------------------------------------
def e2e_keys(results: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """The end-to-end results of ``path`` ("ours": WebSocket, "sse") on each server the run measured it on:
    (key, what a target's name adds), daphne's first."""
    others = [kind for kind in results["plan"].get("e2e_servers") or () if kind != "daphne"]
    return [(path, ""), *((f"{path}@{kind}", f" (on {kind})") for kind in others)]


def target_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Issue 13's SSE targets: one watcher end to end against the pub/sub floor; many streams on each server."""
    runs = results["runs"]
    n, rate, servers = _plan(results)

    rows = [
        (
            f"SSE end to end, 1 watcher: median ≤ {E2E_FLOOR_TARGET:g}× the Redis pub/sub floor{on}",
            per_run(runs, e2e(key), unit=" ms"),
            "floor " + per_run(runs, e2e("floor"), unit=" ms"),
            ratio_text(runs, e2e(key), e2e("floor")),
            verdict(runs, ratio_check(e2e(key), e2e("floor"), lambda r: r <= E2E_FLOOR_TARGET)),
        )
        for key, on in e2e_keys(results, "sse")
    ]
    for kind in servers:

        def g(*path: str, kind: str = kind) -> Getter:
            return lambda r: _stream(r, kind, n, *path)

        def ws(*path: str, kind: str = kind) -> Getter:
            return lambda r: _websocket(r, kind, n, rate, *path)

        def below(get: Getter, bound: float) -> Any:
            return lambda run: None if get(run) is None else get(run) < bound

        for key, bound in (("median", MEDIAN_MS), ("p99", P99_MS)):
            rows.append(
                (
                    f"{n:,} SSE watchers at {rate:g}/s on one {kind}: {key} < {bound:g} ms",
                    per_run(runs, g("lat", key), unit=" ms"),
                    "WebSocket " + per_run(runs, ws("lat", key), unit=" ms"),
                    ratio_text(runs, g("lat", key), ws("lat", key)),
                    verdict(runs, below(g("lat", key), bound)),
                )
            )
        rows.append(
            (
                f"… every final state delivered ({kind})",
                per_run(runs, g("missing_finals"), 0) + " lost",
                "WebSocket " + per_run(runs, ws("missing_finals"), 0) + " lost",
                "",
                verdict(runs, below(g("missing_finals"), 1)),
            )
        )
    return rows
