"""Hostile input against the WebSocket protocol and the endpoints, on a real daphne and a real uvicorn.

- Random frames (hypothesis, ``tests/hostile.py``): text, binary, JSON of every
  shape, huge, deeply nested, truncated. Each gets the answer
  ``parse_client_message`` gives it (a fixed public error, a pong, or none for
  the unanswered messages) or a documented close (4400; 4429 after a flood,
  when the frame is sent again on a new connection). A bystander watching a
  task gets every update and is never closed; the server stays up and logs no
  traceback. ``integration/test_hostile_frames.py`` sends thousands more in-process.
- Cross-site WebSocket hijacking: foreign, missing, empty and ``null``
  ``Origin`` headers are refused at the handshake.
- The limits (subscriptions per connection, message rate, connections per
  user), one real-server test each.
- Odd task names, wrong methods and missing CSRF on the polling and cancel
  endpoints and the per-task WebSocket URL: a clear 4xx, nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime_async._core.naming import new_task_name
from realtime_async.async_manager import AsyncManager
from realtime_async.conf import get_settings
from realtime_async.protocol import CLOSE_NOT_FOUND, CLOSE_RATE_LIMITED, CLOSE_TOO_LARGE
from tests.browser_helpers import session_key
from tests.hostile import EXAMPLES, FRAMES, LIMIT, Answer, Frame, check_answer, expected, sentinel
from tests.services import start_server
from tests.ws_helpers import MULTI, commit

_LIMITS = get_settings()
#: A connection's first burst of messages: MAX_MESSAGES_PER_SECOND + MAX_SUBSCRIPTIONS.
BURST = int(_LIMITS.max_messages_per_second + _LIMITS.max_subscriptions)


# -- a real server: daphne, then uvicorn ------------------------------------------
@pytest.fixture(scope="module")
def daphne(server, django_db_setup, django_db_blocker):
    """The module's server (``server``: daphne, then uvicorn) and its port."""
    proc, port = start_server(server, name=f"{server}-hostile")
    yield proc, port
    proc.stop()


@pytest.fixture
def daphne_port(daphne):
    return daphne[1]


#: uvicorn logs each invalid UTF-8 text frame a client sends at ERROR, with the decode error's traceback
#: (its own log line, before the application sees anything); it then closes the connection with 1007.
UVICORN_UTF8_ERROR = "ERROR:    Invalid UTF-8 sequence received from client.\nTraceback"


def tracebacks(proc) -> int:
    """Tracebacks in the server's log, but uvicorn's own for invalid UTF-8 (``UVICORN_UTF8_ERROR``)."""
    output = proc.output()
    return output.count("Traceback") - output.count(UVICORN_UTF8_ERROR)


def ws(port: int, path: str = MULTI, *, cookie: str | None = None, origin: str | None = "same") -> connect:
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        origin=f"http://127.0.0.1:{port}" if origin == "same" else origin,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"sessionid={cookie}"} if cookie else None,
        open_timeout=10, close_timeout=3, proxy=None, compression=None, max_size=None,
    )  # fmt: skip


async def recv(conn: ClientConnection, within: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(conn.recv(), within))


async def close_code(conn: ClientConnection, within: float = 10) -> int | None:
    """Read until the server closes; return its close code (None: dropped without a close frame)."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(within):
            while True:
                await conn.recv()
    return received_close(conn)


def received_close(conn: ClientConnection) -> int | None:
    """The code of the close frame the server sent, None when it dropped the connection without one."""
    frame = conn.protocol.close_rcvd
    return frame.code if frame is not None else None


class Bystander:
    """A client watching one task by watch token: collects what it gets, in the background."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.name = new_task_name("bystander")
        self.frames: list[dict] = []
        self.closed: int | None = None
        self.seq = commit(self.name, "running", None, percent=0)

    async def start(self) -> None:
        token = AsyncManager.resolve_manager().make_watch_token(self.name)
        self.conn = await ws(self.port)
        await self.conn.send(json.dumps({"v": 1, "type": "subscribe", "task": self.name, "token": token}))
        self.reader = asyncio.create_task(self._read())
        await self.until(self.seq)

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                self.frames.append(json.loads(raw))
        except ConnectionClosed:
            pass
        self.closed = self.conn.close_code

    async def until(self, seq: int, within: float = 15) -> None:
        async with asyncio.timeout(within):
            while not any(f.get("data", {}).get("seq") == seq for f in self.frames):
                assert self.closed is None, self.closed
                await asyncio.sleep(0.005)

    def update(self) -> int:
        self.seq = commit(self.name, "running", None, percent=self.seq)
        return self.seq

    async def finish(self) -> list[int]:
        """Check the connection is alive and got exactly its task's updates, in order; return their seqs."""
        await self.conn.send(json.dumps({"v": 1, "type": "ping", "id": "bystander"}))
        async with asyncio.timeout(10):
            while {"v": 1, "type": "pong", "id": "bystander"} not in self.frames:
                assert self.closed is None, self.closed
                await asyncio.sleep(0.005)
        progress = [f for f in self.frames if f["type"] == "progress"]
        assert len(progress) == len(self.frames) - 1, self.frames  # nothing but its task and the pong
        assert {f["task"] for f in progress} == {self.name}
        seqs = [f["data"]["seq"] for f in progress]
        assert seqs == list(range(1, self.seq + 1)), seqs
        await self.conn.close()
        await self.reader
        return seqs


class Remote:
    """A hostile client on the real server: reconnects when closed, and before its burst runs out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: ClientConnection | None = None
        self.sent = 0
        self.count = 0

    async def exchange(self, frame: Frame) -> Answer:
        for _ in range(5):
            if self.conn is None or self.sent + 2 > BURST - 10:
                await self.close()
                self.conn, self.sent = await ws(self.port), 0
            self.count += 1
            ping, pong = sentinel(self.count)
            self.sent += 2
            try:
                await self.conn.send(frame[1])
                await self.conn.send(ping)
                frames = []
                while (raw := await asyncio.wait_for(self.conn.recv(), 10)) != pong:
                    frames.append(raw)
                return Answer(frames=tuple(frames))
            except ConnectionClosed:
                code = received_close(self.conn)
                await self.close()
                if code == CLOSE_RATE_LIMITED:  # a flood after all (a slow machine): send it again
                    continue
                return Answer(close=code)
        raise AssertionError("rate limited five times in a row")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None


@pytest.mark.reliability
def test_random_frames_on_a_real_server(daphne, server, reliability):
    proc, port = daphne
    seen: dict[str, int] = {}
    with asyncio.Runner() as runner:
        bystander = Bystander(port)
        runner.run(bystander.start())
        remote = Remote(port)

        @hypothesis_settings(
            max_examples=600,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(frame=FRAMES)
        def check(frame: Frame) -> None:
            got = runner.run(remote.exchange(frame))
            check_answer(frame, got, expected(frame))
            seen[got.kind()] = seen.get(got.kind(), 0) + 1
            if sum(seen.values()) % 100 == 0:  # meanwhile, the bystander's task goes on
                runner.run(bystander.until(bystander.update()))

        for frame in EXAMPLES:
            check = example(frame=frame)(check)
        check()
        runner.run(remote.close())
        runner.run(bystander.until(bystander.update()))
        seqs = runner.run(bystander.finish())
        # The server is up: a new client is answered at once.
        runner.run(_ping(port))
    assert proc.popen.poll() is None
    assert tracebacks(proc) == 0
    frames = sum(seen.values())
    assert frames >= 600 and {"bad_request", "not_found", "pong", "no answer", f"close {CLOSE_TOO_LARGE}"} <= set(seen)
    reliability(
        "Random hostile WebSocket frames (hypothesis) on a real server",
        "text, binary, JSON of every shape, deep nesting, truncated and oversized frames sent by the websockets "
        f"client to {server}; a bystander watches a task meanwhile",
        f"each of {frames} frames got its documented answer ({', '.join(sorted(seen))}); a 4429 after a flood "
        "is followed by "
        f"a reconnect; bystander got all {len(seqs)} updates in order and was never closed; {server} up, "
        "no traceback",
    )


async def _ping(port: int) -> None:
    async with ws(port) as conn:
        await conn.send(json.dumps({"v": 1, "type": "ping", "id": "alive"}))
        assert await recv(conn) == {"v": 1, "type": "pong", "id": "alive"}


#: How each server refuses invalid UTF-8 and a message over its own limit (daphne's 1 MiB, the 64 KiB of
#: uvicorn's ``--ws-max-size`` in the README): daphne drops the connection without a close frame (None),
#: uvicorn (websockets) closes it with 1007 (invalid data) and 1009 (too big).
SERVER_REFUSALS = {"daphne": (None, None), "uvicorn": (1007, 1009)}


@pytest.mark.reliability
def test_frames_the_server_refuses_before_the_app(daphne, server, reliability):
    """Invalid UTF-8 and messages over the server's limit are refused by the server; 4097 bytes is the app's 4400."""
    proc, port = daphne
    codes = {}

    async def scenario() -> list[int]:
        bystander = Bystander(port)
        await bystander.start()
        for label, payload, text in [
            ("invalid UTF-8 text", b'{"v": 1, "type": "ping", "id": "\xff\xfe"}', True),
            ("1 MiB + 1 text", "x" * (1024 * 1024 + 1), None),
            ("1 MiB + 1 binary", b"\x00" * (1024 * 1024 + 1), None),
            ("over MAX_MESSAGE_BYTES", "x" * (LIMIT + 1), None),
        ]:
            async with ws(port) as conn:
                try:
                    await conn.send(payload, text=text)
                except ConnectionClosed:
                    # The server can drop the connection while a 1 MiB frame is still being written.
                    codes[label] = received_close(conn)
                else:
                    codes[label] = await close_code(conn)
        await bystander.until(bystander.update())
        return await bystander.finish()

    with asyncio.Runner() as runner:
        seqs = runner.run(scenario())
        runner.run(_ping(port))
    invalid, too_big = SERVER_REFUSALS[server]
    assert codes == {
        "invalid UTF-8 text": invalid,
        "1 MiB + 1 text": too_big,
        "1 MiB + 1 binary": too_big,
        "over MAX_MESSAGE_BYTES": CLOSE_TOO_LARGE,
    }
    assert proc.popen.poll() is None and tracebacks(proc) == 0
    if server == "daphne":
        injection = "a text frame of invalid UTF-8 and messages of 1 MiB + 1 byte (daphne's limit) to a real daphne"
        refused = "invalid UTF-8 and 1 MiB + 1: connection dropped by daphne (1006, no close frame)"
    else:
        injection = (
            "a text frame of invalid UTF-8 and messages of 1 MiB + 1 byte (over `--ws-max-size 65536`) to a real "
            "uvicorn (websockets-sansio)"
        )
        refused = (
            f"invalid UTF-8: close {invalid} from uvicorn (which logs it with a traceback of its own); "
            f"1 MiB + 1: close {too_big}"
        )
    reliability(
        "WebSocket frames refused below the application",
        injection,
        f"{refused}; {LIMIT + 1} bytes: close 4400; bystander got all {len(seqs)} updates; {server} up, no "
        + ("other " if server == "uvicorn" else "")
        + "traceback",
    )


# -- cross-site WebSocket hijacking ------------------------------------------------
@pytest.mark.reliability
def test_cross_site_handshakes_are_refused(daphne_port, server, reliability):
    port = daphne_port
    refused: dict[str, int] = {}

    async def handshake(origin: str | None) -> int:
        headers = {} if origin is None else {"Origin": origin}
        try:
            async with connect(
                f"ws://127.0.0.1:{port}{MULTI}", additional_headers=headers, open_timeout=10, proxy=None
            ) as conn:
                await conn.send(json.dumps({"v": 1, "type": "ping"}))
                await recv(conn)
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    origins = {
        "foreign": "http://evil.example",
        "look-alike": f"http://127.0.0.1.evil.example:{port}",
        "missing": None,
        "empty": "",
        "null (sandboxed iframe, file:)": "null",
    }
    with asyncio.Runner() as runner:
        for label, origin in origins.items():
            refused[label] = runner.run(handshake(origin))
        same = runner.run(handshake(f"http://127.0.0.1:{port}"))
        # Below the server (daphne refuses an empty header itself), the validator of asgi.py refuses it too.
        in_process = {label: runner.run(_asgi_handshake(origin)) for label, origin in origins.items()}
    assert same == 101
    assert all(400 <= status < 500 for status in refused.values()), refused
    assert in_process == dict.fromkeys(origins, False), in_process
    reliability(
        "Cross-site WebSocket hijacking",
        f"handshakes to a real {server} with a foreign, look-alike, missing, empty and null Origin",
        "all refused at the handshake: "
        + ", ".join(f"{label} {status}" for label, status in refused.items())
        + "; the project's AllowedHostsOriginValidator refuses each of them in-process too; same origin accepted",
    )


async def _asgi_handshake(origin: str | None) -> bool:
    from tests.project.asgi import application

    headers = [(b"host", b"127.0.0.1")] + ([] if origin is None else [(b"origin", origin.encode())])
    comm = WebsocketCommunicator(application, MULTI, headers=headers)
    accepted, _ = await comm.connect(5)
    await comm.disconnect()
    return bool(accepted)


# -- limits, each on a real server -------------------------------------------------
@pytest.mark.reliability
def test_subscription_limit_on_a_real_server(daphne_port, server, reliability):
    manager = AsyncManager.resolve_manager()
    most = _LIMITS.max_subscriptions
    names = [new_task_name("limit") for _ in range(most + 1)]
    for name in names:
        commit(name, "running", None)

    def subscribe(name: str) -> str:
        return json.dumps({"v": 1, "type": "subscribe", "task": name, "token": manager.make_watch_token(name)})

    async def scenario() -> tuple[int, dict, str]:
        async with ws(daphne_port) as conn:
            for name in names[:most]:
                await conn.send(subscribe(name))
            snapshots = [await recv(conn) for _ in range(most)]
            assert {(m["type"], m["task"]) for m in snapshots} == {("progress", name) for name in names[:most]}
            await conn.send(subscribe(names[most]))
            refused = await recv(conn)
            await conn.send(json.dumps({"v": 1, "type": "unsubscribe", "task": names[0]}))
            await conn.send(subscribe(names[most]))
            after = await recv(conn)
            return len(snapshots), refused, after["type"]

    with asyncio.Runner() as runner:
        accepted, refused, after = runner.run(scenario())
    assert refused == {
        "v": 1,
        "type": "error",
        "code": "limit",
        "task": names[most],
        "message": "Too many subscriptions on this connection.",
    }
    assert after == "progress"
    reliability(
        "Too many subscriptions on one connection",
        f"{most + 1} subscribes (watch tokens) on one WebSocket to a real {server}; MAX_SUBSCRIPTIONS = {most}",
        f"{accepted} snapshots, then error `limit` for the next; after an unsubscribe it is accepted",
    )


@pytest.mark.reliability
def test_message_flood_on_a_real_server(daphne_port, server, reliability):
    async def scenario() -> tuple[int, int | None, list[int]]:
        bystander = Bystander(daphne_port)
        await bystander.start()
        async with ws(daphne_port) as conn:
            for i in range(BURST * 3):
                await conn.send(json.dumps({"v": 1, "type": "ping", "id": i}))
            pongs = 0
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        assert (await recv(conn))["type"] == "pong"
                        pongs += 1
            code = conn.close_code
        await bystander.until(bystander.update())
        seqs = await bystander.finish()
        await _ping(daphne_port)  # the limit is per connection: a new one is served
        return pongs, code, seqs

    with asyncio.Runner() as runner:
        pongs, code, seqs = runner.run(scenario())
    assert code == CLOSE_RATE_LIMITED
    assert BURST <= pongs < BURST * 3
    reliability(
        "WebSocket message flood",
        f"{BURST * 3} pings sent at once on one WebSocket to a real {server} "
        f"(MAX_MESSAGES_PER_SECOND = {_LIMITS.max_messages_per_second:g}, bursts of {BURST})",
        f"the burst is answered, then close 4429; bystander got all {len(seqs)} updates; a new connection is served",
    )


@pytest.mark.reliability
@pytest.mark.django_db(transaction=True)
def test_connections_per_user_on_a_real_server(daphne_port, server, django_user_model, reliability):
    alice = django_user_model.objects.create_user("alice-limit")
    bob = django_user_model.objects.create_user("bob-limit")
    alice_cookie, bob_cookie = session_key(alice), session_key(bob)
    most = _LIMITS.max_connections_per_user

    async def pong(conn: ClientConnection) -> bool:
        await conn.send(json.dumps({"v": 1, "type": "ping"}))
        return (await recv(conn))["type"] == "pong"

    async def scenario() -> dict[str, Any]:
        outcome: dict[str, Any] = {}
        async with contextlib.AsyncExitStack() as stack:
            conns = [await stack.enter_async_context(ws(daphne_port, cookie=alice_cookie)) for _ in range(most)]
            outcome["alice's first ones"] = all([await pong(conn) for conn in conns])
            async with ws(daphne_port, cookie=alice_cookie) as extra:
                outcome["alice's next"] = await close_code(extra)
            async with ws(daphne_port, cookie=bob_cookie) as other:
                outcome["bob"] = await pong(other)
            await conns.pop().close()
            # The server counts the closed one out when it sees the close: retry until it did.
            async with asyncio.timeout(10):
                while True:
                    async with ws(daphne_port, cookie=alice_cookie) as again:
                        with contextlib.suppress(ConnectionClosed):
                            outcome["alice after one closed"] = await pong(again)
                            break
                    await asyncio.sleep(0.05)
        return outcome

    with asyncio.Runner() as runner:
        outcome = runner.run(scenario())
    assert outcome == {
        "alice's first ones": True,
        "alice's next": CLOSE_RATE_LIMITED,
        "bob": True,
        "alice after one closed": True,
    }
    reliability(
        "Too many WebSocket connections for one user",
        f"{most + 1} WebSockets with one session to a real {server}; MAX_CONNECTIONS_PER_USER = {most}",
        f"{most} served, the next closed 4429 at once; another user is served; closing one frees its place",
    )


# -- odd names, wrong methods, missing CSRF on every endpoint ------------------------
def http(port: int, method: str, path: str, *, cookie: str = "", headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        headers={"Accept": "application/json", **({"Cookie": cookie} if cookie else {}), **(headers or {})},
        data=b"" if method in ("POST", "PUT", "PATCH") else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


ODD_NAMES = {
    "very long": "a" * 5000,
    "129 characters": "a" * 129,
    "path-like": "../../etc/passwd",
    "encoded path": "%2e%2e%2fsettings",
    "two segments": "a/b",
    "unicode": "t%C3%A2che-%C3%BC",
    "emoji": "%F0%9F%92%A5",
    "NUL": "%00",
    "invalid UTF-8": "%FF%FE",
    "markup": "%3Cscript%3E",
    "space": "with%20space",
    "leading dash": "-dash",
    "empty": "",
}


@pytest.mark.reliability
@pytest.mark.django_db(transaction=True)
def test_odd_names_wrong_methods_and_missing_csrf_change_nothing(daphne, server, django_user_model, reliability):
    proc, port = daphne
    manager = AsyncManager.resolve_manager()
    owner = django_user_model.objects.create_user("owner-odd")
    mallory = django_user_model.objects.create_user("mallory-odd")
    name = new_task_name("odd")
    commit(name, "queued", owner.pk)
    before = manager.get_progress(name)
    csrf = get_random_string(32)
    owner_cookie = f"sessionid={session_key(owner)}; csrftoken={csrf}"
    mallory_cookie = f"sessionid={session_key(mallory)}; csrftoken={csrf}"
    with_csrf = {"X-CSRFToken": csrf}
    statuses: dict[str, set[int]] = {}

    def seen(label: str, status: int, body: bytes) -> None:
        assert b"Traceback" not in body and b"<script" not in body and b"hunter2" not in body, (label, body[:300])
        statuses.setdefault(label, set()).add(status)

    for odd in ODD_NAMES.values():
        for accept in ({}, {"HX-Request": "true"}):
            seen(
                "poll odd name",
                *http(port, "GET", f"/realtime-async/progress/{odd}/", cookie=owner_cookie, headers=accept),
            )
        seen(
            "cancel odd name",
            *http(port, "POST", f"/ra/realtime-async/cancel/{odd}/", cookie=owner_cookie, headers=with_csrf),
        )
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        seen(
            "poll wrong method",
            *http(port, method, f"/realtime-async/progress/{name}/", cookie=owner_cookie, headers=with_csrf),
        )
    for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"):
        seen(
            "cancel wrong method",
            *http(port, method, f"/ra/realtime-async/cancel/{name}/", cookie=owner_cookie, headers=with_csrf),
        )
    seen("cancel without CSRF", *http(port, "POST", f"/ra/realtime-async/cancel/{name}/", cookie=owner_cookie))
    seen(
        "cancel wrong CSRF",
        *http(
            port,
            "POST",
            f"/ra/realtime-async/cancel/{name}/",
            cookie=owner_cookie,
            headers={"X-CSRFToken": get_random_string(32)},
        ),
    )
    seen(
        "cancel, another user's session",
        *http(port, "POST", f"/ra/realtime-async/cancel/{name}/", cookie=mallory_cookie, headers=with_csrf),
    )
    seen("poll, another user's session", *http(port, "GET", f"/realtime-async/progress/{name}/", cookie=mallory_cookie))

    cookie = session_key(owner)

    ws_paths = [f"/ws/realtime-async/task/{odd}/" for odd in ODD_NAMES.values()]
    ws_paths += [f"/ws/realtime-async/task/{name}", "/ws/realtime-async/task/", "/ws/realtime-async/task"]

    async def per_task_urls() -> set[int | None]:
        codes = set()
        for ws_path in ws_paths:
            async with ws(port, ws_path, cookie=cookie) as conn:
                codes.add(await close_code(conn))
        return codes

    with asyncio.Runner() as runner:
        ws_codes = runner.run(per_task_urls())
    assert statuses == {
        "poll odd name": {404},
        "cancel odd name": {404},
        "poll wrong method": {405},
        "cancel wrong method": {405},
        "cancel without CSRF": {403},
        "cancel wrong CSRF": {403},
        "cancel, another user's session": {404},
        "poll, another user's session": {404},
    }, statuses
    assert ws_codes == {CLOSE_NOT_FOUND}, ws_codes
    assert manager.get_progress(name) == before  # still queued, same seq: nothing changed
    assert tracebacks(proc) == 0
    reliability(
        "Odd task names, wrong methods, missing CSRF, another user's session",
        f"{len(ODD_NAMES)} odd names (5000 characters, path-like, encoded, unicode, NUL, invalid UTF-8, markup, "
        "empty) on the polling (JSON, htmx) and cancel endpoints and the per-task WebSocket URL of a real "
        f"{server}; other methods; cancel without or with a wrong CSRF token; another user's session",
        "; ".join(f"{label}: {'/'.join(map(str, sorted(codes)))}" for label, codes in statuses.items())
        + f"; per-task WebSocket URL (also without a name or its trailing slash): close {CLOSE_NOT_FOUND}; "
        "the task unchanged (queued, same seq); no traceback",
    )
