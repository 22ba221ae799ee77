// pollProgress against a scripted fetch and a fake clock.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { fakeClock, flush, pinRandom, tick } from "./helpers.mjs";
import { pollProgress } from "../../realtime_async/static/realtime_async/client.js";

let restoreClock;

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1);
});

afterEach(() => {
  restoreClock();
  mock.restoreAll();
});

function envelope(seq, state = "running") {
  return { v: 1, type: "progress", task: "t-1", data: { task: "t-1", seq, state } };
}

/** A fetch answering from `answers` in turn (the last one repeats) and recording each request. */
function scriptedFetch(answers) {
  const requests = [];
  const fetch = async (url, init) => {
    requests.push({ url, init });
    const answer = answers.length > 1 ? answers.shift() : answers[0];
    if (answer instanceof Error) throw answer;
    const { status = 200, body = null, etag = null } = answer;
    return {
      status,
      ok: status >= 200 && status < 300,
      headers: { get: (name) => (name === "ETag" ? etag : null) },
      json: async () => body,
    };
  };
  return { fetch, requests };
}

test("polls every interval; an unchanged poll is a 304 thanks to the ETag", async () => {
  const { fetch, requests } = scriptedFetch([
    { body: envelope(1), etag: '"e1"' },
    { status: 304 },
    { body: envelope(2), etag: '"e2"' },
  ]);
  const got = [];
  const onProgress = (r) => got.push(r.seq);
  const poller = pollProgress("/progress/t-1/", { task: "t-1", interval: 1000, fetch, onProgress });
  await flush();
  assert.equal(requests.length, 1);
  assert.equal(requests[0].url, "/progress/t-1/");
  assert.equal(requests[0].init.headers["If-None-Match"], undefined);
  assert.equal(requests[0].init.credentials, "same-origin");
  await tick(999);
  assert.equal(requests.length, 1);
  await tick(1);
  assert.equal(requests[1].init.headers["If-None-Match"], '"e1"');
  await tick(1000);
  assert.deepEqual(got, [1, 2]);
  poller.stop();
  await tick(5000);
  assert.equal(requests.length, 3);
});

test("a 304 carrying a re-issued ETag for the same state makes the next poll send that one", async () => {
  const { fetch, requests } = scriptedFetch([
    { body: envelope(1), etag: '"1-a-old"' },
    { status: 304, etag: '"1-b-new"' },
    { status: 304 },
    { status: 304 },
  ]);
  const poller = pollProgress("/progress/t-1/", { task: "t-1", interval: 1000, fetch, onProgress() {} });
  await flush();
  await tick(1000);
  assert.equal(requests[1].init.headers["If-None-Match"], '"1-a-old"');
  await tick(1000);
  assert.equal(requests[2].init.headers["If-None-Match"], '"1-b-new"');
  await tick(1000);
  assert.equal(requests[3].init.headers["If-None-Match"], '"1-b-new"', "a 304 without an ETag keeps the last one");
  poller.stop();
});

test("a record at or below the seq already seen is not delivered again", async () => {
  const { fetch } = scriptedFetch([3, 3, 2, 4].map((seq) => ({ body: envelope(seq) })));
  const got = [];
  const poller = pollProgress("/p/", { task: "t-1", seq: 3, fetch, onProgress: (r) => got.push(r.seq) });
  await flush();
  await tick(1000);
  await tick(1000);
  await tick(1000);
  assert.deepEqual(got, [3, 4]); // the current record once, even at the seq the caller had
  poller.stop();
});

test("a 404 (or 403) ends polling with onError not_found", async () => {
  for (const status of [404, 403]) {
    const { fetch, requests } = scriptedFetch([{ status }]);
    const errors = [];
    pollProgress("/p/", { task: "t-1", fetch, onError: (e) => errors.push(e) });
    await flush();
    await tick(60000);
    assert.equal(requests.length, 1);
    assert.deepEqual(errors, [{ code: "not_found", message: "No such task.", task: "t-1" }]);
  }
});

test("errors back off exponentially; a success polls at the interval again", async () => {
  const { fetch, requests } = scriptedFetch([
    { status: 500 },
    new TypeError("network"),
    { body: { not: "an envelope" } },
    { body: envelope(1) },
    { status: 304 },
  ]);
  const poller = pollProgress("/p/", { task: "t-1", interval: 1000, maxInterval: 5000, fetch });
  await flush(); // the first answer, at 0
  const times = [];
  for (let t = 0; t <= 20000 && requests.length < 6; t += 1) {
    if (requests.length > times.length) times.push(Date.now());
    await tick(1);
  }
  // after 1, 2 and 3 errors: 2000, 4000, then 5000 (capped); then the interval again.
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  assert.deepEqual(gaps, [2000, 4000, 5000, 1000]);
  poller.stop();
});

test("a final state stops polling after onProgress and onFinal", async () => {
  const { fetch, requests } = scriptedFetch([{ body: envelope(1) }, { body: envelope(2, "cancelled") }]);
  const calls = [];
  pollProgress("/p/", {
    task: "t-1",
    fetch,
    onProgress: (r) => calls.push(`progress ${r.state}`),
    onFinal: (r) => calls.push(`final ${r.state}`),
  });
  await flush();
  await tick(1000);
  await tick(10000);
  assert.equal(requests.length, 2);
  assert.deepEqual(calls, ["progress running", "progress cancelled", "final cancelled"]);
});

test("stop() aborts the request in flight", async () => {
  let signal;
  const fetch = (url, init) => {
    signal = init.signal;
    return new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("aborted"))));
  };
  const errors = [];
  const poller = pollProgress("/p/", { task: "t-1", fetch, onError: (e) => errors.push(e) });
  poller.stop();
  await flush();
  assert.ok(signal.aborted);
  assert.deepEqual(errors, []);
});
