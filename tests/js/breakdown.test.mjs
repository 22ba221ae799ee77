// breakdown.js against a scripted fetch and a fake clock: at most one fetch every 2 s while the
// parent's records change, one in flight at a time, one last fetch at the final state; and fetchBreakdown.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { cases, fakeClock, flush, h, installDocument, tick } from "./helpers.mjs";
import { BreakdownView } from "../../realtime_async/static/realtime_async/breakdown.js";
import { fetchBreakdown } from "../../realtime_async/static/realtime_async/client.js";

let restoreClock;

beforeEach(() => {
  installDocument();
  restoreClock = fakeClock();
});

afterEach(() => {
  restoreClock();
  mock.restoreAll();
});

const COUNTS = { queued: 1, running: 1, success: 0, failure: 1, cancelled: 0, lost: 0 };

function answer(parts, { omitted = 0, counts = COUNTS, total = 3 } = {}) {
  return { v: 1, type: "breakdown", task: "g", data: { seq: 1, state: "running", total, counts, parts, omitted } };
}

const FAILED = { task: "g.0", title: "First <b>", state: "failure", percent: 0, error: "Broken." };
const RUNNING = { task: "g.1", title: "Second", state: "running", percent: 40, error: null };

/** A fetch whose answers the test releases one by one (`release(body)`), recording each request. */
function gatedFetch() {
  const requests = [];
  const waiting = [];
  const fetch = (url) => {
    requests.push(url);
    return new Promise((resolve) => waiting.push(resolve));
  };
  const release = async (body, status = 200) => {
    waiting.shift()({ status, ok: status >= 200 && status < 300, json: async () => body });
    await flush();
  };
  return { fetch, requests, release };
}

function widgetElement() {
  return h(
    "div",
    {},
    h(
      "div",
      { "data-ra-field": "breakdown" },
      h("p", { "data-ra-field": "breakdown-summary" }),
      h("ol", { "data-ra-field": "parts" }),
      h("p", { "data-ra-field": "breakdown-omitted", hidden: "" }),
    ),
  );
}

function record(seq, state = "running", counts = COUNTS) {
  return { task: "g", seq, state, group: { parts: 3, policy: "continue", counts } };
}

function shownParts(element) {
  return element.querySelectorAll("li").map((item) => [
    item.getAttribute("data-ra-part"),
    item.getAttribute("data-ra-part-state"),
    item.textContent,
  ]);
}

test("fetches at most once every 2 s while records come, never two at once, and once more after the final state", async () => {
  const element = widgetElement();
  const { fetch, requests, release } = gatedFetch();
  const view = new BreakdownView(element, { url: "/p/g/?token=t%3A1", i18n: cases.i18n, fetch });
  view.changed(record(2));
  await tick(0);
  assert.deepEqual(requests, ["/p/g/?token=t%3A1&parts=1"]);
  view.changed(record(3));
  view.changed(record(4));
  await tick(5000);
  assert.equal(requests.length, 1, "one in flight at most");
  await release(answer([FAILED, RUNNING], { omitted: 1 }));
  await tick(0);
  assert.equal(requests.length, 2, "the records that came meanwhile: one more fetch, the interval being past");
  await release(answer([FAILED, RUNNING], { omitted: 1 }));
  view.changed(record(5));
  await tick(1999);
  assert.equal(requests.length, 2, "2 s between two fetches");
  await tick(1);
  assert.equal(requests.length, 3);
  await release(answer([FAILED, RUNNING], { omitted: 1 }));
  await tick(10_000);
  assert.equal(requests.length, 3, "no record, no fetch");
  const final = { queued: 0, running: 0, success: 2, failure: 1, cancelled: 0, lost: 0 };
  view.changed(record(6, "failure", final));
  await tick(0);
  assert.equal(requests.length, 4, "the final state's last fetch");
  await release(answer([FAILED, { ...RUNNING, state: "success", percent: 100 }], { counts: final }));
  view.changed(record(7, "failure", final));
  await tick(10_000);
  assert.equal(requests.length, 4, "nothing after the final fetch");
  assert.ok(view.stopped);
});

test("draws the summary, each part's title, state, percent and a failed one's error, and the omitted note", async () => {
  const element = widgetElement();
  const { fetch, release } = gatedFetch();
  const view = new BreakdownView(element, { url: "/p/g/", i18n: cases.i18n, fetch });
  view.changed(record(2));
  const summary = element.querySelector('[data-ra-field="breakdown-summary"]');
  assert.equal(summary.textContent, "3 parts: 1 failed, 1 running, 1 queued", "from the record, before any fetch");
  await tick(0);
  await release(answer([FAILED, RUNNING], { omitted: 1 }));
  assert.deepEqual(shownParts(element), [
    ["g.0", "failure", "First <b> Failed 0% Broken."],
    ["g.1", "running", "Second Running 40%"],
  ]);
  const note = element.querySelector('[data-ra-field="breakdown-omitted"]');
  assert.equal(note.textContent, "1 more part not listed.");
  assert.equal(note.hidden, false);
  // Items are kept by part and reordered; a part no longer listed goes.
  const second = element.querySelectorAll("li")[1];
  view.changed(record(3));
  await tick(2000);
  await release(answer([{ ...RUNNING, percent: 70 }], { omitted: 2 }));
  assert.deepEqual(shownParts(element), [["g.1", "running", "Second Running 70%"]]);
  assert.equal(element.querySelectorAll("li")[0], second);
  assert.equal(note.textContent, "2 more parts not listed.");
});

test("a task that went away or is no group stops it; other errors are retried a few times", async () => {
  const element = widgetElement();
  const { fetch, requests, release } = gatedFetch();
  const view = new BreakdownView(element, { url: "/p/g/", i18n: cases.i18n, fetch });
  view.changed(record(2));
  await tick(0);
  await release({ v: 1, type: "error", code: "unavailable" }, 503);
  await tick(2000);
  assert.equal(requests.length, 2, "retried after the interval");
  await release({ v: 1, type: "error", code: "bad_request", message: "Not a group." }, 400);
  view.changed(record(3));
  await tick(10_000);
  assert.equal(requests.length, 2);
  assert.ok(view.stopped);
});

test("without a breakdown element or a URL it fetches nothing; stop() ends it", async () => {
  const { fetch, requests } = gatedFetch();
  new BreakdownView(h("div", {}), { url: "/p/g/", fetch }).changed(record(2));
  const element = widgetElement();
  new BreakdownView(element, { url: "", fetch, i18n: cases.i18n }).changed(record(2));
  await tick(5000);
  assert.equal(requests.length, 0);
  assert.equal(element.querySelector('[data-ra-field="breakdown-summary"]').textContent, "3 parts: 1 failed, 1 running, 1 queued");
  const view = new BreakdownView(widgetElement(), { url: "/p/g/", fetch });
  view.stop();
  view.changed(record(3));
  await tick(5000);
  assert.equal(requests.length, 0);
});

test("fetchBreakdown asks for ?parts=1 and rejects what is not a breakdown", async () => {
  const seen = [];
  const reply = (status, body) => async (url, init) => {
    seen.push({ url, init });
    return { status, ok: status < 300, json: async () => body };
  };
  const data = await fetchBreakdown("/p/g/?token=x", { fetch: reply(200, answer([FAILED])) });
  assert.deepEqual(data.parts, [FAILED]);
  assert.equal(seen[0].url, "/p/g/?token=x&parts=1");
  assert.equal(seen[0].init.headers.Accept, "application/json");
  await assert.rejects(fetchBreakdown("/p/g/", { fetch: reply(404, {}) }), { code: "not_found" });
  const notGroup = { v: 1, type: "error", code: "bad_request", message: "Not a group." };
  await assert.rejects(fetchBreakdown("/p/g/", { fetch: reply(400, notGroup) }), { code: "bad_request" });
  await assert.rejects(fetchBreakdown("/p/g/", { fetch: reply(200, { v: 1, type: "progress" }) }), { code: "http_200" });
  const down = async () => {
    throw new TypeError("offline");
  };
  await assert.rejects(fetchBreakdown("/p/g/", { fetch: down }), { code: "network" });
});
