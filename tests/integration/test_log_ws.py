"""Log lines over the WebSocket and polling: live in progress frames, history on subscribe, gaps and resumes."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.test import Client

from realtime_async._core.store import Lines
from realtime_async._writing.writer import get_writer, log_line
from realtime_async.async_manager import AsyncManager
from tests.ws_helpers import connected, fake_user, new_task, recv, subscribe, task_path

NOT_FOUND = {"v": 1, "type": "error", "code": "not_found", "message": "No such task."}


pytestmark = pytest.mark.usefixtures("hub_cleanup")


def _write(name, owner, *texts, state="running"):
    lines = Lines()
    for text in texts:
        lines.add(log_line(text, "info"), 1000)
    record = {"task": name, "state": state, "owner": owner}
    return get_writer().commit(record, wait=True, lines=lines).seq


async def _awrite(name, owner, *texts, state="running"):
    return await asyncio.to_thread(_write, name, owner, *texts, state=state)


def _texts(lines):
    return [line["text"] for line in lines]


async def test_history_after_the_snapshot_then_live_lines_in_progress_frames():
    alice = fake_user()
    name = await new_task(alice.pk)
    await _awrite(name, alice.pk, "one", "two", "three")
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name, log_after=1))
    snapshot = await recv(comm)
    assert snapshot["type"] == "progress" and snapshot["data"]["log"] == {"last": 3, "dropped": 0}
    history = await recv(comm)
    assert history["type"] == "log" and history["task"] == name
    assert (history["last"], history["dropped"], _texts(history["lines"])) == (3, 0, ["two", "three"])
    assert [line["n"] for line in history["lines"]] == [2, 3]
    await _awrite(name, alice.pk, "four")
    live = await recv(comm)
    assert live["type"] == "progress" and live["data"]["log"]["last"] == 4
    assert [(line["n"], line["text"]) for line in live["data"]["log"]["lines"]] == [(4, "four")]
    await comm.disconnect()


async def test_without_log_after_there_is_no_history_and_an_empty_log_is_answered():
    alice = fake_user()
    name = await new_task(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    assert (await recv(comm))["type"] == "progress"
    await comm.send_json_to({"v": 1, "type": "log", "task": name, "after": 0})
    assert await recv(comm) == {"v": 1, "type": "log", "task": name, "last": 0, "dropped": 0, "lines": []}
    assert await comm.receive_nothing(0.2)
    await comm.disconnect()


async def test_a_log_request_fills_a_gap_and_is_checked_like_a_subscribe():
    alice, mallory = fake_user(), fake_user()
    name = await new_task(alice.pk)
    for i in range(5):
        await _awrite(name, alice.pk, f"line {i + 1}")
    await _awrite(name, alice.pk, "done", state="success")
    # Its subscription ended with the final state: the request is authorised again.
    owner = await connected(user=alice)
    await owner.send_json_to({"v": 1, "type": "log", "task": name, "after": 2})
    answer = await recv(owner)
    assert _texts(answer["lines"]) == ["line 3", "line 4", "line 5", "done"] and answer["last"] == 6
    stranger = await connected(user=mallory)
    await stranger.send_json_to({"v": 1, "type": "log", "task": name, "after": 0})
    assert await recv(stranger) == {**NOT_FOUND, "task": name}
    token = await asyncio.to_thread(AsyncManager().make_watch_token, name)
    await stranger.send_json_to({"v": 1, "type": "log", "task": name, "after": 5, "token": token})
    assert _texts((await recv(stranger))["lines"]) == ["done"]
    await stranger.send_json_to({"v": 1, "type": "log", "task": "no-such-task", "after": 0})
    assert await recv(stranger) == {**NOT_FOUND, "task": "no-such-task"}
    for comm in (owner, stranger):
        await comm.disconnect()


async def test_the_per_task_url_takes_log_after_in_its_query_string():
    alice = fake_user()
    name = await new_task(alice.pk)
    await _awrite(name, alice.pk, "a", "b")
    comm = await connected(task_path(name, "log_after=1"), user=alice)
    assert (await recv(comm))["type"] == "progress"
    assert _texts((await recv(comm))["lines"]) == ["b"]
    await comm.disconnect()
    bad = await connected(task_path(name, "log_after=" + "9" * 5000), user=alice)
    assert (await recv(bad))["type"] == "progress"  # an invalid log_after asks for no history
    assert await bad.receive_nothing(0.2)
    await bad.disconnect()


@pytest.mark.django_db(transaction=True)
def test_polling_returns_the_lines_after_log_after_with_their_own_etag(django_user_model):
    alice = django_user_model.objects.create_user("alice-log", password="x")
    manager = AsyncManager()
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, user=alice, queue="realtime-async-tests-nowhere")
    for text in ("one", "two", "three"):
        manager.log(name, text)
    manager.finish(name, "success")
    client = Client()
    client.force_login(alice)
    url = f"/realtime-async/progress/{name}/"
    plain = client.get(url)
    assert plain.json()["data"]["log"] == {"last": 3, "dropped": 0}
    after = client.get(url, {"log_after": 1})
    assert _texts(after.json()["data"]["log"]["lines"]) == ["two", "three"]
    assert after["ETag"] != plain["ETag"]
    again = client.get(url, {"log_after": 1}, HTTP_IF_NONE_MATCH=after["ETag"])
    assert again.status_code == 304
    for bad in ("-1", "x", "1.5", "9" * 40):
        refused = client.get(url, {"log_after": bad})
        assert refused.status_code == 400 and refused.json()["code"] == "bad_request", bad
    stranger = Client()
    stranger.force_login(django_user_model.objects.create_user("mallory-log", password="x"))
    assert stranger.get(url, {"log_after": 0}).status_code == 404
    assert json.loads(stranger.get(url, {"log_after": 0}).content) == NOT_FOUND
