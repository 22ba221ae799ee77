/**
 * realtime_async client: live task progress over one connection, many subscriptions.
 *
 * Dependency-free ES modules (no build step) speaking protocol v1 of
 * docs/protocol.md; docs/client.md is the guide. Import everything from this
 * file: the siblings are its parts, split so that each stays readable, and
 * their paths are not a public API.
 *
 *   client.js          RealtimeAsyncClient: subscriptions and their logs; re-exports the rest
 *   transports.js      the transports under it, and the ladder between them
 *   ladder.js          the ladder's policy: WebSocket, then SSE, then polling, and back up
 *   socket.js          Connection: the WebSocket (connect, ping, reconnect, idle)
 *   sse.js             EventStream: the Server-Sent Events stream (one for every task, reopened as they change)
 *   feed.js            Feeds: what only the WebSocket carries, the feed and cancel
 *   protocol.js        PROTOCOL_VERSION, FINAL_STATES, DEFAULT_URL, isFinal, websocketUrl
 *   subscriptions.js   Subscription, FeedSubscription (what subscribe()/subscribeFeed() return)
 *   backoff.js         backoffDelay: the reconnect and poll retry delays
 *   poll.js            pollProgress: one task through the polling endpoint; fetchBreakdown: a group's parts
 *   log.js             LogCursor: a task's log lines, in order, with its gaps asked for
 *
 * The page scripts built on it: display.js (how a record is shown), page.js
 * (one client per page, the feed's fallback), widget.js, and the dashboard's
 * dashboard.js.
 *
 *   import { RealtimeAsyncClient } from "/static/realtime_async/client.js";
 *   const client = new RealtimeAsyncClient({ url: "/ws/realtime-async/", eventsUrl: "/realtime-async/events/" });
 *   const sub = client.subscribe("rebuild-42", {
 *     onProgress(record) {},  // the current record first, then every newer one
 *     onFinal(record) {},     // success, failure, cancelled or lost; then the subscription ends
 *     onError(error) {},      // {code, message, task}: not_found, forbidden, limit, bad_request
 *     token: "optional watch token",
 *     seq: 17,                // optional: the last seq you saw
 *     pollUrl: "/realtime-async/progress/rebuild-42/",  // optional: polling, and log gaps off the WebSocket
 *     onLog(lines, { reset, dropped }) {},  // optional: the task's log lines, history first, then live
 *     logAfter: 30,           // optional: the last log line you have (history starts after it)
 *   });
 *   const feed = client.subscribeFeed({ onProgress(record) {}, onError(error) {}, onSubscribed() {} });
 *   await client.cancel("rebuild-42");  // resolved once sent; "cancelled" follows as progress
 *   sub.unsubscribe(); feed.unsubscribe(); client.close();
 *
 * Transports: the WebSocket, else Server-Sent Events (with `eventsUrl`), else
 * polling (the tasks given a `pollUrl`), climbing back up as soon as a better
 * one works again. Whichever brings a record, each task's records are
 * delivered in seq order, once; after a reconnect every task is asked for
 * again from the last seq seen.
 */

import { Feeds } from "./feed.js";
import { TRANSPORTS } from "./ladder.js";
import { LogCursor } from "./log.js";
import { DEFAULT_URL, PROTOCOL_VERSION, isFinal, websocketUrl } from "./protocol.js";
import { Subscription } from "./subscriptions.js";
import { Transports } from "./transports.js";

export { backoffDelay } from "./backoff.js";
export { LogCursor } from "./log.js";
export { fetchBreakdown, pollProgress } from "./poll.js";
export { DEFAULT_URL, FINAL_STATES, PROTOCOL_VERSION, isFinal, websocketUrl } from "./protocol.js";
export { FeedSubscription, Subscription } from "./subscriptions.js";

/**
 * A shared connection to the server, for many subscriptions.
 *
 * It is an EventTarget: "status" events carry `{status, failures, transport}`
 * in `detail`: `transport` is the one in use ("ws", "sse", "poll"; null when
 * none can be), `status` its state, "idle", "connecting", "open",
 * "reconnecting", "unavailable" (none can be used in this browser) or
 * "closed", and `failures` counts its connections in a row that ended before
 * the server said anything. "error" events carry server errors that name no task.
 */
export class RealtimeAsyncClient extends EventTarget {
  constructor({
    url = DEFAULT_URL,
    eventsUrl = null,
    transport = "auto",
    WebSocket: Socket = globalThis.WebSocket,
    EventSource: Source = globalThis.EventSource,
    fetch = undefined,
    backoff = {},
    probe = {},
    pollInterval = 1000,
    connectTimeout = 5000,
    pingInterval = 25000,
    pongTimeout = 10000,
    idleTimeout = 10000,
    stableAfter = 5000,
  } = {}) {
    super();
    if (transport !== "auto" && !TRANSPORTS.includes(transport)) {
      throw new TypeError(`RealtimeAsyncClient: transport must be "auto", "ws", "sse" or "poll", not ${transport}.`);
    }
    this.url = websocketUrl(url);
    /** The Server-Sent Events endpoint (`realtime_async:events`); null: no SSE. May be set later. */
    this.eventsUrl = eventsUrl;
    this.options = { connectTimeout, pingInterval, pongTimeout, idleTimeout, stableAfter };
    this.backoff = { initial: 500, max: 30000, factor: 2, ...backoff };
    this._tasks = new Map(); // task -> {subs, seq, token, pollUrl, record, delivered, log, logVia}
    this._feeds = new Feeds(this);
    this._closed = false;
    this._transports = new Transports(
      {
        wanted: () => this._wanted(),
        tasks: () => this._tasks,
        eventsUrl: () => this.eventsUrl,
        opened: () => this._opened(),
        received: (message, via) => this._received(message, via),
        dropped: () => this._dropped(),
        switched: () => this._resyncLogs(),
        statusChanged: (detail) => this.dispatchEvent(new CustomEvent("status", { detail })),
      },
      {
        url: this.url,
        transport,
        Socket,
        Source,
        fetch,
        options: this.options,
        backoff: this.backoff,
        probe: { initial: 30000, max: 300000, factor: 2, ...probe },
        pollInterval,
      },
    );
  }

  /** The state of the transport in use: "idle", "connecting", "open", "reconnecting", "unavailable" or "closed". */
  get status() {
    return this._closed ? "closed" : this._transports.state.status;
  }

  /** The transport in use: "ws", "sse" or "poll" (null: none can be used here). */
  get transport() {
    return this._transports.transport;
  }

  /** Connections in a row of the transport in use that ended before the server said anything. */
  get failures() {
    return this._transports.state.failures;
  }

  /** Whether any connection of the transport in use ever worked. */
  get everHeard() {
    return this._transports.state.everHeard;
  }

  /**
   * Watch `task`. `seq` is the last seq the caller saw (the server still sends
   * the current record once); `token` is a watch token for users without a session;
   * `pollUrl` the task's polling URL (its ?token= included), for polling and for
   * log lines missed off the WebSocket. With `onLog`, the task's log lines after
   * `logAfter` (0: all it keeps) come first, then each new line, in order, across reconnects.
   */
  subscribe(task, { onProgress, onFinal, onError, onLog, token, seq, logAfter, pollUrl } = {}) {
    if (this._closed) throw new Error("RealtimeAsyncClient: subscribe() after close().");
    if (typeof task !== "string" || !task) throw new TypeError("RealtimeAsyncClient: task must be a non-empty string.");
    const sub = new Subscription(this, task, { onProgress, onFinal, onError, onLog });
    let entry = this._tasks.get(task);
    const fresh = !entry;
    if (fresh) {
      entry = { subs: new Set(), seq: Number(seq) || 0, token: token || undefined, record: null, delivered: false };
      entry.pollUrl = pollUrl || undefined;
      entry.log = onLog ? new LogCursor(logAfter) : null;
      this._tasks.set(task, entry);
      if (this._transports.socket.isOpen) this._sendSubscribe(task, entry); // else sent when it opens
    } else {
      const tokenAdded = !entry.token && Boolean(token);
      entry.token ||= token || undefined;
      entry.pollUrl ||= pollUrl || undefined;
      if (tokenAdded) this._transports.tasksChanged();
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
    if (fresh) this._transports.tasksChanged();
    this._transports.connect(fresh);
    return sub;
  }

  /**
   * Follow every task the user may see: their own, every task for staff
   * (protocol "subscribe_feed"; WebSocket only). There is no snapshot: render
   * the current list yourself, and refresh it in `onSubscribed`, which runs
   * each time the server took the feed (the first time, and after every
   * reconnect, since what changed while the socket was down is not replayed).
   * `onProgress(record)` gets each new state once, in order per task;
   * `onError(error)` gets a refusal (`not_found` for anonymous users; the feed
   * then ends) and the errors of `cancel()` (with `action: "cancel"`; the feed goes on).
   */
  subscribeFeed({ onProgress, onError, onSubscribed } = {}) {
    if (this._closed) throw new Error("RealtimeAsyncClient: subscribeFeed() after close().");
    const feed = this._feeds.add({ onProgress, onError, onSubscribed });
    // Only the WebSocket answers it (with a pong); another transport in use waits for the socket's probe.
    this._transports.connect(this._feeds.size === 1 && this.transport === "ws");
    return feed;
  }

  /**
   * Ask the server to cancel `task` (protocol "cancel"). Resolves once the
   * message is sent; rejects at once (`error.code === "not_connected"`) unless
   * the WebSocket is the transport in use and open, so the caller can POST to
   * the cancel endpoint instead. Acceptance is silent: the `cancelled` state
   * follows as progress. A refusal (`not_found`, `forbidden`) goes, with
   * `action: "cancel"`, to `onError` of the task's subscriptions and of the
   * feed, which all go on; with none, to the client's "error" event.
   */
  cancel(task) {
    if (typeof task !== "string" || !task) {
      return Promise.reject(new TypeError("RealtimeAsyncClient: task must be a non-empty string."));
    }
    return this._feeds.cancel(task);
  }

  /** Close every connection and drop every subscription; the client cannot be used again. */
  close() {
    if (this._closed) return;
    this._closed = true;
    for (const entry of this._tasks.values()) for (const sub of entry.subs) sub.active = false;
    this._tasks.clear();
    this._feeds.close();
    this._transports.close();
  }

  // -- internals ------------------------------------------------------------

  _remove(sub) {
    const entry = this._tasks.get(sub.task);
    if (!entry || !entry.subs.delete(sub) || entry.subs.size) return;
    this._tasks.delete(sub.task);
    this._send({ v: PROTOCOL_VERSION, type: "unsubscribe", task: sub.task });
    this._transports.tasksChanged();
    this._maybeIdle();
  }

  _removeFeed(feed) {
    if (this._feeds.remove(feed)) this._maybeIdle();
  }

  /** Whether anything needs a connection: a task subscription or the feed. */
  _wanted() {
    return !this._closed && (this._tasks.size > 0 || this._feeds.size > 0);
  }

  _maybeIdle() {
    if (!this._wanted()) this._transports.idleSoon();
  }

  // A (re)opened socket: everything followed is asked for again, each task from the last seq seen.
  _opened() {
    for (const [task, entry] of this._tasks) this._sendSubscribe(task, entry);
    this._feeds.send();
  }

  // The socket went: what was waiting on its answers will never hear them (the log's, over another transport).
  _dropped() {
    this._feeds.dropped();
    this._resyncLogs();
  }

  _received(message, via) {
    if (message.type === "progress") this._progress(message.task, message.data, via);
    else if (message.type === "log") this._history(message);
    else if (message.type === "error") this._error(message);
    else if (message.type === "pong") this._feeds.pong(message.id);
  }

  _progress(task, record, via) {
    if (typeof task !== "string" || !record || typeof record.seq !== "number") return;
    this._feeds.deliver(task, record);
    const entry = this._tasks.get(task);
    if (!entry) return;
    // Progress is a state: an older or repeated record adds nothing, whichever transport brought it.
    // The current record is still delivered once to a new subscriber.
    if (record.seq < entry.seq || (record.seq === entry.seq && entry.delivered)) return;
    entry.seq = record.seq;
    entry.record = record;
    entry.delivered = true;
    for (const sub of [...entry.subs]) sub._deliver(record);
    if (entry.log) {
      // A poll asked with log_after: its lines are every kept one after ours, history rather than live.
      const history = via === "poll" && Array.isArray(record.log?.lines);
      const step = history ? entry.log.history(record.log) : entry.log.live(record.log);
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

  // The lines after the cursor: a `log` message on the WebSocket, else the polling endpoint's ?log_after=.
  _askLog(task, entry, mark = true) {
    if (mark) entry.log.asked = true;
    if (this.transport === "ws") {
      entry.logVia = "ws";
      // After a final state the server checks access again, hence the token.
      const message = { v: PROTOCOL_VERSION, type: "log", task, after: entry.log.last };
      if (entry.token && isFinal(entry.record)) message.token = entry.token;
      this._send(message); // not open: the subscribe on open asks with log_after
      return;
    }
    entry.logVia = "http";
    const since = entry.seq;
    const asked = entry.pollUrl ? this._transports.fetchLog(entry.pollUrl, entry.log.last) : Promise.reject();
    // Without an answer, go on from the newest record's lines: the missing ones are skipped, never repeated.
    asked
      .catch(() => ({ last: entry.log.last, dropped: entry.log.dropped, lines: [], ...entry.record?.log }))
      .then((log) => {
        if (this._tasks.get(task) !== entry || entry.logVia !== "http") return; // let go, or asked on the socket
        // Records that came meanwhile may carry lines written after the answer: those are asked for next.
        if (entry.seq > since && entry.record?.log?.last > log.last) {
          this._logged(entry, entry.log.history(log));
          this._askLog(task, entry);
        } else {
          this._history({ ...log, task });
        }
      });
  }

  // Log requests made on a WebSocket that is no longer the transport in use go over HTTP instead.
  _resyncLogs() {
    if (this.transport === "ws") return;
    for (const [task, entry] of this._tasks) {
      if (entry.log?.asked && entry.logVia === "ws") this._askLog(task, entry);
    }
  }

  _let(task) {
    this._tasks.delete(task);
    this._send({ v: PROTOCOL_VERSION, type: "unsubscribe", task });
    this._transports.tasksChanged(false); // its stream already ended with its final record
    this._maybeIdle();
  }

  _error(message) {
    if (this._feeds.claims(message)) return;
    const error = { code: message.code, message: message.message, task: message.task };
    const entry = this._tasks.get(message.task);
    if (!entry) {
      this.dispatchEvent(new CustomEvent("error", { detail: error }));
      return;
    }
    // not_found, forbidden, limit, bad_request: asking again would get the same answer.
    this._tasks.delete(message.task);
    this._transports.tasksChanged();
    for (const sub of [...entry.subs]) sub._fail(error);
    this._maybeIdle();
  }

  _sendSubscribe(task, entry) {
    const message = { v: PROTOCOL_VERSION, type: "subscribe", task };
    if (entry.seq) message.seq = entry.seq;
    if (entry.token) message.token = entry.token;
    if (entry.log) {
      message.log_after = entry.log.last; // the history comes after the current record
      entry.log.asked = true;
      entry.logVia = "ws";
    }
    this._send(message);
  }

  // Over the WebSocket when it is open (in use, or tried again); else dropped: it is sent again on open.
  _send(message) {
    this._transports.socket.send(message);
  }
}
