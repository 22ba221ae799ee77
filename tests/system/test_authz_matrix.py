"""Who may do what, on every transport, against a real daphne and real Redis.

Subjects: the task's owner, another user, staff, an anonymous client, and
anonymous clients holding a valid watch token, an expired one, and one made
for another task. Owner and staff are let in; everyone else gets exactly the
answer an unknown task gets, so names cannot be probed. A watch token shows a
task (WebSocket, polling) but never cancels it (``forbidden``/403) and never
opens the feed, which carries only the signed-in user's own tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from unittest import mock

import pytest
from django.test import Client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._writing.writer import get_writer
from realtime_async.async_manager import AsyncManager
from realtime_async.conf import get_settings
from realtime_async.protocol import CLOSE_NOT_FOUND
from tests.services import start_daphne

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

MULTI = "/ws/realtime-async/"
ALLOWED = "✓"


@pytest.fixture(scope="module")
def daphne_port(django_db_setup, django_db_blocker):
    proc, port = start_daphne(name="daphne-authz")
    yield port
    assert "Traceback" not in proc.output()
    proc.stop()


@dataclass(frozen=True)
class Subject:
    """Who asks: a session (``cookie``) and/or a watch token (``token``)."""

    label: str
    cookie: str | None = None
    token: str | None = None


#: The subjects of every matrix; the feed and cancel matrices add another user holding a valid token.
LABELS = ["owner", "staff", "other user", "anonymous", "valid token", "expired token", "token for another task"]
EXTRA = "other user + valid token"


@dataclass
class People:
    alice: object  # the owner
    bob: object  # another user
    root: object  # staff
    cookies: dict[str, str]

    def subject(self, label: str, task: str) -> Subject:
        """``label``'s credentials for ``task``."""
        manager = AsyncManager.resolve_manager()
        if label == "token for another task":
            return Subject(label, token=manager.make_watch_token(queued(self.alice)))
        return {
            "owner": Subject(label, cookie=self.cookies["alice"]),
            "staff": Subject(label, cookie=self.cookies["root"]),
            "other user": Subject(label, cookie=self.cookies["bob"]),
            "anonymous": Subject(label),
            "valid token": Subject(label, token=manager.make_watch_token(task)),
            "expired token": Subject(label, token=expired_token(task)),
            EXTRA: Subject(label, cookie=self.cookies["bob"], token=manager.make_watch_token(task)),
        }[label]

    def subjects(self, task: str, *, extra: bool = False) -> list[Subject]:
        return [self.subject(label, task) for label in LABELS + ([EXTRA] if extra else [])]


@pytest.fixture
def people(django_user_model) -> People:
    alice = django_user_model.objects.create_user("alice-authz")
    bob = django_user_model.objects.create_user("bob-authz")
    root = django_user_model.objects.create_user("root-authz", is_staff=True)
    cookies = {}
    for key, user in (("alice", alice), ("bob", bob), ("root", root)):
        client = Client()
        client.force_login(user)
        cookies[key] = client.cookies["sessionid"].value
    return People(alice, bob, root, cookies)


def queued(owner) -> str:
    """A queued task of ``owner``, as ``launch_async_task`` records it, its broadcast sent."""
    name = new_task_name("authz")
    record = {"task": name, "state": "queued", "owner": owner.pk if owner else None, "created_at": time.time()}
    assert get_writer().commit(record, mode=WriteMode.CREATE, wait=True).seq == 1
    return name


def expired_token(task: str) -> str:
    signed_at = time.time() - get_settings().watch_token_max_age - 60
    with mock.patch("django.core.signing.time.time", return_value=signed_at):
        return AsyncManager.resolve_manager().make_watch_token(task)


def state_of(task: str) -> str | None:
    record = AsyncManager.resolve_manager().get_progress(task)
    return record["state"] if record else None


def summary(outcomes: dict[str, str]) -> str:
    return ", ".join(f"{label} {outcome}" for label, outcome in outcomes.items())


def ws(port: int, path: str, subject: Subject) -> connect:
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={subject.cookie}"} if subject.cookie else None,
        open_timeout=10, close_timeout=3, proxy=None, compression=None,
    )  # fmt: skip


async def recv(conn: ClientConnection, within: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(conn.recv(), within))


async def settle(conn: ClientConnection, ident: str = "settled") -> list[dict]:
    """Everything the server sent before answering a ping: so nothing is left unsent."""
    await conn.send(json.dumps({"v": 1, "type": "ping", "id": ident}))
    frames = []
    while (frame := await recv(conn)) != {"v": 1, "type": "pong", "id": ident}:
        frames.append(frame)
    return frames


def subscribe(task: str, token: str | None = None) -> str:
    return json.dumps({"v": 1, "type": "subscribe", "task": task, **({"token": token} if token else {})})


def http(port: int, method: str, path: str, subject: Subject, headers: dict | None = None) -> tuple[int, bytes]:
    csrf = "c" * 32
    cookie = f"csrftoken={csrf}" + (f"; sessionid={subject.cookie}" if subject.cookie else "")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        headers={"Cookie": cookie, "X-CSRFToken": csrf, **(headers or {})},
        data=b"" if method == "POST" else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def query(subject: Subject) -> str:
    return f"?token={subject.token}" if subject.token else ""


# -- WebSocket: subscribe, and the per-task URL ---------------------------------
def test_websocket_subscribe_matrix(daphne_port, people, reliability):
    task = queued(people.alice)
    subjects = people.subjects(task)

    async def attempt(subject: Subject) -> str:
        async with ws(daphne_port, MULTI, subject) as conn:
            await conn.send(subscribe(task, subject.token))
            answer = await recv(conn)
            await conn.send(subscribe("authz-unknown-task", subject.token))
            unknown = await recv(conn)
        path = f"/ws/realtime-async/task/{task}/{query(subject)}"
        per_task = None
        async with ws(daphne_port, path, subject) as conn:
            with contextlib.suppress(ConnectionClosed):
                per_task = await recv(conn)
            per_task_close = conn.close_code
        if answer["type"] == "progress":
            assert answer["task"] == task and answer["data"]["state"] == "queued", answer
            assert per_task is not None and (per_task["type"], per_task["task"]) == ("progress", task), per_task
            return ALLOWED
        # Refused: byte for byte what an unknown task gets, on both URLs.
        assert answer == {**unknown, "task": task}, (answer, unknown)
        assert per_task_close == CLOSE_NOT_FOUND
        return f"✗ ({answer['code']}, close {per_task_close})"

    with asyncio.Runner() as runner:
        outcomes = {subject.label: runner.run(attempt(subject)) for subject in subjects}
    refused = f"✗ (not_found, close {CLOSE_NOT_FOUND})"
    assert outcomes == {
        "owner": ALLOWED,
        "staff": ALLOWED,
        "other user": refused,
        "anonymous": refused,
        "valid token": ALLOWED,
        "expired token": refused,
        "token for another task": refused,
    }
    reliability(
        "Authorization matrix: WebSocket subscribe",
        "subscribe on ws/realtime-async/ and the per-task URL of a real daphne, as each subject",
        summary(outcomes) + "; each ✗ identical to an unknown task's answer",
    )


# -- polling: JSON and the htmx fragment -----------------------------------------
def test_polling_matrix(daphne_port, people, reliability):
    task = queued(people.alice)
    subjects = people.subjects(task)
    htmx = {"HX-Request": "true"}

    def attempt(subject: Subject) -> str:
        path = f"/realtime-async/progress/{task}/{query(subject)}"
        unknown_path = f"/realtime-async/progress/authz-unknown-task/{query(subject)}"
        status, body = http(daphne_port, "GET", path, subject, {"Accept": "application/json"})
        html_status, html = http(daphne_port, "GET", path, subject, htmx)
        if status == 200:
            assert json.loads(body)["data"]["task"] == task
            assert html_status == 200 and f'data-ra-task="{task}"'.encode() in html
            return ALLOWED
        assert (status, body) == http(daphne_port, "GET", unknown_path, subject, {"Accept": "application/json"})
        assert (html_status, html) == http(daphne_port, "GET", unknown_path, subject, htmx)
        assert task.encode() not in body + html
        return f"✗ ({status}, htmx {html_status})"

    outcomes = {subject.label: attempt(subject) for subject in subjects}
    refused = "✗ (404, htmx 404)"
    assert outcomes == {
        "owner": ALLOWED,
        "staff": ALLOWED,
        "other user": refused,
        "anonymous": refused,
        "valid token": ALLOWED,
        "expired token": refused,
        "token for another task": refused,
    }
    reliability(
        "Authorization matrix: polling (JSON and htmx fragment)",
        "GET the polling endpoint of a real daphne as JSON and as htmx, as each subject (tokens in ?token=)",
        summary(outcomes) + "; each ✗ byte for byte an unknown task's answer, without the name",
    )


# -- the feed ------------------------------------------------------------------
def test_feed_matrix(daphne_port, people, reliability):
    task, also_alices, bobs = queued(people.alice), queued(people.alice), queued(people.bob)
    subjects = people.subjects(task, extra=True)

    async def scenario() -> dict[str, str]:
        conns, answers = {}, {}
        async with contextlib.AsyncExitStack() as stack:
            for subject in subjects:
                conn = conns[subject.label] = await stack.enter_async_context(ws(daphne_port, MULTI, subject))
                if subject.token:  # the token shows the task to a subscribe: it does not open the feed
                    await conn.send(subscribe(task, subject.token))
                    await recv(conn)
                    await conn.send(json.dumps({"v": 1, "type": "unsubscribe", "task": task}))
                await conn.send(json.dumps({"v": 1, "type": "subscribe_feed"}))
                answers[subject.label] = await settle(conn)
            for name, owner in ((task, people.alice), (also_alices, people.alice), (bobs, people.bob)):
                await asyncio.to_thread(
                    get_writer().commit, {"task": name, "state": "running", "owner": owner.pk}, wait=True
                )
            await asyncio.sleep(0.5)  # what was going to leak has had its chance
            outcomes = {}
            for subject in subjects:
                got = await settle(conns[subject.label], "after")
                refused = [a for a in answers[subject.label] if a["type"] == "error"]
                if refused:
                    assert refused == [
                        {"v": 1, "type": "error", "code": "not_found", "message": "No feed without a signed-in user."}
                    ]
                    assert got == [], got
                    outcomes[subject.label] = "✗ (not_found, nothing)"
                    continue
                assert all(frame["type"] == "progress" for frame in got), got
                shown = {frame["task"] for frame in got}
                assert shown in ({task, also_alices}, {bobs}, {task, also_alices, bobs}, set()), shown
                owners = sorted({"bob's" if name == bobs else "alice's" for name in shown})
                outcomes[subject.label] = f"{ALLOWED} {' + '.join(owners)}" if owners else "nothing"
        return outcomes

    with asyncio.Runner() as runner:
        outcomes = runner.run(scenario())
    assert outcomes == {
        "owner": f"{ALLOWED} alice's",
        "staff": f"{ALLOWED} alice's + bob's",
        "other user": f"{ALLOWED} bob's",
        "anonymous": "✗ (not_found, nothing)",
        "valid token": "✗ (not_found, nothing)",
        "expired token": "✗ (not_found, nothing)",
        "token for another task": "✗ (not_found, nothing)",
        "other user + valid token": f"{ALLOWED} bob's",
    }
    reliability(
        "Authorization matrix: the feed",
        "subscribe_feed on a real daphne as each subject (token holders after a subscribe with their token), then "
        "updates of two of the owner's tasks and one of the other user's",
        "tasks each feed carried: " + summary(outcomes),
    )


# -- cancel: the WebSocket message and the POST endpoint ---------------------------
def test_cancel_over_websocket_matrix(daphne_port, people, reliability):
    async def attempt(subject: Subject, task: str) -> str:
        async with ws(daphne_port, MULTI, subject) as conn:
            await conn.send(subscribe(task, subject.token))
            watching = (await recv(conn))["type"] == "progress"
            await conn.send(json.dumps({"v": 1, "type": "cancel", "task": task}))
            frames = await settle(conn)
            await conn.send(json.dumps({"v": 1, "type": "cancel", "task": "authz-unknown-task"}))
            unknown = await settle(conn)
        errors = [frame for frame in frames if frame["type"] == "error"]
        state = await asyncio.to_thread(state_of, task)
        if not errors:
            assert state == "cancelled", state
            assert [f["data"]["state"] for f in frames] == ["cancelled"], frames  # the subscription shows it
            return ALLOWED
        assert state == "queued" and len(frames) == 1, (state, frames)
        if errors[0]["code"] == "not_found":
            assert errors == [{**unknown[0], "task": task}], (errors, unknown)
        return f"✗ ({errors[0]['code']}{', watching' if watching else ''})"

    matrix = {}
    with asyncio.Runner() as runner:
        for label in [*LABELS, EXTRA]:
            task = queued(people.alice)  # a task per subject: an accepted cancel ends it
            matrix[label] = runner.run(attempt(people.subject(label, task), task))
    assert matrix == {
        "owner": ALLOWED,
        "staff": ALLOWED,
        "other user": "✗ (not_found)",
        "anonymous": "✗ (not_found)",
        "valid token": "✗ (forbidden, watching)",
        "expired token": "✗ (not_found)",
        "token for another task": "✗ (not_found)",
        "other user + valid token": "✗ (forbidden, watching)",
    }
    reliability(
        "Authorization matrix: cancel over WebSocket",
        "subscribe (with the subject's token) then cancel on a real daphne, a fresh queued task per subject",
        summary(matrix) + "; refused tasks stay queued; each not_found identical to an unknown task's",
    )


def test_cancel_endpoint_matrix(daphne_port, people, reliability):
    def attempt(subject: Subject, task: str) -> str:
        status, body = http(daphne_port, "POST", f"/ra/realtime-async/cancel/{task}/{query(subject)}", subject)
        state = state_of(task)
        if status == 202:
            assert json.loads(body) == {"v": 1, "type": "cancel", "task": task, "accepted": True}
            assert state == "cancelled"
            return ALLOWED
        assert state == "queued", state
        if status == 404:
            unknown = http(
                daphne_port, "POST", f"/ra/realtime-async/cancel/authz-unknown-task/{query(subject)}", subject
            )
            assert (status, body) == unknown
        else:
            assert json.loads(body)["code"] == "forbidden", body
        return f"✗ ({status})"

    matrix = {}
    for label in [*LABELS, EXTRA]:
        task = queued(people.alice)  # a task per subject: an accepted cancel ends it
        matrix[label] = attempt(people.subject(label, task), task)
    assert matrix == {
        "owner": ALLOWED,
        "staff": ALLOWED,
        "other user": "✗ (404)",
        "anonymous": "✗ (404)",
        "valid token": "✗ (403)",
        "expired token": "✗ (404)",
        "token for another task": "✗ (404)",
        "other user + valid token": "✗ (403)",
    }
    reliability(
        "Authorization matrix: cancel endpoint (POST with CSRF)",
        "POST realtime-async/cancel/<task>/ on a real daphne with a valid CSRF token as each subject "
        "(tokens in ?token=), a fresh queued task per subject",
        summary(matrix) + "; refused tasks stay queued; each 404 byte for byte an unknown task's",
    )
