"""The polling scenario: the endpoints under load, unchanged polls with and without ``ProgressHttpRouter``,
and many pollers on one server process.

Three parts, in this order:

- **endpoints**, on the long-lived daphne (``bench.asgi:application``): latency with one client,
  requests a second with ``poll_concurrency`` keep-alive clients and daphne's CPU per request, for
  our JSON answer, the same with a matching ``If-None-Match`` (304), the htmx fragment and
  celery-progress's ``get_progress``; then how late a poller shows an update (htmx every second,
  celery-progress's JavaScript every 500 ms).
- **unchanged polls** (304), on a fresh server for each of ``poll_servers`` × {the plain Django ASGI
  app (``plain_application``: the path before the router, every request through Django's handler,
  middleware and a thread hop), ``ProgressHttpRouter`` (``application``)}: the same load at 1 and
  ``poll_concurrency`` clients, after a few warm-up requests.
- **many pollers**, on the router's server of each kind: ``poll_many_clients`` clients, each on its
  own connection, polling one of ``poll_many_tasks`` tasks ``poll_many_interval`` seconds after
  their last answer, with its ETag (``poll.js``), while the tasks are updated ``poll_many_updates``
  times a second in all; the server's CPU share of one core over the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from bench.figures import Getter, dig, num, per_run, ratio_check, ratio_text, row, verdict
from bench.harness import APP, NO_ROUTER, PLAIN_APP, Bench, Server, log, proc_cpu
from bench.stats import latency_summary, staleness

#: Unchanged polls (304) through the router: the server's CPU per request at most this share of the plain app's ...
CPU_TARGET = 0.1
#: ... and at least this many times its requests a second with ``poll_concurrency`` clients.
RPS_TARGET = 5.0
#: Many pollers fit in one process when it answers this share of the polls offered ...
MANY_SHARE = 0.95
#: ... with a p99 latency under this (ms), the fan-out targets' own bound ...
MANY_P99_MS = 250.0
#: ... using less than this share of one core.
MANY_CPU = 1.0
#: The apps compared, in the order of the report: (key, ``bench.asgi`` attribute, label).
APPS = (
    ("plain", PLAIN_APP, "plain Django ASGI app (today's path)"),
    ("router", APP, "`ProgressHttpRouter`"),
)


def _progress_path(task: str, token: str) -> str:
    return f"/realtime-async/progress/{task}/?token={token}"


def _load(b: Bench, server: Server, target: dict[str, Any], concurrency: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` keep-alive clients sending ``target``'s GET back to back for ``seconds``."""
    cpu0 = proc_cpu(server.pid)
    answer = b.http.call(
        "load", seconds + 30, port=server.port, seconds=seconds, concurrency=concurrency, max_requests=100_000, **target
    )
    cpu = proc_cpu(server.pid) - cpu0
    return {
        "rps": answer["rps"],
        "requests": answer["requests"],
        "statuses": answer["statuses"],
        "lat": latency_summary(answer["lat"]),
        "daphne_us_per_request": cpu * 1e6 / max(1, answer["requests"]),
    }


def scenario_polling(b: Bench, rep: int) -> dict[str, Any]:
    out: dict[str, Any] = {"load": _endpoints(b), "staleness": _staleness(b)}
    out.update(_unchanged(b, rep))
    return out


def _endpoints(b: Bench) -> dict[str, Any]:
    p = b.plan
    ours = b.pub.call("poll_setup", 30, kind="ours")
    path = _progress_path(ours["task"], ours["token"])
    targets: dict[str, dict[str, Any]] = {
        "ours_json": {"path": path, "headers": {"Accept": "application/json"}},
        "ours_json_304": {"path": path, "headers": {"Accept": "application/json"}, "etag": True},
        "ours_htmx": {"path": path, "headers": {"HX-Request": "true", "Accept": "text/html"}},
    }
    if b.cp_pub is not None:
        cp = b.cp_pub.call("poll_setup", 30, kind="celery_progress")
        targets["celery_progress"] = {"path": f"/celery-progress/{cp['task_id']}/", "headers": {}}
    assert b.service is not None
    return {
        f"{name}/c{concurrency}": _load(b, b.service, target, concurrency, p.poll_seconds)
        for name, target in targets.items()
        for concurrency in (1, p.poll_concurrency)
    }


def _staleness(b: Bench) -> dict[str, Any]:
    """How late a poller shows an update: htmx at POLL_INTERVAL (1 s), celery-progress's JS at its 500 ms."""
    p = b.plan
    assert b.service is not None
    fresh = b.pub.call("poll_setup", 30, kind="ours")
    polls = [
        {
            "name": "ours_htmx_1s",
            "kind": "htmx",
            "interval": 1.0,
            "path": _progress_path(fresh["task"], fresh["token"]),
            "headers": {"HX-Request": "true", "Accept": "text/html"},
        }
    ]
    b.pub.send("jitter_updates", kind="ours", task=fresh["task"], gap_min=0.1, gap_max=0.3, seconds=p.staleness_seconds)
    if b.cp_pub is not None:
        cp_fresh = b.cp_pub.call("poll_setup", 30, kind="celery_progress")
        polls.append(
            {
                "name": "celery_progress_500ms",
                "kind": "celery_progress",
                "interval": 0.5,
                "path": f"/celery-progress/{cp_fresh['task_id']}/",
            }
        )
        b.cp_pub.send(
            "jitter_updates", kind="celery_progress", task_id=cp_fresh["task_id"],
            gap_min=0.1, gap_max=0.3, seconds=p.staleness_seconds,
        )  # fmt: skip
    port, seconds = b.service.port, p.staleness_seconds
    seen = b.http.call("poll", seconds + 30, port=port, seconds=seconds, targets=polls)["seen"]
    times = {"ours_htmx_1s": b.pub.recv(seconds + 30)["times"]}
    if b.cp_pub is not None:
        times["celery_progress_500ms"] = b.cp_pub.recv(seconds + 30)["times"]
    return {name: latency_summary(staleness(times[name], seen[name])) for name in seen}


def _unchanged(b: Bench, rep: int) -> dict[str, Any]:
    """304s on a fresh server per kind and app (``"<server>/<app>/c<n>"``), then the many pollers on the router's
    (``"<server>/<app>"``; on the plain app's when the package has no router)."""
    p = b.plan
    task = b.pub.call("poll_setup", 30, kind="ours")
    target = {"path": _progress_path(task["task"], task["token"]), "headers": {"Accept": "application/json"}}
    target["etag"] = True
    apps = [(key, app) for key, app, _ in APPS if key != "router" or b.features["http_router"]]
    out: dict[str, Any] = {"etag": {}, "many": {}}
    if not b.features["http_router"]:
        out["unavailable"] = NO_ROUTER
    for kind in p.poll_servers:
        for key, app in apps:
            with b.daphne(f"poll-{kind}-{key}-r{rep}", kind, app=app) as server:
                b.http.call("load", 30, port=server.port, seconds=2, concurrency=1, max_requests=5, **target)  # warm
                for concurrency in (1, p.poll_concurrency):
                    step = _load(b, server, target, concurrency, p.poll_seconds)
                    out["etag"][f"{kind}/{key}/c{concurrency}"] = step
                log(
                    f"  304 {kind}/{key}: {num(step['rps'], 0)} req/s with {p.poll_concurrency} clients, "
                    f"{num(step['daphne_us_per_request'], 0)} µs of server CPU per request"
                )
                if key == apps[-1][0]:
                    out["many"][f"{kind}/{key}"] = many = _many(b, server)
                    log(
                        f"  {many['clients']:,} pollers on {kind}/{key}: {num(many['rps'], 0)} of "
                        f"{num(many['offered_rps'], 0)} req/s, p99 {num(many['lat']['p99'])} ms, "
                        f"{100 * many['server_cpu_share']:.0f} % of a core"
                    )
    return out


def _many(b: Bench, server: Server) -> dict[str, Any]:
    p = b.plan
    tasks = b.pub.call("poll_tasks", 60, n=p.poll_many_tasks)["tasks"]
    paths = [_progress_path(name, token) for name, token in tasks]
    opened = b.http.call("pollers_open", 60 + p.poll_many_clients * 0.05, port=server.port, paths=paths,
                         clients=p.poll_many_clients)  # fmt: skip
    try:
        seconds = p.poll_many_seconds
        b.pub.send("rotate_updates", tasks=[name for name, _ in tasks], rate=p.poll_many_updates, seconds=seconds)
        ran = b.http.call(
            "pollers_run", seconds + 60, server_pid=server.pid, interval=p.poll_many_interval, seconds=seconds
        )
        updates = b.pub.recv(seconds + 30)["sent"]
    finally:
        with contextlib.suppress(Exception):
            b.http.call("pollers_close", 30)
    return {
        **ran,
        "lat": latency_summary(ran["lat"]),
        "connected": opened["connected"],
        "open_seconds": opened["seconds"],
        "probe_seconds": opened["probe_seconds"],
        "tasks": len(tasks),
        "updates": updates,
        "us_per_request": ran["server_cpu"] * 1e6 / max(1, ran["requests"]),
    }


# -- the report ---------------------------------------------------------------------
def _answered_rps(many: dict[str, Any] | None) -> float | None:
    """Polls answered a second with the state (200) or as unchanged (304): a 503 is not an answer."""
    if not many or many.get("rps") is None:
        return None
    ok = sum(many["statuses"].get(code, 0) for code in ("200", "304"))
    return float(many["rps"]) * ok / max(1, many["requests"])


def _etag(run: dict[str, Any], kind: str, app: str, conc: int, *path: str) -> Any:
    return dig(run, "polling", "etag", f"{kind}/{app}/c{conc}", *path)


def _servers(results: dict[str, Any]) -> list[str]:
    return list(results["plan"].get("poll_servers") or ())


def polling_table(results: dict[str, Any]) -> list[str]:
    """The endpoints on the long-lived daphne, against celery-progress's."""
    runs = results["runs"]
    c = results["plan"]["poll_concurrency"]
    rows = [
        ("ours, JSON, changed (200)", "ours_json"),
        ("ours, JSON, unchanged: matching `If-None-Match` (304)", "ours_json_304"),
        ("ours, htmx fragment (200, what `hx-get` polls)", "ours_htmx"),
        ("celery-progress `get_progress` (anchor)", "celery_progress"),
    ]
    lines = [
        f"| endpoint | 1 client: median ms | 1 client: p99 ms | {c} clients: requests/s | {c} clients: p99 ms "
        "| daphne CPU µs / request | req/s ÷ celery-progress | CPU ÷ celery-progress |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, key in rows:

        def g(run: dict[str, Any], conc: int, *path: str, key: str = key) -> Any:
            return dig(run, "polling", "load", f"{key}/c{conc}", *path)

        if all(g(run, 1) is None for run in runs):
            continue

        def cpu(run: dict[str, Any], key: str = key) -> Any:
            return g(run, c, "daphne_us_per_request", key=key)

        def rps(run: dict[str, Any], key: str = key) -> Any:
            return g(run, c, "rps", key=key)

        lines.append(
            row(
                [
                    label,
                    per_run(runs, lambda r: g(r, 1, "lat", "median")),
                    per_run(runs, lambda r: g(r, 1, "lat", "p99")),
                    per_run(runs, rps, 0),
                    per_run(runs, lambda r: g(r, c, "lat", "p99")),
                    per_run(runs, cpu, 0),
                    ratio_text(runs, rps, lambda r: rps(r, "celery_progress")),
                    ratio_text(runs, cpu, lambda r: cpu(r, "celery_progress")),
                ]
            )
        )
    return lines


def unchanged_table(results: dict[str, Any]) -> list[str]:
    """Unchanged polls (304): the router against the plain Django app, on each server."""
    runs = results["runs"]
    c = results["plan"]["poll_concurrency"]
    lines = [
        f"| server | HTTP app | 1 client: median ms | 1 client: p99 ms | {c} clients: requests/s "
        f"| {c} clients: p99 ms | server CPU µs / request | req/s ÷ plain | CPU ÷ plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in _servers(results):
        for key, _, label in APPS:
            if all(_etag(run, kind, key, 1) is None for run in runs):
                continue

            def g(run: dict[str, Any], conc: int, *path: str, key: str = key, kind: str = kind) -> Any:
                return _etag(run, kind, key, conc, *path)

            def plain(run: dict[str, Any], field: str, kind: str = kind) -> Any:
                return _etag(run, kind, "plain", c, field)

            lines.append(
                row(
                    [
                        kind,
                        label.replace(")", ", anchor)") if key == "plain" else label,
                        per_run(runs, lambda r: g(r, 1, "lat", "median")),
                        per_run(runs, lambda r: g(r, 1, "lat", "p99")),
                        per_run(runs, lambda r: g(r, c, "rps"), 0),
                        per_run(runs, lambda r: g(r, c, "lat", "p99")),
                        per_run(runs, lambda r: g(r, c, "daphne_us_per_request"), 0),
                        ratio_text(runs, lambda r: g(r, c, "rps"), lambda r: plain(r, "rps")),
                        ratio_text(
                            runs,
                            lambda r: g(r, c, "daphne_us_per_request"),
                            lambda r: plain(r, "daphne_us_per_request"),
                        ),
                    ]
                )
            )
    return lines if len(lines) > 2 else ["(not run)"]


def _times(n: float) -> str:
    return "once" if n == 1 else f"{n:g} times"


def _many_keys(runs: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({key for run in runs for key in dig(run, "polling", "many") or {}})


def many_table(results: dict[str, Any]) -> list[str]:
    runs = results["runs"]
    keys = _many_keys(runs)
    if not keys:
        return ["(not run)"]
    lines = [
        "| server / HTTP app | pollers (connected) | offered req/s | answered req/s (200 or 304) "
        "| answered ÷ offered | answers slower than the interval | p50 ms | p99 ms | answers 200 / 304 / other "
        "| server CPU, share of one core | server CPU µs / request | load client's CPU, share of one core |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:

        def g(run: dict[str, Any], *path: str, key: str = key) -> Any:
            return dig(run, "polling", "many", key, *path)

        def share(run: dict[str, Any]) -> float | None:
            rps, offered = _answered_rps(g(run)), g(run, "offered_rps")
            return 100 * rps / offered if rps is not None and offered else None

        def answers(statuses: dict[str, int]) -> str:
            other = ", ".join(f"{code}: {n:,}" for code, n in sorted(statuses.items()) if code not in ("200", "304"))
            return f"{statuses.get('200', 0):,} / {statuses.get('304', 0):,} / {other or 0}"

        kind, _, app = key.partition("/")
        label = next((text for k, _, text in APPS if k == app), app)
        statuses = [g(run, "statuses") or {} for run in runs]
        lines.append(
            row(
                [
                    f"{kind}, {label}",
                    " / ".join(f"{g(r, 'clients') or 0:,} ({g(r, 'connected') or 0:,})" for r in runs),
                    per_run(runs, lambda r: g(r, "offered_rps"), 0),
                    per_run(runs, lambda r: _answered_rps(g(r)), 0),
                    per_run(runs, share, 1, " %"),
                    per_run(runs, lambda r: g(r, "slow"), 0),
                    per_run(runs, lambda r: g(r, "lat", "median")),
                    per_run(runs, lambda r: g(r, "lat", "p99")),
                    "; ".join(answers(s) for s in statuses),  # each run's own "a / b / c"
                    per_run(runs, lambda r: 100 * (g(r, "server_cpu_share") or 0), 0, " %"),
                    per_run(runs, lambda r: g(r, "us_per_request"), 0),
                    per_run(runs, lambda r: 100 * (g(r, "client_cpu_share") or 0), 0, " %"),
                ]
            )
        )
    return lines


def section(results: dict[str, Any]) -> list[str]:
    """The report's polling section: the three tables, with what each measures."""
    plan, runs = results["plan"], results["runs"]
    c = plan["poll_concurrency"]
    lines = [
        "### Polling endpoints",
        "",
        "On the long-lived daphne, which serves `bench.asgi:application` (HTTP behind `ProgressHttpRouter` when the "
        "package has it, so the 304 row is the router's; the table below has the path before it).",
        "",
        *polling_table(results),
        "",
    ]
    if not any(dig(run, "polling", "etag") for run in runs):
        return lines[:-1]
    notes = {dig(run, "polling", "unavailable") for run in runs} - {None}
    lines += [
        "### Unchanged polls (304): `ProgressHttpRouter` against the plain Django ASGI app",
        "",
        "A fresh server for each row, serving `bench.asgi:plain_application` (every request through Django's "
        "ASGI handler, middleware and view: the path before the router) or `bench.asgi:application` (HTTP "
        f"behind `ProgressHttpRouter`); a few warm-up requests, then 1 and {c} keep-alive clients sending our "
        "JSON poll with a matching `If-None-Match`, every answer a 304. *÷ plain*: against the plain app on "
        "the same server in the same run.",
        "",
        *unchanged_table(results),
        "",
        *([f"{note}." for note in sorted(notes)] + [""] if notes else []),
    ]
    n, tasks = plan.get("poll_many_clients", 0), plan.get("poll_many_tasks", 0)
    lines += [
        f"### {n:,} clients polling once every {plan.get('poll_many_interval', 1):g} s, one server process",
        "",
        f"{n:,} clients, each on its own keep-alive connection, poll one of {tasks:,} running tasks "
        f"({n // max(1, tasks):,} clients each, a random phase each) for {plan.get('poll_many_seconds', 0):g} s, "
        "as `poll.js` does: each poll an interval after the previous answer, with that answer's ETag (they "
        "start with the ETag of a first poll, made before). Meanwhile the tasks are updated "
        f"{_times(plan.get('poll_many_updates', 0))} a second in all, one after the other, so a few polls are "
        "200s. A 503 (or any other status) is not an answer; *offered* is one poll per client and interval. "
        "The server's CPU is read from `/proc` over the run. In *answers*, runs are separated by `;`.",
        "",
        *many_table(results),
    ]
    return lines


# -- the targets ----------------------------------------------------------------------
def target_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Issue 13's polling targets, for each server of the run: the router's 304 against the plain app's
    (CPU per request, requests a second), and the many pollers fitting in one process."""
    runs = results["runs"]
    c = results["plan"]["poll_concurrency"]
    n = results["plan"].get("poll_many_clients", 0)
    interval = results["plan"].get("poll_many_interval", 1)
    rows: list[tuple[str, str, str, str, str]] = []
    for kind in _servers(results):

        def etag(app: str, field: str, kind: str = kind) -> Getter:
            return lambda r: _etag(r, kind, app, c, field)

        cpu_router, cpu_plain = etag("router", "daphne_us_per_request"), etag("plain", "daphne_us_per_request")
        rps_router, rps_plain = etag("router", "rps"), etag("plain", "rps")
        rows += [
            (
                f"unchanged poll (304) through `ProgressHttpRouter`: {kind} CPU per request "
                f"≤ {CPU_TARGET:g}× the plain Django app's (today's path)",
                per_run(runs, cpu_router, unit=" µs"),
                "plain " + per_run(runs, cpu_plain, unit=" µs"),
                ratio_text(runs, cpu_router, cpu_plain),
                verdict(runs, ratio_check(cpu_router, cpu_plain, lambda r: r <= CPU_TARGET)),
            ),
            (
                f"… requests/s with {c} keep-alive clients ≥ {RPS_TARGET:g}× the plain app's ({kind})",
                per_run(runs, rps_router, 0, " req/s"),
                "plain " + per_run(runs, rps_plain, 0, " req/s"),
                ratio_text(runs, rps_router, rps_plain),
                verdict(runs, ratio_check(rps_router, rps_plain, lambda r: r >= RPS_TARGET)),
            ),
        ]

        def many(*path: str, kind: str = kind) -> Getter:
            return lambda r: dig(r, "polling", "many", f"{kind}/router", *path)

        def fits(run: dict[str, Any], many: Any = many) -> bool | None:
            rps, offered, p99 = _answered_rps(many()(run)), many("offered_rps")(run), many("lat", "p99")(run)
            cpu = many("server_cpu_share")(run)
            if None in (rps, offered, p99, cpu):
                return None
            return bool(rps >= MANY_SHARE * offered and p99 < MANY_P99_MS and cpu < MANY_CPU)

        def cell(run: dict[str, Any], many: Any = many) -> str:
            if many("rps")(run) is None:
                return "–"
            return (
                f"{num(_answered_rps(many()(run)), 0)} of {num(many('offered_rps')(run), 0)} req/s, "
                f"p99 {num(many('lat', 'p99')(run))} ms, {100 * many('server_cpu_share')(run):.0f} % of a core"
            )

        def projected(run: dict[str, Any], kind: str = kind) -> str:
            per_request = _etag(run, kind, "plain", c, "daphne_us_per_request")
            if per_request is None:
                return "–"
            return f"{per_request * n / interval / 1e6:.1f} cores"

        rows.append(
            (
                f"{n:,} clients polling once every {interval:g} s fit in one {kind} process (≥ {MANY_SHARE * 100:g} % "
                f"answered, p99 < {MANY_P99_MS:g} ms, < {MANY_CPU:g} core)",
                " / ".join(cell(run) for run in runs),
                "plain app's 304s at that rate: " + " / ".join(projected(run) for run in runs),
                "",
                verdict(runs, fits),
            )
        )
    return rows
