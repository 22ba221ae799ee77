/**
 * The event stream under RealtimeAsyncClient: one EventSource on the events
 * endpoint (docs/protocol.md, "Server-Sent Events") for every task the client
 * follows, with their watch tokens. Its events are the WebSocket's messages,
 * so the client routes both alike. The browser reconnects a dropped stream by
 * itself (sending Last-Event-ID, so the server resumes); a refused one (any
 * status but 200: the EventSource gives up) is opened again here, with
 * backoff. A change in the set of tasks reopens it, once for a burst of
 * changes. It stays open while the page is hidden: it is push, so an idle
 * stream costs a heartbeat; shown again (or back online), a stream waiting to
 * be opened again opens at once. Not public: use RealtimeAsyncClient.
 */

import { backoffDelay } from "./backoff.js";
import { parseMessage, report } from "./protocol.js";
import { watchVisibility } from "./visibility.js";
import { NamedTimers } from "./timers.js";

// How long a change in the set of tasks waits for more before the stream is reopened.
export const REOPEN_DELAY_MS = 100;
const CLOSED = 2; // EventSource.CLOSED: it gave up and will not reconnect by itself

/** The stream's URL: `base` with task=… once per task and token=… once per watch token (the server pairs them). */
export function eventsUrl(base, tasks) {
  const url = new URL(base, globalThis.location?.href);
  for (const [task] of tasks) url.searchParams.append("task", task);
  for (const token of new Set(tasks.map(([, token]) => token).filter(Boolean))) url.searchParams.append("token", token);
  return url.href;
}

export class EventStream {
  /**
   * `owner`: {url(), tasks() ([[task, token], …]), received(message), statusChanged(status)}.
   * `backoff`: {initial, max, factor}, the waits before opening a refused stream again.
   */
  constructor(owner, { Source, backoff, reopenDelay = REOPEN_DELAY_MS }) {
    this.status = "idle";
    this.failures = 0; // streams in a row that ended before the server said anything
    this.everHeard = false;
    this.backoff = backoff;
    this._owner = owner;
    this._Source = Source;
    this._reopenDelay = reopenDelay;
    this._source = null;
    this._heard = false; // the current stream (or the browser's reconnect of it) delivered
    this._retries = 0;
    this._timers = new NamedTimers();
    this._running = false;
    this._unwatch = null;
    this._onOnline = () => this._openNow();
  }

  /** Open the stream (after the current task, so that the tasks subscribed together share one), unless it runs. */
  start() {
    if (this._running || this.status === "closed") return;
    this._running = true;
    globalThis.addEventListener?.("online", this._onOnline);
    this._unwatch = watchVisibility((hidden) => {
      if (!hidden) this._openNow();
    });
    this._setStatus("connecting");
    this._timers.set("open", 0, () => this._open());
  }

  /** Close the stream and forget any retry; start() opens it again. */
  stop() {
    if (this._halt()) this._setStatus("idle");
  }

  /** The set of tasks (or a token) changed: reopen, once for a burst of changes. */
  changed() {
    if (!this._running || this._timers.has("open") || this._timers.has("retry")) return; // reads them
    this._timers.set("open", this._reopenDelay, () => this._open());
  }

  close() {
    this._halt();
    this._setStatus("closed");
  }

  // Whether it ran: it no longer does.
  _halt() {
    if (!this._running) return false;
    this._running = false;
    globalThis.removeEventListener?.("online", this._onOnline);
    this._unwatch?.();
    this._unwatch = null;
    this._timers.clearAll();
    this._drop();
    return true;
  }

  _open() {
    this._drop();
    const tasks = this._owner.tasks();
    const base = this._owner.url();
    if (!tasks.length || !base) {
      this._setStatus("idle"); // nothing to follow: changed() opens it again
      return;
    }
    let source;
    try {
      source = new this._Source(eventsUrl(base, tasks));
    } catch (error) {
      report(error); // a malformed URL; a CSP refusal comes as an error event
      this._setStatus("unavailable");
      return;
    }
    this._source = source;
    source.onopen = () => this._opened(source);
    source.onmessage = (event) => this._received(source, event.data);
    source.onerror = () => this._failed(source);
    // Reopened for new tasks: still open as far as anyone can tell, unless it fails.
    if (this.status !== "open" && this.status !== "reconnecting") this._setStatus("connecting");
  }

  _opened(source) {
    if (source !== this._source) return;
    // A stream that worked before may resume with nothing to say (Last-Event-ID): being taken back is its answer.
    if (this.everHeard) this._hear();
    this._setStatus("open");
  }

  _received(source, data) {
    if (source !== this._source) return;
    const message = parseMessage(data);
    if (!message) return;
    if (!this._heard) {
      this._hear();
      this.everHeard = true;
      if (this.status !== "open") this._setStatus("open");
    }
    this._owner.received(message);
  }

  _hear() {
    this._heard = true;
    this.failures = 0;
    this._retries = 0;
  }

  _failed(source) {
    if (source !== this._source) return;
    if (!this._heard) this.failures += 1;
    this._heard = false;
    if (source.readyState === CLOSED) {
      // Refused (429, 503, a proxy's page...): EventSource gave up, so try again here, later.
      this._drop();
      this._timers.set("retry", backoffDelay(this._retries++, this.backoff), () => this._open());
    }
    // Otherwise the browser reconnects by itself, after the server's `retry:`.
    this._setStatus("reconnecting");
  }

  // Shown again or back online: a stream waiting to be opened again need not wait.
  _openNow() {
    if (!this._timers.has("retry")) return;
    this._timers.clear("retry");
    this._open();
  }

  _drop() {
    const source = this._source;
    this._source = null;
    if (!source) return;
    source.onopen = source.onmessage = source.onerror = null;
    source.close();
  }

  _setStatus(status) {
    this.status = status;
    this._owner.statusChanged(status);
  }
}
