"""No exception text and no traceback reaches a browser, on any transport.

A real worker runs ``fail_secret``, which raises
``RuntimeError("database password is hunter2-SECRET")``. Everything a browser
could get about that task is collected from a real daphne (every WebSocket
frame: subscriptions, per-task URLs, feeds, cancel answers; polling JSON and
htmx; the dashboard page and its rows; the admin's live page and the task's
admin record; the cancel endpoint) and from the widget's server render, and
searched for the secret, ``Traceback`` and ``RuntimeError``. The worker's own
log has the secret: that is where it belongs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request

import pytest
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.urls import reverse
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime_async.async_manager import AsyncManager
from realtime_async.contrib.dashboard.models import TaskRecord
from realtime_async.protocol import CLOSE_FINAL
from realtime_async.tasks import GENERIC_ERROR
from realtime_async.widgets import render_live_progress
from tests.services import start_daphne, wait_for

SECRETS = ("hunter2", "SECRET", "database password", "Traceback", "RuntimeError")
MULTI = "/ws/realtime-async/"


@pytest.fixture(scope="module")
def daphne(django_db_setup, django_db_blocker):
    proc, port = start_daphne(name="daphne-leaks")
    yield proc, port
    proc.stop()


def ws(port: int, path: str, cookie: str | None) -> connect:
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={cookie}"} if cookie else None,
        open_timeout=10, close_timeout=3, proxy=None, compression=None,
    )  # fmt: skip


def http(port: int, method: str, path: str, cookie: str | None, **headers: str) -> tuple[int, str]:
    csrf = "c" * 32
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        headers={"Cookie": f"csrftoken={csrf}" + (f"; sessionid={cookie}" if cookie else ""), "X-CSRFToken": csrf}
        | headers,
        data=b"" if method == "POST" else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


class Stream:
    """One WebSocket connection: everything the server sent on it, until ``task`` is final (or it closed)."""

    def __init__(self, label: str, conn: ClientConnection) -> None:
        self.label, self.conn = label, conn
        self.frames: list[str] = []

    async def until_final(self, task: str, within: float = 60) -> None:
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(within):
                while True:
                    self.frames.append(raw := await self.conn.recv())
                    message = json.loads(raw)
                    if message.get("task") == task and message.get("data", {}).get("state") == "failure":
                        return

    async def answer(self, message: dict) -> list[str]:
        """Send ``message``; the frames sent before a following ping's pong (kept with the stream's)."""
        await self.conn.send(json.dumps(message))
        await self.conn.send(json.dumps({"v": 1, "type": "ping", "id": "answered"}))
        got = []
        while (raw := await asyncio.wait_for(self.conn.recv(), 10)) != '{"v":1,"type":"pong","id":"answered"}':
            got.append(raw)
        self.frames.extend(got)
        return got

    def last_state(self) -> dict:
        return [message for message in map(json.loads, self.frames) if message["type"] == "progress"][-1]["data"]


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.mark.reliability
@pytest.mark.django_db(transaction=True)  # launch_async_task enqueues on commit; daphne reads these users
def test_worker_exception_text_reaches_no_browser(daphne, celery_worker_proc, django_user_model, reliability):
    proc, port = daphne
    manager = AsyncManager.resolve_manager()
    alice = django_user_model.objects.create_user("alice-leaks")
    root = django_user_model.objects.create_user("root-leaks", is_staff=True, is_superuser=True)
    cookies = {}
    for user in (alice, root):
        client = Client()
        client.force_login(user)
        cookies[user.username] = client.cookies["sessionid"].value
    owner, staff = cookies["alice-leaks"], cookies["root-leaks"]
    streams: list[Stream] = []

    async def open_stream(label: str, path: str, cookie: str | None, *messages: dict) -> Stream:
        stream = Stream(label, await ws(port, path, cookie))
        for message in messages:
            await stream.conn.send(json.dumps(message))
        streams.append(stream)
        return stream

    async def watch(name: str, token: str) -> None:
        subscribe = {"v": 1, "type": "subscribe", "task": name}
        await asyncio.gather(
            open_stream("owner's subscription", MULTI, owner, subscribe),
            open_stream("staff's subscription", MULTI, staff, subscribe),
            open_stream("token subscription", MULTI, None, {**subscribe, "token": token}),
            open_stream("owner's per-task URL", f"/ws/realtime-async/task/{name}/", owner),
            open_stream("token per-task URL", f"/ws/realtime-async/task/{name}/?token={token}", None),
        )
        await asyncio.gather(*(stream.until_final(name) for stream in streams))

    with asyncio.Runner() as runner:
        feed = {"v": 1, "type": "subscribe_feed"}
        runner.run(open_stream("owner's feed", MULTI, owner, feed))
        runner.run(open_stream("staff's feed", MULTI, staff, feed))
        # Held back a moment so that every watcher is there before the worker starts.
        name = manager.launch_async_task("tests.testapp.workers.fail_secret", user=alice, countdown=1)
        token = manager.make_watch_token(name)
        runner.run(watch(name, token))
        by_label = {stream.label: stream for stream in streams}
        cancels = {
            "owner's cancel (accepted, final)": runner.run(
                by_label["owner's feed"].answer({"v": 1, "type": "cancel", "task": name})
            ),
            "token holder's cancel": runner.run(
                by_label["token subscription"].answer({"v": 1, "type": "cancel", "task": name})
            ),
        }
        for stream in streams:
            runner.run(stream.conn.close())
    record = manager.get_progress(name)
    assert record is not None and record["state"] == "failure"
    assert record["error"] == GENERIC_ERROR
    assert "hunter2-SECRET" in celery_worker_proc.output()  # the secret was raised, and logged where it belongs
    for stream in streams:
        assert stream.last_state() == record, (stream.label, stream.frames)
    per_task_closes = {stream.label: stream.conn.close_code for stream in streams if "per-task" in stream.label}
    assert per_task_closes == dict.fromkeys(per_task_closes, CLOSE_FINAL)
    assert cancels["owner's cancel (accepted, final)"] == []
    # The token's subscription ended with the final state: nothing shows the task any more.
    assert [json.loads(frame)["code"] for frame in cancels["token holder's cancel"]] == ["not_found"]

    # Every HTTP answer about the task a browser could get.
    wait_for(lambda: TaskRecord.objects.filter(task_name=name, state="failure").exists(), 30, what="the dashboard row")
    row = TaskRecord.objects.get(task_name=name)
    poll = f"/realtime-async/progress/{name}/"
    pages = {
        "poll JSON (owner)": http(port, "GET", poll, owner, Accept="application/json"),
        "poll htmx (owner)": http(port, "GET", poll, owner, **{"HX-Request": "true"}),
        "poll JSON (token)": http(port, "GET", f"{poll}?token={token}", None),
        "poll htmx (token)": http(port, "GET", f"{poll}?token={token}", None, **{"HX-Request": "true"}),
        "dashboard (owner)": http(port, "GET", "/tasks/", owner),
        "dashboard rows (owner)": http(port, "GET", "/tasks/", owner, **{"HX-Request": "true"}),
        "dashboard (staff)": http(port, "GET", "/tasks/", staff),
        "admin live page": http(port, "GET", reverse("admin:testapp_widget_async_progress", args=[name]), staff),
        "admin task records": http(port, "GET", reverse("admin:realtime_async_dashboard_taskrecord_changelist"), staff),
        "admin task record": http(
            port, "GET", reverse("admin:realtime_async_dashboard_taskrecord_change", args=[row.pk]), staff
        ),
        "cancel endpoint (owner)": http(port, "POST", f"/ra/realtime-async/cancel/{name}/", owner),
        "cancel endpoint (token)": http(port, "POST", f"/ra/realtime-async/cancel/{name}/?token={token}", None),
        "cancel endpoint (anonymous)": http(port, "POST", f"/ra/realtime-async/cancel/{name}/", None),
    }
    statuses = {label: status for label, (status, _) in pages.items()}
    assert statuses == {
        "poll JSON (owner)": 286,
        "poll htmx (owner)": 286,
        "poll JSON (token)": 286,
        "poll htmx (token)": 286,
        "dashboard (owner)": 200,
        "dashboard rows (owner)": 200,
        "dashboard (staff)": 200,
        "admin live page": 200,
        "admin task records": 200,
        "admin task record": 200,
        "cancel endpoint (owner)": 202,
        "cancel endpoint (token)": 403,
        "cancel endpoint (anonymous)": 404,
    }
    for label in ("poll htmx (owner)", "dashboard (owner)", "dashboard rows (owner)", "admin live page"):
        assert GENERIC_ERROR in pages[label][1], label  # the public error is what is shown

    # The widget, rendered on the server: by the function and by the template tag.
    request = RequestFactory().get("/")
    request.user = alice
    widgets = {
        "widget (owner)": render_live_progress(name, user=alice, request=request),
        "widget (token)": render_live_progress(name, token=token),
        "template tag": Template("{% load realtime_async %}{% live_progress name %}").render(
            Context({"name": name, "request": request})
        ),
    }
    for html in widgets.values():
        assert GENERIC_ERROR in html and "ra-progress--failure" in html

    texts = {stream.label: "\n".join(stream.frames) for stream in streams}
    texts |= {label: body for label, (_, body) in pages.items()} | widgets
    found = {label: leaks(text) for label, text in texts.items() if leaks(text)}
    assert found == {}, found
    assert "Traceback" not in proc.output()
    reliability(
        "Worker exception text and traceback",
        "a real worker runs fail_secret (RuntimeError naming a password); everything a browser can get about the "
        "task is collected from a real daphne and the widget's server render",
        f"public error {GENERIC_ERROR!r} only; none of {', '.join(SECRETS)} in any frame of {len(streams)} "
        "WebSockets (subscriptions by session and token, per-task URLs, feeds, cancel answers) nor in "
        f"{len(pages)} HTTP answers (polling JSON and htmx, dashboard and rows, admin live page and task record, "
        f"cancel endpoint) nor in {len(widgets)} widget renders; the worker's log has it",
    )


@pytest.mark.django_db(transaction=True)  # launch_async_task enqueues on commit
def test_worker_exception_text_never_reaches_the_endpoint(django_user_model, celery_worker_proc):
    """The polling endpoint, through Django's test client: every variant of the answer holds the public error only."""
    user = django_user_model.objects.create_user("alice")
    alice = Client()
    alice.force_login(user)
    manager = AsyncManager.resolve_manager()
    name = manager.launch_async_task("tests.testapp.workers.fail_secret", user=user)
    wait_for(lambda: (r := manager.get_progress(name)) and r["state"] == "failure", 30, what="the task to fail")
    url = reverse("async-progress", kwargs={"task_name": name})
    for extra in ({}, {"HTTP_ACCEPT": "application/json"}, {"HTTP_HX_REQUEST": "true"}):
        response = alice.get(url, **extra)
        assert response.status_code == 286
        for secret in (b"hunter2", b"SECRET", b"RuntimeError", b"Traceback", b"password"):
            assert secret not in response.content, (secret, response.content)
    assert json.loads(alice.get(url).content)["data"]["state"] == "failure"
