"""py-spy attached to daphne: record raw stacks, then split the samples by function and by package."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

#: Who a sample's CPU time belongs to: the innermost frame outside the standard library, first
#: match wins. py-spy shows no C frames, so time in C (``str.encode``, ``socket.send``,
#: ``epoll_ctl``) belongs to the Python line calling it, and time in the standard library
#: (``selectors``, ``collections``) to the package that called into it.
PACKAGES = (
    ("autobahn/", "autobahn (WebSocket framing)"),
    ("twisted/", "twisted (transport writes, reactor)"),
    ("daphne/", "daphne (ASGI server, handle_reply)"),
    ("uvicorn/", "uvicorn (ASGI server)"),
    ("websockets/", "websockets (framing, uvicorn)"),
    ("channels_redis/", "channels_redis (layer receive)"),
    ("msgpack/", "channels_redis (layer receive)"),
    ("redis/", "redis-py"),
    ("channels/sessions.py", "channels session/auth middleware"),
    ("channels/auth.py", "channels session/auth middleware"),
    ("channels/", "channels (consumer, send, dispatch)"),
    ("asgiref/", "asgiref (sync_to_async threads)"),
    ("django/", "django (sessions, db connections, settings)"),
    ("realtime_async/", "realtime_async (hub, consumer)"),
    ("bench/", "tutorial consumer (bench/naive.py)"),
)
#: Standard-library frames that are the event loop or a thread pool themselves, not a callee.
_RUNNERS = {
    "_run_once": "asyncio event loop",
    "run_forever": "asyncio event loop",
    "_run": "asyncio event loop",
    "_worker": "thread pool",
    "run": "thread pool",
}
#: Innermost frames that are a thread waiting, not working: py-spy's idle detection misses these here
#: (a pool thread blocked in ``SimpleQueue.get`` shows as active), so they are counted apart.
IDLE_LEAVES = frozenset(
    {
        ("_worker", "concurrent/futures/thread.py"),
        ("Condition.wait", "threading.py"),
        ("Thread._wait_for_tstate_lock", "threading.py"),
        ("EpollSelector.select", "selectors.py"),
        ("BaseSelectorEventLoop.select", "selectors.py"),
    }
)
#: Frames on (nearly) every stack (entry points, the loop, thread bootstraps): left out of the inclusive table.
_ROOTS = frozenset(
    {
        "<module>",
        "_run_module_as_main",
        "_run_code",
        "main",
        "run",
        "CommandLineInterface.entrypoint",
        "CommandLineInterface.run",
        "Server.run",
        "Server.serve",
        "Server._serve",
        "AsyncioSelectorReactor.run",
        "BaseEventLoop.run_forever",
        "BaseEventLoop._run_once",
        "BaseEventLoop.run_until_complete",
        "Handle._run",
        "Thread._bootstrap",
        "Thread._bootstrap_inner",
        "Thread.run",
        "_worker",
        "Runner.run",
        "asyncio_run",
        "Command.main",
        "Command.__call__",
        "Command.invoke",
        "Context.invoke",
    }
)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def record(pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` (raw collapsed stacks into ``out``); the caller waits."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install -r the bench extra")
    args = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate)]
    args += ["--format", "raw", "--output", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _frame(text: str) -> tuple[str, str, str]:
    match = _FRAME.match(text.strip())
    if not match:
        return text, "", ""
    file = match["file"]
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return match["func"], file, match["line"] or ""


def _stdlib(file: str) -> bool:
    return not any(marker in file for marker, _ in PACKAGES) and (
        "/" not in file or file.split("/", 1)[0] in {"asyncio", "concurrent", "collections", "json", "email", "http"}
    )


def _owner(frames: list[tuple[str, str, str]]) -> str:
    """The package a sample's time belongs to (see ``PACKAGES``)."""
    for func, file, _ in reversed(frames):
        for marker, name in PACKAGES:
            if marker in file:
                return name
        if _stdlib(file):
            short = func.rsplit(".", 1)[-1]
            if short in _RUNNERS and ("asyncio" in file or "events.py" in file or "thread" in file):
                return _RUNNERS[short]
            continue
        return "other: " + file.split("/", 1)[0]
    return "other"


def analyse(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares by function, self share by package, from a py-spy raw file (idle waits apart)."""
    self_fn: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    self_line: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        func, file, lineno = frames[-1]
        if (func, file) in IDLE_LEAVES:
            idle += count
            continue
        total += count
        self_fn[f"{func} ({file})"] += count
        self_line[f"{func} ({file}:{lineno})"] += count
        packages[_owner(frames)] += count
        for key in {f"{f} ({fl})" for f, fl, _ in frames if f not in _ROOTS}:
            incl_fn[key] += count

    def share(counter: collections.Counter[str], n: int) -> list[list[Any]]:
        ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:n]  # ties in name order
        return [[key, round(100 * value / total, 1)] for key, value in ranked] if total else []

    return {
        "samples": total,
        "idle_samples": idle,
        "packages": share(packages, 20),
        "self": share(self_fn, top),
        "self_lines": share(self_line, top),
        "inclusive": share(incl_fn, top),
    }
