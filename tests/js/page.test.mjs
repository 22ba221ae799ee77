// page.js: the one client per page, and the transport policy as the dashboard's feed applies it.

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { fakeClock, tick } from "./helpers.mjs";
import {
  ANSWER_TIMEOUT_MS,
  sharedClient,
  shouldPoll,
  watchFallback,
} from "../../realtime_async/static/realtime_async/page.js";
import { sharedClient as widgetSharedClient } from "../../realtime_async/static/realtime_async/widget.js";

/** A client as the policy sees it: a status, failures, whether it ever worked, status events. */
function stubClient(status = "connecting", failures = 0, everHeard = false) {
  const client = new EventTarget();
  Object.assign(client, { status, failures, everHeard });
  client.set = (changes) => {
    Object.assign(client, changes);
    client.dispatchEvent(new CustomEvent("status", { detail: { status: client.status, failures: client.failures } }));
  };
  return client;
}

let restoreClock;
beforeEach(() => {
  restoreClock = fakeClock();
});
afterEach(() => restoreClock());

test("one client per WebSocket endpoint, however its URL is written; widget.js re-exports it", () => {
  const client = sharedClient("/ws/realtime-async/");
  assert.equal(sharedClient(undefined), client);
  assert.equal(sharedClient(""), client);
  assert.equal(sharedClient("http://testserver/ws/realtime-async/"), client);
  assert.equal(widgetSharedClient("ws://testserver/ws/realtime-async/"), client);
  assert.notEqual(sharedClient("/ws/other/"), client);
});

test("shouldPoll: unavailable, or one failure before the socket ever worked, two after", () => {
  const table = [
    // status, failures, everHeard -> poll?
    ["connecting", 0, false, false],
    ["reconnecting", 1, false, true],
    ["reconnecting", 1, true, false],
    ["reconnecting", 2, true, true],
    ["open", 0, true, false],
    ["unavailable", 0, false, true],
    ["unavailable", 0, true, true],
  ];
  for (const [status, failures, everHeard, expected] of table) {
    assert.equal(shouldPoll({ status, failures, everHeard }), expected, `${status}/${failures}/${everHeard}`);
  }
});

test("shouldPoll: the feed is polled for while the client is on SSE or polling, whatever their status", () => {
  assert.equal(shouldPoll({ status: "open", failures: 0, everHeard: true, transport: "sse" }), true);
  assert.equal(shouldPoll({ status: "open", failures: 0, everHeard: true, transport: "poll" }), true);
  assert.equal(shouldPoll({ status: "open", failures: 0, everHeard: true, transport: "ws" }), false);
  assert.equal(shouldPoll({ status: "unavailable", failures: 0, everHeard: false, transport: null }), true);
});

test("one client per endpoint and transport; the events URL comes from whoever knows it", () => {
  const auto = sharedClient("/ws/keyed/");
  assert.equal(auto.eventsUrl, null);
  assert.equal(sharedClient("/ws/keyed/", { eventsUrl: "/events/" }), auto);
  assert.equal(auto.eventsUrl, "/events/");
  const sse = sharedClient("/ws/keyed/", { transport: "sse", eventsUrl: "/events/" });
  assert.notEqual(sse, auto);
  assert.equal(sse.transport, null); // nothing followed yet, and SSE needs a task
  assert.equal(sharedClient("/ws/keyed/", { transport: "sse" }), sse);
});

test("watchFallback falls back at once when the client is already unusable", () => {
  let calls = 0;
  watchFallback(stubClient("unavailable"), () => calls++).stop();
  assert.equal(calls, 1);
});

test("watchFallback falls back on a failing status, and passes every status on first", () => {
  const client = stubClient();
  const seen = [];
  let calls = 0;
  const watch = watchFallback(client, () => calls++, (status) => seen.push(status));
  client.set({ status: "open" });
  assert.equal(calls, 0);
  client.set({ status: "reconnecting", failures: 1 });
  assert.equal(calls, 1);
  assert.deepEqual(seen, ["connecting", "open", "reconnecting"]);
  watch.stop();
  client.set({ status: "reconnecting", failures: 2 });
  assert.equal(calls, 1); // stopped: no longer listening
});

test("watchFallback falls back when the socket has not answered in time, unless it did", async () => {
  const silent = stubClient("open", 0, true);
  let calls = 0;
  watchFallback(silent, () => calls++);
  await tick(ANSWER_TIMEOUT_MS - 1);
  assert.equal(calls, 0);
  await tick(1);
  assert.equal(calls, 1);

  let answeredCalls = 0;
  const watch = watchFallback(stubClient("open", 0, true), () => answeredCalls++);
  watch.answered();
  await tick(ANSWER_TIMEOUT_MS * 2);
  assert.equal(answeredCalls, 0);
});
