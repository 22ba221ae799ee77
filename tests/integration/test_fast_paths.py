"""``ProgressHttpRouter`` against the real Redis store, and the events URL served by Django alone.

The router is called as the server calls it (an ASGI ``scope``, ``receive``,
``send``) with a stand-in for Django behind it, so each test sees which
requests it answered itself and which it passed on.
"""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient, Client
from django.urls import reverse

from realtime_async._delivery.limits import CONNECTIONS
from realtime_async._web import etags
from realtime_async.routing import ProgressHttpRouter
from tests.ws_helpers import commit, new_task, until

pytestmark = pytest.mark.django_db(transaction=True)


class Behind:
    """The application behind the router: remembers what reached it, answers 299."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(router, path: str, query: str = "", headers: dict[str, str] | None = None):
    sent: list[dict] = []

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in {"Host": "testserver", **(headers or {})}.items()],
        "client": ("127.0.0.1", 5000),
    }
    await router(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    """These tests use the database from asgiref's thread: close its connection, or later tests find it open."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def routed():
    """A router and what is behind it; its Redis client is closed after the test."""
    behind = Behind()
    router = ProgressHttpRouter(behind)
    yield router, behind
    await router.aclose()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice-fast")


@pytest.fixture
def alice_client(alice):
    client = Client()
    client.force_login(alice)
    return client


def poll_url(name: str) -> str:
    return reverse("realtime_async:progress", kwargs={"task_name": name})


async def test_an_unchanged_poll_gets_its_304_without_django_and_the_rest_goes_through(routed, alice, alice_client):
    name = await new_task(alice.pk)
    path = poll_url(name)
    answer = await sync_to_async(alice_client.get)(path, HTTP_ACCEPT="application/json")
    assert answer.status_code == 200
    tag, cookie = answer["ETag"], f"sessionid={alice_client.cookies['sessionid'].value}"
    router, behind = routed

    status, headers = await call(router, path, headers={"If-None-Match": tag, "Cookie": cookie})
    assert (status, headers["etag"]) == (304, tag)
    assert headers["cache-control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    assert headers["vary"] == "Accept, HX-Request, Cookie"
    assert behind.paths == [], "answered without Django"

    passed = [
        ({"If-None-Match": tag}, ""),  # no session cookie: not the viewer the tag was issued to
        ({"If-None-Match": tag, "Cookie": "sessionid=someone-else"}, ""),
        ({"If-None-Match": tag, "Cookie": cookie}, "log_after=0"),  # another representation
        ({"If-None-Match": tag, "Cookie": cookie}, "log_after=x"),
        ({"If-None-Match": tag, "Cookie": cookie}, "parts=1"),
        ({"If-None-Match": tag, "Cookie": cookie, "HX-Request": "true"}, ""),
        ({"If-None-Match": tag, "Cookie": cookie, "Host": "evil.example"}, ""),
        ({"If-None-Match": '"1-0-forged"', "Cookie": cookie}, ""),
        ({"Cookie": cookie}, ""),
    ]
    for headers, query in passed:
        assert (await call(router, path, query, headers))[0] == 299, (headers, query)
    assert len(behind.paths) == len(passed)

    await sync_to_async(commit)(name, "running", alice.pk, percent=50)  # a new state: the tag is stale
    assert (await call(router, path, headers={"If-None-Match": tag, "Cookie": cookie}))[0] == 299

    # Django itself still answers 304 to a tag too old for the router, with a fresh one.
    answer = await sync_to_async(alice_client.get)(path, HTTP_ACCEPT="application/json")
    later = time.time() + etags.FAST_PATH_MAX_AGE + 5
    with mock.patch("time.time", return_value=later):
        assert (await call(router, path, headers={"If-None-Match": answer["ETag"], "Cookie": cookie}))[0] == 299
        again = await sync_to_async(alice_client.get)(
            path, HTTP_ACCEPT="application/json", HTTP_IF_NONE_MATCH=answer["ETag"]
        )
    assert again.status_code == 304 and again["ETag"] != answer["ETag"]


async def test_watch_token_polls_are_fast_while_the_token_is_valid(routed, alice):
    from realtime_async._core.access import make_watch_token

    name = await new_task(alice.pk)
    path, token = poll_url(name), make_watch_token(name)
    answer = await sync_to_async(Client().get)(path, {"token": token}, HTTP_ACCEPT="application/json")
    assert answer.status_code == 200
    router, behind = routed
    query = f"token={token}"
    assert (await call(router, path, query, {"If-None-Match": answer["ETag"]}))[0] == 304
    with mock.patch("realtime_async._core.access.check_watch_token", return_value=False):
        assert (await call(router, path, query, {"If-None-Match": answer["ETag"]}))[0] == 299, "expired"


async def test_other_requests_and_unknown_tasks_go_to_django(routed):
    router, behind = routed
    for path in ("/admin/", poll_url("no-such-task"), "/ra/realtime-async/progress/a/b/", "/ra/realtime-async/events"):
        assert (await call(router, path, headers={"If-None-Match": '"1-0-x"'}))[0] == 299, path
    assert len(behind.paths) == 4


async def test_without_the_router_django_serves_the_stream_too(alice):
    name = await new_task(alice.pk)
    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    url = reverse("realtime_async:events")
    response = await client.get(url, {"task": [name, "no-such-task"]})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["X-Accel-Buffering"] == "no"
    chunks = aiter(response.streaming_content)
    first = await anext(chunks)
    assert first.startswith(b"retry: 2000\n\n")
    assert f"id: {name}:1\n".encode() in first and b'"code":"not_found"' in first
    await sync_to_async(commit)(name, "running", alice.pk, percent=40)
    update = await asyncio.wait_for(anext(chunks), 5)
    assert update.startswith(f"id: {name}:2\n".encode())
    await chunks.aclose()
    assert CONNECTIONS[f"user:{alice.pk}"] == 1
    await sync_to_async(response.close)()  # what Django's handler does when the client left
    await until(lambda: CONNECTIONS[f"user:{alice.pk}"] == 0, within=2, what="the stream stops counting")

    assert (await client.get(url)).status_code == 400
    assert (await client.post(url, {"task": name})).status_code == 405
