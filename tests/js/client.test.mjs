// RealtimeAsyncClient against a scripted WebSocket and a fake clock.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { fakeClock, fakeSockets, flush, pinRandom, progress, tick } from "./helpers.mjs";
import { RealtimeAsyncClient } from "../../realtime_async/static/realtime_async/client.js";

let restoreClock;
let sockets;
let client;

function newClient(options = {}) {
  const fake = fakeSockets();
  sockets = fake.sockets;
  client = new RealtimeAsyncClient({ WebSocket: fake.FakeWebSocket, ...options });
  return client;
}

function statuses(target) {
  const seen = [];
  target.addEventListener("status", (event) => seen.push(event.detail.status));
  return seen;
}

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1); // the longest jittered delay: timings below are exact
});

afterEach(() => {
  client?.close();
  restoreClock();
  mock.restoreAll();
});

test("the socket opens on the first subscribe, at the page's ws: URL, and subscribes with protocol v1", () => {
  newClient();
  assert.equal(client.status, "idle");
  assert.equal(sockets.length, 0);
  client.subscribe("t-1");
  client.subscribe("t-2", { seq: 4, token: "tok" });
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url, "ws://testserver/ws/realtime-async/");
  assert.equal(client.status, "connecting");
  sockets[0].open();
  assert.deepEqual(sockets[0].sent, [
    { v: 1, type: "subscribe", task: "t-1" },
    { v: 1, type: "subscribe", task: "t-2", seq: 4, token: "tok" },
  ]);
  assert.equal(client.status, "open");
  client.subscribe("t-3"); // on an open socket: sent at once
  assert.deepEqual(sockets[0].sent.at(-1), { v: 1, type: "subscribe", task: "t-3" });
  assert.throws(() => client.subscribe(""), TypeError);
});

test("records are delivered in seq order, once; stale and repeated ones are dropped", async () => {
  newClient();
  const a = [];
  const b = [];
  client.subscribe("t-1", { seq: 3, onProgress: (r) => a.push(r.seq) });
  client.subscribe("t-1", { onProgress: (r) => b.push(r.seq) });
  sockets[0].open();
  assert.equal(sockets[0].frames("subscribe").length, 1); // one subscribe per task, however many watchers
  sockets[0].deliver(progress("t-1", 3)); // the snapshot at the seq we had: still delivered once
  sockets[0].deliver(progress("t-1", 3));
  sockets[0].deliver(progress("t-1", 5));
  sockets[0].deliver(progress("t-1", 4));
  sockets[0].deliver(progress("t-2", 9)); // not followed
  sockets[0].deliver("not json");
  sockets[0].deliver({ v: 2, type: "progress", task: "t-1", data: { seq: 8, state: "running" } }); // another protocol
  assert.deepEqual(a, [3, 5]);
  assert.deepEqual(b, [3, 5]);
  // A later watcher of the same task gets the latest record at once (in a microtask), then what follows.
  const c = [];
  client.subscribe("t-1", { onProgress: (r) => c.push(r.seq) });
  await flush();
  sockets[0].deliver(progress("t-1", 6));
  assert.deepEqual(c, [5, 6]);
});

test("a reconnect resubscribes every task with the last seq seen and its token", async () => {
  newClient({ stableAfter: 10000 });
  const seen = statuses(client);
  const got = [];
  client.subscribe("t-1", { seq: 3, token: "tok", onProgress: (r) => got.push(r.seq) });
  sockets[0].open();
  sockets[0].deliver(progress("t-1", 5));
  sockets[0].drop(1006);
  assert.equal(client.status, "reconnecting");
  assert.equal(client.failures, 0); // the server had answered: not a failure
  await tick(499);
  assert.equal(sockets.length, 1);
  await tick(1); // backoff: 500 ms for the first retry
  assert.equal(sockets.length, 2);
  sockets[1].drop(1006); // never opened: a failure, and the backoff grows
  assert.equal(client.failures, 1);
  await tick(999);
  assert.equal(sockets.length, 2);
  await tick(1);
  assert.equal(sockets.length, 3);
  sockets[2].open();
  assert.deepEqual(sockets[2].sent, [{ v: 1, type: "subscribe", task: "t-1", seq: 5, token: "tok" }]);
  sockets[2].deliver(progress("t-1", 5)); // the snapshot we had: nothing new
  sockets[2].deliver(progress("t-1", 6));
  assert.deepEqual(got, [5, 6]);
  assert.equal(client.failures, 0);
  assert.ok(client.everHeard);
  assert.deepEqual([...new Set(seen)], ["connecting", "open", "reconnecting"]);
});

test("only a connection that stays up resets the backoff", async () => {
  newClient({ stableAfter: 5000 });
  client.subscribe("t-1");
  const dropAfterHearing = async (socket, upFor) => {
    socket.open();
    socket.deliver({ v: 1, type: "pong", id: "x" });
    await tick(upFor);
    socket.drop(1006);
  };
  await dropAfterHearing(sockets[0], 100); // retry 0: 500 ms
  await tick(500);
  await dropAfterHearing(sockets[1], 100); // dropped at once again: retry 1, 1000 ms
  await tick(999);
  assert.equal(sockets.length, 2);
  await tick(1);
  await dropAfterHearing(sockets[2], 5000); // stable for 5 s: back to 500 ms
  await tick(500);
  assert.equal(sockets.length, 4);
});

test("close code 4429 waits the longest backoff", async () => {
  newClient({ backoff: { initial: 100, max: 8000 } });
  client.subscribe("t-1");
  sockets[0].open();
  sockets[0].drop(4429);
  await tick(7999);
  assert.equal(sockets.length, 1);
  await tick(1);
  assert.equal(sockets.length, 2);
});

test("a socket that never opens times out as a failure", async () => {
  newClient({ connectTimeout: 3000 });
  client.subscribe("t-1");
  await tick(3000);
  assert.equal(sockets[0].closedWith, 1000);
  assert.equal(client.failures, 1);
  assert.equal(client.status, "reconnecting");
});

test("a half-open connection is detected by the ping", async () => {
  newClient({ pingInterval: 1000, pongTimeout: 500 });
  client.subscribe("t-1");
  sockets[0].open();
  await tick(1000);
  assert.equal(sockets[0].frames("ping").length, 1);
  await tick(1000); // 2000 ms without a word > 1000 + 500
  assert.equal(client.status, "reconnecting");
  assert.equal(sockets[0].closedWith, 1000);
});

test("a final state ends the subscription and unsubscribes; later records are ignored", () => {
  newClient();
  const got = [];
  const finals = [];
  const sub = client.subscribe("t-1", { onProgress: (r) => got.push(r.state), onFinal: (r) => finals.push(r.seq) });
  sockets[0].open();
  sockets[0].deliver(progress("t-1", 1));
  sockets[0].deliver(progress("t-1", 2, "success"));
  sockets[0].deliver(progress("t-1", 3));
  assert.deepEqual(got, ["running", "success"]);
  assert.deepEqual(finals, [2]);
  assert.equal(sub.active, false);
  assert.equal(sub.seq, 2);
  assert.deepEqual(sockets[0].sent.at(-1), { v: 1, type: "unsubscribe", task: "t-1" });
});

test("errors naming a task end its subscriptions; others go to the client's error event", () => {
  newClient();
  const errors = [];
  const clientErrors = [];
  client.addEventListener("error", (event) => clientErrors.push(event.detail.code));
  const sub = client.subscribe("gone", { onError: (e) => errors.push(e.code) });
  sockets[0].open();
  sockets[0].deliver({ v: 1, type: "error", code: "not_found", task: "gone", message: "No such task." });
  sockets[0].deliver({ v: 1, type: "error", code: "bad_request", message: "?" });
  assert.deepEqual(errors, ["not_found"]);
  assert.equal(sub.active, false);
  assert.deepEqual(clientErrors, ["bad_request"]);
});

test("the socket closes a while after the last subscription ended, unless one comes first", async () => {
  newClient({ idleTimeout: 10000 });
  const a = client.subscribe("t-1");
  sockets[0].open();
  a.unsubscribe();
  a.unsubscribe(); // twice: no second frame
  assert.deepEqual(sockets[0].frames("unsubscribe"), [{ v: 1, type: "unsubscribe", task: "t-1" }]);
  await tick(5000);
  client.subscribe("t-2"); // in time: the socket stays
  await tick(10000);
  assert.equal(sockets[0].closedWith, undefined);
  client._tasks.get("t-2").subs.forEach((sub) => sub.unsubscribe());
  await tick(9999);
  assert.equal(client.status, "open");
  await tick(1);
  assert.equal(sockets[0].closedWith, 1000);
  assert.equal(client.status, "idle");
  client.subscribe("t-3"); // and it comes back when wanted again
  assert.equal(sockets.length, 2);
  assert.equal(client.status, "connecting");
});

test("without WebSocket the client says unavailable", () => {
  client = new RealtimeAsyncClient({ WebSocket: undefined });
  client.subscribe("t-1");
  assert.equal(client.status, "unavailable");
});

test("a callback that throws does not stop the others", () => {
  newClient();
  const reported = mock.method(console, "error", () => {});
  const got = [];
  client.subscribe("t-1", {
    onProgress: () => {
      throw new Error("boom");
    },
  });
  client.subscribe("t-1", { onProgress: (r) => got.push(r.seq) });
  sockets[0].open();
  sockets[0].deliver(progress("t-1", 1));
  assert.deepEqual(got, [1]);
  assert.equal(reported.mock.callCount(), 1);
});

test("the feed is confirmed by the pong of its ping, and again after every reconnect", async () => {
  newClient();
  const got = [];
  let subscribed = 0;
  const feed = client.subscribeFeed({
    onProgress: (r) => got.push(`${r.task}#${r.seq}`),
    onSubscribed: () => subscribed++,
  });
  sockets[0].open();
  assert.deepEqual(
    sockets[0].sent.map((m) => m.type),
    ["subscribe_feed", "ping"],
  );
  const ping = sockets[0].frames("ping")[0];
  assert.match(ping.id, /^feed-/);
  assert.equal(subscribed, 0);
  sockets[0].deliver({ v: 1, type: "pong", id: "something else" });
  assert.equal(subscribed, 0);
  sockets[0].deliver({ v: 1, type: "pong", id: ping.id });
  assert.equal(subscribed, 1);
  sockets[0].deliver(progress("a", 1, "running", { created_at: 100 }));
  sockets[0].deliver(progress("a", 1, "running", { created_at: 100 })); // repeat: dropped
  sockets[0].deliver(progress("b", 4, "running", { created_at: 100 }));
  sockets[0].deliver(progress("a", 1, "queued", { created_at: 200 })); // relaunched under the same name
  // A second feed subscription shares the server's one feed, confirmed already.
  let second = 0;
  client.subscribeFeed({ onSubscribed: () => second++ });
  await flush();
  assert.equal(second, 1);
  assert.equal(sockets[0].frames("subscribe_feed").length, 1);

  sockets[0].drop(1006);
  await tick(500);
  sockets[1].open();
  assert.deepEqual(
    sockets[1].sent.map((m) => m.type),
    ["subscribe_feed", "ping"],
  );
  sockets[1].deliver({ v: 1, type: "pong", id: sockets[1].frames("ping")[0].id });
  assert.equal(subscribed, 2);
  sockets[1].deliver(progress("b", 4, "running", { created_at: 100 })); // seen before the reconnect
  sockets[1].deliver(progress("b", 5, "running", { created_at: 100 }));
  assert.deepEqual(got, ["a#1", "b#4", "a#1", "b#5"]);
  feed.unsubscribe();
  assert.equal(sockets[1].frames("unsubscribe_feed").length, 0); // the other feed subscription still needs it
});

test("a feed and task subscriptions share one connection", () => {
  newClient();
  const feed = client.subscribeFeed({});
  const sub = client.subscribe("t-1");
  sockets[0].open();
  assert.equal(sockets.length, 1);
  assert.deepEqual(
    sockets[0].sent.map((m) => m.type),
    ["subscribe", "subscribe_feed", "ping"],
  );
  feed.unsubscribe();
  assert.deepEqual(sockets[0].sent.at(-1), { v: 1, type: "unsubscribe_feed" });
  assert.equal(sub.active, true);
  assert.equal(client.status, "open");
});

test("an anonymous feed is refused with not_found and ends", () => {
  newClient();
  const errors = [];
  const feed = client.subscribeFeed({ onError: (e) => errors.push(e.code) });
  sockets[0].open();
  sockets[0].deliver({ v: 1, type: "error", code: "not_found", message: "No feed." });
  assert.deepEqual(errors, ["not_found"]);
  assert.equal(feed.active, false);
});

test("cancel() rejects with not_connected unless the socket is open", async () => {
  newClient();
  await assert.rejects(client.cancel("t-1"), { code: "not_connected" });
  client.subscribe("t-1");
  await assert.rejects(client.cancel("t-1"), { code: "not_connected" }); // connecting
  sockets[0].open();
  await client.cancel("t-1");
  assert.deepEqual(sockets[0].sent.at(-2), { v: 1, type: "cancel", task: "t-1" });
  assert.match(sockets[0].sent.at(-1).id, /^cancel-/);
  client.close();
  assert.equal(client.status, "closed");
  await assert.rejects(client.cancel("t-1"), { code: "not_connected" });
  await assert.rejects(client.cancel(""), TypeError);
});

test("a refused cancel goes to the task's subscriptions and the feed, which go on", async () => {
  newClient();
  const subErrors = [];
  const feedErrors = [];
  const clientErrors = [];
  client.addEventListener("error", (event) => clientErrors.push(event.detail));
  const sub = client.subscribe("t-1", { onError: (e) => subErrors.push(`${e.action}:${e.code}`) });
  const feed = client.subscribeFeed({ onError: (e) => feedErrors.push(`${e.action}:${e.code}:${e.task}`) });
  sockets[0].open();
  await client.cancel("t-1");
  sockets[0].deliver({ v: 1, type: "error", code: "not_found", task: "t-1", message: "No such task." });
  assert.deepEqual(subErrors, ["cancel:not_found"]);
  assert.deepEqual(feedErrors, ["cancel:not_found:t-1"]);
  assert.ok(sub.active && feed.active);
  // forbidden is always a cancel's answer, even after the pong settled the cancel
  await client.cancel("t-2");
  sockets[0].deliver({ v: 1, type: "pong", id: sockets[0].frames("ping").at(-1).id });
  sockets[0].deliver({ v: 1, type: "error", code: "forbidden", task: "t-2", message: "No." });
  assert.deepEqual(feedErrors.at(-1), "cancel:forbidden:t-2");
  // With nobody to tell: the client's error event.
  feed.unsubscribe();
  await client.cancel("t-3");
  sockets[0].deliver({ v: 1, type: "error", code: "forbidden", task: "t-3", message: "No." });
  assert.deepEqual(clientErrors.map((e) => `${e.action}:${e.code}:${e.task}`), ["cancel:forbidden:t-3"]);
});

test("close() drops every subscription and refuses new ones", () => {
  newClient();
  const sub = client.subscribe("t-1");
  sockets[0].open();
  client.close();
  assert.equal(sub.active, false);
  assert.equal(sockets[0].closedWith, 1000);
  assert.throws(() => client.subscribe("t-2"));
  assert.throws(() => client.subscribeFeed({}));
});
