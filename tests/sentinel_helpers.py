"""A real Redis Sentinel setup on loopback, for tests of failover: a primary, its replica and one sentinel.

``sentinel_cluster()`` starts the three with ``redis-server`` (the sentinel as ``redis-server <conf>
--sentinel``), waits until the sentinel sees the replica in sync, and stops them all on exit.
``kill_primary()`` crashes the current primary (SIGKILL; it is never restarted) and
``wait_failover()`` waits until the sentinel has promoted the other server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.services import Proc, free_port, wait_for

HOST = "127.0.0.1"
#: Servers of their own: no persistence, files in a tmp dir, and no 5 s wait before a full sync.
SERVER_OPTIONS = ("--bind", HOST, "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")


def _command(port: int, *args: str) -> Any:
    with redis.Redis(HOST, port, decode_responses=True, protocol=3, socket_timeout=2, socket_connect_timeout=2) as c:
        return c.execute_command(*args)


@dataclass
class SentinelCluster:
    master_name: str
    sentinels: list[tuple[str, int]]
    primary_port: int
    replica_port: int
    primary: Proc
    replica: Proc
    sentinel: Proc
    killed_port: int | None = None

    def url_of(self, port: int) -> str:
        return f"redis://{HOST}:{port}/0"

    def master_port(self) -> int:
        """The current master's port, as the sentinel reports it."""
        _, port = _command(self.sentinels[0][1], "SENTINEL", "get-master-addr-by-name", self.master_name)
        return int(port)

    def replicas(self) -> list[dict[str, str]]:
        """``SENTINEL replicas``: one dict per replica the sentinel knows of."""
        return list(_command(self.sentinels[0][1], "SENTINEL", "replicas", self.master_name))

    def kill_primary(self) -> int:
        """Crash the current master (SIGKILL, no shutdown); it stays dead. Returns its port."""
        port = self.master_port()
        proc = {self.primary_port: self.primary, self.replica_port: self.replica}[port]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(10)
        self.killed_port = port
        return port

    def wait_failover(self, timeout: float = 30) -> int:
        """Wait until the sentinel names the server not killed as master and it answers ROLE as one; its port.

        Also until the failover is over: while it is under way, ``get-master-addr-by-name`` already names the
        new master but ``SENTINEL masters`` (what ``redis.sentinel.Sentinel`` asks) still shows the old one, down.
        The sentinel's own link to the new master may still be reconnecting ("disconnected"); clients don't mind.
        """
        old = self.killed_port or self.primary_port
        new = self.replica_port if old == self.primary_port else self.primary_port

        def promoted() -> bool:
            with contextlib.suppress(redis.RedisError):
                state = _command(self.sentinels[0][1], "SENTINEL", "master", self.master_name)
                return (
                    set(state["flags"].split(",")) - {"disconnected"} == {"master"}
                    and int(state["port"]) == new
                    and self.master_port() == new
                    and _command(new, "ROLE")[0] == "master"
                )
            return False

        wait_for(promoted, timeout, 0.1, f"sentinel to promote port {new}")
        return new


def _start_server(name: str, port: int, workdir: Path, *extra: str) -> Proc:
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed (.ci/run installs it)"
    proc = Proc(name, [server, "--port", str(port), "--dir", str(workdir), *SERVER_OPTIONS, *extra])
    proc.wait_output("Ready to accept connections", timeout=20)
    return proc


def _write_sentinel_conf(workdir: Path, port: int, name: str, primary_port: int) -> Path:
    """Sentinel rewrites its config file, so it gets a writable one of its own."""
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind {HOST}\ndir {workdir}\n"
        "sentinel resolve-hostnames no\nsentinel announce-hostnames no\n"
        f"sentinel monitor {name} {HOST} {primary_port} 1\n"
        f"sentinel down-after-milliseconds {name} 1000\n"
        f"sentinel failover-timeout {name} 5000\n"
        f"sentinel parallel-syncs {name} 1\n"
    )
    return conf


@contextlib.contextmanager
def sentinel_cluster(master_name: str = "ra-primary") -> Iterator[SentinelCluster]:
    """A primary, its replica and one sentinel (quorum 1) on loopback, ready to fail over."""
    ports: list[int] = []
    while len(ports) < 3:
        if (port := free_port()) not in ports:
            ports.append(port)
    primary_port, replica_port, sentinel_port = ports
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ra-sentinel-")))
        dirs = [workdir / sub for sub in ("primary", "replica")]
        for sub in dirs:
            sub.mkdir()
        primary = _start_server("redis-primary", primary_port, dirs[0])
        stack.callback(primary.stop)
        replica = _start_server("redis-replica", replica_port, dirs[1], "--replicaof", HOST, str(primary_port))
        stack.callback(replica.stop)
        wait_for(
            lambda: _command(replica_port, "INFO", "replication").get("master_link_status") == "up",
            20,
            0.1,
            "the replica to sync",
        )
        # Started once the replica is in sync, so that its first INFO of the primary already lists the replica.
        conf = _write_sentinel_conf(workdir, sentinel_port, master_name, primary_port)
        sentinel = Proc("redis-sentinel", [str(shutil.which("redis-server")), str(conf), "--sentinel"])
        stack.callback(sentinel.stop)
        sentinel.wait_output("+monitor master", timeout=20)
        # INFO of the replica every second rather than 10 (the replica it promotes must have answered one in the
        # last 5 s), and out of TILT (entered after a 2 s stall of the process, e.g. on a busy machine) in 1 s not 30.
        _command(sentinel_port, "SENTINEL", "DEBUG", "info-period", "1000", "tilt-period", "1000")
        cluster = SentinelCluster(
            master_name, [(HOST, sentinel_port)], primary_port, replica_port, primary, replica, sentinel
        )
        wait_for(
            lambda: any(
                int(row["port"]) == replica_port and row["flags"] == "slave" and row["master-link-status"] == "ok"
                for row in cluster.replicas()
            ),
            20,
            0.1,
            "the sentinel to list the replica",
        )
        yield cluster
