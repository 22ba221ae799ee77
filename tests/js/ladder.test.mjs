// The transport ladder (ladder.js, transports.js): RealtimeAsyncClient in "auto" goes from the WebSocket to
// Server-Sent Events to polling and back up, with a scripted WebSocket, EventSource and fetch, and a fake clock.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { fakeClock, fakeEventSources, fakeFetch, fakeSockets, flush, pinRandom, progress, tick } from "./helpers.mjs";
import { RealtimeAsyncClient } from "../../realtime_async/static/realtime_async/client.js";
import { ANSWER_TIMEOUT_MS, PROBE, failing } from "../../realtime_async/static/realtime_async/ladder.js";

let restoreClock;
let client;
let sockets;
let sources;
let requests;
let polled; // the record the polling endpoint answers with next

function newClient(options = {}) {
  const ws = fakeSockets();
  const sse = fakeEventSources();
  const http = fakeFetch(() => polled);
  sockets = ws.sockets;
  sources = sse.sources;
  requests = http.requests;
  client = new RealtimeAsyncClient({
    eventsUrl: "/events/",
    WebSocket: ws.FakeWebSocket,
    EventSource: sse.FakeEventSource,
    fetch: http.fetch,
    ...options,
  });
  return client;
}

/** The transports the client's status events named, in order, without repeats. */
function transports(target) {
  const seen = [];
  target.addEventListener("status", ({ detail }) => {
    if (seen.at(-1) !== detail.transport) seen.push(detail.transport);
  });
  return seen;
}

/** Down to polling: the first socket and the first stream fail before they ever answered. */
async function downToPolling(got) {
  client.subscribe("t-1", { pollUrl: "/p/t-1/", onProgress: (r) => got.push(`${r.seq}`) });
  sockets[0].drop(1006);
  await tick(0);
  sources[0].refuse();
  await flush();
}

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1); // the longest jittered delay: probes after exactly 30 s, 60 s, ...
  polled = { task: "t-1", seq: 1, state: "running" };
});

afterEach(() => {
  client?.close();
  restoreClock();
  mock.restoreAll();
});

test("the policy: unavailable, or one failure before it ever worked, two after", () => {
  assert.equal(failing({ status: "reconnecting", failures: 1, everHeard: false }), true);
  assert.equal(failing({ status: "reconnecting", failures: 1, everHeard: true }), false);
  assert.equal(failing({ status: "reconnecting", failures: 2, everHeard: true }), true);
  assert.equal(failing({ status: "unavailable", failures: 0, everHeard: true }), true);
  assert.equal(failing({ status: "open", failures: 0, everHeard: false }), false);
  assert.deepEqual(PROBE, { initial: 30000, max: 300000, factor: 2 });
});

test("WebSocket first; when it fails before it ever worked, Server-Sent Events", async () => {
  newClient();
  const seen = transports(client);
  const got = [];
  client.subscribe("t-1", { seq: 2, token: "tok", pollUrl: "/p/t-1/", onProgress: (r) => got.push(r.seq) });
  assert.equal(client.transport, "ws");
  assert.equal(sockets.length, 1);
  sockets[0].drop(1006);
  assert.equal(client.transport, "sse");
  await tick(0);
  assert.equal(sockets.length, 1, "no reconnect at the WebSocket's pace");
  assert.deepEqual([sources[0].tasks, sources[0].tokens], [["t-1"], ["tok"]]);
  sources[0].open();
  sources[0].deliver(progress("t-1", 2));
  sources[0].deliver(progress("t-1", 3));
  assert.deepEqual(got, [2, 3]);
  assert.deepEqual(seen, ["ws", "sse"]);
  assert.equal(client.status, "open");
  assert.deepEqual(requests, [], "no polling while the stream works");
  await assert.rejects(client.cancel("t-1"), { code: "not_connected" });
});

test("SSE failing too: polling, from the last seq seen", async () => {
  newClient();
  const seen = transports(client);
  const got = [];
  client.subscribe("t-1", { pollUrl: "/p/t-1/", onProgress: (r) => got.push(r.seq) });
  sockets[0].drop(1006);
  await tick(0);
  sources[0].open();
  sources[0].deliver(progress("t-1", 4));
  sources[0].drop(); // worked once: one drop is normal
  sources[0].refuse(); // its reconnect refused (503): one failure
  assert.equal(client.transport, "sse");
  await tick(500);
  sources[1].refuse(); // and the next: two in a row
  assert.equal(client.transport, "poll");
  assert.ok(sources[1].closed);
  polled = { task: "t-1", seq: 4, state: "running" };
  await flush();
  assert.deepEqual(requests, ["/p/t-1/"]);
  polled = { task: "t-1", seq: 5, state: "running" };
  await tick(1000);
  assert.deepEqual(got, [4, 5]);
  assert.deepEqual(seen, ["ws", "sse", "poll"]);
});

test("a transport that opens but says nothing in 5 s is left for the next one", async () => {
  newClient();
  client.subscribe("t-1", { pollUrl: "/p/t-1/" });
  sockets[0].open();
  await tick(ANSWER_TIMEOUT_MS - 1);
  assert.equal(client.transport, "ws");
  await tick(1);
  assert.equal(client.transport, "sse");
  assert.equal(sockets[0].closedWith, 1000);
  await tick(0);
  sources[0].open(); // a proxy that buffers the stream: open, never a word
  await tick(ANSWER_TIMEOUT_MS);
  assert.equal(client.transport, "poll");
});

test("climbing back: each better transport is tried after 30 s, doubling; the first that delivers takes over", async () => {
  newClient();
  const seen = transports(client);
  const got = [];
  await downToPolling(got);
  assert.equal(client.transport, "poll");
  // t = 0: the WebSocket left; its probe is due at 30 s. The stream left at t = 0 too.
  await tick(PROBE.initial - 1);
  assert.equal(sockets.length, 1);
  await tick(1);
  assert.equal(sockets.length, 2, "the WebSocket is tried again");
  assert.equal(sources.length, 2, "and so is the stream");
  sockets[1].drop(1006); // still refused
  assert.equal(sockets[1].closedWith, 1000);
  await tick(0);
  sources[1].open();
  polled = { task: "t-1", seq: 7, state: "running" };
  sources[1].deliver(progress("t-1", 6)); // the stream works again: it takes over from polling
  assert.equal(client.transport, "sse");
  const polls = requests.length;
  await tick(10000);
  assert.equal(requests.length, polls, "polling stopped");
  // The WebSocket's second probe comes 60 s after its first.
  await tick(2 * PROBE.initial - 10001);
  assert.equal(sockets.length, 2);
  await tick(1);
  assert.equal(sockets.length, 3);
  sockets[2].open();
  assert.deepEqual(sockets[2].frames("subscribe"), [{ v: 1, type: "subscribe", task: "t-1", seq: 6 }]);
  sockets[2].deliver(progress("t-1", 6)); // its snapshot: nothing new, but it answered
  assert.equal(client.transport, "ws");
  assert.ok(sources[1].closed, "the worse transport is closed");
  sockets[2].deliver(progress("t-1", 8, "success"));
  assert.deepEqual(got, ["1", "6", "8"]);
  assert.deepEqual(seen, ["ws", "sse", "poll", "sse", "ws"]);
  await client.cancel("t-2"); // on the WebSocket again: cancel works
});

test("a probe that opens but stays silent fails after 5 s; the waits double up to 5 min", async () => {
  newClient({ transport: "auto", eventsUrl: null });
  client.subscribe("t-1", { pollUrl: "/p/t-1/" });
  sockets[0].drop(1006);
  assert.equal(client.transport, "poll");
  const due = [];
  let elapsed = 0;
  for (let probe = 1; probe <= 6; probe += 1) {
    const before = sockets.length;
    while (sockets.length === before) {
      await tick(1000);
      elapsed += 1000;
    }
    due.push(elapsed / 1000);
    sockets.at(-1).open(); // a proxy that takes the upgrade and forwards nothing
    await tick(ANSWER_TIMEOUT_MS);
    elapsed += ANSWER_TIMEOUT_MS;
    assert.equal(sockets.at(-1).closedWith, 1000);
    assert.equal(client.transport, "poll");
  }
  // 30 s, then 60, 120, 240, 300, 300 s after each failed probe (its 5 s included).
  assert.deepEqual(due, [30, 95, 220, 465, 770, 1075]);
});

test("nothing is delivered twice or out of order across transports", async () => {
  newClient();
  const got = [];
  client.subscribe("t-1", { pollUrl: "/p/t-1/", onProgress: (r) => got.push(r.seq) });
  sockets[0].drop(1006);
  await tick(0);
  sources[0].open();
  sources[0].deliver(progress("t-1", 5));
  await tick(PROBE.initial);
  sockets[1].open(); // the probe subscribes from seq 5
  sources[0].deliver(progress("t-1", 6)); // the stream still runs until the socket answers
  sockets[1].deliver(progress("t-1", 6)); // the socket's snapshot: the same record again
  assert.equal(client.transport, "ws");
  sockets[1].deliver(progress("t-1", 5)); // stale
  sources[0].deliver(progress("t-1", 7)); // a closed stream's late event is not heard
  sockets[1].deliver(progress("t-1", 7));
  assert.deepEqual(got, [5, 6, 7]);
});

test("a WebSocket that worked keeps its reconnect pace; SSE only after two failures in a row", async () => {
  newClient();
  client.subscribe("t-1", { pollUrl: "/p/t-1/" });
  sockets[0].open();
  sockets[0].deliver(progress("t-1", 1));
  sockets[0].drop(1006);
  await tick(500);
  assert.equal(sockets.length, 2);
  sockets[1].drop(1006);
  assert.equal(client.transport, "ws");
  await tick(1000);
  sockets[2].drop(1006);
  assert.equal(client.transport, "sse");
});

test("forced transports stay where they are; without an events URL or polling URL auto keeps the WebSocket", async () => {
  newClient({ transport: "ws" });
  client.subscribe("t-1", { pollUrl: "/p/t-1/" });
  sockets[0].drop(1006);
  assert.equal(client.transport, "ws");
  assert.equal(client.status, "reconnecting");
  await tick(500);
  assert.equal(sockets.length, 2, "the usual reconnect");
  client.close();

  newClient({ eventsUrl: null });
  client.subscribe("t-1");
  sockets[0].drop(1006);
  assert.equal(client.transport, "ws");
  await tick(500);
  assert.equal(sockets.length, 2);
  client.close();

  newClient({ transport: "poll" });
  client.subscribe("t-1", { pollUrl: "/p/t-1/" });
  await flush();
  assert.equal(sockets.length + sources.length, 0);
  assert.deepEqual(requests, ["/p/t-1/"]);
});

test("the feed waits on SSE for the WebSocket; its onSubscribed runs when the socket is back", async () => {
  newClient();
  let subscribed = 0;
  client.subscribe("t-1", { pollUrl: "/p/t-1/" });
  client.subscribeFeed({ onSubscribed: () => subscribed++ });
  sockets[0].drop(1006);
  assert.equal(client.transport, "sse");
  await tick(PROBE.initial);
  sockets[1].open();
  assert.deepEqual(
    sockets[1].sent.map((m) => m.type),
    ["subscribe", "subscribe_feed", "ping"],
  );
  sockets[1].deliver({ v: 1, type: "pong", id: sockets[1].frames("ping")[0].id });
  assert.equal(client.transport, "ws");
  assert.equal(subscribed, 1);
});

test("a feed subscribed while the client is on SSE does not count as an unanswered request", async () => {
  newClient();
  client.subscribe("t-1", { pollUrl: "/p/t-1/" });
  sockets[0].drop(1006);
  await tick(0);
  sources[0].open();
  sources[0].deliver(progress("t-1", 1));
  client.subscribeFeed({});
  await tick(ANSWER_TIMEOUT_MS * 2);
  assert.equal(client.transport, "sse"); // the stream answered what it was asked; the feed waits for the socket
  assert.deepEqual(requests, []);
});

test("log requests left on a WebSocket that went are made again over HTTP", async () => {
  newClient();
  polled = { task: "t-1", seq: 3, state: "running", log: { last: 2, dropped: 0, lines: [{ n: 1 }, { n: 2 }] } };
  const seen = [];
  client.subscribe("t-1", { pollUrl: "/p/t-1/", onLog: (lines) => seen.push(...lines.map((l) => l.n)) });
  sockets[0].open();
  assert.equal(sockets[0].frames("subscribe")[0].log_after, 0); // asked on the socket...
  await tick(ANSWER_TIMEOUT_MS); // ...which never answers
  assert.equal(client.transport, "sse");
  await flush();
  assert.deepEqual(requests, ["/p/t-1/?log_after=0"]);
  assert.deepEqual(seen, [1, 2]);
});
