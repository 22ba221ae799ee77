// LiveDashboard (dashboard.js) on a fake DOM, a scripted WebSocket and a fake clock: one socket
// with the widgets of the page, the fallback to polling and back, rows drawn by the shared rules.

import assert from "node:assert/strict";
import { register } from "node:module";
import { afterEach, beforeEach, mock, test } from "node:test";

import {
  cases,
  fakeClock,
  fakeEventSources,
  fakeSockets,
  fakeVisibility,
  flush,
  installDocument,
  pinRandom,
  progress,
  tick,
} from "./helpers.mjs";
import { dashboardTable, field, rowElement, widgetElement } from "./dom.mjs";
import { LiveProgress } from "../../realtime_async/static/realtime_async/widget.js";

// dashboard.js imports its siblings by their STATIC_URL paths: see static-layout.mjs.
register("./static-layout.mjs", import.meta.url);
const { LiveDashboard, dashboardFor, initDashboards } = await import(
  "../../realtime_async/contrib/dashboard/static/realtime_async_dashboard/dashboard.js"
);

let restoreClock;
let sockets;
let endpoint = 0;

/** A dashboard on a fresh endpoint whose row fetches are counted, not made (no HTML parsing here). */
function newDashboard(rows = [], ws = `/ws/test-${++endpoint}/`) {
  const { table, byId } = dashboardTable(rows, { ws });
  installDocument(byId);
  const dashboard = new LiveDashboard(table);
  const refreshes = [];
  dashboard.refresh = async (transport = "poll") => {
    refreshes.push(transport);
  };
  return { table, dashboard, refreshes, ws };
}

function confirmFeed(socket) {
  socket.deliver({ v: 1, type: "pong", id: socket.frames("ping").at(-1).id });
}

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1);
  const fake = fakeSockets();
  sockets = fake.sockets;
  globalThis.WebSocket = fake.FakeWebSocket;
});

afterEach(() => {
  restoreClock();
  mock.restoreAll();
});

test("a widget and a dashboard on one page hold one WebSocket; stopping the dashboard leaves it", async () => {
  const { table, dashboard, refreshes, ws } = newDashboard();
  const element = widgetElement("t-1", { ws });
  const widget = new LiveProgress(element);
  widget.start();
  dashboard.start();
  assert.equal(sockets.length, 1);
  assert.equal(dashboard.client, widget.client);
  sockets[0].open();
  assert.deepEqual(
    sockets[0].sent.map((m) => m.type),
    ["subscribe", "subscribe_feed", "ping"],
  );
  confirmFeed(sockets[0]);
  assert.equal(dashboard.subscribed, true);
  assert.equal(table.dataset.raVia, "ws");
  assert.equal(refreshes.length, 1); // no snapshot on the feed: the rows are fetched once

  // One record, both views.
  sockets[0].deliver(progress("t-1", 2, "running", { percent: 12.25, created_at: 100 }));
  assert.equal(field(element, "percent"), "12%");
  const row = table.tBodies[0].rows[0];
  assert.equal(row.dataset.task, "t-1");
  assert.equal(field(row, "percent"), "12%");

  dashboard.stop();
  assert.deepEqual(sockets[0].sent.at(-1), { v: 1, type: "unsubscribe_feed" });
  assert.equal(sockets[0].closedWith, undefined); // the widget still needs it
  await tick(20000); // past the idle timeout (before the unanswered pings would count the socket dead)
  sockets[0].deliver(progress("t-1", 3, "running", { percent: 60, created_at: 100 }));
  assert.equal(field(element, "percent"), "60%");
  assert.equal(field(row, "percent"), "12%"); // the dashboard let go
  assert.equal(sockets.length, 1);
});

test("feed records update rows in place and add new tasks on top, with the widget's display rules", () => {
  const existing = rowElement("a", { state: "running", seq: 3, created: "100" });
  const { table, dashboard } = newDashboard([existing]);
  const events = [];
  dashboard.start();
  sockets[0].open();
  confirmFeed(sockets[0]);
  existing.addEventListener("realtime-async:final", (event) => events.push(`final:${event.detail.transport}`));

  sockets[0].deliver(progress("a", 2, "running", { percent: 99, created_at: 100 })); // older than the row: ignored
  assert.equal(field(existing, "percent"), "");
  sockets[0].deliver(progress("a", 4, "running", { percent: 150, created_at: 100 }));
  assert.equal(existing.dataset.seq, "4");
  assert.equal(existing.querySelector("progress").value, 100);
  assert.equal(field(existing, "percent"), "100%");
  assert.equal(field(existing, "state"), "Running");
  sockets[0].deliver(progress("a", 5, "running", { percent: null, message: "thinking", created_at: 100 }));
  assert.equal(existing.querySelector("progress").hasAttribute("value"), false); // indeterminate
  assert.equal(field(existing, "message"), "thinking");
  sockets[0].deliver(progress("a", 6, "failure", { error: null, created_at: 100 }));
  assert.equal(field(existing, "state"), cases.i18n.states.failure);
  assert.equal(field(existing, "message"), cases.i18n.failed);
  assert.equal(existing.querySelector("progress").value, 0);
  assert.deepEqual(events, ["final:ws"]);

  sockets[0].deliver(progress("b", 1, "queued", { created_at: 200, title: "Export “Q3”" }));
  const [first, second] = table.tBodies[0].rows;
  assert.equal(first.dataset.task, "b");
  assert.equal(first.dataset.raFeed, "1");
  assert.equal(field(first, "task"), "b");
  assert.equal(field(first, "title"), "Export “Q3”"); // the title names the row
  assert.equal(first.querySelector("progress").getAttribute("aria-label"), "Export “Q3”");
  assert.equal(field(existing, "title"), "a"); // a record without a title: its task name
  assert.equal(field(first, "state"), "Queued");
  assert.equal(second, existing);
});

test("polls the rows while the socket fails, and stops once the feed is confirmed again", async () => {
  const { table, dashboard, refreshes } = newDashboard();
  dashboard.start();
  sockets[0].drop(1006); // refused before it opened
  await flush();
  assert.equal(dashboard.polling, true);
  assert.equal(table.dataset.raVia, "poll");
  assert.deepEqual(refreshes, ["poll"]);
  await tick(500); // the socket's retry
  sockets[1].open();
  await tick(500); // and the next poll
  assert.deepEqual(refreshes, ["poll", "poll"]);
  confirmFeed(sockets[1]);
  assert.equal(dashboard.polling, false);
  assert.equal(table.dataset.raVia, "ws");
  await tick(10000);
  assert.equal(refreshes.length, 3); // the one fetch after the feed was taken, no more polls
});

test("with widgets on SSE the dashboard polls its rows (the feed is WebSocket-only) until the socket is back", async () => {
  const sse = fakeEventSources();
  globalThis.EventSource = sse.FakeEventSource;
  const { table, dashboard, refreshes, ws } = newDashboard();
  const element = widgetElement("t-1", { ws, events: "/events/" });
  const widget = new LiveProgress(element);
  widget.start();
  dashboard.start();
  sockets[0].drop(1006);
  await tick(0);
  assert.equal(widget.client.transport, "sse");
  assert.equal(dashboard.polling, true);
  assert.equal(table.dataset.raVia, "poll");
  sse.sources[0].open();
  sse.sources[0].deliver(progress("t-1", 2, "running", { created_at: 100 }));
  assert.equal(element.dataset.raVia, "sse");
  await tick(30000); // the socket is tried again
  sockets[1].open();
  confirmFeed(sockets[1]);
  assert.equal(widget.client.transport, "ws");
  assert.equal(dashboard.polling, false);
  assert.equal(table.dataset.raVia, "ws");
  assert.equal(element.dataset.raVia, "ws");
  assert.ok(sse.sources[0].closed);
  assert.ok(refreshes.length > 2);
  delete globalThis.EventSource;
});

test("while the page is hidden it polls the rows ten times less often, and at once when shown", async () => {
  const { dashboard, refreshes } = newDashboard();
  const page = fakeVisibility(globalThis.document);
  dashboard.start();
  sockets[0].drop(1006);
  await flush();
  assert.deepEqual(refreshes, ["poll"]);
  page.hide();
  for (let i = 0; i < 19; i += 1) await tick(1000);
  assert.equal(refreshes.length, 2, "one poll in 10 s (the socket's retries fail too)");
  page.show();
  await flush();
  assert.equal(refreshes.length, 3, "back in view: at once");
  dashboard.stop();
});

test("no answer to the feed in 5 s: polls", async () => {
  const { dashboard, refreshes } = newDashboard();
  dashboard.start();
  sockets[0].open();
  await tick(4999);
  assert.equal(dashboard.polling, false);
  await tick(1);
  assert.equal(dashboard.polling, true);
  assert.deepEqual(refreshes, ["poll"]);
});

test("a refused feed polls for good; a refused cancel does not", async () => {
  const { dashboard } = newDashboard();
  dashboard.start();
  sockets[0].open();
  confirmFeed(sockets[0]);
  await dashboard.client.cancel("x");
  sockets[0].deliver({ v: 1, type: "error", code: "forbidden", task: "x", message: "No." });
  assert.equal(dashboard.polling, false);
  sockets[0].deliver({ v: 1, type: "error", code: "not_found", message: "No feed." });
  assert.equal(dashboard.polling, true);
  assert.equal(dashboard.subscribed, false);
});

test("initDashboards starts each table once", () => {
  const { table } = newDashboard();
  initDashboards({ querySelectorAll: () => [table] });
  const dashboard = dashboardFor(table);
  assert.ok(dashboard instanceof LiveDashboard);
  initDashboards(table); // the table itself as the root
  assert.equal(dashboardFor(table), dashboard);
  assert.equal(sockets.length, 1);
  dashboard.stop();
});

test("a row shows the current stage under the message, and hides it when there is none", () => {
  const existing = rowElement("a", { state: "running", seq: 1, created: "100" });
  const { dashboard } = newDashboard([existing]);
  dashboard.start();
  sockets[0].open();
  confirmFeed(sockets[0]);
  const stage = () => existing.querySelector('[data-ra-field="stage"]');
  assert.equal(stage().hidden, true);
  const stages = (active) =>
    ["Load", "Process", "Save"].map((name, index) => ({
      name,
      state: index < active ? "done" : index === active ? "active" : "pending",
      weight: 1,
      percent: null,
    }));
  const record = (seq, active, extra = {}) =>
    progress("a", seq, "running", {
      stages: stages(active),
      stage: ["Load", "Process", "Save"][active],
      created_at: 100,
      ...extra,
    });

  sockets[0].deliver(record(2, 1, { message: "Resizing 3/10" }));
  assert.equal(field(existing, "stage"), "Stage 2 of 3: Process");
  assert.equal(stage().hidden, false);
  assert.equal(field(existing, "message"), "Resizing 3/10"); // the message keeps its own node
  sockets[0].deliver(record(3, 2));
  assert.equal(field(existing, "stage"), "Stage 3 of 3: Save");
  sockets[0].deliver(record(4, 2, { state: "success", stage: null }));
  assert.equal(field(existing, "stage"), "");
  assert.equal(stage().hidden, true);

  // A new task's row, cloned from the template, shows its stage too.
  sockets[0].deliver({ ...record(1, 0), task: "b", data: { ...record(1, 0).data, task: "b", created_at: 200 } });
  assert.equal(field(dashboard.tbody.rows[0], "stage"), "Stage 1 of 3: Load");
});
