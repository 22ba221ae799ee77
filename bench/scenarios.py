"""The scenarios (see ``docs/benchmarks.md``), the client calibration and the profiles."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

from bench import profile
from bench.agent import ARTIFACTS, ROOT, Agent, BenchError, call_all
from bench.harness import (
    MULTI_PATH,
    Bench,
    Server,
    connect,
    log,
    proc_cpu,
    proc_rss_kb,
    run_step,
    sse_path,
    subscribe,
    updates_for,
)
from bench.hub_reader import scenario_hub_reader
from bench.polling import scenario_polling
from bench.redis_cost import scenario_redis_cost
from bench.slow_readers import scenario_slow_readers
from bench.sse import scenario_sse
from bench.stats import latency_summary, merge_steps

SCENARIOS = ("worker", "e2e", "fanout", "sse", "multi", "polling", "slow_readers")
#: Run only when named (``--only fanout_log``): not part of a full run nor of ``--quick``'s default.
OPTIONAL_SCENARIOS = ("fanout_log", "groups", "redis_cost", "hub_reader")


def scenario_worker(b: Bench, rep: int) -> dict[str, Any]:
    p = b.plan
    out = b.pub.call(
        "worker_cost",
        120,
        n=p.cost_n,
        gap=p.cost_gap,
        budget=p.cost_budget,
        hot_seconds=p.hot_seconds,
        hot_max=p.hot_max,
        n_group_send=p.cost_n_group_send,
    )
    out.update(b.pub.call("launch_cost", 120, n=p.launch_n, budget=p.cost_budget * 2))
    if b.cp_pub is not None:
        out.update(
            b.cp_pub.call("celery_progress_cost", 120, n=p.cost_n_group_send, gap=p.cost_gap, budget=p.cost_budget)
        )
    return out


def scenario_e2e(b: Bench, rep: int) -> dict[str, Any]:
    p = b.plan
    port = b.service.port
    out: dict[str, Any] = {}
    common = {"daphne": b.service, "rate": p.e2e_rate, "count": p.e2e_count, "drain": p.drain}
    with b.watchers(1) as agents:
        (agent,) = agents
        agent.call("floor_subscribe", 10, channel=f"bench-floor-{rep}", port=b.redis_port)
        step = b.step_id("floor")
        publish = {"via": "floor", "channel": f"bench-floor-{rep}"}
        out["floor"] = run_step(b, agents, b.pub, "run_events", publish, step, **{**common, "daphne": None})
        agent.call("close", 10)

        group = f"bench-layer-{rep}-{uuid.uuid4().hex[:6]}"
        agent.call(
            "layer_subscribe", 10, url=b.redis_url, prefix=b.env["RA_TEST_PREFIX"] + ":asgi", group=group, layer=b.layer
        )
        publish = {"via": "layer", "group": group}
        out["layer"] = run_step(
            b, agents, b.pub, "run_events", publish, b.step_id("layer"), **{**common, "daphne": None}
        )
        agent.call("close", 10)

        out.update(_e2e_ours(b, agents, b.service, "", common))
        for kind in p.e2e_servers:  # the same on a fresh server of each other kind
            with b.daphne("e2e", kind=kind) as server:
                out.update(_e2e_ours(b, agents, server, f"@{kind}", {**common, "daphne": server}))

        group = f"e2e-{rep}-{uuid.uuid4().hex[:6]}"
        connect(agents, "naive", port, [f"/ws/bench/naive/{group}/"])
        publish = {"via": "naive", "groups": [group]}
        out["naive"] = run_step(b, agents, b.pub, "run_events", publish, b.step_id("e2e-naive"), **common)
        agent.call("close", 10)

        if b.cp_pub is not None:
            task_id = str(uuid.uuid4())
            connect(agents, "celery_progress", port, [f"/ws/progress/{task_id}/"])
            publish = {"task_id": task_id, "mode": "ws"}
            out["celery_progress_ws"] = run_step(
                b, agents, b.cp_pub, "run_celery_progress", publish, b.step_id("e2e-cp"), **common
            )
            agent.call("close", 10)
    return out


def _e2e_ours(b: Bench, agents: list[Agent], server: Server, suffix: str, common: dict[str, Any]) -> dict[str, Any]:
    """realtime_async end to end on ``server``: one WebSocket watcher of a task (key ``ours<suffix>``), then one SSE
    stream of another (``sse<suffix>``)."""
    (agent,) = agents
    out: dict[str, Any] = {}
    connect(agents, "ours", server.port, [MULTI_PATH])
    tasks = b.pub.call("create_tasks", 30, n=1, prefix="e2e")["tasks"]
    subscribe(agents, tasks, 1)
    publish = {"tasks": [tasks[0][0]]}
    out[f"ours{suffix}"] = run_step(b, agents, b.pub, "run_ours", publish, b.step_id(f"e2e-ours{suffix}"), **common)
    agent.call("close", 10)
    if b.features["http_router"]:  # the same, to an SSE stream of the task
        tasks = b.pub.call("create_tasks", 30, n=1, prefix="e2e-sse")["tasks"]
        connect(agents, "ours", server.port, [sse_path(tasks)], client="sse", tasks=[tasks[0][0]])
        publish = {"tasks": [tasks[0][0]]}
        out[f"sse{suffix}"] = run_step(b, agents, b.pub, "run_ours", publish, b.step_id(f"e2e-sse{suffix}"), **common)
        agent.call("close", 10)
    return out


def _fanout_block(
    b: Bench,
    target: str,
    watchers: int,
    rates: tuple[float, ...],
    label: str,
    variants: tuple[bool, ...] = (False,),
    kind: str = "daphne",
) -> dict[str, Any]:
    """One server (``kind``), ``watchers`` connections, a step per rate; ``variants``: without (False) and/or
    with (True, key ``"<rate>+log"``) a log line carried by every update (realtime_async only)."""
    p = b.plan
    out: dict[str, Any] = {}
    with b.daphne(label, kind) as server, b.watchers(watchers) as agents:
        group = f"{label}-{uuid.uuid4().hex[:6]}"
        path = MULTI_PATH if target == "ours" else f"/ws/bench/naive/{group}/"
        out["connect"] = connect(agents, target, server.port, [path] * watchers)
        out["rss_kb"] = proc_rss_kb(server.pid)
        for rate in rates:
            for with_log in variants:
                count = updates_for(p, rate)
                if target == "ours":
                    tasks = b.pub.call("create_tasks", 30, n=1, prefix="fan")["tasks"]
                    subscribe(agents, tasks, watchers)
                    op, publish = "run_ours", {"tasks": [tasks[0][0]], "with_log": with_log}
                else:
                    op, publish = "run_events", {"via": "naive", "groups": [group]}
                key = f"{rate:g}+log" if with_log else f"{rate:g}"
                step = b.step_id(f"{label}-{key}")
                out[key] = run_step(
                    b, agents, b.pub, op, publish, step, daphne=server, rate=rate, count=count, drain=p.drain
                )
                r = out[key]
                log(
                    f"  {target}@{kind} x{watchers} @{key}/s: p50 {r['lat']['median']} ms p99 {r['lat']['p99']} ms, "
                    f"{r['fps']:.0f} fps, lost finals {r['missing_finals']}"
                )
    return out


def scenario_fanout(b: Bench, rep: int) -> dict[str, Any]:
    """realtime_async and the tutorial consumer on daphne at every size; then realtime_async's largest fan-out
    on each other server of ``fanout_servers`` (key ``"ours@<server>/<watchers>"``), beside daphne's."""
    out: dict[str, Any] = {}
    rates, big = b.plan.fanout_rates, b.plan.fanout_watchers[-1]
    for target in ("ours", "naive"):
        for watchers in b.plan.fanout_watchers:
            out[f"{target}/{watchers}"] = _fanout_block(b, target, watchers, rates, f"fan-{target}-{watchers}-r{rep}")
        if target == "ours":
            for kind in b.plan.fanout_servers:
                if kind != "daphne":
                    label = f"fan-ours-{kind}-{big}-r{rep}"
                    out[f"ours@{kind}/{big}"] = _fanout_block(b, "ours", big, rates, label, kind=kind)
    return out


def scenario_fanout_log(b: Bench, rep: int) -> dict[str, Any]:
    """The largest fan-out at the sustained rate (10/s), each update carrying one log line, beside the same
    without, on the same daphne and connections (``--only fanout_log``)."""
    rates = b.plan.fanout_rates
    rate = 10.0 if 10 in rates else rates[0]
    watchers = b.plan.fanout_watchers[-1]
    label = f"fanlog-ours-{watchers}-r{rep}"
    return {f"ours/{watchers}": _fanout_block(b, "ours", watchers, (rate,), label, variants=(False, True))}


def scenario_groups(b: Bench, rep: int) -> dict[str, Any]:
    """Groups (``--only groups``): a part's publishing ``update_progress`` in a small and a large group beside a
    plain task's; the launch of a large group beside as many ``apply_async`` and ``launch_async_task`` calls;
    the parent's updates a second seen over daphne while every part of a large group is updated at once."""
    p = b.plan
    out: dict[str, Any] = {}
    try:
        out["cost"] = b.pub.call(
            "group_cost",
            p.cost_budget * 2 + 120,
            n=p.group_cost_n,
            gap=p.cost_gap,
            budget=p.cost_budget * 2,
            slices=p.group_cost_slices,
            sizes=list(p.group_sizes),
            hot_seconds=p.hot_seconds,
            hot_max=p.hot_max,
        )
        out["launch"] = b.pub.call(
            "group_launch_cost", 60 + p.group_launch_reps * p.group_launch_parts * 0.01,
            parts=p.group_launch_parts, reps=p.group_launch_reps,
        )  # fmt: skip
        log(
            "  launch: group {:.3f} s, apply_async {:.3f} s, launch_async_task {:.3f} s".format(
                *(out["launch"][k]["median_s"] for k in ("launch_async_group", "apply_async", "launch_async_task"))
            )
        )
        out["rate"] = _group_rate(b, rep)
    finally:
        out["purged"] = b.pub.call("purge_nowhere", 30)["purged"]
    return out


def _group_rate(b: Bench, rep: int) -> dict[str, Any]:
    """``group_writers`` publisher processes update every part of a ``group_rate_parts`` group as fast as they go
    (each part coalesced at the default ``PROGRESS_RATE``) for ``group_rate_seconds``, then finish them; watchers
    of the parent on the long-lived daphne count its records a second."""
    p = b.plan
    setup = b.pub.call("group_setup", 120, size=p.group_rate_parts)
    parent, parts = setup["parent"], setup["parts"]
    writers = [Agent(f"group-writer-{i}", "bench.publisher", b.env) for i in range(p.group_writers)]
    try:
        for writer in writers:
            writer.ready()
        with b.watchers(p.group_watchers) as agents:
            connect(agents, "group", b.service.port, [MULTI_PATH] * p.group_watchers)
            subscribe(agents, [[parent, setup["token"]]], p.group_watchers)
            call_all(agents, "start", 10, step=b.step_id(f"group-rate-r{rep}"))
            shares = [{"parts": parts[i :: len(writers)]} for i in range(len(writers))]
            started = call_all(writers, "group_start", 120, per_agent=shares)
            at = time.time() + 0.2
            wrote = call_all(
                writers,
                "group_write",
                p.group_rate_seconds + 120,
                per_agent=shares,
                at=at,
                seconds=p.group_rate_seconds,
            )
            step = call_all(agents, "finish", p.drain + 20, timeout=p.drain, settle=1.0)
    finally:
        for writer in writers:
            writer.stop()
    merged = merge_steps(step)
    figures = [part["parent"] for part in step]
    finals = [f["final_counts"] for f in figures if f["final_counts"] is not None]
    stored = b.pub.call("group_state", 30, parent=parent)
    seconds = max(w["wrote_until"] for w in wrote) - at
    out = {
        "parts": len(parts),
        "writers": len(writers),
        "watchers": merged["watchers"],
        "start_seconds": max(s["seconds"] for s in started),
        "write_seconds": seconds,
        "calls": sum(w["calls"] for w in wrote),
        "part_writes": sum(w["part_writes"] for w in wrote),
        "rounds": [w["rounds"] for w in wrote],
        "frames": merged["frames"],
        "missing_finals": merged["missing_finals"],
        "out_of_order": merged["out_of_order"],
        "errors": merged["errors"],
        "repeats": sum(f["repeats"] for f in figures),
        "frames_per_watcher": [n for f in figures for n in f["frames_per_watcher"]],
        "most_per_s_written": max((f["most_per_s_written"] or 0) for f in figures),
        "most_per_s_arrived": max((f["most_per_s_arrived"] or 0) for f in figures),
        "mean_per_s": max((f["mean_per_s"] or 0) for f in figures),
        "final_counts": finals[0] if finals else None,
        "finals_agree": bool(finals)
        and all(f["finals_agree"] for f in figures)
        and all(c == finals[0] for c in finals),
        "stored": stored,
    }
    expected = {state: (len(parts) if state == "success" else 0) for state in (stored["counts"] or {})}
    out["counts_exact"] = (
        stored["state"] == "success"
        and stored["counts"] == expected
        and stored["part_states"] == {"success": len(parts)}
        and out["final_counts"] == stored["counts"]
    )
    log(
        f"  parent: {out['most_per_s_written']} written / {out['most_per_s_arrived']} arrived in the busiest second, "
        f"mean {out['mean_per_s']:.1f}/s, {out['part_writes']:,} part writes in {seconds:.1f} s, "
        f"counts exact: {out['counts_exact']}"
    )
    return out


def scenario_multi(b: Bench, rep: int) -> dict[str, Any]:
    """100 tasks x 10 watchers; before any update, daphne's RSS per idle watcher."""
    p = b.plan
    n = p.multi_tasks * p.multi_per_task
    out: dict[str, Any] = {}
    for target in ("ours", "naive"):
        label = f"multi-{target}-r{rep}"
        with b.daphne(label) as server, b.watchers(1, processes=1) as warm, b.watchers(n) as agents:
            groups = [f"{label}-{uuid.uuid4().hex[:6]}-{g}" for g in range(p.multi_tasks)]
            # One watcher first, so that the modules, the hub and the layer connection are there before the baseline.
            if target == "ours":
                warm_tasks = b.pub.call("create_tasks", 30, n=1, prefix="warm")["tasks"]
                connect(warm, "ours", server.port, [MULTI_PATH])
                subscribe(warm, warm_tasks, 1)
            else:
                connect(warm, "naive", server.port, [f"/ws/bench/naive/{label}-warm/"])
            time.sleep(p.rss_settle)
            rss0 = proc_rss_kb(server.pid)
            if target == "ours":
                tasks = b.pub.call("create_tasks", 60, n=p.multi_tasks, prefix="multi")["tasks"]
                connected = connect(agents, "ours", server.port, [MULTI_PATH] * n)
                subscribed = subscribe(agents, tasks, n)
                op, publish = "run_ours", {"tasks": [name for name, _ in tasks]}
            else:
                paths = [f"/ws/bench/naive/{groups[k % p.multi_tasks]}/" for k in range(n)]
                # Connection k of each client process must watch task k % tasks: interleave like _split.
                connected = connect(agents, "naive", server.port, paths)
                op, publish = "run_events", {"via": "naive", "groups": groups}
            time.sleep(p.rss_settle)
            rss1 = proc_rss_kb(server.pid)
            out[target] = {
                "watchers": n,
                "connect_seconds": connected["seconds"],
                "subscribe_seconds": subscribed["seconds"] if target == "ours" else None,
                "rss_before_kb": rss0,
                "rss_after_kb": rss1,
                "rss_per_watcher_kb": (rss1 - rss0) / n,
                "step": run_step(
                    b,
                    agents,
                    b.pub,
                    op,
                    publish,
                    b.step_id(label),
                    daphne=server,
                    rate=p.multi_rate,
                    count=p.multi_count,
                    drain=p.drain,
                ),
            }
            if target == "ours":
                # Every watcher subscribing to a new task at the same moment (a page of 1,000 reloads).
                tasks = b.pub.call("create_tasks", 60, n=p.multi_tasks, prefix="burst")["tasks"]
                out[target]["burst"] = subscribe(agents, tasks, n, window=None, strict=False, timeout=20)
    return out


def _client_figures(step: dict[str, Any], connected: dict[str, Any]) -> dict[str, Any]:
    frames = step["frames"] + step["finals"]
    return {
        "loop": connected["loop"],
        "watchers": step["watchers"],
        "connect_seconds": connected["seconds"],
        "client_us_per_frame": step["client_cpu"] * 1e6 / frames if frames else None,
        "fps": step["fps"],
        "lat": step["lat"],
        "missing_finals": step["missing_finals"],
    }


def calibration(b: Bench, first_run: dict[str, Any]) -> dict[str, Any]:
    """The load client's own CPU per frame: the ``websockets`` library against the hand-rolled client.

    The hand-rolled client's figures are run 1's fan-out step with the same watchers and rate.
    """
    p = b.plan
    n, rate = p.calibration_watchers, p.calibration_rate
    out: dict[str, Any] = {}
    block = _get_path(first_run, "fanout", f"ours/{n}")
    if block and f"{rate:g}" in block:
        out["raw"] = _client_figures(block[f"{rate:g}"], block["connect"])
    with b.daphne("calib-websockets") as server, b.watchers(n) as agents:
        connected = connect(agents, "ours", server.port, [MULTI_PATH] * n, client="websockets")
        tasks = b.pub.call("create_tasks", 30, n=1, prefix="calib")["tasks"]
        subscribe(agents, tasks, n)
        step = run_step(
            b, agents, b.pub, "run_ours", {"tasks": [tasks[0][0]]}, b.step_id("calib-websockets"),
            daphne=server, rate=rate, count=updates_for(p, rate), drain=p.drain,
        )  # fmt: skip
        out["websockets"] = _client_figures(step, connected)
    return out


def _get_path(data: Any, *path: str) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def profile_pass(b: Bench, target: str, kind: str = "daphne") -> dict[str, Any]:
    """py-spy on the server while 1,000 (quick: fewer) watchers get ``profile_rate`` updates a second."""
    p = b.plan
    n = p.fanout_watchers[-1]
    rate = p.profile_rate
    count = round(rate * (p.profile_seconds + 0.8))
    out_file = ARTIFACTS / f"bench-profile-{target}-{kind}-{uuid.uuid4().hex[:6]}.txt"
    with b.daphne(f"profile-{target}", kind) as server, b.watchers(n) as agents:
        group = f"profile-{uuid.uuid4().hex[:6]}"
        path = MULTI_PATH if target == "ours" else f"/ws/bench/naive/{group}/"
        connect(agents, target, server.port, [path] * n)
        step = b.step_id(f"profile-{target}")
        if target == "ours":
            tasks = b.pub.call("create_tasks", 30, n=1, prefix="prof")["tasks"]
            subscribe(agents, tasks, n)
            op, publish = "run_ours", {"tasks": [tasks[0][0]]}
        else:
            op, publish = "run_events", {"via": "naive", "groups": [group]}
        call_all(agents, "start", 10, step=step)
        b.pub.send(op, step=step, rate=rate, count=count, **publish)
        time.sleep(0.3)  # past the first fan-outs
        cpu0, t0 = proc_cpu(server.pid), time.monotonic()
        sampler = profile.record(server.pid, p.profile_seconds, out_file)
        try:
            _, err = sampler.communicate(timeout=p.profile_seconds + 30)
        except subprocess.TimeoutExpired:
            sampler.kill()
            _, err = sampler.communicate()
        cpu, wall = proc_cpu(server.pid) - cpu0, time.monotonic() - t0
        b.pub.recv(count / rate * 2 + 60)
        parts = call_all(agents, "finish", p.drain + 20, timeout=p.drain, settle=1.0)
    merged = merge_steps(parts)
    if not out_file.exists():
        raise BenchError(f"py-spy wrote nothing: {err.decode(errors='replace')[-1000:]}")
    analysis = profile.analyse(out_file)
    fps_estimate = merged["frames"] / max(1e-9, merged["last"] - merged["first"]) if merged["first"] else 0
    return {
        "target": target,
        "server": kind,
        "watchers": n,
        "rate": rate,
        "file": str(out_file.relative_to(ROOT)),
        "daphne_cpu_share": cpu / wall,
        "fps": fps_estimate,
        "daphne_us_per_frame": cpu * 1e6 / (fps_estimate * wall) if fps_estimate else None,
        "lat": merged["lat"],
        "missing_finals": merged["missing_finals"],
        **analysis,
    }


def profile_polling(b: Bench) -> dict[str, Any]:
    """py-spy on daphne while clients poll our JSON endpoint with a matching ETag (every answer a 304)."""
    p = b.plan
    out_file = ARTIFACTS / f"bench-profile-poll304-{uuid.uuid4().hex[:6]}.txt"
    ours = b.pub.call("poll_setup", 30, kind="ours")
    path = f"/realtime-async/progress/{ours['task']}/?token={ours['token']}"
    seconds = p.profile_seconds + 1
    with b.daphne("profile-poll") as server:
        b.http.send(
            "load", port=server.port, path=path, headers={"Accept": "application/json"}, etag=True,
            seconds=seconds, concurrency=p.poll_concurrency, max_requests=1_000_000,
        )  # fmt: skip
        time.sleep(0.3)
        cpu0, t0 = proc_cpu(server.pid), time.monotonic()
        sampler = profile.record(server.pid, p.profile_seconds, out_file)
        try:
            _, err = sampler.communicate(timeout=p.profile_seconds + 30)
        except subprocess.TimeoutExpired:
            sampler.kill()
            _, err = sampler.communicate()
        cpu, wall = proc_cpu(server.pid) - cpu0, time.monotonic() - t0
        answer = b.http.recv(seconds + 30)
    if not out_file.exists():
        raise BenchError(f"py-spy wrote nothing: {err.decode(errors='replace')[-1000:]}")
    rps = answer["rps"]
    return {
        "target": "poll304",
        "app": "router" if b.features["http_router"] else "plain",
        "server": "daphne",
        "watchers": p.poll_concurrency,
        "rate": 0,
        "file": str(out_file.relative_to(ROOT)),
        "daphne_cpu_share": cpu / wall,
        "fps": rps,
        "daphne_us_per_frame": cpu * 1e6 / (rps * wall) if rps else None,
        "lat": latency_summary(answer["lat"]),
        "missing_finals": 0,
        **profile.analyse(out_file),
    }


SCENARIO_FUNCS = {
    "worker": scenario_worker,
    "e2e": scenario_e2e,
    "fanout": scenario_fanout,
    "multi": scenario_multi,
    "polling": scenario_polling,
    "sse": scenario_sse,
    "slow_readers": scenario_slow_readers,
    "fanout_log": scenario_fanout_log,
    "groups": scenario_groups,
    "redis_cost": scenario_redis_cost,
    "hub_reader": scenario_hub_reader,
}
