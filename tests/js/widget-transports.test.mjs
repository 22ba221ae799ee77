// LiveProgress (widget.js) on the transport ladder: WebSocket, Server-Sent Events, polling and back,
// data-ra-via and the realtime-async:transport event, forced SSE, and Cancel off the WebSocket.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import {
  fakeClock,
  fakeEventSources,
  fakeFetch,
  fakeSockets,
  flush,
  installDocument,
  pinRandom,
  progress,
  tick,
} from "./helpers.mjs";
import { field, widgetElement } from "./dom.mjs";
import { LiveProgress } from "../../realtime_async/static/realtime_async/widget.js";

installDocument();

let restoreClock;
let sockets;
let sources;
let requests;
let polled;
let endpoint = 0;

/** A widget on a fresh endpoint (its own page client) with an SSE endpoint; its events as "name:transport". */
function newWidget(task = "t-1", options = {}) {
  const element = widgetElement(task, { ws: `/ws/transports-${++endpoint}/`, events: "/events/", ...options });
  const events = [];
  for (const name of ["progress", "final", "transport", "cancel-requested"]) {
    element.addEventListener(`realtime-async:${name}`, ({ detail }) => {
      events.push(name === "transport" ? `transport:${detail.previous}>${detail.transport}` : `${name}:${detail.transport}`);
    });
  }
  return { element, events, widget: new LiveProgress(element) };
}

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1);
  const ws = fakeSockets();
  const sse = fakeEventSources();
  sockets = ws.sockets;
  sources = sse.sources;
  globalThis.WebSocket = ws.FakeWebSocket;
  globalThis.EventSource = sse.FakeEventSource;
  polled = { task: "t-1", seq: 1, state: "running" };
  const http = fakeFetch(() => polled);
  requests = http.requests;
  globalThis.fetch = http.fetch;
});

afterEach(() => {
  restoreClock();
  mock.restoreAll();
});

test("auto: a refused WebSocket leaves the widget on SSE, and the socket takes over again once it works", async () => {
  const { element, events, widget } = newWidget("t-1", { probe: 2000 });
  widget.start();
  sockets[0].drop(1006);
  await tick(0);
  assert.equal(sources.length, 1);
  assert.deepEqual(sources[0].tasks, ["t-1"]);
  sources[0].open();
  sources[0].deliver(progress("t-1", 2, "running", { percent: 20 }));
  assert.equal(element.dataset.raVia, "sse");
  assert.equal(field(element, "percent"), "20%");
  assert.deepEqual(requests, [], "no polling while the stream works");
  await tick(1999); // data-ra-probe-interval: 2 s before the socket is tried again
  assert.equal(sockets.length, 1);
  await tick(1);
  sockets[1].open();
  assert.equal(sockets[1].frames("subscribe")[0].seq, 2);
  sockets[1].deliver(progress("t-1", 2, "running", { percent: 20 })); // its snapshot: not shown again
  assert.equal(element.dataset.raVia, "ws", "the transport in use, before any new record");
  assert.ok(sources[0].closed);
  sockets[1].deliver(progress("t-1", 3, "success", { percent: 100 }));
  assert.deepEqual(events, [
    "transport:null>sse",
    "progress:sse",
    "transport:sse>ws",
    "progress:ws",
    "final:ws",
  ]);
});

test("auto: WebSocket and SSE both refused: polling; data-ra-via says poll", async () => {
  const { element, events, widget } = newWidget();
  polled = { task: "t-1", seq: 2, state: "running" };
  widget.start();
  sockets[0].drop(1006);
  await tick(0);
  sources[0].refuse();
  await flush();
  assert.deepEqual(requests, ["/progress/t-1/"]);
  assert.equal(element.dataset.raVia, "poll");
  assert.deepEqual(events, ["transport:null>poll", "progress:poll"]);
});

test("auto without an events URL goes straight from the WebSocket to polling, as before", async () => {
  const { element, widget } = newWidget("t-1", { events: null });
  widget.start();
  sockets[0].drop(1006);
  await flush();
  assert.equal(sources.length, 0);
  assert.equal(element.dataset.raVia, "poll");
});

test("sse forced: no WebSocket; Cancel POSTs to the cancel endpoint, since SSE cannot carry it", async () => {
  const { element, events, widget } = newWidget("t-1", { transport: "sse", cancel: "/cancel/t-1/" });
  widget.start();
  await tick(0);
  assert.equal(sockets.length, 0);
  sources[0].open();
  sources[0].deliver(progress("t-1", 2));
  assert.equal(element.dataset.raVia, "sse");
  await widget.cancel();
  assert.deepEqual(requests, ["POST /cancel/t-1/"]);
  assert.deepEqual(events.at(-1), "cancel-requested:http");
  sources[0].refuse(); // forced: it retries, it does not poll
  await tick(60000);
  assert.equal(requests.length, 1);
  assert.ok(sources.length > 1);
});

test("sse forced without an events URL: the task is unavailable", () => {
  const { element, widget } = newWidget("t-1", { transport: "sse", events: null });
  widget.start();
  assert.equal(element.dataset.raState, "unavailable");
});

test("widgets of one page share one stream; one that joins later reopens it once", async () => {
  const first = newWidget("t-1", { ws: "/ws/shared-sse/" });
  const second = newWidget("t-2", { ws: "/ws/shared-sse/" });
  first.widget.start();
  second.widget.start();
  assert.equal(first.widget.client, second.widget.client);
  sockets[0].drop(1006);
  await tick(0);
  assert.equal(sources.length, 1);
  assert.deepEqual(sources[0].tasks, ["t-1", "t-2"]);
  sources[0].open();
  const third = newWidget("t-3", { ws: "/ws/shared-sse/" });
  third.widget.start();
  await tick(100);
  assert.equal(sources.length, 2);
  assert.deepEqual(sources[1].tasks, ["t-1", "t-2", "t-3"]);
});

test("Cancel over HTTP: the end arriving before the POST's answer is told after cancel-requested", async () => {
  const { element, events, widget } = newWidget("t-1", { transport: "sse", cancel: "/cancel/t-1/" });
  const cancelled = [];
  element.addEventListener("realtime-async:cancelled", ({ detail }) => cancelled.push(detail.record.seq));
  let answer;
  const held = new Promise((resolve) => (answer = resolve));
  globalThis.fetch = async (url, init = {}) => {
    requests.push(`${init.method} ${url}`);
    await held;
    return { status: 200, ok: true, headers: { get: () => null }, json: async () => ({}) };
  };
  widget.start();
  await tick(0);
  sources[0].open();
  sources[0].deliver(progress("t-1", 2));
  const clicked = widget.cancel();
  await flush();
  assert.deepEqual(requests, ["POST /cancel/t-1/"]);
  sources[0].deliver(progress("t-1", 3, "cancelled")); // the stream is quicker than the POST's answer
  assert.equal(field(element, "state"), "Cancelled", "shown at once");
  assert.deepEqual(events, ["transport:null>sse", "progress:sse", "progress:sse"]);
  answer();
  await clicked;
  await flush();
  assert.deepEqual(events.slice(-2), ["cancel-requested:http", "final:sse"]);
  assert.deepEqual(cancelled, [3]);
});
