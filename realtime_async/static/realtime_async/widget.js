/**
 * The {% live_progress %} widget: brings server-rendered [data-ra-widget]
 * elements to life. Loaded once per page as an ES module; no dependencies.
 *
 * Transport ("data-ra-transport"):
 *   "auto"  WebSocket through the page's one shared RealtimeAsyncClient; polls
 *           while the socket cannot connect, keeps failing, or refuses the task
 *           (subscription limit), and stops polling when the socket delivers again.
 *   "ws"    WebSocket only.   "poll"  polling only.
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
 * detail = {task, record, transport}:
 *   realtime-async:progress   every new state (not the server-rendered one)
 *   realtime-async:final      a final state, followed by
 *   realtime-async:success | :failure | :cancelled | :lost
 *   realtime-async:error      detail = {task, error}: the task is not (or no longer) visible
 *   realtime-async:cancel-requested   detail = {task, transport}: the server took the cancel
 *                                     ("ws" or "http"); the cancelled state follows
 *   realtime-async:cancel-failed      detail = {task, error}: it refused it (forbidden,
 *                                     not_found) or could not be reached
 *
 * Cancel button ([data-ra-cancel], rendered only for viewers who may cancel):
 * cancels over the page's WebSocket when this widget follows the task through
 * it, else POSTs to data-ra-cancel-url with the CSRF token (data-ra-csrf, else
 * the csrftoken cookie). It hides once the task is final.
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
 * page's one client and the fallback rule are page.js's.
 */

import { BreakdownView } from "./breakdown.js";
import { isFinal, pollProgress } from "./client.js";
import { display } from "./display.js";
import { LogView } from "./logview.js";
import { readJson, sharedClient, startAll, watchFallback, whenReady } from "./page.js";
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
    this.transport = ["ws", "poll"].includes(data.raTransport) ? data.raTransport : "auto";
    this.seq = Number(data.raSeq) || 0;
    this.state = data.raState;
    this.pollUrl = data.raPollUrl || "";
    this.pollInterval = Number(data.raPollInterval) || 1000;
    this.wsUrl = data.raWsUrl || undefined;
    this.token = data.raToken || undefined;
    this.i18n = readJson(data.raI18n);
    this.done = false;
    this.client = null;
    this.subscription = null;
    this.poller = null;
    this._fallback = null; // page.js's watch over the socket, in "auto"
    this.cancelButton = element.querySelector("[data-ra-cancel]");
    this._cancelling = false;
    this.log = new LogView(element, this.i18n);
    this._onLog = this.log.enabled ? (lines, info) => this.log.add(lines, info) : undefined;
    this.breakdown = new BreakdownView(element, { url: this.pollUrl, i18n: this.i18n });
  }

  start() {
    if (this.done || this.client || this.poller) return;
    this.cancelButton?.addEventListener("click", () => this.cancel());
    if (isFinal({ state: this.state })) {
      this.done = true; // rendered final by the server: nothing more will happen, but its log can be read
      if (this._onLog) this._finalLog();
      return;
    }
    if (this.transport === "poll") {
      this._startPolling();
      return;
    }
    this.client = sharedClient(this.wsUrl);
    this.subscription = this.client.subscribe(this.task, {
      seq: this.seq,
      token: this.token,
      onProgress: (record) => this._fromSocket(record),
      onError: (error) => this._socketError(error),
      onLog: this._onLog,
    });
    if (this.transport === "auto") {
      this._fallback = watchFallback(this.client, () => this._startPolling());
    } else if (this.client.status === "unavailable") {
      this._error({ code: "unavailable", message: "WebSocket is not available." });
    }
  }

  /**
   * Ask the server to cancel the task: over the WebSocket when this widget
   * follows the task through it, else by POST to the cancel endpoint.
   */
  async cancel() {
    if (this.done || this._cancelling) return;
    this._cancelling = true;
    this._cancelBusy(true);
    this._notice("");
    try {
      let transport = "http";
      if (this.subscription?.active && this.client?.status === "open" && !this.poller) {
        try {
          await this.client.cancel(this.task);
          transport = "ws";
        } catch {
          await this._cancelOverHttp(); // the socket went away in between
        }
      } else {
        await this._cancelOverHttp();
      }
      this._dispatch("cancel-requested", { task: this.task, transport });
    } catch (error) {
      this._cancelRefused(error);
    }
  }

  async _cancelOverHttp() {
    const url = this.cancelButton?.dataset.raCancelUrl;
    if (!url) throw { code: "unavailable", task: this.task, message: "No cancel endpoint." };
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json", "X-CSRFToken": this._csrfToken() },
      });
    } catch (error) {
      throw { code: "network", task: this.task, message: String(error) };
    }
    if (response.ok) return;
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Django's CSRF failure page, a proxy's error page: not an answer of the endpoint
    }
    const code = body?.type === "error" && body.code ? body.code : `http_${response.status}`;
    throw { code, task: this.task, message: body?.message || `HTTP ${response.status}` };
  }

  _csrfToken() {
    const token = this.cancelButton?.dataset.raCsrf;
    if (token) return token;
    const cookie = document.cookie.split(";").find((part) => part.trim().startsWith("csrftoken="));
    return cookie ? decodeURIComponent(cookie.trim().slice("csrftoken=".length)) : "";
  }

  _cancelRefused(error) {
    this._cancelling = false;
    if (this.done) return;
    // Refused for good: the button would only be refused again. Anything else may work on a retry.
    const final = error.code === "forbidden" || error.code === "not_found";
    this._cancelBusy(false, final);
    const notices = { forbidden: this.i18n.cancel_forbidden, not_found: this.i18n.unavailable };
    this._notice(notices[error.code] || this.i18n.cancel_failed);
    this._dispatch("cancel-failed", { task: this.task, error });
  }

  _cancelBusy(busy, gone = false) {
    const button = this.cancelButton;
    if (!button) return;
    if (!this._cancelText) this._cancelText = button.textContent;
    button.disabled = busy || gone;
    button.hidden = gone;
    button.textContent = busy ? this.i18n.cancelling || this._cancelText : this._cancelText;
    if (busy) button.setAttribute("aria-busy", "true");
    else button.removeAttribute("aria-busy");
  }

  _notice(text) {
    this._text("notice", text || "");
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
    this._fallback?.stop();
    this.poller?.stop();
    this.poller = null;
  }

  _finalLog() {
    const onLog = this._onLog;
    if (this.transport === "poll") {
      if (this.pollUrl) pollProgress(this.pollUrl, { task: this.task, seq: this.seq, onLog });
      return;
    }
    this.subscription = sharedClient(this.wsUrl).subscribe(this.task, { token: this.token, onLog });
  }

  _fromSocket(record) {
    this._fallback?.answered();
    if (this.poller) {
      // The socket works (again): it alone carries on.
      this.poller.stop();
      this.poller = null;
    }
    this._apply(record, "ws");
  }

  _socketError(error) {
    if (this.done) return;
    if (error.action === "cancel") {
      this._cancelRefused(error); // the subscription goes on
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
    this.element.dataset.raVia = "poll";
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
    if (this.done || !record || !(record.seq > this.seq)) return; // seen already, from either transport
    this.seq = record.seq;
    this.state = record.state;
    this.element.dataset.raVia = transport;
    this.render(record);
    this.breakdown.changed(record);
    const detail = { task: this.task, record, transport };
    this._dispatch("progress", detail);
    if (isFinal(record)) {
      this._settle();
      this._dispatch("final", detail);
      this._dispatch(record.state, detail);
    }
  }

  _error(error) {
    if (this.done) return;
    this.stop();
    this.state = "unavailable";
    this.render(null, error);
    this._dispatch("error", { task: this.task, error });
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
    if (this.cancelButton && (!record || shown.final)) {
      this.cancelButton.hidden = true;
      this.cancelButton.disabled = true;
      this._notice("");
    }
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
