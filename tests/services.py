"""Real processes for tests: a Celery worker, a private redis-server, daphne or uvicorn.

Every process is started with the test session's environment (prefix, Redis
URL, database), logs to a file under ``.artifacts/`` and is stopped by its
fixture, killed if it does not stop.

The server-level tests run on each of ``SERVERS`` (``start_server(server, ...)``);
``RA_TEST_SERVERS=daphne`` (comma-separated names) runs them on fewer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".artifacts"

#: The ASGI servers the server-level tests run on, each serving the test project as the README says.
ALL_SERVERS = ("daphne", "uvicorn")
SERVERS = tuple(name for name in os.environ.get("RA_TEST_SERVERS", ",".join(ALL_SERVERS)).split(",") if name)
assert SERVERS and set(SERVERS) <= set(ALL_SERVERS), f"RA_TEST_SERVERS names one of {ALL_SERVERS}, got {SERVERS}"
#: uvicorn's options as the README's Run section recommends them (tests may add more).
UVICORN_OPTIONS = (
    "--ws", "websockets-sansio", "--http", "httptools", "--lifespan", "off",
    "--ws-max-size", "65536", "--ws-per-message-deflate", "false",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            return text in self.output()

        wait_for(seen, timeout, 0.1, f"{text!r} in {self.name}'s output")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self.log.close()


def start_worker(*, concurrency: int = 2, env: dict[str, str] | None = None, name: str = "worker") -> Proc:
    """A real Celery worker (prefork pool) on this session's queue."""
    hostname = f"{name}-{uuid.uuid4().hex[:6]}@%h"
    proc = Proc(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.project",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-l",
            "INFO",
            "-n",
            hostname,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env,
    )
    proc.wait_output(" ready.", timeout=60)
    return proc


@contextlib.contextmanager
def private_redis(port: int | None = None, *options: str) -> Iterator[tuple[str, Proc, int]]:
    """A redis-server of our own on a free port, for tests that restart Redis; ``options`` go on its command line."""
    port = port or free_port()
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed (.ci/run installs it)"
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options]
    proc = Proc("redis", args)
    proc.wait_output("Ready to accept connections", timeout=20)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc, port
    finally:
        proc.stop()


def _listening(proc: Proc, port: int, what: str) -> None:
    def listening() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{what} exited early:\n{proc.output()[-3000:]}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, 30, 0.1, f"{what} to listen")


def start_daphne(
    *,
    app: str = "tests.project.asgi:application",
    port: int | None = None,
    env: dict[str, str] | None = None,
    name: str = "daphne",
) -> tuple[Proc, int]:
    """A real daphne server on loopback; returns the process and its port."""
    port = port or free_port()
    proc = Proc(name, [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app], env)
    _listening(proc, port, "daphne")
    return proc, port


def start_uvicorn(
    *,
    app: str = "tests.project.asgi:application",
    port: int | None = None,
    env: dict[str, str] | None = None,
    name: str = "uvicorn",
    options: tuple[str, ...] = UVICORN_OPTIONS,
) -> tuple[Proc, int]:
    """A real uvicorn serving ``app`` as ``start_daphne`` does, with ``options`` (the README's by default)."""
    port = port or free_port()
    args = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), *options, app]
    proc = Proc(name, args, env)
    _listening(proc, port, "uvicorn")
    return proc, port


def start_server(
    server: str,
    *,
    app: str = "tests.project.asgi:application",
    port: int | None = None,
    env: dict[str, str] | None = None,
    name: str | None = None,
) -> tuple[Proc, int]:
    """``start_daphne`` or ``start_uvicorn`` by name (one of ``ALL_SERVERS``); ``name`` defaults to the server's."""
    start = {"daphne": start_daphne, "uvicorn": start_uvicorn}[server]
    return start(app=app, port=port, env=env, name=name or server)
