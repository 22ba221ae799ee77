/**
 * The live "my tasks" page: keeps the server-rendered table [data-ra-dashboard] current.
 * Loaded as an ES module; no dependencies beyond realtime_async's own modules:
 * the page's shared client and fallback rule (page.js), so a page with widgets
 * and a dashboard holds one WebSocket and falls back the same way, and the
 * widget's display rules (display.js).
 *
 * - WebSocket: follows the feed of every task the user may see (`subscribeFeed`),
 *   updates rows in place and adds tasks it has no row for at the top. The feed
 *   sends no snapshot, so each time the server takes the feed (first, and after
 *   every reconnect) the rows are fetched once to catch what changed before.
 * - Polling: while the socket cannot connect or keeps failing (or the page's
 *   client follows its widgets over Server-Sent Events or polling: only the
 *   WebSocket carries the feed; page.js's shouldPoll), fetches this page's rows
 *   (`HX-Request: true`) every data-ra-poll-interval ms and swaps the table
 *   body; it stops when the feed works again. While the page is hidden
 *   it polls ten times less often, and at once when the page is shown again.
 *
 * Events, dispatched on the row (a <tr>) and bubbling, with detail = {task, record, transport}
 * (transport "ws" for the feed, "poll" for a fetch of the rows, whose record holds only
 * task, state, seq, percent and message):
 *   realtime-async:progress   every new state of a row
 *   realtime-async:final      a final state, followed by
 *   realtime-async:success | :failure | :cancelled | :lost
 * and on the table: realtime-async:rows-refreshed, detail = {transport}, after a fetch of the rows.
 * The table's data-ra-via holds the transport in use.
 */

import { backoffDelay, isFinal } from "../realtime_async/client.js";
import { display } from "../realtime_async/display.js";
import { readJson, sharedClient, startAll, watchFallback, whenReady } from "../realtime_async/page.js";
import { displayResults, renderResults } from "../realtime_async/results.js";
import { pollTimer } from "../realtime_async/visibility.js";

const SELECTOR = "[data-ra-dashboard]";

function number(text) {
  const value = Number(text);
  return text !== "" && text != null && Number.isFinite(value) ? value : null;
}

export class LiveDashboard {
  constructor(table) {
    const data = table.dataset;
    this.table = table;
    this.tbody = table.tBodies[0];
    this.template = document.getElementById(data.raRowTemplate || "");
    this.pollUrl = data.raPollUrl || "";
    this.pollInterval = Number(data.raPollInterval) || 1000;
    this.wsUrl = data.raWsUrl || undefined;
    this.limit = Number(data.raLimit) || 50;
    this.i18n = readJson(data.raI18n);
    this.client = null;
    this.feed = null;
    this.subscribed = false;
    this.polling = false;
    this.stopped = false;
    this._pollTimer = null; // visibility.js's pollTimer while polling
    this._pollErrors = 0;
    this._refreshing = null; // the rows fetch in flight
    this._replay = null; // feed records received during that fetch, applied again after its swap
    this._fallback = null; // page.js's watch over the socket
  }

  start() {
    if (this.client || this.stopped) return;
    // The page's client: widgets on the same page follow their tasks over the same socket.
    this.client = sharedClient(this.wsUrl);
    this.feed = this.client.subscribeFeed({
      onProgress: (record) => this._fromFeed(record),
      onSubscribed: () => this._subscribed(),
      onError: (error) => {
        if (error.action !== "cancel") this._feedRefused();
      },
    });
    this._fallback = watchFallback(
      this.client,
      () => this._startPolling(),
      (status) => {
        if (this.stopped || this.polling) return;
        if (status === "reconnecting" || status === "unavailable") this.subscribed = false;
      },
    );
  }

  /** Stop following: unsubscribe the feed (the page's socket stays for the others), stop polling. */
  stop() {
    this.stopped = true;
    this._fallback?.stop();
    this._stopPolling();
    this.feed?.unsubscribe();
  }

  _subscribed() {
    this.subscribed = true;
    this._fallback?.answered();
    this._stopPolling();
    this.table.dataset.raVia = "ws";
    // No snapshot on the feed: fetch what changed between the page's rendering (or the outage) and now.
    this.refresh().catch(() => {});
  }

  _feedRefused() {
    // Asking again would be refused again: polling carries on for good.
    this.subscribed = false;
    this._fallback?.stop();
    this._startPolling();
  }

  _startPolling() {
    if (this.stopped || this.polling || !this.pollUrl) return;
    this.polling = true;
    this._pollErrors = 0;
    this.table.dataset.raVia = "poll";
    this._pollTimer = pollTimer(() => this._poll());
    this._poll();
  }

  _stopPolling() {
    this.polling = false;
    this._pollTimer?.stop();
    this._pollTimer = null;
  }

  async _poll() {
    if (!this.polling) return;
    try {
      await this.refresh("poll");
      this._pollErrors = 0;
    } catch {
      this._pollErrors += 1; // a server error, a lost session (login redirect), the network: back off
    }
    if (!this.polling) return;
    const delay = this._pollErrors
      ? backoffDelay(this._pollErrors, { initial: this.pollInterval, max: 30000 })
      : this.pollInterval;
    this._pollTimer.start(delay, this.pollInterval);
  }

  /** Fetch the rows and swap them in; feed records that arrive meanwhile are applied again after. */
  refresh(transport = "poll") {
    if (this._refreshing) return this._refreshing;
    this._replay = [];
    this._refreshing = this._fetchRows()
      .then((html) => {
        if (!this.stopped) this._swap(html, transport);
      })
      .finally(() => {
        const replay = this._replay || [];
        this._refreshing = null;
        this._replay = null;
        for (const record of replay) this.apply(record, "ws");
      });
    return this._refreshing;
  }

  async _fetchRows() {
    const response = await fetch(this.pollUrl, {
      headers: { "HX-Request": "true", Accept: "text/html" },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error", // a lost session redirects to the login page: not rows
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.text();
  }

  _swap(html, transport) {
    const fresh = document.createElement("template");
    fresh.innerHTML = html;
    const before = new Map();
    for (const row of this.tbody.rows) if (row.dataset.task) before.set(row.dataset.task, row);
    const changed = [];
    for (const row of fresh.content.querySelectorAll("tr[data-task]")) {
      const old = before.get(row.dataset.task);
      const sameRun = old && old.dataset.created === row.dataset.created;
      if (sameRun && number(old.dataset.seq) > number(row.dataset.seq)) {
        row.replaceWith(old); // the feed brought a newer state than this fetch saw
      } else if (!old || !sameRun || old.dataset.seq !== row.dataset.seq) {
        changed.push({ row, wasFinal: sameRun && isFinal({ state: old.dataset.state }) });
      }
    }
    // Rows the feed added that the server did not list yet (its database record is written a moment
    // after the task starts) stay on top rather than blink out.
    const listed = new Set([...fresh.content.querySelectorAll("tr[data-task]")].map((row) => row.dataset.task));
    const kept = [...before.values()].filter((row) => row.dataset.raFeed && !listed.has(row.dataset.task));
    if (kept.length) fresh.content.querySelector(".ra-empty")?.remove();
    this.tbody.replaceChildren(...kept, ...fresh.content.childNodes);
    this._trim();
    for (const { row, wasFinal } of changed) {
      const record = this._recordOf(row);
      this._dispatch(row, "progress", record, transport);
      if (isFinal(record) && !wasFinal) this._finalEvents(row, record, transport);
    }
    this.table.dispatchEvent(new CustomEvent("realtime-async:rows-refreshed", { bubbles: true, detail: { transport } }));
  }

  _fromFeed(record) {
    if (!record?.task) return;
    this._replay?.push(record);
    this.apply(record, "ws");
  }

  /** Show `record` in its row, adding the row at the top for a task not shown yet. */
  apply(record, transport) {
    let row = this._rowOf(record.task);
    const created = record.created_at == null ? "" : String(record.created_at);
    const sameRun = row && (row.dataset.created === "" || number(row.dataset.created) === number(created));
    if (row && sameRun && !(record.seq > number(row.dataset.seq))) return; // seen already
    const wasFinal = Boolean(row) && sameRun && isFinal({ state: row.dataset.state });
    if (!row) {
      row = this._newRow();
      if (!row) return;
      this.tbody.querySelector(".ra-empty")?.remove();
      row.dataset.raFeed = "1";
      this.tbody.prepend(row);
      this._trim();
    }
    this._render(row, record, created);
    this._dispatch(row, "progress", record, transport);
    if (isFinal(record) && !wasFinal) this._finalEvents(row, record, transport);
  }

  _trim() {
    while (this.tbody.rows.length > this.limit) this.tbody.rows[this.tbody.rows.length - 1].remove();
  }

  _rowOf(task) {
    for (const row of this.tbody.rows) if (row.dataset.task === task) return row;
    return null;
  }

  _newRow() {
    const row = this.template?.content?.querySelector("tr");
    return row ? row.cloneNode(true) : null;
  }

  /** The widget's display rules (display.js), as the server's row_context() renders them. */
  _render(row, record, created) {
    // As the server's row_context(): a record without a state shows as queued.
    const shown = display({ ...record, state: record.state || "queued" }, this.i18n);
    row.dataset.task = record.task;
    row.dataset.state = shown.state;
    row.dataset.seq = String(record.seq);
    row.dataset.created = created;
    // A task launched before titles existed is named by its task name.
    const title = record.title || record.task;
    this._text(row, "title", title);
    // The title links to the task's own page (its log, stages and results): data-ra-task-url, then the name.
    const link = row.querySelector('a[data-ra-field="title"]');
    if (link && this.table.dataset.raTaskUrl) {
      link.setAttribute("href", `${this.table.dataset.raTaskUrl}${encodeURIComponent(record.task)}/`);
    }
    this._text(row, "task", record.task);
    this._text(row, "state", shown.stateLabel);
    const bar = row.querySelector("progress");
    if (bar) {
      bar.setAttribute("aria-label", title);
      if (shown.indeterminate) bar.removeAttribute("value");
      else bar.value = shown.percent ?? 0;
    }
    this._text(row, "percent", shown.percentText);
    this._text(row, "message", shown.message);
    this._text(row, "stage", shown.stageText, true);
    this._text(row, "group", shown.groupText, true); // a group's parent: its parts counted, from the record
    renderResults(row.querySelector('[data-ra-field="results"]'), displayResults(record, this.i18n));
  }

  _text(row, field, text, hideEmpty = false) {
    const node = row.querySelector(`[data-ra-field="${field}"]`);
    if (!node) return;
    if (node.textContent !== text) node.textContent = text;
    if (hideEmpty && node.hidden !== !text) node.hidden = !text;
  }

  _recordOf(row) {
    const bar = row.querySelector("progress");
    const text = (field) => row.querySelector(`[data-ra-field="${field}"]`)?.textContent ?? "";
    return {
      task: row.dataset.task,
      state: row.dataset.state,
      seq: number(row.dataset.seq) ?? 0,
      percent: bar?.hasAttribute("value") ? bar.value : null,
      message: text("message"),
    };
  }

  _finalEvents(row, record, transport) {
    this._dispatch(row, "final", record, transport);
    this._dispatch(row, record.state, record, transport);
  }

  _dispatch(row, name, record, transport) {
    const detail = { task: record.task, record, transport };
    row.dispatchEvent(new CustomEvent(`realtime-async:${name}`, { bubbles: true, detail }));
  }
}

const dashboards = new WeakMap();

/** Start every dashboard table in `root` (an element or the document) not started yet. */
export function initDashboards(root = document) {
  startAll(root, SELECTOR, dashboards, (table) => new LiveDashboard(table));
}

/** The LiveDashboard of a table element, once started. */
export function dashboardFor(table) {
  return dashboards.get(table);
}

whenReady(() => initDashboards());
