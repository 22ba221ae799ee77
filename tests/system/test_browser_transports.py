"""The widget on the transport ladder in headless Chromium, against a real server, Redis and a Celery worker.

WebSocket refused: Server-Sent Events; Server-Sent Events refused too: polling;
the WebSocket back: the widget climbs back to it; ``transport="sse"`` forced
(issue 13). What a widget shows must not depend on the transport: every run
ends in its final state, its records in seq order, each once.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from realtime_async.async_manager import AsyncManager
from tests.browser_helpers import SET_VISIBILITY, assert_clean, events, new_page, widget

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker_proc"),
]

WAIT_MS = 30_000
EVENTS = re.compile(r"/realtime-async/events/")
PROGRESS = re.compile(r"/realtime-async/progress/")
SOCKET = re.compile(r"/ws/realtime-async/")
# Records each widget's realtime-async:transport event as [task, previous, transport].
TRANSPORT_RECORDER = """
window.__transports = [];
document.addEventListener("realtime-async:transport", (event) => {
  window.__transports.push([event.detail.task, event.detail.previous, event.detail.transport]);
});
"""

# Gives each widget data-ra-probe-interval (minutes of probing in seconds) once the document is parsed, before
# its module scripts run. (Rewriting the page with route.fulfill would do too, but Chromium then counts the page
# as public and refuses its WebSockets to 127.0.0.1: Local Network Access.)
PROBE_FASTER = """
document.addEventListener("readystatechange", () => {
  for (const element of document.querySelectorAll("[data-ra-widget]")) element.dataset.raProbeInterval = "%(ms)d";
}, { once: true });
"""

SEQ_ABOVE = "([task, seq]) => Number(document.querySelector(`[data-ra-task='${task}']`).dataset.raSeq) > seq"


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ladder")


class Page:
    """A widgets page for ``tasks``, its requests counted by kind (polls, event streams)."""

    def __init__(self, browser, base_url, user, *, no_websocket=False, probe_ms=None):
        self.page = new_page(browser, base_url, user=user, no_websocket=no_websocket, timeout_ms=WAIT_MS)
        self.page.context.add_init_script(TRANSPORT_RECORDER)
        self.polls: list[str] = []
        self.streams: list[str] = []
        self.closed_streams: list[str] = []
        self.page.on("request", self._request)
        self.page.on("requestfailed", lambda request: EVENTS.search(request.url) and self.closed_streams.append(1))
        self.page.on("requestfinished", lambda request: EVENTS.search(request.url) and self.closed_streams.append(1))
        if probe_ms is not None:
            self.page.context.add_init_script(PROBE_FASTER % {"ms": probe_ms})

    def _request(self, request):
        if PROGRESS.search(request.url):
            self.polls.append(request.url)
        elif EVENTS.search(request.url):
            self.streams.append(request.url)

    def open(self, *tasks, **query):
        response = self.page.goto("/demo/widgets/?" + urlencode([("task", task) for task in tasks] + [*query.items()]))
        assert response.status == 200, response.status
        return self.page

    def transports(self, task):
        return [entry[1:] for entry in self.page.evaluate("window.__transports") if entry[0] == task]

    def close(self):
        self.page.context.close()


@pytest.fixture
def pages(browser, base_url, user):
    opened = []

    def open_(**options):
        page = Page(browser, base_url, user, **options)
        opened.append(page)
        return page

    yield open_
    for page in opened:
        page.close()


def launch(user, gate, steps=20, delay=0.2):
    """``steps`` of ``delay`` seconds, begun once ``gate`` opens (the ``gate`` fixture): when the widget follows."""
    return AsyncManager.resolve_manager().launch_async_task(
        "tests.testapp.workers.steps", steps, user=user, task_kwargs={"delay": delay, "wait_for": str(gate)}
    )


def wait_via(page, task, transport):
    try:
        page.wait_for_selector(f'[data-ra-task="{task}"][data-ra-via="{transport}"]')
    except PlaywrightTimeoutError:
        via = widget(page, task).get_attribute("data-ra-via")
        pytest.fail(f"{task} did not go to {transport}: data-ra-via={via!r}, console: {page.errors}")


def wait_final(page, task):
    page.wait_for_selector(f'[data-ra-task="{task}"][data-ra-state="success"]')


def progress_by(page, task) -> list[tuple[int, str]]:
    """The (seq, transport) of each progress event of ``task``, after checking they came in order, once."""
    seen = [(event["seq"], event["transport"]) for event in events(page, task) if event["name"] == "progress"]
    seqs = [seq for seq, _ in seen]
    assert seqs == sorted(set(seqs)), seen
    return seen


def refuse_websockets(page, refused):
    """Route the page's WebSockets: closed before a word while ``refused["now"]``, else through to the server."""

    def handle(route):
        if refused["now"]:
            route.close()
        else:
            route.connect_to_server()

    page.route_web_socket(SOCKET, handle)


@pytest.mark.parametrize("breakage", ["no-websocket", "refused"])
def test_without_websockets_the_widgets_complete_over_server_sent_events(pages, user, breakage, gate):
    first, second = launch(user, gate), launch(user, gate, steps=16)
    ladder = pages(no_websocket=breakage == "no-websocket")
    if breakage == "refused":
        refuse_websockets(ladder.page, {"now": True})
    page = ladder.open(first, second)
    wait_via(page, first, "sse")
    wait_via(page, second, "sse")
    gate.open()
    wait_final(page, first)
    wait_final(page, second)
    for task in (first, second):
        assert {transport for _, transport in progress_by(page, task)} == {"sse"}
        assert len(progress_by(page, task)) >= 3  # it advanced, not just jumped to the end
        assert widget(page, task).get_attribute("data-ra-via") == "sse"
        assert ladder.transports(task) == [[None, "sse"]]
    assert ladder.polls == [], "no polling while the stream works"
    assert len(ladder.streams) == 1, ladder.streams  # one stream for both widgets
    assert f"task={first}" in ladder.streams[0] and f"task={second}" in ladder.streams[0]
    # Nothing left to follow: the client closes its stream rather than leave it to the server's heartbeats.
    for _ in range(20):
        if ladder.closed_streams:
            break
        page.wait_for_timeout(100)
    assert ladder.closed_streams, "the stream was closed once both tasks were final"
    assert_clean(page, allow=("WebSocket",))


def test_without_websockets_and_server_sent_events_the_widget_polls(pages, user, gate):
    task = launch(user, gate)
    ladder = pages(no_websocket=True)
    ladder.page.route(EVENTS, lambda route: route.abort())
    page = ladder.open(task)
    wait_via(page, task, "poll")
    gate.open()
    wait_final(page, task)
    assert {transport for _, transport in progress_by(page, task)} == {"poll"}
    assert len(progress_by(page, task)) >= 3
    assert ladder.streams, "the stream was tried first"
    assert ladder.polls
    assert ladder.transports(task) == [[None, "poll"]]
    assert_clean(page, allow=("realtime-async/events", "ERR_FAILED"))


def test_the_widget_climbs_back_to_the_websocket_once_it_works_again(pages, user, gate):
    task = launch(user, gate, steps=60, delay=0.2)  # 12 s: long enough to see both transports
    ladder = pages(probe_ms=500)
    refused = {"now": True}
    refuse_websockets(ladder.page, refused)
    page = ladder.open(task)
    wait_via(page, task, "sse")
    gate.open()
    page.wait_for_function(SEQ_ABOVE, arg=[task, 3])
    refused["now"] = False  # the proxy lets WebSockets through again: the next probe gets one
    wait_via(page, task, "ws")
    wait_final(page, task)
    seen = progress_by(page, task)
    transports = [transport for _, transport in seen]
    assert transports[0] == "sse" and transports[-1] == "ws", seen
    assert transports == sorted(transports, key=["sse", "ws"].index), seen  # once on the WebSocket, it stays
    assert ladder.transports(task) == [[None, "sse"], ["sse", "ws"]]
    assert ladder.polls == []
    assert_clean(page, allow=("WebSocket",))


def test_forced_server_sent_events(pages, user, gate):
    task = launch(user, gate)
    ladder = pages()
    page = ladder.open(task, transport="sse")
    wait_via(page, task, "sse")
    gate.open()
    wait_final(page, task)
    assert {transport for _, transport in progress_by(page, task)} == {"sse"}
    assert widget(page, task).get_attribute("data-ra-via") == "sse"
    assert widget(page, task).get_attribute("data-ra-transport") == "sse"
    assert page.sockets == []
    assert ladder.polls == []
    assert_clean(page)


def test_a_hidden_page_keeps_its_stream_and_is_current_when_shown(pages, user, gate):
    task = launch(user, gate, steps=25)
    ladder = pages(no_websocket=True)
    page = ladder.open(task)
    wait_via(page, task, "sse")
    page.evaluate(SET_VISIBILITY, "hidden")
    # Push costs nothing while idle: the stream stays open, and what it brings is shown while nobody looks.
    gate.open()  # the task runs only once the page is hidden
    wait_final(page, task)
    page.evaluate(SET_VISIBILITY, "visible")
    assert {transport for _, transport in progress_by(page, task)} == {"sse"}
    assert len(ladder.streams) == 1, ladder.streams
    assert ladder.polls == []
    assert_clean(page)
