/**
 * The {% live_progress %} widget: brings server-rendered [data-ra-widget]
 * elements to life. Loaded once per page as an ES module; no dependencies.
 *
 * Transport ("data-ra-transport"):
 *   "auto"  through the page's one shared RealtimeAsyncClient, which climbs down
 *           from the WebSocket to Server-Sent Events (data-ra-events-url) to
 *           polling while the better one cannot connect or keeps failing, and
 *           back up when it works again (page.js, ladder.js); the widget polls
 *           by itself a task the connection refuses (subscription limit).
 *   "ws"    WebSocket only.   "sse"  Server-Sent Events only.   "poll"  polling only.
 * data-ra-via names the transport in use: "ws", "sse" or "poll".
 *
 * Polling is fetch() + JSON (pollProgress in client.js), not htmx swapping the
 * fragment: one code path renders every record whichever transport brought
 * it, so events fire the same way and a stale record from one transport can
 * never overwrite a newer one from the other (both go through the seq check
 * below); it needs no htmx on the page and none of htmx's inline styles, so
 * it works under a strict CSP; and its conditional requests make an
 * unchanged poll cost a 304. Pages using htmx can still poll the fragment
 * themselves (docs/client.md).
 *
 * Events, dispatched on the widget element and bubbling, with
 * detail = {task, record, transport} (transport: "ws", "sse" or "poll"):
 *   realtime-async:progress   every new state (not the server-rendered one)
 *   realtime-async:final      a final state, followed by
 *   realtime-async:success | :failure | :cancelled | :lost
 *   realtime-async:error      detail = {task, error}: the task is not (or no longer) visible
 *   realtime-async:transport  detail = {task, transport, previous}: the transport in use changed
 *   realtime-async:cancel-requested   detail = {task, transport}: the server took the cancel
 *                                     ("ws" or "http"); the final events follow it, even
 *                                     when the end arrived before the server's answer
 *   realtime-async:cancel-failed      detail = {task, error}: it refused it (forbidden,
 *                                     not_found) or could not be reached
 *
 * Cancel button ([data-ra-cancel], rendered only for viewers who may cancel):
 * cancel.js's. It cancels over the page's WebSocket when this widget follows
 * the task through it (not over SSE or polling, which cannot carry it), else
 * POSTs to data-ra-cancel-url with the CSRF token (data-ra-csrf, else the
 * csrftoken cookie). It hides once the task is final.
 *
 * Stepper ([data-ra-field="stages"]): stepper.js's, redrawn from each record's
 * stages, created when a task's first stages arrive after the server rendered none.
 *
 * Breakdown ([data-ra-field="breakdown"], breakdown=True on a group's parent):
 * breakdown.js's, told of each new record; it re-fetches the parts (?parts=1).
 *
 * Log ([data-ra-field="log"], a <details> hidden until the first line):
 * logview.js's. The widget asks for the task's log history when it starts
 * (also for a task rendered final, whose log stays readable as long as its
 * record), then gets each new line; across reconnects and the polling
 * fallback alike, no line is shown twice.
 *
 * What a record looks like is display.js's (shared with the dashboard); the
 * page's one client and the transport policy are page.js's.
 */

import { BreakdownView } from "./breakdown.js";
import { CancelButton } from "./cancel.js";
import { isFinal, pollProgress } from "./client.js";
import { display } from "./display.js";
import { LogView } from "./logview.js";
import { readJson, sharedClient, startAll, whenReady } from "./page.js";
import { displayResults, renderResults } from "./results.js";
import { renderStages } from "./stepper.js";

export { formatEta } from "./display.js";
export { sharedClient } from "./page.js";

const SELECTOR = "[data-ra-widget]";

const widgets = new WeakMap(); // element -> LiveProgress

export class LiveProgress {
  constructor(element) {
    const data = element.dataset;
    this.element = element;
    this.task = data.raTask;
    this.transport = ["ws", "sse", "poll"].includes(data.raTransport) ? data.raTransport : "auto";
    this.seq = Number(data.raSeq) || 0;
    this.state = data.raState;
    this.pollUrl = data.raPollUrl || "";
    this.pollInterval = Number(data.raPollInterval) || 1000;
    this.wsUrl = data.raWsUrl || undefined;
    this.eventsUrl = data.raEventsUrl || undefined;
    this.probeInterval = Number(data.raProbeInterval) || undefined; // ms before a better transport is tried again
    this.token = data.raToken || undefined;
    this.i18n = readJson(data.raI18n);
    this.done = false;
    this.client = null;
    this.subscription = null;
    this.poller = null; // this widget's own polling: transport "poll", or a task the connection refused
    this._onStatus = () => this._clientStatus();
    this.cancelButton = new CancelButton(this);
    this.log = new LogView(element, this.i18n);
    this._onLog = this.log.enabled ? (lines, info) => this.log.add(lines, info) : undefined;
    this.breakdown = new BreakdownView(element, { url: this.pollUrl, i18n: this.i18n });
  }

  start() {
    if (this.done || this.client || this.poller) return;
    this.cancelButton.start();
    if (isFinal({ state: this.state })) {
      this.done = true; // rendered final by the server: nothing more will happen, but its log can be read
      if (this._onLog) this._finalLog();
      return;
    }
    if (this.transport === "poll") {
      this._startPolling();
      return;
    }
    this.client = this._sharedClient();
    this.client.addEventListener("status", this._onStatus);
    this.subscription = this.client.subscribe(this.task, {
      seq: this.seq,
      token: this.token,
      pollUrl: this.pollUrl || undefined,
      onProgress: (record) => this._fromClient(record),
      onError: (error) => this._clientError(error),
      onLog: this._onLog,
    });
    if (this.client.status === "unavailable") {
      this._error({ code: "unavailable", message: "Live updates are not available in this browser." });
    }
  }

  _sharedClient() {
    const { transport, eventsUrl, probeInterval } = this;
    return sharedClient(this.wsUrl, { transport, eventsUrl, probeInterval, pollInterval: this.pollInterval });
  }

  /**
   * Ask the server to cancel the task: over the WebSocket when this widget
   * follows the task through it, else by POST to the cancel endpoint.
   */
  cancel() {
    return this.cancelButton.cancel();
  }

  /** Stop following the task (the element left the page, or you are done with it). */
  stop() {
    this._settle();
    this.subscription?.unsubscribe();
    this.log.stop();
    this.breakdown.stop();
  }

  // The task is final: no more states, but the subscription stays until the client
  // ends it, after the log's last lines (see client.js).
  _settle() {
    this.done = true;
    this.client?.removeEventListener("status", this._onStatus);
    this.poller?.stop();
    this.poller = null;
  }

  _finalLog() {
    const onLog = this._onLog;
    if (this.transport === "poll") {
      if (this.pollUrl) pollProgress(this.pollUrl, { task: this.task, seq: this.seq, onLog });
      return;
    }
    const pollUrl = this.pollUrl || undefined;
    this.subscription = this._sharedClient().subscribe(this.task, { token: this.token, pollUrl, onLog });
  }

  _fromClient(record) {
    if (this.poller) {
      // The client delivers (again): it alone carries on.
      this.poller.stop();
      this.poller = null;
    }
    this._apply(record, this.client.transport);
  }

  // The client changed transport: say so, once this widget shows what came through it.
  _clientStatus() {
    const { transport } = this.client;
    if (this.done || this.poller || !this.subscription?.active || !transport) return;
    if (this.element.dataset.raVia) this._via(transport);
  }

  _clientError(error) {
    if (this.done) return;
    if (error.action === "cancel") {
      this.cancelButton.refused(error); // the subscription goes on
      return;
    }
    if (error.code === "limit" && this.transport === "auto") {
      this._startPolling(); // this connection has too many subscriptions; the endpoint has none
      return;
    }
    this._error(error);
  }

  _startPolling() {
    if (this.done || this.poller || !this.pollUrl) return;
    this._via("poll");
    this.poller = pollProgress(this.pollUrl, {
      task: this.task,
      interval: this.pollInterval,
      seq: this.seq,
      onProgress: (record) => this._apply(record, "poll"),
      onError: (error) => this._error(error),
      onLog: this._onLog,
      logAfter: this.log.last,
    });
  }

  _apply(record, transport) {
    if (this.done || !record) return;
    this._via(transport); // the transport in use, even when what it brought is not new
    if (!(record.seq > this.seq)) return; // seen already, from any transport
    this.seq = record.seq;
    this.state = record.state;
    this.render(record);
    this.breakdown.changed(record);
    const detail = { task: this.task, record, transport };
    this._dispatch("progress", detail);
    if (isFinal(record)) {
      this._settle();
      const tell = () => {
        this._dispatch("final", detail);
        this._dispatch(record.state, detail);
      };
      // A Cancel click still on its way (a poll can bring its end before the POST's answer) is told
      // first, so cancel-requested always comes before the final events.
      const pending = this.cancelButton.pending;
      if (pending) pending.then(tell);
      else tell();
    }
  }

  _error(error) {
    if (this.done) return;
    this.stop();
    this.state = "unavailable";
    this.render(null, error);
    this._dispatch("error", { task: this.task, error });
  }

  _via(transport) {
    const previous = this.element.dataset.raVia ?? null;
    if (!transport || previous === transport) return;
    this.element.dataset.raVia = transport;
    this._dispatch("transport", { task: this.task, transport, previous });
  }

  _dispatch(name, detail) {
    this.element.dispatchEvent(new CustomEvent(`realtime-async:${name}`, { bubbles: true, detail }));
  }

  /** Show `record` (null: the task cannot be shown); the markup is the server's, only values change. */
  render(record, error = null) {
    const el = this.element;
    const shown = display(record, this.i18n);
    const { state, percent } = shown;
    for (const name of [...el.classList]) {
      if (name.startsWith("ra-progress--")) el.classList.remove(name);
    }
    el.classList.add(`ra-progress--${state}`);
    el.classList.toggle("ra-progress--indeterminate", shown.indeterminate);
    el.dataset.raState = state;
    el.dataset.raSeq = String(record ? record.seq : this.seq);

    this._text("state", shown.stateLabel);
    const bar = el.querySelector('[role="progressbar"]');
    const fill = el.querySelector(".ra-progress__fill");
    if (bar) {
      if (percent === null) {
        bar.removeAttribute("aria-valuenow");
        bar.removeAttribute("aria-valuetext");
      } else {
        bar.setAttribute("aria-valuenow", shown.percentValue);
        bar.setAttribute("aria-valuetext", shown.percentText);
      }
    }
    // An SVG attribute, not a style: nothing for a strict CSP to refuse.
    fill?.setAttribute("width", percent === null ? "0" : percent.toFixed(2));
    this._text("percent", shown.percentText);
    this._text("eta", shown.etaText);
    // A task that cannot be shown says why in the page's language: not_found as "No such task.", anything
    // else as "Live updates are not available." (the server's English reason is in the error event).
    const why = !record && error && error.code !== "not_found" ? this.i18n.no_updates || error.message || "" : "";
    this._text("message", why || shown.message, false);
    renderStages(el, shown.stages, this.i18n);
    // A succeeded task's link and download buttons (results.js), into progress.html's data-ra-field="results".
    renderResults(el.querySelector('[data-ra-field="results"]'), displayResults(record, this.i18n, this.token));
    if (!record || shown.final) this.cancelButton.hide();
  }

  _text(field, text, hideEmpty = true) {
    const node = this.element.querySelector(`[data-ra-field="${field}"]`);
    if (!node) return;
    if (node.textContent !== text) node.textContent = text; // unchanged text: no repeat for screen readers
    if (hideEmpty) node.hidden = !text;
  }
}

/** Start every widget in `root` (an element or the document) not started yet. */
export function initWidgets(root = document) {
  startAll(root, SELECTOR, widgets, (element) => new LiveProgress(element));
}

/** The LiveProgress of a widget element, once started. */
export function widgetFor(element) {
  return widgets.get(element);
}

function stopRemoved(node) {
  if (node.nodeType !== 1 || node.isConnected) return;
  const found = node.matches(SELECTOR) ? [node] : [];
  found.push(...node.querySelectorAll(SELECTOR));
  for (const element of found) widgets.get(element)?.stop();
}

function watchDocument() {
  initWidgets(document);
  // Widgets added later (htmx swaps, client-side rendering) start by themselves; removed ones let go.
  new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) if (node.nodeType === 1) initWidgets(node);
      for (const node of mutation.removedNodes) stopRemoved(node);
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
}

whenReady(watchDocument);
