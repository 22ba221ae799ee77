"""The widget and the JS client in headless Chromium, against a real daphne or uvicorn, Redis and a Celery worker."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import django_htmx
import pytest

from realtime_async.async_manager import AsyncManager
from tests.browser_helpers import (
    RECORDER,
    assert_clean,
    events,
    new_page,
    session_cookie,
    widget,
)
from tests.services import free_port, start_server, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker_proc"),
]

WAIT_MS = 20_000


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("watcher")


@pytest.fixture
def open_page(browser, base_url, user):
    """``open_page(path, *, login=True, no_websocket=False, no_sse=False)``: a page recording events, CSP and
    console errors; ``no_sse`` makes the event stream's requests fail, as a proxy that buffers them would."""
    pages = []

    def open_(path, *, login=True, no_websocket=False, no_sse=False):
        page = new_page(browser, base_url, user=user if login else None, no_websocket=no_websocket, timeout_ms=WAIT_MS)
        if no_sse:
            page.route(re.compile(r"/realtime-async/events/"), lambda route: route.abort())
        pages.append(page)
        response = page.goto(path)
        assert response.status == 200, response.status
        return page

    yield open_
    for page in pages:
        page.context.close()


def launch(user, steps=15, delay=0.2, **kwargs):
    """``steps`` of ``delay`` seconds; ``wait_for=str(gate)``, ``hold=[step, str(gate)]``: see the ``gate`` fixture."""
    return AsyncManager.resolve_manager().launch_async_task(
        "tests.testapp.workers.steps", steps, user=user, task_kwargs={"delay": delay, **kwargs}
    )


def widgets_path(*tasks, **query):
    return "/demo/widgets/?" + urlencode([("task", task) for task in tasks] + list(query.items()))


def wait_final(page, task, state="success"):
    page.wait_for_selector(f'[data-ra-task="{task}"][data-ra-state="{state}"]')


def open_when_followed(gate, page, *tasks, via):
    """Open ``gate`` once the widget of each of ``tasks`` follows it by ``via`` (data-ra-via: it had a record through
    it, or polls): the tasks then run under the page's eyes, however long the page took to load."""
    for task in tasks:
        page.wait_for_selector(f'[data-ra-task="{task}"][data-ra-via="{via}"]')
    gate.open()


def assert_advanced_to_success(page, task, transport, steps=15):
    """The bar went through several states, in order, by ``transport``, and ended full."""
    seen = events(page, task)
    progress = [event for event in seen if event["name"] == "progress"]
    seqs = [event["seq"] for event in progress]
    assert seqs == sorted(set(seqs)), seqs
    percents = [event["percent"] for event in progress if event["state"] == "running"]
    assert len(set(percents)) >= 2, seen  # it advanced, not just jumped to the end
    assert {event["transport"] for event in progress} == {transport}, seen
    assert [event["name"] for event in seen[-3:]] == ["progress", "final", "success"], seen
    bar = widget(page, task).get_by_role("progressbar")
    assert bar.get_attribute("aria-valuenow") == "100"
    assert widget(page, task).locator('[data-ra-field="message"]').inner_text() == f"Step {steps}/{steps}"
    assert widget(page, task).locator('[data-ra-field="state"]').inner_text() == "Done"


def test_two_widgets_advance_to_their_final_states(open_page, user, celery_worker_proc, gate):
    first, second = launch(user, wait_for=str(gate)), launch(user, steps=10, wait_for=str(gate))
    page = open_page(widgets_path(first, second))
    open_when_followed(gate, page, first, second, via="ws")
    wait_final(page, first)
    wait_final(page, second)
    assert_advanced_to_success(page, first, "ws")
    assert_advanced_to_success(page, second, "ws", steps=10)
    assert len(page.sockets) == 1, [socket.url for socket in page.sockets]  # two widgets, one socket
    assert page.sockets[0].url.endswith("/ws/realtime-async/")
    assert widget(page, first).get_attribute("data-ra-via") == "ws"
    assert_clean(page)


@pytest.mark.parametrize("breakage", ["no-websocket", "dead-endpoint"])
def test_without_websockets_or_event_streams_the_widgets_complete_by_polling(
    open_page, user, celery_worker_proc, breakage, gate
):
    # Long enough for several polls (one a second) to see the bars move. (Without WebSockets alone the widgets
    # use Server-Sent Events: tests/system/test_browser_transports.py.)
    first, second = launch(user, steps=20, wait_for=str(gate)), launch(user, steps=16, wait_for=str(gate))
    if breakage == "no-websocket":
        page = open_page(widgets_path(first, second), no_websocket=True, no_sse=True)
    else:
        dead = f"ws://127.0.0.1:{free_port()}/ws/realtime-async/"
        page = open_page(widgets_path(first, second, ws=dead), no_sse=True)
    open_when_followed(gate, page, first, second, via="poll")
    wait_final(page, first)
    wait_final(page, second)
    assert_advanced_to_success(page, first, "poll", steps=20)
    assert_advanced_to_success(page, second, "poll", steps=16)
    assert widget(page, first).get_attribute("data-ra-via") == "poll"
    if breakage == "no-websocket":
        assert page.sockets == []
    else:
        assert page.sockets and all(socket.url == dead for socket in page.sockets)
    assert_clean(page, allow=("WebSocket connection to", "Failed to load resource: net::ERR_FAILED"))


def test_forced_polling(open_page, user, celery_worker_proc, gate):
    task = launch(user, steps=20, wait_for=str(gate))
    page = open_page(widgets_path(task, transport="poll"))
    open_when_followed(gate, page, task, via="poll")
    wait_final(page, task)
    assert_advanced_to_success(page, task, "poll", steps=20)
    assert page.sockets == []
    assert_clean(page)


def test_reload_mid_task_shows_the_current_state_at_once(open_page, user, celery_worker_proc, gate):
    task = launch(user, steps=20, hold=[4, str(gate)])  # it waits at 20 % until the reload is checked
    page = open_page(widgets_path(task))
    bar = widget(page, task).get_by_role("progressbar")
    page.wait_for_function(
        f"""() => Number(document.querySelector('[data-ra-task="{task}"] [role=progressbar]')
                 ?.getAttribute('aria-valuenow')) >= 15"""
    )
    before = float(bar.get_attribute("aria-valuenow"))

    response = page.reload()
    # The HTML itself, before any script ran, holds the state of the moment.
    html = response.text()
    root = re.search(rf'<div class="ra-progress[^"]*" data-ra-task="{task}"[^>]*>', html).group(0)
    assert 'data-ra-state="running"' in root
    now = float(re.search(r'role="progressbar"[^>]*aria-valuenow="([\d.]+)"', html).group(1))
    assert now >= before > 0
    assert re.search(r'data-ra-field="message">Step \d+/20<', html)

    gate.open()
    wait_final(page, task)
    assert widget(page, task).get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
    assert_clean(page)


@pytest.mark.parametrize("auth", ["session", "token"])
def test_custom_page_on_the_js_client(open_page, user, celery_worker_proc, auth, gate):
    task = launch(user, steps=10, wait_for=str(gate))
    query = {"task": task}
    if auth == "token":
        query["token"] = AsyncManager.resolve_manager().make_watch_token(task)
    page = open_page("/demo/client/?" + urlencode(query), login=auth == "session")
    page.wait_for_function("() => window.received.length > 0")  # subscribed: its snapshot came
    gate.open()
    page.wait_for_function("() => window.finalRecord !== null")
    received = page.evaluate("window.received")
    seqs = [record["seq"] for record in received]
    assert seqs == sorted(set(seqs)), seqs
    assert len({record["percent"] for record in received if record["state"] == "running"}) >= 2, received
    final = page.evaluate("window.finalRecord")
    assert final["state"] == "success" and final["result"]["steps"] == 10
    assert page.evaluate("window.clientErrors") == []
    assert page.locator("#state").inner_text() == "success"
    assert len(page.sockets) == 1
    assert_clean(page)


def test_js_client_reports_unknown_tasks(open_page, user):
    page = open_page("/demo/client/?task=nope-does-not-exist")
    page.wait_for_function("() => window.clientErrors.length > 0")
    assert page.evaluate("window.clientErrors")[0]["code"] == "not_found"
    assert page.evaluate("window.received") == []


HTMX_JS = Path(django_htmx.__file__).parent / "static" / "django_htmx" / "htmx-2.min.js"


def test_htmx_alone_polls_the_fragment_until_286(base_url, browser, user, celery_worker_proc, gate):
    task = launch(user, steps=15, wait_for=str(gate))
    context = browser.new_context(base_url=base_url)
    try:
        context.add_cookies([session_cookie(user, base_url)])
        context.add_init_script(RECORDER)
        context.set_default_timeout(WAIT_MS)
        # htmx as django-htmx ships it, served from the page's own origin.
        context.route("**/htmx.min.js", lambda route: route.fulfill(path=HTMX_JS, content_type="text/javascript"))
        page = context.new_page()
        polls = []
        page.on("response", lambda response: "/progress/" in response.url and polls.append(response.status))
        page.goto(f"/demo/htmx/?task={task}")
        page.wait_for_selector(f'[data-ra-task="{task}"][data-ra-state="running"]')
        gate.open()
        wait_final(page, task)
        root = widget(page, task)
        assert root.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
        assert root.locator(".ra-progress__label").inner_text() == "Import"
        assert root.get_attribute("hx-get") is None  # the final fragment polls no more
        count = len(polls)
        page.wait_for_timeout(1500)
        assert len(polls) == count and polls[-1] == 286, polls
        assert polls.count(200) >= 2, polls
        assert page.evaluate("window.__csp") == []
    finally:
        context.close()


def test_failure_is_shown_with_its_public_error(open_page, user, celery_worker_proc):
    manager = AsyncManager.resolve_manager()
    failing = manager.launch_async_task("tests.testapp.workers.fail_public", user=user)
    secret = manager.launch_async_task("tests.testapp.workers.fail_secret", user=user)
    page = open_page(widgets_path(failing, secret))
    wait_final(page, failing, "failure")
    wait_final(page, secret, "failure")
    message = widget(page, failing).locator('[data-ra-field="message"]')
    assert message.inner_text() == "The CSV file has no header row."
    assert widget(page, failing).locator('[data-ra-field="state"]').inner_text() == "Failed"
    assert "hunter2" not in page.content()
    # Final before the page loaded: rendered by the server, no event; otherwise final + failure.
    for task in (failing, secret):
        names = [event["name"] for event in events(page, task)]
        assert names == [] or names[-2:] == ["final", "failure"], names
    assert_clean(page)


def test_client_resumes_after_the_server_restarts(browser, server, user, celery_worker_proc, gate):
    port = free_port()
    proc, _ = start_server(server, port=port, name=f"{server}-restart")
    base = f"http://127.0.0.1:{port}"
    context = browser.new_context(base_url=base)
    try:
        context.add_cookies([session_cookie(user, base)])
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        sockets = []
        page.on("websocket", lambda socket: sockets.append(socket))
        task = launch(user, steps=30, wait_for=str(gate))
        page.goto(f"/demo/client/?task={task}")
        page.wait_for_function("() => window.received.some((record) => record.state === 'running')")
        proc.stop()
        gate.open()  # its steps come while the server is away and after: the client must resume to see them
        proc, _ = start_server(server, port=port, name=f"{server}-restart")
        page.wait_for_function("() => window.finalRecord !== null")
        received = page.evaluate("window.received")
        seqs = [record["seq"] for record in received]
        assert seqs == sorted(set(seqs)), seqs  # resumed: nothing twice, nothing out of order
        assert received[-1]["state"] == "success"
        assert len(sockets) >= 2  # it reconnected
        assert page.evaluate("window.clientErrors") == []
    finally:
        context.close()
        proc.stop()


# The client's reconnect logic, against a scripted socket in the page (no server involved).
FAKE_SOCKET_SCENARIO = """
async () => {
  const { RealtimeAsyncClient, backoffDelay } = await import("/static/realtime_async/client.js");
  const sockets = [];
  class FakeSocket {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; sockets.push(this); }
    send(text) { this.sent.push(JSON.parse(text)); }
    close() { this.readyState = 3; }
    open() { this.readyState = 1; this.onopen?.({}); }
    receive(message) { this.onmessage?.({ data: JSON.stringify(message) }); }
    drop(code) { this.readyState = 3; this.onclose?.({ code }); }
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const until = async (check) => { for (let i = 0; i < 200 && !check(); i++) await sleep(5); return check(); };
  const record = (seq, state = "running") => ({ seq, task: "t-1", state, percent: seq * 10 });
  const progress = (seq, state) => ({ v: 1, type: "progress", task: "t-1", data: record(seq, state) });

  const client = new RealtimeAsyncClient({
    url: "/ws/realtime-async/", WebSocket: FakeSocket, backoff: { initial: 20, max: 40 }, stableAfter: 10000,
  });
  const statuses = [];
  client.addEventListener("status", (event) => statuses.push(event.detail.status));
  const a = [], b = [], finals = [];
  const onFinal = (r) => finals.push(r.seq);
  client.subscribe("t-1", { seq: 3, token: "tok", onProgress: (r) => a.push(r.seq), onFinal });
  client.subscribe("t-1", { onProgress: (r) => b.push(r.seq) });
  const out = { url: sockets[0].url };
  sockets[0].open();
  out.firstSent = [...sockets[0].sent];
  sockets[0].receive(progress(3));  // the snapshot at the seq we had: delivered once
  sockets[0].receive(progress(3));
  sockets[0].receive(progress(5));
  sockets[0].receive(progress(4));  // older: dropped
  sockets[0].drop(1006);
  out.reconnected = await until(() => sockets.length === 2);
  sockets[1].drop(1006);            // never opened: a failure
  out.failuresAfterDeadTry = client.failures;
  await until(() => sockets.length === 3);
  sockets[2].open();
  out.resumeSent = [...sockets[2].sent];
  sockets[2].receive(progress(5));  // snapshot equal to what we had: nothing new
  sockets[2].receive(progress(6));
  sockets[2].receive(progress(7, "success"));
  sockets[2].receive(progress(8));  // after the final state: ignored
  out.unsubscribeSent = sockets[2].sent.at(-1);
  out.a = a; out.b = b; out.finals = finals; out.failures = client.failures;
  out.statuses = [...new Set(statuses)];

  const errors = [];
  client.subscribe("gone", { onError: (e) => errors.push(e.code), onProgress: () => errors.push("progress") });
  sockets[2].receive({ v: 1, type: "error", code: "not_found", task: "gone", message: "No such task." });
  out.errors = errors;
  client.close();
  out.closedStatus = client.status;
  out.delays = [0, 1, 2, 3, 10].map((n) => backoffDelay(n, { initial: 500, max: 30000 }, () => 1));
  out.jittered = [0, 1, 2].map((n) => backoffDelay(n, { initial: 500, max: 30000 }, () => 0));
  return out;
}
"""


def test_client_reconnects_and_resumes_with_the_last_seq(browser, base_url):
    context = browser.new_context(base_url=base_url, bypass_csp=True)
    try:
        page = context.new_page()
        page.goto("/demo/widgets/")
        out = page.evaluate(FAKE_SOCKET_SCENARIO)
    finally:
        context.close()
    assert out["url"] == base_url.replace("http", "ws") + "/ws/realtime-async/"
    assert out["firstSent"] == [{"v": 1, "type": "subscribe", "task": "t-1", "seq": 3, "token": "tok"}]
    assert out["reconnected"] and out["failuresAfterDeadTry"] == 1
    assert out["resumeSent"] == [{"v": 1, "type": "subscribe", "task": "t-1", "seq": 5, "token": "tok"}]
    assert out["a"] == out["b"] == [3, 5, 6, 7]
    assert out["finals"] == [7]
    assert out["unsubscribeSent"] == {"v": 1, "type": "unsubscribe", "task": "t-1"}
    assert out["failures"] == 0
    assert {"connecting", "open", "reconnecting"} <= set(out["statuses"])
    assert out["errors"] == ["not_found"]
    assert out["closedStatus"] == "closed"
    assert out["delays"] == [500, 1000, 2000, 4000, 30000]  # exponential, capped
    assert out["jittered"] == [250, 500, 1000]  # never below half the step


# The feed and cancel() of the client, against a scripted socket in the page.
FAKE_FEED_SCENARIO = """
async () => {
  const { RealtimeAsyncClient } = await import("/static/realtime_async/client.js");
  const sockets = [];
  class FakeSocket {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; sockets.push(this); }
    send(text) { this.sent.push(JSON.parse(text)); }
    close() { this.readyState = 3; }
    open() { this.readyState = 1; this.onopen?.({}); }
    receive(message) { this.onmessage?.({ data: JSON.stringify(message) }); }
    drop(code) { this.readyState = 3; this.onclose?.({ code }); }
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const until = async (check) => { for (let i = 0; i < 200 && !check(); i++) await sleep(5); return check(); };
  const progress = (task, seq, state = "running", created = 100) =>
    ({ v: 1, type: "progress", task, data: { task, seq, state, created_at: created } });
  const pingOf = (socket, prefix) => socket.sent.filter((m) => m.type === "ping" && m.id.startsWith(prefix)).at(-1);

  const client = new RealtimeAsyncClient({
    url: "/ws/realtime-async/", WebSocket: FakeSocket, backoff: { initial: 20, max: 40 },
  });
  const out = {};
  const feed = [], feedErrors = [];
  let subscribed = 0;
  out.notConnected = await client.cancel("a-1").then(() => "sent", (error) => error.code);
  const sub = client.subscribeFeed({
    onProgress: (r) => feed.push(`${r.task}#${r.seq}`),
    onError: (e) => feedErrors.push(`${e.action ?? "feed"}:${e.code}:${e.task}`),
    onSubscribed: () => subscribed++,
  });
  sockets[0].open();
  out.firstSent = sockets[0].sent.map((m) => m.type);
  out.subscribedBeforePong = subscribed;
  sockets[0].receive({ v: 1, type: "pong", id: pingOf(sockets[0], "feed-").id });
  out.subscribedAfterPong = subscribed;
  sockets[0].receive(progress("a-1", 1, "queued"));
  sockets[0].receive(progress("a-1", 2));
  sockets[0].receive(progress("a-1", 2));    // again: dropped
  sockets[0].receive(progress("b-1", 5));
  sockets[0].receive(progress("a-1", 1));    // older: dropped
  sockets[0].receive(progress("a-1", 1, "queued", 200));  // a relaunch under the same name: new
  // A task subscription next to the feed: cancel() refusals reach it without ending it.
  const taskSeen = [], taskErrors = [];
  const watcher = client.subscribe("b-1", {
    onProgress: (r) => taskSeen.push(r.seq), onError: (e) => taskErrors.push(`${e.action}:${e.code}`),
  });
  sockets[0].receive(progress("b-1", 6));
  out.cancelSent = await client.cancel("b-1").then(() => "sent", (error) => error.code);
  out.cancelMessages = sockets[0].sent.slice(-2);
  sockets[0].receive({ v: 1, type: "error", code: "forbidden", task: "b-1", message: "You may not cancel this task." });
  sockets[0].receive({ v: 1, type: "pong", id: out.cancelMessages[1].id });
  await client.cancel("c-1");
  sockets[0].receive({ v: 1, type: "error", code: "not_found", task: "c-1", message: "No such task." });
  sockets[0].receive(progress("b-1", 7));
  out.watcherActive = watcher.active;
  out.taskSeen = [...taskSeen]; out.taskErrors = [...taskErrors];

  sockets[0].drop(1006);                    // reconnects and takes the feed again
  await until(() => sockets.length === 2);
  sockets[1].open();
  out.resumeSent = sockets[1].sent.map((m) => m.type);
  sockets[1].receive({ v: 1, type: "pong", id: pingOf(sockets[1], "feed-").id });
  out.subscribedAfterReconnect = subscribed;
  sockets[1].receive(progress("b-1", 6));   // seen before the drop: dropped
  sockets[1].receive(progress("b-1", 8, "success"));
  out.feed = feed; out.feedErrors = [...feedErrors];

  sub.unsubscribe();
  out.unsubscribeSent = sockets[1].sent.at(-1);
  sockets[1].receive(progress("a-1", 9));
  out.feedAfterUnsubscribe = feed.length;

  // An anonymous connection: the feed is refused (task null) and ends.
  const refused = [];
  const other = client.subscribeFeed({ onError: (e) => refused.push(`${e.code}:${e.task}`) });
  sockets[1].receive({ v: 1, type: "error", code: "not_found", task: null, message: "No feed." });
  out.refused = refused; out.otherActive = other.active;
  client.close();
  return out;
}
"""


def test_client_feed_and_cancel(browser, base_url):
    context = browser.new_context(base_url=base_url, bypass_csp=True)
    try:
        page = context.new_page()
        page.goto("/demo/widgets/")
        out = page.evaluate(FAKE_FEED_SCENARIO)
    finally:
        context.close()
    assert out["notConnected"] == "not_connected"  # no socket yet: the caller POSTs instead
    assert out["firstSent"] == ["subscribe_feed", "ping"]
    assert (out["subscribedBeforePong"], out["subscribedAfterPong"]) == (0, 1)
    assert out["cancelSent"] == "sent"
    assert out["cancelMessages"][0] == {"v": 1, "type": "cancel", "task": "b-1"}
    assert out["cancelMessages"][1]["type"] == "ping"
    # Refusals reach the task's subscription and the feed, and end neither.
    assert out["taskErrors"] == ["cancel:forbidden"]
    assert out["watcherActive"] is True and out["taskSeen"] == [6, 7]
    assert out["resumeSent"] == ["subscribe", "subscribe_feed", "ping"]
    assert out["subscribedAfterReconnect"] == 2
    assert out["feed"] == ["a-1#1", "a-1#2", "b-1#5", "a-1#1", "b-1#6", "b-1#7", "b-1#8"]
    assert out["feedErrors"] == ["cancel:forbidden:b-1", "cancel:not_found:c-1"]
    assert out["unsubscribeSent"] == {"v": 1, "type": "unsubscribe_feed"}
    assert out["feedAfterUnsubscribe"] == len(out["feed"])
    assert out["refused"] == ["not_found:null"] and out["otherActive"] is False


def cancel_button(page, task):
    return widget(page, task).get_by_role("button", name=re.compile("^Cancel"))


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_cancel_button_cancels_a_running_task(open_page, user, celery_worker_proc, transport):
    manager = AsyncManager.resolve_manager()
    task = manager.launch_async_task(
        "tests.testapp.workers.sleep_then_finish", 30, user=user, conflict_ids={"testapp.Widget": [901, 902]}
    )
    page = open_page(widgets_path(task), no_websocket=transport == "http")
    page.wait_for_selector(f'[data-ra-task="{task}"][data-ra-state="running"]')
    button = cancel_button(page, task)
    assert button.is_visible() and button.get_attribute("type") == "button"
    button.click()
    wait_final(page, task, "cancelled")
    assert widget(page, task).locator('[data-ra-field="state"]').inner_text() == "Cancelled"
    assert not button.is_visible()  # hidden once final
    requested = [event for event in events(page, task) if event["name"] == "cancel-requested"]
    assert [event["transport"] for event in requested] == [transport]
    assert [event["name"] for event in events(page, task)][-2:] == ["final", "cancelled"]
    # The worker stopped: the state stays cancelled and the locks are free.
    record = manager.get_progress(task)
    assert record["state"] == "cancelled"
    assert manager.check_conflict({"testapp.Widget": [901, 902]}) == {}
    wait_for(lambda: task not in manager.active_tasks(), 10, what="the registry entry to go")
    page.wait_for_timeout(500)
    assert manager.get_progress(task)["seq"] == record["seq"]
    assert_clean(page, allow=("WebSocket connection to",))


def test_cancel_button_only_for_those_who_may_cancel(open_page, user, django_user_model, celery_worker_proc, gate):
    manager = AsyncManager.resolve_manager()
    task = manager.launch_async_task(
        "tests.testapp.workers.sleep_then_finish", 2, user=user, task_kwargs={"wait_for": str(gate)}
    )
    token = manager.make_watch_token(task)
    page = open_page(widgets_path(task, token=token), login=False)
    page.wait_for_selector(f'[data-ra-task="{task}"][data-ra-state="running"]')
    assert widget(page, task).locator("button").count() == 0  # a watch token watches, never cancels
    gate.open()
    wait_final(page, task)
    assert_clean(page)
