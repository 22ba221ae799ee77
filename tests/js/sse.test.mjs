// RealtimeAsyncClient over Server-Sent Events (sse.js), against a scripted EventSource and a fake clock.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { fakeClock, fakeEventSources, fakeFetch, fakeVisibility, flush, pinRandom, progress, tick } from "./helpers.mjs";
import { RealtimeAsyncClient } from "../../realtime_async/static/realtime_async/client.js";
import { eventsUrl } from "../../realtime_async/static/realtime_async/sse.js";

let restoreClock;
let sources;
let client;

function newClient(options = {}) {
  const fake = fakeEventSources();
  sources = fake.sources;
  client = new RealtimeAsyncClient({
    transport: "sse",
    eventsUrl: "/ra/realtime-async/events/",
    EventSource: fake.FakeEventSource,
    ...options,
  });
  return client;
}

function line(n) {
  return { n, t: n, level: "info", text: `line ${n}` };
}

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1); // the longest jittered delay: timings below are exact
});

afterEach(() => {
  client?.close();
  restoreClock();
  mock.restoreAll();
  delete globalThis.document;
});

test("one stream for the tasks subscribed together, each watch token with it", async () => {
  newClient();
  const seen = [];
  client.addEventListener("status", (event) => seen.push(`${event.detail.transport}:${event.detail.status}`));
  client.subscribe("t-1", { token: "tok-1" });
  client.subscribe("t-2");
  client.subscribe("t-3", { token: "tok-3" });
  client.subscribe("t-3", { token: "tok-3" }); // a second watcher: the same task, once
  assert.equal(sources.length, 0); // opened after the current task, for all of them
  await tick(0);
  assert.equal(sources.length, 1);
  const url = new URL(sources[0].url);
  assert.equal(url.origin + url.pathname, "http://testserver/ra/realtime-async/events/");
  assert.deepEqual(sources[0].tasks, ["t-1", "t-2", "t-3"]);
  assert.deepEqual(sources[0].tokens, ["tok-1", "tok-3"]);
  assert.equal(client.transport, "sse");
  sources[0].open();
  assert.equal(client.status, "open");
  assert.deepEqual(seen, ["sse:connecting", "sse:open"]);
  assert.equal(eventsUrl("/e/?x=1", [["a", "t"], ["b", "t"]]), "http://testserver/e/?x=1&task=a&task=b&token=t");
});

test("records are delivered in seq order, once; a refusal ends its task and the stream is reopened without it", async () => {
  newClient();
  const got = [];
  const errors = [];
  client.subscribe("t-1", { seq: 3, onProgress: (r) => got.push(r.seq) });
  client.subscribe("t-2", { onError: (e) => errors.push(`${e.task}:${e.code}`) });
  await tick(0);
  const source = sources[0];
  source.open();
  source.deliver(progress("t-1", 3)); // the snapshot at the seq we had: delivered once
  source.deliver(progress("t-1", 3));
  source.deliver(progress("t-1", 5));
  source.deliver(progress("t-1", 4));
  source.deliver("not json");
  source.deliver({ v: 2, type: "progress", task: "t-1", data: { seq: 9, state: "running" } });
  source.deliver({ v: 1, type: "error", code: "not_found", task: "t-2", message: "No such task." });
  assert.deepEqual(got, [3, 5]);
  assert.deepEqual(errors, ["t-2:not_found"]);
  await tick(100);
  assert.equal(sources.length, 2);
  assert.ok(source.closed);
  assert.deepEqual(sources[1].tasks, ["t-1"]);
  sources[1].deliver(progress("t-1", 5)); // the new stream's snapshot: seen already
  sources[1].deliver(progress("t-1", 6));
  assert.deepEqual(got, [3, 5, 6]);
});

test("new tasks reopen the stream once per burst; a final one does not; the last one closes it", async () => {
  newClient();
  const a = client.subscribe("t-1");
  await tick(0);
  sources[0].open();
  client.subscribe("t-2", { token: "tok-2" });
  client.subscribe("t-3");
  await tick(99);
  assert.equal(sources.length, 1);
  await tick(1);
  assert.equal(sources.length, 2);
  assert.deepEqual(sources[1].tasks, ["t-1", "t-2", "t-3"]);
  assert.deepEqual(sources[1].tokens, ["tok-2"]);
  assert.equal(client.status, "open"); // a reopen is not an outage
  sources[1].open();
  sources[1].deliver(progress("t-2", 4, "success")); // its stream ended with it: no reopen for that
  await tick(1000);
  assert.equal(sources.length, 2);
  a.unsubscribe(); // still running: the server would go on sending it
  await tick(100);
  assert.equal(sources.length, 3);
  assert.deepEqual(sources[2].tasks, ["t-3"]);
  sources[2].open();
  sources[2].deliver(progress("t-3", 2, "failure"));
  await tick(100);
  assert.ok(sources[2].closed, "nothing left to follow: closed");
  assert.equal(sources.length, 3);
  client.subscribe("t-4");
  await tick(100);
  assert.deepEqual(sources[3].tasks, ["t-4"]);
  sources[3].open();
  client.subscribe("t-4", { token: "tok-4" }); // a watcher with a token for a task followed without one
  await tick(100);
  assert.deepEqual([sources[4].tasks, sources[4].tokens], [["t-4"], ["tok-4"]]);
});

test("a dropped stream is the browser's to reconnect; a refused one is opened again with backoff", async () => {
  newClient({ backoff: { initial: 1000, max: 8000 } });
  client.subscribe("t-1");
  await tick(0);
  sources[0].open();
  sources[0].deliver(progress("t-1", 1));
  sources[0].drop(); // the browser reconnects by itself, with Last-Event-ID
  assert.equal(client.status, "reconnecting");
  assert.equal(client.failures, 0);
  await tick(10000);
  assert.equal(sources.length, 1);
  sources[0].open(); // resumed: nothing new to say, taken back all the same
  assert.equal(client.status, "open");
  sources[0].drop();
  assert.equal(client.failures, 0);
  sources[0].refuse(); // its reconnect is answered 429 or 503: EventSource gives up
  assert.equal(client.failures, 1);
  assert.equal(client.status, "reconnecting");
  assert.ok(sources[0].closed);
  await tick(999);
  assert.equal(sources.length, 1);
  await tick(1);
  assert.equal(sources.length, 2);
  sources[1].refuse();
  await tick(1999); // the backoff grows
  assert.equal(sources.length, 2);
  await tick(1);
  assert.equal(sources.length, 3);
  sources[2].open();
  assert.equal(client.failures, 0); // a stream that worked before is trusted once taken back
});

test("hidden, the stream stays open; shown again, a refused one waiting for its retry opens at once", async () => {
  const page = fakeVisibility();
  newClient({ backoff: { initial: 8000, max: 8000 } });
  client.subscribe("t-1");
  await tick(0);
  sources[0].open();
  page.hide();
  await tick(60000);
  assert.equal(sources[0].closed, false, "push costs nothing while idle: kept");
  sources[0].refuse();
  await tick(1000);
  assert.equal(sources.length, 1);
  page.show();
  assert.equal(sources.length, 2, "no wait once the user looks");
  client.close();
  assert.equal(page.listeners, 0);
});

test("over SSE cancel() rejects with not_connected and the feed waits for the WebSocket", async () => {
  newClient();
  client.subscribe("t-1");
  let subscribed = 0;
  client.subscribeFeed({ onSubscribed: () => subscribed++ });
  await tick(0);
  sources[0].open();
  await assert.rejects(client.cancel("t-1"), { code: "not_connected" });
  assert.equal(subscribed, 0);
});

test("log lines ride in records; the history and the gaps come from the polling endpoint's ?log_after=", async () => {
  const logs = {
    0: { last: 2, dropped: 0, lines: [line(1), line(2)] },
    3: { last: 5, dropped: 0, lines: [line(4), line(5)] }, // answered before line 6 was written
    5: { last: 6, dropped: 0, lines: [line(6)] },
  };
  const { fetch, requests } = fakeFetch((url) => {
    const after = new URL(url, "http://x").searchParams.get("log_after");
    return { task: "t-1", seq: 1, state: "running", log: logs[after] };
  });
  newClient({ fetch });
  const seen = [];
  client.subscribe("t-1", { pollUrl: "/p/t-1/?token=a", onLog: (lines) => seen.push(lines.map((l) => l.n)) });
  await tick(0);
  const source = sources[0];
  source.open();
  source.deliver(progress("t-1", 3, "running", { log: { last: 2, dropped: 0 } })); // the snapshot: no lines
  await flush();
  assert.deepEqual(requests, ["/p/t-1/?token=a&log_after=0"]);
  source.deliver(progress("t-1", 4, "running", { log: { last: 3, dropped: 0, lines: [line(3)] } }));
  source.deliver(progress("t-1", 6, "running", { log: { last: 5, dropped: 0, lines: [line(5)] } })); // 4 was skipped
  source.deliver(progress("t-1", 7, "success", { log: { last: 6, dropped: 0, lines: [line(6)] } })); // held meanwhile
  assert.equal(client._tasks.has("t-1"), true, "kept until its last lines came");
  await flush();
  // The answer lacked line 6, which a record brought meanwhile: asked for next, then the task is let go.
  assert.deepEqual(requests.slice(1), ["/p/t-1/?token=a&log_after=3", "/p/t-1/?token=a&log_after=5"]);
  assert.deepEqual(seen, [[1, 2], [3], [4, 5], [6]]);
  assert.equal(client._tasks.has("t-1"), false);
});

test("without a polling URL a log gap over SSE is skipped, never filled with repeats", async () => {
  newClient();
  const seen = [];
  client.subscribe("t-1", { onLog: (lines) => seen.push(lines.map((l) => l.n)) });
  await tick(0);
  sources[0].open();
  sources[0].deliver(progress("t-1", 2, "running", { log: { last: 1, dropped: 0, lines: [line(1)] } }));
  sources[0].deliver(progress("t-1", 4, "running", { log: { last: 4, dropped: 0, lines: [line(4)] } }));
  await flush();
  sources[0].deliver(progress("t-1", 5, "running", { log: { last: 5, dropped: 0, lines: [line(5)] } }));
  assert.deepEqual(seen, [[1], [4], [5]]);
});

test("a client without EventSource or events URL cannot use SSE", () => {
  client = new RealtimeAsyncClient({ transport: "sse", EventSource: undefined, eventsUrl: "/e/" });
  client.subscribe("t-1");
  assert.equal(client.status, "unavailable");
  assert.equal(client.transport, null);
  client.close();
  client = new RealtimeAsyncClient({ transport: "sse", EventSource: fakeEventSources().FakeEventSource });
  client.subscribe("t-1");
  assert.equal(client.status, "unavailable");
  assert.throws(() => new RealtimeAsyncClient({ transport: "websocket" }), TypeError);
});
