"""The benchmark runner: ``.venv/bin/python -m bench [--quick]``.

Starts a private redis-server on a free port, daphne (and uvicorn) on loopback, publisher
processes (plain Django processes, the worker side) and client processes, runs
every scenario (twice in a full run, once with ``--quick``), then writes
``docs/benchmarks.md`` and ``docs/bench/*.png`` (``--quick`` writes under
``.artifacts/bench-quick/`` unless ``--out`` says otherwise).

Scenarios (see ``docs/benchmarks.md``): worker-side cost, launch cost,
end-to-end latency with one watcher (WebSocket and SSE), fan-out to 1/100/1,000
watchers at increasing rates (and the 1,000 on uvicorn too), 1,000 SSE streams
(``sse``), 100 tasks x 10 watchers with daphne's RSS per idle watcher, polling
endpoints (with unchanged polls through ``ProgressHttpRouter`` against the plain
Django app, and 1,000 pollers on one server process), clients that stop reading
(with and without backpressure); then a py-spy profile of daphne during the
1,000-watcher fan-out. Every anchor runs
in the same run as what it anchors. ``--only fanout_log`` (never part of the default
set) runs the 1,000-watcher fan-out at 10 updates/s with and without a log line per update;
``--only groups`` (nor this one) a group part's ``update_progress`` beside a plain task's, the
launch of a 1,000-part group beside 1,000 ``apply_async`` calls, and the parent's updates a
second seen over daphne while all 1,000 parts are updated; ``--only redis_cost`` (nor this one, and
written under ``.artifacts/bench-redis-cost/`` unless ``--out`` says otherwise) Redis' commands and CPU
per update (``bench/redis_cost.py``); ``--only hub_reader`` (likewise, under ``.artifacts/bench-hub-reader/``)
the server's CPU per pub/sub message its hub reads (``bench/hub_reader.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import profile
from bench.agent import ARTIFACTS, ROOT
from bench.harness import Bench, log
from bench.plans import FULL, QUICK, Plan
from bench.scenarios import (
    OPTIONAL_SCENARIOS,
    SCENARIO_FUNCS,
    SCENARIOS,
    calibration,
    profile_pass,
    profile_polling,
)
from tests.services import private_redis

__all__ = ["FULL", "QUICK", "SCENARIOS", "Plan", "main", "run"]


def _check_optional(skip_optional: bool) -> bool:
    """Whether the bench extra is there (anchors, charts, profiles); refuse loudly unless told to skip."""
    missing = [
        name
        for name, ok in (
            ("celery-progress", _importable("celery_progress")),
            ("matplotlib", _importable("matplotlib")),
            ("py-spy", profile.py_spy() is not None),
            ("uvicorn", _importable("uvicorn")),
            ("uvloop", _importable("uvloop")),
        )
        if not ok
    ]
    if skip_optional:
        return False
    if missing:
        raise SystemExit(
            f"bench: missing {', '.join(missing)}; install them with "
            "`.venv/bin/pip install -r the bench extra` (or pass --skip-optional to run without "
            "the celery-progress anchors, the charts and the profile)."
        )
    return True


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run(
    plan: Plan,
    *,
    scenarios: tuple[str, ...] = SCENARIOS,
    skip_optional: bool = False,
    profile_targets: tuple[str, ...] | None = None,
    profiles_only: bool = False,
    layer: str = "pubsub",
) -> dict[str, Any]:
    """Run the scenarios ``plan.reps`` times (whole passes, one after the other) and answer the figures."""
    if shutil.which("redis-server") is None:
        raise SystemExit("bench: redis-server is not installed (Debian: apt-get install redis-server).")
    with_optional = _check_optional(skip_optional)
    started = time.monotonic()
    results: dict[str, Any] = {
        "plan": dataclasses.asdict(plan),
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "load_before": os.getloadavg(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--", "realtime_async")),
            "optional": with_optional,
            "layer": layer,
        },
        "runs": [],
        "skipped": [],
    }
    with private_redis() as (redis_url, _redis_proc, redis_port):
        b = Bench(plan, redis_url, redis_port, with_optional, layer)
        try:
            for rep in range(plan.reps):
                run_results: dict[str, Any] = {}
                for name in scenarios:
                    if time.monotonic() - started > plan.max_seconds:
                        results["skipped"].append(f"{name} (run {rep + 1}): time budget spent")
                        continue
                    log(f"run {rep + 1}/{plan.reps}: {name}")
                    t0 = time.monotonic()
                    run_results[name] = SCENARIO_FUNCS[name](b, rep)
                    run_results[name]["seconds"] = time.monotonic() - t0
                results["runs"].append(run_results)
            if "fanout" in scenarios and time.monotonic() - started < plan.max_seconds:
                log("client calibration")
                results["calibration"] = calibration(b, results["runs"][0])
            results["profiles"] = []
            if with_optional and ("fanout" in scenarios or profiles_only):
                for spec in profile_targets or plan.profile_targets:
                    if time.monotonic() - started > plan.max_seconds + 30:
                        results["skipped"].append(f"profile of {spec}: time budget spent")
                        continue
                    log(f"profile: {spec}")
                    target, _, kind = spec.partition("@")
                    if target == "poll304":
                        results["profiles"].append(profile_polling(b))
                    else:
                        results["profiles"].append(profile_pass(b, target, kind or "daphne"))
        finally:
            b.stop()
    results["meta"]["load_after"] = os.getloadavg()
    results["meta"]["seconds"] = time.monotonic() - started
    return results


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke version of every scenario")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)} (or of {', '.join(OPTIONAL_SCENARIOS)}: only if named)",
    )
    parser.add_argument("--out", type=Path, help="the Markdown (default docs/benchmarks.md; --quick: .artifacts/)")
    parser.add_argument(
        "--layer",
        choices=("core", "pubsub"),
        default="pubsub",
        help="channels_redis layer of every process (pubsub, the documented setup; core: RedisChannelLayer)",
    )
    parser.add_argument("--reps", type=int, help="how many times each scenario runs (full: 2, quick: 1)")
    parser.add_argument("--skip-optional", action="store_true", help="run without the the bench extra extras")
    parser.add_argument("--report-only", type=Path, help="rewrite the report from a results JSON file")
    parser.add_argument(
        "--profiles-into", type=Path, help="record the profiles again into a results JSON file, then the report"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = dataclasses.replace(plan, reps=args.reps)
    if args.out:
        out = args.out
    elif args.quick or args.layer != "pubsub":  # docs/ holds the full run of the documented setup only
        out = ARTIFACTS / f"bench-{'quick' if args.quick else args.layer}" / "benchmarks.md"
    elif args.only in ("redis_cost", "hub_reader"):  # their figures go to docs/ by hand, beside the full run's
        out = ARTIFACTS / f"bench-{args.only.replace('_', '-')}" / "benchmarks.md"
    else:
        out = ROOT / "docs" / "benchmarks.md"
    if args.report_only:
        results = json.loads(args.report_only.read_text())
        for prof in results.get("profiles") or []:  # the raw samples, read again with today's rules
            if (ROOT / prof["file"]).exists():
                prof.update(profile.analyse(ROOT / prof["file"]))
    elif args.profiles_into:
        results = json.loads(args.profiles_into.read_text())
        results["profiles"] = run(plan, scenarios=(), skip_optional=args.skip_optional, profiles_only=True)["profiles"]
        results["meta"]["profiles_recorded"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        args.profiles_into.write_text(json.dumps(results))
    else:
        scenarios = tuple(s for s in args.only.split(",") if s)
        known = (*SCENARIOS, *OPTIONAL_SCENARIOS)
        unknown = set(scenarios) - set(known)
        if unknown:
            parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(known)}")
        results = run(plan, scenarios=scenarios, skip_optional=args.skip_optional, layer=args.layer)
        ARTIFACTS.mkdir(exist_ok=True)
        saved = ARTIFACTS / f"bench-results-{plan.name}-{args.layer}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        saved.write_text(json.dumps(results))
        log(f"results: {saved.relative_to(ROOT)}")
    if results["meta"]["optional"]:
        from bench import report

        report.write(results, out)
        log(f"report: {out}")
    else:
        log("report not written: it needs the bench extra (--skip-optional)")
    return 0
