"""Load processes driven by the runner: one JSON command a line on stdin, one JSON answer a line back.

Each load process (publisher, watchers, HTTP load) is a separate OS process so
that its CPU is not the runner's, and every command it runs is bounded in
count and time by the command itself. Anything a process prints goes to its
log under ``.artifacts/``; only answers use the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".artifacts"

logger = logging.getLogger("bench")


class BenchError(RuntimeError):
    """A load process failed, answered with an error or did not answer in time."""


# -- the child side -----------------------------------------------------------
def _answer_pipe():
    # The answers get the real stdout; print() and libraries writing to fd 1 go to the log.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _error(cmd: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    traceback.print_exc(file=sys.stderr)
    return {"ok": False, "error": f"{cmd.get('op')}: {type(exc).__name__}: {exc}"}


def serve(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Answer commands with ``handle`` until ``exit`` or end of input (synchronous processes)."""
    out = _answer_pipe()
    out.write(json.dumps({"ok": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "exit":
            break
        try:
            answer = {"ok": True, **handle(cmd)}
        except Exception as exc:
            answer = _error(cmd, exc)
        out.write(json.dumps(answer) + "\n")


async def serve_async(handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """Answer commands with ``handle`` until ``exit`` or end of input (asyncio processes)."""
    out = _answer_pipe()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out.write(json.dumps({"ok": True, "pid": os.getpid()}) + "\n")
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd.get("op") == "exit":
            break
        try:
            answer = {"ok": True, **await handle(cmd)}
        except Exception as exc:
            answer = _error(cmd, exc)
        out.write(json.dumps(answer) + "\n")


# -- the runner side ----------------------------------------------------------
class Agent:
    """A load process started with ``python -m module``; ``call()`` sends a command and waits for its answer."""

    def __init__(self, name: str, module: str, env: dict[str, str]) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"bench-{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self._buffer = b""
        self.pid: int | None = None

    def ready(self, timeout: float = 60) -> Agent:
        self.pid = self.recv(timeout)["pid"]
        return self

    def send(self, op: str, /, **args: Any) -> None:
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
            self.popen.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name} is gone:\n{self.log_tail()}") from None

    def recv(self, timeout: float) -> dict[str, Any]:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.name} did not answer within {timeout:.0f}s:\n{self.log_tail()}")
                if not selector.select(left):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise BenchError(f"{self.name} exited ({self.popen.poll()}):\n{self.log_tail()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok", False):
            raise BenchError(f"{self.name}: {answer.get('error')}\n{self.log_tail()}")
        return answer

    def call(self, op: str, wait: float, /, **args: Any) -> dict[str, Any]:
        """Send ``op`` and wait up to ``wait`` seconds for the answer."""
        self.send(op, **args)
        return self.recv(wait)

    def log_tail(self, size: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-size:]

    def stop(self, timeout: float = 5) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(BenchError, OSError):
                self.send("exit")
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        for pipe in (self.popen.stdin, self.popen.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self._log.close()


def call_all(agents: list[Agent], op: str, wait: float, /, per_agent: list[dict[str, Any]] | None = None, **args: Any):
    """Send one command to every agent at once (with ``per_agent[i]`` merged in), then collect the answers."""
    for i, agent in enumerate(agents):
        agent.send(op, **args, **(per_agent[i] if per_agent else {}))
    return [agent.recv(wait) for agent in agents]
