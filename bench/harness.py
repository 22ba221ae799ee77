"""The processes of a run and the steps every scenario is made of.

``Bench`` holds the long-lived processes (private Redis is the caller's, the
publishers, the HTTP load process, a long-lived daphne); ``Server`` is one ASGI
server under test; ``run_step`` is one measured step: reset the clients,
publish (bounded), wait for every final state (bounded), merge the figures.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.agent import ROOT, Agent, BenchError, call_all
from bench.plans import Plan
from bench.stats import merge_steps
from tests.services import Proc, free_port, wait_for

MULTI_PATH = "/ws/realtime-async/"
#: The ASGI applications of ``bench/asgi.py``: HTTP behind ``ProgressHttpRouter`` (the default), and
#: every HTTP request through Django's handler, the path before it (kept to measure against).
APP, PLAIN_APP = "bench.asgi:application", "bench.asgi:plain_application"
SSE_PATH = "/realtime-async/events/"
#: Why what needs ``ProgressHttpRouter`` is left out when the package under test lacks it.
NO_ROUTER = "Not measured: `realtime_async.routing` has no `ProgressHttpRouter`"


def sse_path(tasks: list[list[str]]) -> str:
    """The SSE stream of ``tasks`` (``[name, watch token]`` pairs)."""
    return SSE_PATH + "?" + "&".join(f"task={name}&token={token}" for name, token in tasks)


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Server:
    """The ASGI server under test: daphne (what the package documents), or uvicorn for comparison;
    ``app`` is one of ``bench/asgi.py``'s applications."""

    def __init__(self, env: dict[str, str], name: str, kind: str = "daphne", app: str = APP) -> None:
        self.kind, self.app = kind, app
        self.port = free_port()
        if kind == "daphne":
            args = ["daphne", "-b", "127.0.0.1", "-p", str(self.port), "-v", "0", app]
        else:
            args = ["uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port)]
            args += ["--loop", "uvloop", "--ws", "websockets-sansio", "--no-access-log", "--log-level", "warning"]
            args += ["--lifespan", "off"]
        self.proc = Proc(f"bench-{name}", [sys.executable, "-m", *args], env)

        def listening() -> bool:
            if self.proc.popen.poll() is not None:
                raise BenchError(f"{kind} exited early:\n{self.proc.output()[-3000:]}")

            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, 30, 0.05, f"{kind} to listen")

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def stop(self) -> None:
        self.proc.stop()


class Bench:
    """The services of one run: private Redis, publishers, a long-lived daphne; watchers on demand."""

    def __init__(self, plan: Plan, redis_url: str, redis_port: int, with_optional: bool, layer: str = "pubsub") -> None:
        self.plan = plan
        self.layer = layer
        self.redis_url, self.redis_port = redis_url, redis_port
        self.with_optional = with_optional
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "RA_TEST_REDIS_URL": redis_url,
            "RA_TEST_PREFIX": prefix,
            "RA_TEST_DB": os.path.join(tempfile.gettempdir(), f"{prefix}.sqlite3"),
            "PYTHONPATH": str(ROOT),
            "RA_BENCH_LAYER": layer,
        }
        self.agents: list[Agent] = []
        self.service: Server | None = None
        self.step_counter = 0
        try:
            self.pub = self._agent("publisher", "bench.publisher")
            self.cp_pub = (
                self._agent("publisher-cp", "bench.publisher", RA_BENCH_RESULT_BACKEND="1") if with_optional else None
            )
            self.http = self._agent("http", "bench.http_load")
            self.service = Server({**self.env, "RA_BENCH_RESULT_BACKEND": "1"}, "daphne")
            for agent in self.agents:
                agent.ready()
            self.features: dict[str, bool] = self.pub.call("features", 30)
        except BaseException:
            self.stop()
            raise

    def _agent(self, name: str, module: str, **extra_env: str) -> Agent:
        agent = Agent(name, module, {**self.env, **extra_env})
        self.agents.append(agent)
        return agent

    def step_id(self, label: str) -> str:
        self.step_counter += 1
        return f"{label}-{self.step_counter}"

    @contextlib.contextmanager
    def daphne(self, label: str, kind: str = "daphne", app: str = APP, **env: str) -> Iterator[Server]:
        """A fresh server for a block (full runs, any uvicorn, another ``app``, extra ``env``) or the
        long-lived daphne (quick runs)."""
        if not self.plan.fresh_daphne and kind == "daphne" and app == APP and not env:
            yield self.service
            return
        server = Server({**self.env, "RA_BENCH_RESULT_BACKEND": "1", **env}, f"{kind}-{label}", kind, app)
        try:
            yield server
        finally:
            server.stop()

    @contextlib.contextmanager
    def watchers(self, n: int, processes: int | None = None) -> Iterator[list[Agent]]:
        count = processes or (2 if n >= self.plan.split_at else 1)
        agents = [Agent(f"watchers-{i}", "bench.watchers", self.env) for i in range(count)]
        try:
            for agent in agents:
                agent.ready()
            yield agents
        finally:
            for agent in agents:
                with contextlib.suppress(BenchError):
                    agent.call("close", 10)
                agent.stop()

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        if self.service is not None:
            self.service.stop()


# -- helpers shared by the scenarios ---------------------------------------------
def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def connect(
    agents: list[Agent],
    target: str,
    port: int,
    paths: list[str],
    client: str = "raw",
    tasks: list[str] | None = None,
) -> dict[str, Any]:
    """Open ``paths`` across ``agents``; SSE streams (``client="sse"``) name their task in ``tasks`` (one per
    path) and are open once each has sent its snapshot."""
    timeout = 30 + len(paths) * 0.05
    split_tasks = _split(tasks, len(agents)) if tasks else [None] * len(agents)
    shares = zip(_split(paths, len(agents)), split_tasks, strict=True)
    answers = call_all(
        agents,
        "connect",
        timeout + 5,
        per_agent=[{"paths": part, "tasks": t} for part, t in shares],
        target=target,
        port=port,
        timeout=timeout,
        client=client,
    )
    connected = sum(a["connected"] for a in answers)
    if connected != len(paths):
        raise BenchError(f"{connected}/{len(paths)} {target} connections opened: {answers[0]['errors']}")
    snapshots = sum(a["snapshots"] for a in answers)
    if client == "sse" and snapshots != len(paths):
        raise BenchError(f"{snapshots}/{len(paths)} SSE snapshots: {[a['messages'] for a in answers]}")
    return {"connected": connected, "seconds": max(a["seconds"] for a in answers), "loop": answers[0]["loop"]}


#: Subscriptions a client process keeps waiting for their snapshot: a burst of 100 distinct tasks at
#: once makes the hub run 100 group_adds at once, past redis-py's default pool of 100 connections
#: (see the burst check of the 100 x 10 scenario).
SUBSCRIBE_WINDOW = 32


def subscribe(
    agents: list[Agent],
    tasks: list[list[str]],
    expected: int,
    *,
    window: int | None = SUBSCRIBE_WINDOW,
    strict: bool = True,
    timeout: float = 60,
) -> dict[str, Any]:
    answers = call_all(agents, "subscribe", timeout + 10, tasks=tasks, timeout=timeout, window=window)
    got = sum(a["snapshots"] for a in answers)
    codes: dict[str, int] = {}
    for answer in answers:
        for code, n in answer["close_codes"].items():
            codes[code] = codes.get(code, 0) + n
    if strict and got != expected:
        raise BenchError(f"{got}/{expected} subscriptions answered (closed: {codes}): {answers[0]['errors']}")
    return {"seconds": max(a["seconds"] for a in answers), "snapshots": got, "close_codes": codes}


def run_step(
    b: Bench,
    agents: list[Agent],
    publisher: Agent,
    publish_op: str,
    publish: dict[str, Any],
    step: str,
    *,
    daphne: Server | None,
    rate: float,
    count: int,
    drain: float,
) -> dict[str, Any]:
    """One step: reset the clients, publish (bounded), wait for final states (bounded), merge the figures."""
    call_all(agents, "start", 10, step=step)
    cpu0 = proc_cpu(daphne.pid) if daphne else None
    pub = publisher.call(publish_op, count / rate * 2 + 60, step=step, rate=rate, count=count, **publish)
    parts = call_all(agents, "finish", drain + 20, timeout=drain, settle=1.0)
    result = merge_steps(parts)
    result.update(rate=rate, count=count, sent=pub["sent"], publish_seconds=pub["published"] - pub["t0"])
    # Frames delivered over the offered window, or over the time they took when that was longer.
    span = max(count / rate, (result["last"] - pub["t0"]) if result["last"] else 0)
    result["fps"] = result["frames"] / span
    result["offered_fps"] = rate * result["watchers"]
    expected = pub["sent"] * result["watchers"]
    result["delivered_share"] = result["frames"] / expected if expected else None
    if daphne is not None and cpu0 is not None:
        result["daphne_cpu"] = proc_cpu(daphne.pid) - cpu0
        delivered = result["frames"] + result["finals"]
        result["daphne_us_per_frame"] = result["daphne_cpu"] * 1e6 / delivered if delivered else None
    return result


def updates_for(plan: Plan, rate: float) -> int:
    """How many updates a step at ``rate`` publishes."""
    return max(plan.min_updates, round(rate * plan.step_seconds))


# -- scenarios ------------------------------------------------------------------------
