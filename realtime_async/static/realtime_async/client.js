/**
 * realtime_async client: live task progress over one WebSocket, many subscriptions.
 *
 * Dependency-free ES modules (no build step) speaking protocol v1 of
 * docs/protocol.md; docs/client.md is the guide. Import everything from this
 * file: the siblings are its parts, split so that each stays readable, and
 * their paths are not a public API.
 *
 *   client.js          RealtimeAsyncClient: subscriptions, the feed, cancel; re-exports the rest
 *   socket.js          Connection: the WebSocket under it (connect, ping, reconnect, idle)
 *   protocol.js        PROTOCOL_VERSION, FINAL_STATES, DEFAULT_URL, isFinal, websocketUrl
 *   subscriptions.js   Subscription, FeedSubscription (what subscribe()/subscribeFeed() return)
 *   backoff.js         backoffDelay: the reconnect and poll retry delays
 *   poll.js            pollProgress: one task through the polling endpoint; fetchBreakdown: a group's parts
 *   log.js             LogCursor: a task's log lines, in order, with its gaps asked for
 *
 * The page scripts built on it: display.js (how a record is shown), page.js
 * (one client per page, the fallback policy), widget.js, and the dashboard's
 * dashboard.js.
 *
 *   import { RealtimeAsyncClient } from "/static/realtime_async/client.js";
 *   const client = new RealtimeAsyncClient({ url: "/ws/realtime-async/" });
 *   const sub = client.subscribe("rebuild-42", {
 *     onProgress(record) {},  // the current record first, then every newer one
 *     onFinal(record) {},     // success, failure, cancelled or lost; then the subscription ends
 *     onError(error) {},      // {code, message, task}: not_found, forbidden, limit, bad_request
 *     token: "optional watch token",
 *     seq: 17,                // optional: the last seq you saw
 *     onLog(lines, { reset, dropped }) {},  // optional: the task's log lines, history first, then live
 *     logAfter: 30,           // optional: the last log line you have (history starts after it)
 *   });
 *   const feed = client.subscribeFeed({ onProgress(record) {}, onError(error) {}, onSubscribed() {} });
 *   await client.cancel("rebuild-42");  // resolved once sent; "cancelled" follows as progress
 *   sub.unsubscribe(); feed.unsubscribe(); client.close();
 *
 * The socket opens on the first subscription, reconnects with exponential
 * backoff and jitter, and resubscribes every task with the last seq it saw
 * (and the feed), so nothing is missed and nothing is delivered twice or out
 * of order.
 */

import { DEFAULT_URL, PROTOCOL_VERSION, isFinal, websocketUrl } from "./protocol.js";
import { Connection } from "./socket.js";
import { LogCursor } from "./log.js";
import { FeedMemory, FeedSubscription, Subscription } from "./subscriptions.js";

export { backoffDelay } from "./backoff.js";
export { LogCursor } from "./log.js";
export { fetchBreakdown, pollProgress } from "./poll.js";
export { DEFAULT_URL, FINAL_STATES, PROTOCOL_VERSION, isFinal, websocketUrl } from "./protocol.js";
export { FeedSubscription, Subscription } from "./subscriptions.js";

/**
 * A shared WebSocket to the multi-subscription endpoint.
 *
 * It is an EventTarget: "status" events carry `{status, failures}` in `detail`,
 * where status is "idle", "connecting", "open", "reconnecting", "unavailable"
 * (no WebSocket in this browser) or "closed"; `failures` counts the
 * connections in a row that ended before the server said anything. "error"
 * events carry server errors that name no task.
 */
export class RealtimeAsyncClient extends EventTarget {
  constructor({
    url = DEFAULT_URL,
    WebSocket: Socket = globalThis.WebSocket,
    backoff = {},
    connectTimeout = 5000,
    pingInterval = 25000,
    pongTimeout = 10000,
    idleTimeout = 10000,
    stableAfter = 5000,
  } = {}) {
    super();
    this.url = websocketUrl(url);
    this.options = { connectTimeout, pingInterval, pongTimeout, idleTimeout, stableAfter };
    this.backoff = { initial: 500, max: 30000, factor: 2, ...backoff };
    this._tasks = new Map(); // task -> {subs, seq, token, record, delivered}
    this._feeds = new Set(); // FeedSubscriptions; the server holds one feed per connection for all of them
    this._feedSeen = new FeedMemory(); // what the feed delivered last of each task
    this._feedPing = null; // id of the ping sent after subscribe_feed: its pong confirms the feed
    this._feedConfirmed = false;
    this._cancels = new Map(); // id of the ping sent after a cancel -> task; errors before its pong are the cancel's
    this._closed = false;
    this._connection = new Connection(
      {
        wanted: () => this._wanted(),
        opened: () => this._opened(),
        received: (message) => this._received(message),
        dropped: () => this._dropped(),
        statusChanged: (status) => {
          this.dispatchEvent(new CustomEvent("status", { detail: { status, failures: this.failures } }));
        },
      },
      { url: this.url, Socket, options: this.options, backoff: this.backoff },
    );
  }

  /** "idle", "connecting", "open", "reconnecting", "unavailable" or "closed". */
  get status() {
    return this._connection.status;
  }

  /** Connections in a row that ended before the server said anything. */
  get failures() {
    return this._connection.failures;
  }

  /** Whether any connection of this client ever worked. */
  get everHeard() {
    return this._connection.everHeard;
  }

  /**
   * Watch `task`. `seq` is the last seq the caller saw (the server still sends
   * the current record once); `token` is a watch token for users without a session.
   * With `onLog`, the task's log lines after `logAfter` (0: all it keeps) come
   * first, then each new line, in order, across reconnects.
   */
  subscribe(task, { onProgress, onFinal, onError, onLog, token, seq, logAfter } = {}) {
    if (this._closed) throw new Error("RealtimeAsyncClient: subscribe() after close().");
    if (typeof task !== "string" || !task) throw new TypeError("RealtimeAsyncClient: task must be a non-empty string.");
    const sub = new Subscription(this, task, { onProgress, onFinal, onError, onLog });
    let entry = this._tasks.get(task);
    if (!entry) {
      entry = { subs: new Set(), seq: Number(seq) || 0, token: token || undefined, record: null, delivered: false };
      entry.log = onLog ? new LogCursor(logAfter) : null;
      this._tasks.set(task, entry);
      this._sendSubscribe(task, entry);
    } else {
      entry.token ||= token || undefined;
      // A later watcher of a task already followed gets its latest record (and the log lines held) at once.
      if (entry.record) queueMicrotask(() => sub._deliver(entry.record));
      if (onLog && entry.log) {
        queueMicrotask(() => sub._logged(entry.log.lines, { reset: false, dropped: entry.log.dropped }));
      } else if (onLog) {
        entry.log = new LogCursor(logAfter);
        this._askLog(task, entry);
      }
    }
    entry.subs.add(sub);
    this._connection.connect();
    return sub;
  }

  /**
   * Follow every task the user may see: their own, every task for staff
   * (protocol "subscribe_feed"). There is no snapshot: render the current list
   * yourself, and refresh it in `onSubscribed`, which runs each time the server
   * took the feed (the first time, and after every reconnect, since what
   * changed while the socket was down is not replayed). `onProgress(record)`
   * gets each new state once, in order per task; `onError(error)` gets a
   * refusal (`not_found` for anonymous users; the feed then ends) and the
   * errors of `cancel()` (with `action: "cancel"`; the feed goes on).
   */
  subscribeFeed({ onProgress, onError, onSubscribed } = {}) {
    if (this._closed) throw new Error("RealtimeAsyncClient: subscribeFeed() after close().");
    const feed = new FeedSubscription(this, { onProgress, onError, onSubscribed });
    this._feeds.add(feed);
    if (this._feeds.size === 1) this._sendFeed();
    else if (this._feedConfirmed) queueMicrotask(() => feed._subscribed());
    this._connection.connect();
    return feed;
  }

  /**
   * Ask the server to cancel `task` (protocol "cancel"). Resolves once the
   * message is sent; rejects at once (`error.code === "not_connected"`) when the
   * socket is not open, so the caller can POST to the cancel endpoint instead.
   * Acceptance is silent: the `cancelled` state follows as progress. A refusal
   * (`not_found`, `forbidden`) goes, with `action: "cancel"`, to `onError` of
   * the task's subscriptions and of the feed, which all go on; with none, to
   * the client's "error" event.
   */
  cancel(task) {
    if (typeof task !== "string" || !task) {
      return Promise.reject(new TypeError("RealtimeAsyncClient: task must be a non-empty string."));
    }
    if (this._closed || !this._connection.isOpen) {
      const error = new Error("RealtimeAsyncClient: not connected; cancel over HTTP instead.");
      error.code = "not_connected";
      return Promise.reject(error);
    }
    // The server answers messages in order: an error for `task` before the pong of this ping is the cancel's.
    const id = `cancel-${this._connection.nextId()}`;
    try {
      this._connection.send({ v: PROTOCOL_VERSION, type: "cancel", task });
      this._connection.send({ v: PROTOCOL_VERSION, type: "ping", id });
    } catch (error) {
      return Promise.reject(error);
    }
    this._cancels.set(id, task);
    return Promise.resolve();
  }

  /** Close the socket and drop every subscription; the client cannot be used again. */
  close() {
    if (this._closed) return;
    this._closed = true;
    for (const entry of this._tasks.values()) for (const sub of entry.subs) sub.active = false;
    for (const feed of this._feeds) feed.active = false;
    this._tasks.clear();
    this._feeds.clear();
    this._feedSeen.clear();
    this._connection.close();
  }

  // -- internals ------------------------------------------------------------

  _remove(sub) {
    const entry = this._tasks.get(sub.task);
    if (!entry || !entry.subs.delete(sub) || entry.subs.size) return;
    this._tasks.delete(sub.task);
    this._send({ v: PROTOCOL_VERSION, type: "unsubscribe", task: sub.task });
    this._maybeIdle();
  }

  _removeFeed(feed) {
    if (!this._feeds.delete(feed) || this._feeds.size) return;
    this._send({ v: PROTOCOL_VERSION, type: "unsubscribe_feed" });
    this._feedPing = null;
    this._feedConfirmed = false;
    this._feedSeen.clear();
    this._maybeIdle();
  }

  _failFeeds(error) {
    const feeds = [...this._feeds];
    this._feeds.clear();
    this._feedPing = null;
    this._feedConfirmed = false;
    this._feedSeen.clear();
    for (const feed of feeds) feed._fail(error);
    this._maybeIdle();
  }

  _sendFeed() {
    if (!this._connection.isOpen) return; // sent on open
    this._send({ v: PROTOCOL_VERSION, type: "subscribe_feed" });
    // The feed has no snapshot; the pong says the server took it (and that this connection works).
    this._feedPing = `feed-${this._connection.nextId()}`;
    this._send({ v: PROTOCOL_VERSION, type: "ping", id: this._feedPing });
  }

  /** Whether anything needs the socket: a task subscription or the feed. */
  _wanted() {
    return this._tasks.size > 0 || this._feeds.size > 0;
  }

  _maybeIdle() {
    if (!this._wanted()) this._connection.idleSoon();
  }

  // A (re)opened socket: everything followed is asked for again, each task from the last seq seen.
  _opened() {
    for (const [task, entry] of this._tasks) this._sendSubscribe(task, entry);
    if (this._feeds.size) this._sendFeed();
  }

  // The socket went: what was waiting on its answers will never hear them.
  _dropped() {
    this._feedPing = null;
    this._feedConfirmed = false;
    this._cancels.clear();
  }

  _received(message) {
    if (message.type === "progress") this._progress(message.task, message.data);
    else if (message.type === "log") this._history(message);
    else if (message.type === "error") this._error(message);
    else if (message.type === "pong") this._pong(message.id);
  }

  _pong(id) {
    if (id != null && id === this._feedPing) {
      this._feedPing = null;
      this._feedConfirmed = true;
      for (const feed of [...this._feeds]) feed._subscribed();
    } else {
      this._cancels.delete(id); // accepted: its cancelled state follows as progress
    }
  }

  _progress(task, record) {
    if (typeof task !== "string" || !record || typeof record.seq !== "number") return;
    if (this._feeds.size && this._feedSeen.isNew(task, record)) {
      for (const feed of [...this._feeds]) feed._deliver(record);
    }
    const entry = this._tasks.get(task);
    if (!entry) return;
    // Progress is a state: an older or repeated record adds nothing. The
    // current record is still delivered once to a new subscriber.
    if (record.seq < entry.seq || (record.seq === entry.seq && entry.delivered)) return;
    entry.seq = record.seq;
    entry.record = record;
    entry.delivered = true;
    for (const sub of [...entry.subs]) sub._deliver(record);
    if (entry.log) {
      const step = entry.log.live(record.log);
      this._logged(entry, step);
      if (step.ask) this._askLog(task, entry, false);
    }
    // A subscriber may have unsubscribed from its callback, which already let the task go.
    // The log's last lines, when they are still asked for, end it instead (see _history).
    if (isFinal(record) && this._tasks.get(task) === entry && !entry.log?.asked) this._let(task);
  }

  _history(message) {
    const entry = this._tasks.get(message.task);
    if (!entry?.log) return;
    this._logged(entry, entry.log.history(message));
    if (isFinal(entry.record) && this._tasks.get(message.task) === entry) this._let(message.task);
  }

  _logged(entry, { lines, reset }) {
    if (!lines.length && !reset) return;
    for (const sub of [...entry.subs]) sub._logged(lines, { reset, dropped: entry.log.dropped });
  }

  // The lines after the cursor; after a final state the server checks access again, hence the token.
  _askLog(task, entry, mark = true) {
    if (mark) entry.log.asked = true;
    const message = { v: PROTOCOL_VERSION, type: "log", task, after: entry.log.last };
    if (entry.token && isFinal(entry.record)) message.token = entry.token;
    this._send(message);
  }

  _let(task) {
    this._tasks.delete(task);
    this._send({ v: PROTOCOL_VERSION, type: "unsubscribe", task });
    this._maybeIdle();
  }

  _error(message) {
    const error = { code: message.code, message: message.message, task: message.task };
    if (message.task == null) {
      // Errors naming no task: the feed's refusal (not_found for anonymous users, or an answer to a pending subscribe_feed).
      if (this._feeds.size && (this._feedPing || error.code === "not_found")) this._failFeeds(error);
      else this.dispatchEvent(new CustomEvent("error", { detail: error }));
      return;
    }
    let cancelId;
    for (const [id, task] of this._cancels) {
      if (task === message.task) {
        cancelId = id;
        break;
      }
    }
    // A subscribe is never answered "forbidden": that is always a refused cancel.
    if (cancelId !== undefined || error.code === "forbidden") {
      this._cancels.delete(cancelId);
      this._cancelRefused({ ...error, action: "cancel" });
      return;
    }
    const entry = this._tasks.get(message.task);
    if (!entry) {
      this.dispatchEvent(new CustomEvent("error", { detail: error }));
      return;
    }
    // not_found, forbidden, limit, bad_request: asking again would get the same answer.
    this._tasks.delete(message.task);
    for (const sub of [...entry.subs]) sub._fail(error);
    this._maybeIdle();
  }

  _cancelRefused(error) {
    const entry = this._tasks.get(error.task);
    const targets = [...(entry ? entry.subs : []), ...this._feeds];
    if (!targets.length) this.dispatchEvent(new CustomEvent("error", { detail: error }));
    for (const target of targets) target._notify(error);
  }

  _sendSubscribe(task, entry) {
    const message = { v: PROTOCOL_VERSION, type: "subscribe", task };
    if (entry.seq) message.seq = entry.seq;
    if (entry.token) message.token = entry.token;
    if (entry.log) {
      message.log_after = entry.log.last; // the history comes after the current record
      entry.log.asked = true;
    }
    this._send(message);
  }

  // Not open: the subscriptions are sent again on open, nothing else is worth queueing.
  _send(message) {
    this._connection.send(message);
  }
}
