/**
 * The live "my tasks" page: keeps the server-rendered table [data-ra-dashboard] current.
 * Loaded as an ES module; no dependencies beyond realtime_async's client.js.
 *
 * - WebSocket: follows the feed of every task the user may see (`subscribeFeed`),
 *   updates rows in place and adds tasks it has no row for at the top. The feed
 *   sends no snapshot, so each time the server takes the feed (first, and after
 *   every reconnect) the rows are fetched once to catch what changed before.
 * - Polling: while the socket cannot connect or keeps failing, fetches this
 *   page's rows (`HX-Request: true`) every data-ra-poll-interval ms and swaps
 *   the table body; it stops when the feed works again.
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

import { RealtimeAsyncClient, backoffDelay, isFinal } from "../realtime_async/client.js";

const SELECTOR = "[data-ra-dashboard]";
// The server takes the feed at once on a working socket; not in this long means the socket is no use.
const SUBSCRIBE_TIMEOUT_MS = 5000;

function parseJson(text) {
  try {
    return JSON.parse(text || "{}");
  } catch {
    return {};
  }
}

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
    this.i18n = parseJson(data.raI18n);
    this.client = null;
    this.feed = null;
    this.subscribed = false;
    this.polling = false;
    this.stopped = false;
    this._pollTimer = null;
    this._pollErrors = 0;
    this._refreshing = null; // the rows fetch in flight
    this._replay = null; // feed records received during that fetch, applied again after its swap
    this._onStatus = () => this._checkFallback();
  }

  start() {
    if (this.client || this.stopped) return;
    this.client = new RealtimeAsyncClient({ url: this.wsUrl });
    this.client.addEventListener("status", this._onStatus);
    this.feed = this.client.subscribeFeed({
      onProgress: (record) => this._fromFeed(record),
      onSubscribed: () => this._subscribed(),
      onError: (error) => {
        if (error.action !== "cancel") this._feedRefused();
      },
    });
    this._subscribeTimer = setTimeout(() => {
      if (!this.subscribed) this._startPolling();
    }, SUBSCRIBE_TIMEOUT_MS);
    this._checkFallback();
  }

  /** Stop following: close the socket, stop polling. */
  stop() {
    this.stopped = true;
    clearTimeout(this._subscribeTimer);
    this._stopPolling();
    this.client?.removeEventListener("status", this._onStatus);
    this.client?.close();
  }

  _subscribed() {
    this.subscribed = true;
    clearTimeout(this._subscribeTimer);
    this._stopPolling();
    this.table.dataset.raVia = "ws";
    // No snapshot on the feed: fetch what changed between the page's rendering (or the outage) and now.
    this.refresh().catch(() => {});
  }

  _feedRefused() {
    // Asking again would be refused again: polling carries on for good.
    this.subscribed = false;
    this.client?.removeEventListener("status", this._onStatus);
    this._startPolling();
  }

  _checkFallback() {
    const client = this.client;
    if (this.stopped || this.polling || !client) return;
    if (client.status === "reconnecting" || client.status === "unavailable") this.subscribed = false;
    // Cannot connect (first try failed, or no WebSocket at all), or keeps failing after it once worked.
    const limit = client.everHeard ? 2 : 1;
    if (client.status === "unavailable" || client.failures >= limit) this._startPolling();
  }

  _startPolling() {
    if (this.stopped || this.polling || !this.pollUrl) return;
    this.polling = true;
    this._pollErrors = 0;
    this.table.dataset.raVia = "poll";
    this._poll();
  }

  _stopPolling() {
    this.polling = false;
    clearTimeout(this._pollTimer);
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
    this._pollTimer = setTimeout(() => this._poll(), delay);
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

  /** The same display rules as the server's row_context(). */
  _render(row, record, created) {
    const state = record.state || "queued";
    const percent = typeof record.percent === "number" ? Math.min(100, Math.max(0, record.percent)) : null;
    row.dataset.task = record.task;
    row.dataset.state = state;
    row.dataset.seq = String(record.seq);
    row.dataset.created = created;
    this._text(row, "task", record.task);
    this._text(row, "state", this.i18n.states?.[state] ?? state);
    const bar = row.querySelector("progress");
    if (bar) {
      bar.setAttribute("aria-label", record.task);
      if (percent === null && state === "running") bar.removeAttribute("value");
      else bar.value = percent ?? 0;
    }
    this._text(row, "percent", percent === null ? "" : `${Math.floor(percent)}%`);
    const failed = state === "failure" || state === "lost";
    this._text(row, "message", failed ? record.error || this.i18n.failed || "" : (record.message ?? ""));
  }

  _text(row, field, text) {
    const node = row.querySelector(`[data-ra-field="${field}"]`);
    if (node && node.textContent !== text) node.textContent = text;
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

/** Start every dashboard table in `root` not started yet. */
export function initDashboards(root = document) {
  for (const table of root.querySelectorAll(SELECTOR)) {
    if (dashboards.has(table)) continue;
    const dashboard = new LiveDashboard(table);
    dashboards.set(table, dashboard);
    dashboard.start();
  }
}

/** The LiveDashboard of a table element, once started. */
export function dashboardFor(table) {
  return dashboards.get(table);
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => initDashboards(), { once: true });
  else initDashboards();
}
