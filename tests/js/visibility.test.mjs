// Quiet hidden tabs: pollers, the breakdown and the socket's reconnect wait follow the Page Visibility API.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { fakeClock, fakeSockets, fakeVisibility, flush, h, pinRandom, tick } from "./helpers.mjs";
import { BreakdownView } from "../../realtime_async/static/realtime_async/breakdown.js";
import { RealtimeAsyncClient, pollProgress } from "../../realtime_async/static/realtime_async/client.js";

let restoreClock;
let page;

/** Let `ms` pass a second at a time, so that each answer's next poll is scheduled in between. */
async function pass(ms) {
  for (let left = ms; left > 0; left -= 1000) await tick(Math.min(1000, left));
}

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1);
  page = fakeVisibility();
});

afterEach(() => {
  restoreClock();
  mock.restoreAll();
  delete globalThis.document;
});

/** A fetch answering each poll with the next seq of a running task, recording each request. */
function countingFetch() {
  const requests = [];
  const fetch = async (url) => {
    requests.push(url);
    const seq = requests.length;
    return {
      status: 200,
      ok: true,
      headers: { get: () => null },
      json: async () => ({ v: 1, type: "progress", task: "t", data: { task: "t", seq, state: "running" } }),
    };
  };
  return { fetch, requests };
}

test("a hidden page polls ten times less often; shown again it polls at once, then at the interval", async () => {
  const { fetch, requests } = countingFetch();
  const seen = [];
  const poller = pollProgress("/p/t/", { task: "t", interval: 1000, fetch, onProgress: (r) => seen.push(r.seq) });
  await flush();
  await tick(1000);
  await tick(1000);
  assert.equal(requests.length, 3, "visible: one poll a second");
  await tick(400);
  page.hide(); // the wait under way stretches to 10 s from its start
  await tick(9599);
  assert.equal(requests.length, 3);
  await tick(1);
  assert.equal(requests.length, 4, "hidden: one poll in 10 s");
  await tick(10_000);
  assert.equal(requests.length, 5);
  await tick(3000);
  page.show(); // catch up at once, not after the 7 s left
  await flush();
  assert.equal(requests.length, 6);
  assert.equal(seen.at(-1), 6, "the true state, within one round trip");
  await tick(1000);
  assert.equal(requests.length, 7, "then the normal interval");
  poller.stop();
  assert.equal(page.listeners, 0, "stopped pollers let go of the page's listener");
});

test("many pollers share one listener; hiddenFactor sets the slowdown, 1 turns it off", async () => {
  const a = countingFetch();
  const b = countingFetch();
  const c = countingFetch();
  const pollers = [
    pollProgress("/p/a/", { task: "a", interval: 1000, fetch: a.fetch }),
    pollProgress("/p/b/", { task: "b", interval: 1000, fetch: b.fetch, hiddenFactor: 4 }),
    pollProgress("/p/c/", { task: "c", interval: 1000, fetch: c.fetch, hiddenFactor: 1 }),
  ];
  await flush();
  assert.equal(page.listeners, 1);
  page.hide();
  await pass(20_000);
  assert.deepEqual(
    [a.requests.length, b.requests.length, c.requests.length],
    [1 + 2, 1 + 5, 1 + 20],
  );
  for (const poller of pollers) poller.stop();
  assert.equal(page.listeners, 0);
});

test("a final state is never missed: hidden polls go on, slower, and end it", async () => {
  const answers = ["running", "running", "success"];
  const requests = [];
  const fetch = async (url) => {
    requests.push(url);
    const state = answers[Math.min(requests.length, answers.length) - 1];
    const data = { task: "t", seq: requests.length, state };
    return { status: 200, ok: true, headers: { get: () => null }, json: async () => ({ v: 1, type: "progress", data }) };
  };
  page.hide();
  const finals = [];
  pollProgress("/p/t/", { task: "t", interval: 1000, fetch, onFinal: (r) => finals.push(r.state) });
  await flush();
  await pass(20_000);
  assert.deepEqual(finals, ["success"]);
  assert.equal(requests.length, 3);
  await pass(60_000);
  assert.equal(requests.length, 3);
  assert.equal(page.listeners, 0);
});

test("the breakdown fetches nothing while hidden, and once when shown again", async () => {
  const requests = [];
  const fetch = async (url) => {
    requests.push(url);
    const data = { seq: 1, state: "running", total: 1, counts: {}, parts: [], omitted: 0 };
    return { status: 200, ok: true, json: async () => ({ v: 1, type: "breakdown", data }) };
  };
  const element = h("div", {}, h("div", { "data-ra-field": "breakdown" }, h("ol", { "data-ra-field": "parts" })));
  const view = new BreakdownView(element, { url: "/p/g/", fetch });
  const record = (seq) => ({ task: "g", seq, state: "running" });
  view.changed(record(1));
  await tick(0);
  assert.equal(requests.length, 1);
  page.hide();
  for (let seq = 2; seq < 12; seq += 1) {
    view.changed(record(seq));
    await tick(2000);
  }
  assert.equal(requests.length, 1, "hidden: no fetch");
  page.show();
  await tick(0);
  assert.equal(requests.length, 2, "shown: one fetch");
  await tick(10_000);
  assert.equal(requests.length, 2);
  view.stop();
  assert.equal(page.listeners, 0);
});

test("shown again, a socket waiting to reconnect reconnects at once (not after a 4429)", async () => {
  const { FakeWebSocket, sockets } = fakeSockets();
  const client = new RealtimeAsyncClient({ WebSocket: FakeWebSocket, backoff: { initial: 8000, max: 8000 } });
  client.subscribe("t");
  sockets[0].open();
  page.hide();
  sockets[0].drop(1006);
  await tick(1000);
  assert.equal(sockets.length, 1, "waiting out the backoff");
  page.show();
  assert.equal(sockets.length, 2, "no wait once the user looks");
  sockets[1].open();
  assert.deepEqual(sockets[1].frames("subscribe").map((m) => m.task), ["t"]);
  sockets[1].drop(4429);
  page.hide();
  page.show();
  assert.equal(sockets.length, 2, "too many: the server's wait is kept");
  client.close();
});
