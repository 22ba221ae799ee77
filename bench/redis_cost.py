"""Redis cost per update (``--only redis_cost``, issue 14): commands and µs of Redis CPU per progress update.

For each configuration, on the run's private redis-server (nothing else writes to it): one WebSocket
watcher on each of 0, 1, 2, 4 fresh daphne processes (each server's hub is then a member of the
task's group), then

1. the idle background: ``CONFIG RESETSTAT``, ``redis_cost_idle`` seconds with nothing published,
   ``INFO commandstats`` and ``INFO cpu``;
2. the window: ``CONFIG RESETSTAT``, ``redis_cost_updates`` updates at ``redis_cost_rate`` a second
   from the publisher (``PROGRESS_RATE`` 1e9: every call writes and broadcasts), then, once Redis is
   quiet (no command but ours for 150 ms: the hubs have taken every message off the layer), the
   same readings. The idle figures, as rates, are subtracted from the window's;
3. ``redis_cost_monitor`` more updates under ``MONITOR``, read by a thread here: which calls of each
   command ran inside a Lua script or a ``MULTI``/``EXEC`` block. ``INFO commandstats`` counts those
   calls under their own names *and* inside the ``usec`` of the ``EVAL``/``EVALSHA``/``EXEC`` that
   ran them, so the command µs per update sums the ``usec`` of what clients sent only (each
   command's nested share of its ``usec`` taken from this pass);
4. the final state, which every watcher must receive (not counted).

Every configuration starts with ``WARM_UP`` updates, not counted either: connections open and
scripts loaded, as in a worker that has been running for a while.

The same for celery-progress's ``WebSocketProgressRecorder`` (``update_state`` on a Redis result
backend, then ``group_send``) with 0, 1, 2 servers watching its ``ProgressConsumer``, and for the
floor: a redis-py ``SET`` of a record-sized value then a ``PUBLISH``, one raw subscriber. The
commands the measuring connection sends (``INFO``, ``CONFIG RESETSTAT``, ``ECHO``) are left out.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import redis

from bench.agent import Agent, BenchError, call_all
from bench.figures import dig, num, per_run, ratio_text
from bench.harness import MULTI_PATH, Bench, Server, connect, log, subscribe
from bench.stats import merge_steps

#: Commands of the measuring connection itself, never counted.
OWN = frozenset({"info", "config|resetstat", "echo"})
#: How long Redis must see no command but ours before a window closes, and the bound on that wait.
QUIET_POLLS, QUIET_GAP, QUIET_TIMEOUT = 3, 0.05, 30.0
#: Updates published before any reading, in each configuration.
WARM_UP = 10


class _Probe:
    """The measuring connection: resets and reads Redis' statistics."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url, socket_timeout=10)

    def cpu(self) -> float:
        """CPU seconds (user + system) of redis-server's main thread, where every command runs."""
        info = self.r.info("cpu")
        return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])

    def commandstats(self) -> dict[str, list[int]]:
        """``{command: [calls, usec]}`` since the last reset, ours left out."""
        out = {}
        for key, stats in self.r.info("commandstats").items():
            name = key.removeprefix("cmdstat_")
            if name not in OWN:
                out[name] = [int(stats["calls"]), int(stats["usec"])]
        return out

    def wait_quiet(self) -> bool:
        """Wait (bounded) until Redis has run nothing but our own polls for ``QUIET_POLLS`` polls in a row."""
        deadline = time.monotonic() + QUIET_TIMEOUT
        last, still = self._total(), 0
        while time.monotonic() < deadline:
            time.sleep(QUIET_GAP)
            total = self._total()
            still = still + 1 if total - last <= 1 else 0  # 1: our previous poll
            last = total
            if still >= QUIET_POLLS:
                return True
        return False

    def _total(self) -> int:
        return int(self.r.info("stats")["total_commands_processed"])

    def window(self, action: Callable[[], Any]) -> dict[str, Any]:
        """``CONFIG RESETSTAT``, ``action()``, wait for quiet: the commands and main-thread CPU in between."""
        self.r.config_resetstat()
        cpu0, t0 = self.cpu(), time.monotonic()
        action()
        quiet = self.wait_quiet()
        commands = self.commandstats()
        return {"seconds": time.monotonic() - t0, "cpu_s": self.cpu() - cpu0, "commands": commands, "quiet": quiet}

    def close(self) -> None:
        self.r.close()


class _Monitor:
    """``MONITOR`` on a connection of its own, read by a thread until a sentinel ``ECHO`` (bounded): per command,
    the calls seen and how many of them ran inside a Lua script (``[0 lua]``) or a ``MULTI``/``EXEC`` block."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sentinel = f"bench-redis-cost-{uuid.uuid4().hex}"
        self.calls: Counter[str] = Counter()
        self.nested: Counter[str] = Counter()
        self.complete = False
        self._deadline = time.monotonic() + timeout
        self._in_multi: set[str] = set()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._buf = b""
        while b"\r\n" not in self._buf and time.monotonic() < self._deadline:
            self._buf += self._sock.recv(4096)
        ok, _, self._buf = self._buf.partition(b"\r\n")
        if ok != b"+OK":
            self._sock.close()
            raise BenchError(f"MONITOR refused: {ok!r}")
        self._sock.settimeout(0.25)
        self._thread = threading.Thread(target=self._read, name="redis-cost-monitor", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self.complete and time.monotonic() < self._deadline:
            try:
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            *lines, self._buf = (self._buf + chunk).split(b"\r\n")
            for line in lines:
                self._line(line.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        # +1700000000.123456 [0 127.0.0.1:52000] "zadd" "key" ...   (or [0 lua] inside a script)
        start, end = line.find(" ["), line.find('] "')
        if start < 0 or end < 0:
            return
        client = line[start + 2 : end].partition(" ")[2]
        rest = line[end + 3 :]
        name = rest[: rest.find('"')].lower()
        if self.sentinel in rest:
            self.complete = True
            return
        self.calls[name] += 1
        if client == "lua" or (client in self._in_multi and name not in ("exec", "discard")):
            self.nested[name] += 1
        elif name == "multi":
            self._in_multi.add(client)
        elif name in ("exec", "discard"):
            self._in_multi.discard(client)

    def stop(self, probe: _Probe) -> dict[str, list[int]]:
        """``{command: [calls, of which nested]}`` once the sentinel (sent on ``probe``) came back (or the bound)."""
        probe.r.echo(self.sentinel)
        self._thread.join(max(0.1, self._deadline - time.monotonic()))
        self._sock.close()
        if not self.complete:
            raise BenchError("MONITOR: the sentinel did not come back in time")
        return {name: [calls, self.nested[name]] for name, calls in self.calls.items()}


def figures(
    window: dict[str, Any], idle: dict[str, Any], monitor: dict[str, list[int]], updates: int
) -> dict[str, Any]:
    """Per update: every command's calls and ``usec`` (the idle rates subtracted), the calls nested in a script or
    ``EXEC`` (by ``monitor``'s shares), the totals, and redis-server's main-thread CPU."""
    scale = window["seconds"] / idle["seconds"]
    commands: dict[str, dict[str, float]] = {}
    for name in sorted(set(window["commands"]) | set(idle["commands"])):
        calls, usec = window["commands"].get(name, [0, 0])
        idle_calls, idle_usec = idle["commands"].get(name, [0, 0])
        seen, nested = monitor.get(name.partition("|")[0], [0, 0])
        share = nested / seen if seen else 0.0
        per_calls, per_usec = (calls - idle_calls * scale) / updates, (usec - idle_usec * scale) / updates
        commands[name] = {
            "calls": per_calls,
            "usec": per_usec,
            "nested_calls": per_calls * share,
            "nested_usec": per_usec * share,
        }
    total_calls = sum(c["calls"] for c in commands.values())
    total_usec = sum(c["usec"] for c in commands.values())
    return {
        "commands": commands,
        "calls": total_calls,
        "client_calls": total_calls - sum(c["nested_calls"] for c in commands.values()),
        "usec_reported": total_usec,
        "usec": total_usec - sum(c["nested_usec"] for c in commands.values()),
        "cpu_us": (window["cpu_s"] - idle["cpu_s"] * scale) * 1e6 / updates,
        "idle_calls_per_s": sum(c for c, _ in idle["commands"].values()) / idle["seconds"],
        "idle_cpu_us_per_s": idle["cpu_s"] * 1e6 / idle["seconds"],
    }


# -- the scenario ------------------------------------------------------------------------
#: The channel layers measured in one run: RedisChannelLayer (the layered delivery, as before issue 14) and
#: RedisPubSubChannelLayer (the direct delivery: the write publishes the layer's messages).
LAYERS = ("core", "pubsub")


def _key(kind: str, k: int, layer: str, busy: bool = False) -> str:
    """A configuration's key in the results: ``ours/1`` (direct), ``ours_core/1`` (layered), ``…@busy``."""
    at = "@busy" if busy else ""
    if kind == "floor":
        return f"floor{at}"
    return f"{kind}_core/{k}{at}" if kind == "ours" and layer == "core" else f"{kind}/{k}{at}"


def scenario_redis_cost(b: Bench, rep: int) -> dict[str, Any]:
    """The floor, realtime_async on each layer with each of ``redis_cost_servers`` servers watching (and with one,
    at ``redis_cost_busy_rate`` too), celery-progress with each of ``redis_cost_cp_servers`` (fresh daphnes for the
    run, shared by the configurations of a layer, one watcher each)."""
    p = b.plan
    cp_servers = p.redis_cost_cp_servers if b.cp_pub is not None else ()
    most = max((*p.redis_cost_servers, *cp_servers, 1))
    probe = _Probe(b.redis_url)
    servers: dict[str, list[Server]] = {layer: [] for layer in LAYERS}
    agents: list[Agent] = []
    publishers: dict[str, Agent] = {b.layer: b.pub}
    out: dict[str, Any] = {}
    try:
        for layer in LAYERS:
            env = {**b.env, "RA_BENCH_RESULT_BACKEND": "1", "RA_BENCH_LAYER": layer}
            for i in range(most):
                servers[layer].append(Server(env, f"daphne-rcost-{layer}-{i}-r{rep}"))
            if layer not in publishers:
                publishers[layer] = Agent(
                    f"rcost-publisher-{layer}", "bench.publisher", {**b.env, "RA_BENCH_LAYER": layer}
                )
        for i in range(most):
            agents.append(Agent(f"rcost-watchers-{i}", "bench.watchers", b.env))
        for agent in [*agents, *(a for layer, a in publishers.items() if layer != b.layer)]:
            agent.ready()
        for busy in (False, True):
            rate = p.redis_cost_busy_rate if busy else p.redis_cost_rate
            out[_key("floor", 1, b.layer, busy)] = _configuration(b, probe, [], agents, "floor", 1, rep, b.pub, rate)
            for layer in LAYERS:
                for k in (1,) if busy else p.redis_cost_servers:
                    pub = publishers[layer]
                    row = _configuration(b, probe, servers[layer], agents, "ours", k, rep, pub, rate, layer)
                    out[_key("ours", k, layer, busy)] = row
        for k in cp_servers:
            row = _configuration(
                b, probe, servers[b.layer], agents, "celery_progress", k, rep, b.cp_pub, p.redis_cost_rate
            )
            out[f"celery_progress/{k}"] = row
    finally:
        for agent in agents:
            with contextlib.suppress(BenchError):
                agent.call("close", 10)
            agent.stop()
        for layer, agent in publishers.items():
            if layer != b.layer:
                agent.stop()
        for server in (server for group in servers.values() for server in group):
            server.stop()
        probe.close()
    return out


def _configuration(
    b: Bench,
    probe: _Probe,
    servers: list[Server],
    agents: list[Agent],
    kind: str,
    k: int,
    rep: int,
    publisher: Agent | None,
    rate: float,
    layer: str = "",
) -> dict[str, Any]:
    """One row: set up ``k`` watchers, read the idle background, the window, the ``MONITOR`` pass, the final."""
    p = b.plan
    label = f"rcost-{kind.replace('_', '')}{'-' + layer if layer else ''}-{k}-{int(rate)}-r{rep}"
    watching = agents[:k]
    assert publisher is not None
    ids: dict[str, Any]
    if kind == "ours":
        tasks = publisher.call("create_tasks", 30, n=1, prefix="rcost")["tasks"]
        for agent, server in zip(watching, servers, strict=False):
            connect([agent], "ours", server.port, [MULTI_PATH])
        if watching:
            subscribe(watching, tasks, k)
        ids = {"task": tasks[0][0]}
    elif kind == "celery_progress":
        task_id = str(uuid.uuid4())
        for agent, server in zip(watching, servers, strict=False):
            connect([agent], "celery_progress", server.port, [f"/ws/progress/{task_id}/"])
        ids = {"task_id": task_id}
    else:
        ids = {"channel": f"{label}-{uuid.uuid4().hex[:6]}"}
        watching[0].call("floor_subscribe", 10, channel=ids["channel"], port=b.redis_port)
    step = b.step_id(label)
    n, m = p.redis_cost_updates, p.redis_cost_monitor
    common = {"kind": kind, "rate": rate, "step": step, "total": WARM_UP + n + m + 1, **ids}

    def publish(first: int, count: int, final: bool = False) -> None:
        publisher.call("redis_cost_updates", count / rate * 2 + 60, **common, first=first, count=count, final=final)

    publish(0, WARM_UP)  # connections open, scripts loaded: what a long-running worker has
    time.sleep(0.2)  # the subscriptions' and the warm-up's own commands done
    idle = probe.window(lambda: time.sleep(p.redis_cost_idle))
    if watching:
        call_all(watching, "start", 10, step=step)
    window = probe.window(lambda: publish(WARM_UP, n))
    monitor = _Monitor(b.redis_port, m / rate * 2 + QUIET_TIMEOUT + 30)
    try:
        publish(WARM_UP + n, m)
        probe.wait_quiet()
    finally:
        seen = monitor.stop(probe)
    publish(WARM_UP + n + m, 0, final=True)
    delivery = None
    if watching:
        merged = merge_steps(call_all(watching, "finish", p.drain + 20, timeout=p.drain, settle=0.5))
        delivery = {key: merged[key] for key in ("watchers", "frames", "finals", "missing_finals", "out_of_order")}
        call_all(watching, "close", 10)
    result = {
        "kind": kind,
        "servers": k if kind != "floor" else 0,
        "updates": n,
        "rate": rate,
        "quiet": window["quiet"],
        "delivery": delivery,
        **figures(window, idle, seen, n),
        "raw": {"window": window, "idle": idle, "monitor": seen, "monitor_updates": m},
    }
    log(
        f"  redis cost, {label}: {result['calls']:.1f} commands ({result['client_calls']:.1f} from clients), "
        f"{result['usec']:.1f} command µs, {result['cpu_us']:.1f} CPU µs per update"
        + ("" if window["quiet"] else " (Redis never went quiet)")
    )
    return result


# -- the report -------------------------------------------------------------------------
def _rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    plan = results["plan"]
    rows = [("floor: redis-py `SET` of a record-sized value + `PUBLISH` (1 subscriber)", "floor")]
    for layer, name in (("core", "RedisChannelLayer (layered, as before)"), ("pubsub", "RedisPubSubChannelLayer")):
        for k in plan.get("redis_cost_servers") or ():
            rows.append((f"realtime_async `update_progress`, {name}, {_servers(k)} watching", _key("ours", k, layer)))
    for k in plan.get("redis_cost_cp_servers") or ():
        rows.append(
            (
                f"celery-progress `WebSocketProgressRecorder.set_progress`, {_servers(k)} watching",
                f"celery_progress/{k}",
            )
        )
    busy = plan.get("redis_cost_busy_rate")
    if busy:
        rows.append((f"**at {busy:g} a second:** floor", "floor@busy"))
        rows.append(("… realtime_async, RedisChannelLayer, 1 server", _key("ours", 1, "core", True)))
        rows.append(("… realtime_async, RedisPubSubChannelLayer, 1 server", _key("ours", 1, "pubsub", True)))
    return rows


def _servers(k: int) -> str:
    return f"{k} server{'' if k == 1 else 's'}"


def section(results: dict[str, Any]) -> list[str]:
    """The scenario's part of the report (``python -m bench --only redis_cost``)."""
    runs: Sequence[dict[str, Any]] = [run for run in results["runs"] if run.get("redis_cost")]
    if not runs:
        return []
    plan = results["plan"]
    first = runs[0]["redis_cost"]
    lines = [
        "### Redis cost per update",
        "",
        f"`--only redis_cost`: {plan['redis_cost_updates']:,} updates at {plan['redis_cost_rate']:g} a second, "
        "every call a write that publishes (`PROGRESS_RATE` 1e9), on the run's private redis-server, between "
        "`CONFIG RESETSTAT` and `INFO commandstats` / `INFO cpu` once Redis is quiet again (the hubs took every "
        "message off the layer); one WebSocket watcher on each server watching, every server a fresh daphne. "
        "*Commands* counts every command as `INFO` does, those a Lua script or `MULTI`/`EXEC` ran included; "
        "*from clients* leaves those out (which calls ran nested is read from "
        f"{plan['redis_cost_monitor']} more updates under `MONITOR`). *Command µs* sums `usec` once: a "
        "script's or `EXEC`'s includes the commands it ran. *Redis CPU* is redis-server's main thread (user + "
        "system), which adds reading requests, writing replies and pub/sub messages, and the event loop. The "
        "background with the same setup and nothing published, read over "
        f"{plan['redis_cost_idle']:g} s, is subtracted as a rate.",
        "",
        "| per update | commands | from clients | command µs | Redis CPU µs | command µs ÷ floor | CPU ÷ floor "
        "| final states received |",
        "|---|---|---|---|---|---|---|---|",
    ]
    floor_usec = _get("floor", "usec")
    floor_cpu = _get("floor", "cpu_us")
    for label, key in _rows(results):
        if all(dig(run, "redis_cost", key) is None for run in runs):
            continue
        finals = " / ".join(_finals(dig(run, "redis_cost", key, "delivery")) for run in runs)
        lines.append(
            f"| {label} | {per_run(runs, _get(key, 'calls'), 1)} | {per_run(runs, _get(key, 'client_calls'), 1)} "
            f"| {per_run(runs, _get(key, 'usec'), 1)} | {per_run(runs, _get(key, 'cpu_us'), 1)} "
            f"| {ratio_text(runs, _get(key, 'usec'), floor_usec)} | {ratio_text(runs, _get(key, 'cpu_us'), floor_cpu)} "
            f"| {finals} |"
        )
    idle = [
        f"{key}: {num(dig(first, key, 'idle_calls_per_s'), 1)} commands/s, "
        f"{num(dig(first, key, 'idle_cpu_us_per_s'), 0)} CPU µs/s"
        for _, key in _rows(results)
        if key in first
    ]
    lines += ["", "Background subtracted (run 1): " + "; ".join(idle) + "."]
    not_quiet = [
        f"{key} (run {i + 1})"
        for i, run in enumerate(runs)
        for key, row in run["redis_cost"].items()
        if isinstance(row, dict) and not row["quiet"]  # the runner adds the scenario's "seconds"
    ]
    if not_quiet:
        lines += ["", "**Redis never went quiet** (the window closed at its bound) in: " + ", ".join(not_quiet) + "."]
    for prefix, name in (("ours_core", "RedisChannelLayer"), ("ours", "RedisPubSubChannelLayer")):
        lines += [""] + breakdown(first, list(plan.get("redis_cost_servers") or ()), prefix, name)
    return lines


def _get(key: str, field: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda run: dig(run, "redis_cost", key, field)


def _finals(delivery: dict[str, Any] | None) -> str:
    if not delivery:
        return "–"
    return f"{delivery['finals']} of {delivery['watchers']}"


def _num(value: float | None, digits: int = 2) -> str:
    """``num``, with what the background's subtraction leaves below the last digit shown as 0."""
    return num(None if value is None else (0.0 if abs(value) < 0.5 * 10**-digits else value), digits)


def breakdown(block: dict[str, Any], counts: list[int], prefix: str = "ours", layer: str = "") -> list[str]:
    """realtime_async's commands per update by servers watching (run 1): calls, nested calls, ``usec``."""
    keys = [f"{prefix}/{k}" for k in counts if f"{prefix}/{k}" in block]
    if not keys:
        return []
    anchor = f"{prefix}/1" if f"{prefix}/1" in block else keys[0]
    names = sorted(
        {name for key in keys for name, c in block[key]["commands"].items() if abs(c["calls"]) >= 0.005},
        key=lambda name: -(block[anchor]["commands"].get(name, {}).get("usec") or 0),
    )
    head = [_servers(int(key.split("/")[1])) for key in keys]
    lines = [
        f"realtime_async on {layer}, per command and update (run 1), by servers watching: calls (of them inside a "
        "script or `EXEC`), then `usec` as `INFO commandstats` gives it; an `EVAL`/`EVALSHA`/`EXEC` row's `usec` "
        "includes the commands it ran, which have their own rows too. Sorted by `usec` with "
        f"{_servers(int(anchor.split('/')[1]))} watching.",
        "",
        "| command | " + " | ".join(f"calls, {h}" for h in head) + " | " + " | ".join(f"µs, {h}" for h in head) + " |",
        "|---|" + "---|" * (2 * len(keys)),
    ]

    def calls(c: dict[str, float] | None) -> str:
        if c is None:
            return "–"
        nested = f" ({_num(c['nested_calls'])})" if c["nested_calls"] >= 0.005 else ""
        return _num(c["calls"]) + nested

    for name in names:
        cells = [calls(block[key]["commands"].get(name)) for key in keys]
        cells += [_num(dig(block[key], "commands", name, "usec")) for key in keys]
        lines.append(f"| `{name.upper()}` | " + " | ".join(cells) + " |")
    lines.append(
        "| all (µs counted once) | "
        + " | ".join(
            f"{num(block[key]['calls'], 1)} ({num(block[key]['calls'] - block[key]['client_calls'], 1)})"
            for key in keys
        )
        + " | "
        + " | ".join(num(block[key]["usec"], 1) for key in keys)
        + " |"
    )
    return lines
