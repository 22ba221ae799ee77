// LiveProgress (widget.js) on a fake DOM, a scripted WebSocket and fetch, and a fake clock:
// the fallback to polling, the way back, and what a record looks like.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { cases, fakeClock, fakeSockets, flush, installDocument, pinRandom, progress, tick } from "./helpers.mjs";
import { field, stepper, widgetElement } from "./dom.mjs";
import { display } from "../../realtime_async/static/realtime_async/display.js";
import { LiveProgress, initWidgets, widgetFor } from "../../realtime_async/static/realtime_async/widget.js";

installDocument();

let restoreClock;
let sockets;
let requests;
let endpoint = 0;

/** A widget on a fresh endpoint, so that it does not share the page client of another test. */
function newWidget(task = "t-1", options = {}) {
  const element = widgetElement(task, { ws: `/ws/test-${++endpoint}/`, ...options });
  const events = [];
  for (const name of ["progress", "final", "success", "error"]) {
    const record = (event) => events.push(`${name}:${event.detail.transport ?? ""}`);
    element.addEventListener(`realtime-async:${name}`, record);
  }
  return { element, events, widget: new LiveProgress(element) };
}

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1);
  const fake = fakeSockets();
  sockets = fake.sockets;
  globalThis.WebSocket = fake.FakeWebSocket;
  requests = [];
  // The polling endpoint: the next record of the task each time.
  globalThis.fetch = async (url) => {
    requests.push(url);
    const data = { task: "t-1", seq: 10 + requests.length, state: "running", percent: 42.66, eta: 150 };
    return {
      status: 200,
      ok: true,
      headers: { get: () => null },
      json: async () => ({ v: 1, type: "progress", task: "t-1", data }),
    };
  };
});

afterEach(() => {
  restoreClock();
  mock.restoreAll();
});

test("auto: polls once the first connection fails, and climbs back when the socket delivers again", async () => {
  const { element, events, widget } = newWidget();
  widget.start();
  assert.equal(sockets.length, 1);
  assert.equal(requests.length, 0);
  sockets[0].drop(1006); // refused before it opened
  await flush();
  assert.equal(requests.length, 1);
  assert.equal(element.dataset.raVia, "poll");
  // The polled record, shown by the shared display rules.
  assert.equal(element.dataset.raState, "running");
  assert.equal(field(element, "state"), "Running");
  assert.equal(element.querySelector('[role="progressbar"]').getAttribute("aria-valuenow"), "42.7");
  assert.equal(element.querySelector('[role="progressbar"]').getAttribute("aria-valuetext"), "42%");
  assert.equal(element.querySelector(".ra-progress__fill").getAttribute("width"), "42.66");
  assert.equal(field(element, "percent"), "42%");
  assert.equal(field(element, "eta"), "3 min left");
  assert.ok(element.classList.contains("ra-progress--running"));

  await tick(29999); // the socket is tried again after 30 s (the longest jitter), not at its reconnect pace
  assert.equal(sockets.length, 1);
  await tick(1);
  sockets[1].open();
  // From the last seq the widget saw, whichever transport brought it.
  const polled = Number(element.dataset.raSeq);
  assert.ok(polled > 11);
  assert.equal(sockets[1].frames("subscribe")[0].seq, polled);
  sockets[1].deliver(progress("t-1", polled, "running", { percent: 50 })); // the snapshot: nothing new
  assert.equal(element.dataset.raVia, "ws"); // the socket delivered: it is in use
  assert.equal(field(element, "percent"), "42%");
  sockets[1].deliver(progress("t-1", 100, "running", { percent: 50 }));
  assert.equal(field(element, "percent"), "50%");
  const polls = requests.length;
  await tick(10000);
  assert.equal(requests.length, polls); // polling stopped
  sockets[1].deliver(progress("t-1", 101, "success", { percent: 100 }));
  assert.deepEqual(events.slice(-3), ["progress:ws", "final:ws", "success:ws"]);
  assert.equal(field(element, "eta"), "");
  assert.ok(events.includes("progress:poll"));
});

test("auto: a socket that opens but does not answer in 5 s is left for polling", async () => {
  const { element, widget } = newWidget();
  widget.start();
  sockets[0].open();
  await tick(4999);
  assert.equal(requests.length, 0);
  await tick(1);
  assert.equal(requests.length, 1);
  assert.equal(element.dataset.raVia, "poll");
});

test("auto: after the socket once worked, one drop is not enough to poll, two failures are", async () => {
  const { widget } = newWidget();
  widget.start();
  sockets[0].open();
  sockets[0].deliver(progress("t-1", 2));
  sockets[0].drop(1006);
  await tick(500);
  sockets[1].drop(1006); // failure 1
  await flush();
  assert.equal(requests.length, 0);
  await tick(1000);
  sockets[2].drop(1006); // failure 2
  await flush();
  assert.equal(requests.length, 1);
});

test("auto: without WebSocket the widget polls at once; ws: it reports the task unavailable", async () => {
  globalThis.WebSocket = undefined;
  const auto = newWidget();
  auto.widget.start();
  await flush();
  assert.equal(requests.length, 1);

  const wsOnly = newWidget("t-1", { transport: "ws" });
  wsOnly.widget.start();
  assert.equal(wsOnly.element.dataset.raState, "unavailable");
  assert.equal(field(wsOnly.element, "state"), "Not available");
  assert.equal(field(wsOnly.element, "message"), cases.i18n.no_updates); // in the page's words, not the reason's
  assert.equal(field(wsOnly.element, "message"), "Live updates are not available.");
  assert.deepEqual(wsOnly.events, ["error:"]);
});

test("a task the server does not show is unavailable, in the page's words", () => {
  const { element, events, widget } = newWidget("secret");
  widget.start();
  sockets[0].open();
  sockets[0].deliver({ v: 1, type: "error", code: "not_found", task: "secret", message: "No such task." });
  assert.equal(element.dataset.raState, "unavailable");
  assert.equal(field(element, "message"), cases.i18n.unavailable);
  assert.equal(element.querySelector('[role="progressbar"]').hasAttribute("aria-valuenow"), false);
  assert.deepEqual(events, ["error:"]);
});

test("stop() unsubscribes, stops the timeout, and the shared socket idles out", async () => {
  const { widget } = newWidget();
  widget.start();
  sockets[0].open();
  widget.stop();
  assert.deepEqual(sockets[0].sent.at(-1), { v: 1, type: "unsubscribe", task: "t-1" });
  await tick(10000);
  assert.equal(requests.length, 0); // no fallback after stop
  assert.equal(sockets[0].closedWith, 1000);
});

test("initWidgets starts each widget once, the root included", () => {
  const { element } = newWidget("t-9", { state: "success" }); // final already: nothing to follow
  initWidgets(element);
  const widget = widgetFor(element);
  assert.ok(widget instanceof LiveProgress);
  initWidgets(element);
  assert.equal(widgetFor(element), widget);
  assert.equal(widget.done, true);
  assert.equal(sockets.length, 0);
});

// -- the stepper ---------------------------------------------------------------

function stages(active, { failed = false } = {}) {
  const names = ["Load", "Process", "Save"];
  return names.map((name, index) => ({
    name,
    state: index < active ? "done" : index > active ? (failed ? "cancelled" : "pending") : failed ? "failed" : "active",
    weight: 1,
    percent: index < active ? 100 : index === active ? 10 : null,
  }));
}

function staged(seq, active, extra = {}) {
  const stage = ["Load", "Process", "Save"][active];
  return progress("t-1", seq, "running", { stages: stages(active), stage, ...extra });
}

/** Counts every attribute and text write under `root` (the elements there now). */
function countWrites(root) {
  const writes = [];
  const walk = (element) => {
    for (const method of ["setAttribute", "removeAttribute"]) {
      const original = element[method].bind(element);
      element[method] = (...args) => {
        writes.push([method, ...args]);
        return original(...args);
      };
    }
    const text = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(element), "textContent");
    Object.defineProperty(element, "textContent", {
      get: () => text.get.call(element),
      set: (value) => {
        writes.push(["textContent", value]);
        text.set.call(element, value);
      },
    });
    element.children.forEach(walk);
  };
  walk(root);
  return writes;
}

test("stepper: the server's list follows the active stage, touching only what changed", () => {
  const first = { task: "t-1", seq: 1, state: "running", stages: stages(0), stage: "Load" };
  const { element, widget } = newWidget("t-1", { state: "running", stages: display(first, cases.i18n).stages });
  widget.start();
  sockets[0].open();
  const list = element.querySelector('[data-ra-field="stages"]');
  const items = [...list.children];
  assert.deepEqual(stepper(element), [
    ["Load", "active", "step", " In progress"],
    ["Process", "pending", null, " Not started"],
    ["Save", "pending", null, " Not started"],
  ]);

  // The same stages with a new percent: not one write in the list.
  const writes = countWrites(list);
  sockets[0].deliver(staged(2, 0, { percent: 5 }));
  assert.equal(field(element, "percent"), "5%");
  assert.deepEqual(writes, []);

  sockets[0].deliver(staged(3, 1, { percent: 40 }));
  assert.deepEqual(stepper(element), [
    ["Load", "done", null, " Done"],
    ["Process", "active", "step", " In progress"],
    ["Save", "pending", null, " Not started"],
  ]);
  assert.deepEqual([...list.children], items); // the same items, changed in place
  // Only the first two items changed: their state, aria-current and label; no name was rewritten.
  assert.deepEqual(writes, [
    ["setAttribute", "data-ra-stage-state", "done"],
    ["removeAttribute", "aria-current"],
    ["textContent", " Done"],
    ["setAttribute", "data-ra-stage-state", "active"],
    ["setAttribute", "aria-current", "step"],
    ["textContent", " In progress"],
  ]);

  sockets[0].deliver(
    progress("t-1", 4, "failure", { stages: stages(1, { failed: true }), stage: null, error: "Disk full." }),
  );
  assert.deepEqual(stepper(element), [
    ["Load", "done", null, " Done"],
    ["Process", "failed", null, " Failed"],
    ["Save", "cancelled", null, " Cancelled"],
  ]);
  assert.equal(list.hidden, false);
});

test("stepper: a widget rendered before the task had stages makes the list when they come", () => {
  const { element, widget } = newWidget("t-1", { state: "queued" });
  widget.start();
  sockets[0].open();
  sockets[0].deliver(progress("t-1", 2, "running", { stages: null, stage: null }));
  assert.equal(stepper(element), null); // nothing to show, nothing made

  sockets[0].deliver(staged(3, 2));
  const list = element.querySelector('[data-ra-field="stages"]');
  assert.equal(list.tagName, "OL");
  assert.ok(list.classList.contains("ra-progress__stages"));
  assert.equal(list.getAttribute("aria-label"), "Stages");
  // Placed above the message, whose live region it stays out of.
  const order = element.children.map((child) => child.getAttribute("data-ra-field"));
  assert.equal(order.indexOf("stages"), order.indexOf("message") - 1);
  assert.deepEqual(stepper(element), [
    ["Load", "done", null, " Done"],
    ["Process", "done", null, " Done"],
    ["Save", "active", "step", " In progress"],
  ]);
  assert.ok(list.children.every((item) => item.tagName === "LI" && item.classList.contains("ra-progress__stage")));

  // Stages redeclared: items follow the new list, extra ones go.
  const two = [
    { name: "Fetch", state: "active", weight: 1, percent: null },
    { name: "Store", state: "pending", weight: 1, percent: null },
  ];
  sockets[0].deliver(progress("t-1", 4, "running", { stages: two, stage: "Fetch" }));
  assert.deepEqual(stepper(element), [
    ["Fetch", "active", "step", " In progress"],
    ["Store", "pending", null, " Not started"],
  ]);

  // No stages any more: the list hides (and stays, to be filled again).
  sockets[0].deliver(progress("t-1", 5, "running", { stages: null, stage: null }));
  assert.equal(list.hidden, true);
  assert.deepEqual(stepper(element), []);
  sockets[0].deliver(staged(6, 0));
  assert.equal(list.hidden, false);
  assert.equal(stepper(element).length, 3);
});

test("stepper: a task that cannot be shown hides it", () => {
  const first = { task: "t-1", seq: 1, state: "running", stages: stages(1), stage: "Process" };
  const { element, widget } = newWidget("t-1", { state: "running", stages: display(first, cases.i18n).stages });
  widget.start();
  sockets[0].open();
  sockets[0].deliver({ v: 1, type: "error", code: "not_found", task: "t-1", message: "No such task." });
  assert.equal(element.querySelector('[data-ra-field="stages"]').hidden, true);
});
