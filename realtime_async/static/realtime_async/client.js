/**
 * realtime_async client: live task progress over one WebSocket, many subscriptions.
 *
 * A dependency-free ES module (no build step) speaking protocol v1 of
 * docs/protocol.md. Use it from <script type="module"> or a bundler:
 *
 *   import { RealtimeAsyncClient } from "/static/realtime_async/client.js";
 *   const client = new RealtimeAsyncClient({ url: "/ws/realtime-async/" });
 *   const sub = client.subscribe("rebuild-42", {
 *     onProgress(record) {},  // the current record first, then every newer one
 *     onFinal(record) {},     // success, failure, cancelled or lost; then the subscription ends
 *     onError(error) {},      // {code, message, task}: not_found, forbidden, limit, bad_request
 *     token: "optional watch token",
 *     seq: 17,                // optional: the last seq you saw
 *   });
 *   sub.unsubscribe();
 *
 *   // Every task the user may see (their own; all of them for staff), no snapshot:
 *   const feed = client.subscribeFeed({
 *     onProgress(record) {},  // each new state of any visible task (record.task names it)
 *     onError(error) {},      // the feed was refused, or a cancel() failed ({code, task, action: "cancel"})
 *     onSubscribed() {},      // the server took the feed, first and after every reconnect
 *   });
 *   await client.cancel("rebuild-42");  // resolved once sent; "cancelled" follows as progress
 *   feed.unsubscribe();
 *   client.close();
 *
 * The socket opens on the first subscription, reconnects with exponential
 * backoff and jitter, and resubscribes every task with the last seq it saw
 * (and the feed), so nothing is missed and nothing is delivered twice or out
 * of order.
 * `pollProgress()` follows one task through the polling endpoint instead.
 */

export const PROTOCOL_VERSION = 1;
export const FINAL_STATES = Object.freeze(["success", "failure", "cancelled", "lost"]);
export const DEFAULT_URL = "/ws/realtime-async/";
// How many tasks the feed remembers the last seq of (to drop repeats); the oldest are forgotten first.
const FEED_MEMORY = 1000;

/** Whether `record` is in a final state. */
export function isFinal(record) {
  return Boolean(record) && FINAL_STATES.includes(record.state);
}

/** `url` (ws:, wss:, http:, https: or a path) as an absolute ws(s): URL. */
export function websocketUrl(url = DEFAULT_URL, base = globalThis.location?.href) {
  const resolved = new URL(url || DEFAULT_URL, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved.href;
}

/**
 * Milliseconds to wait before retry number `attempt` (0-based): exponential,
 * capped, with "equal jitter" (between half and all of the step) so that many
 * clients cut off together do not come back in lockstep, and never at once.
 */
export function backoffDelay(attempt, { initial = 500, max = 30000, factor = 2 } = {}, random = Math.random) {
  const step = Math.min(max, initial * factor ** Math.max(0, attempt));
  return step / 2 + (random() * step) / 2;
}

function report(error) {
  // A callback that throws must not break the socket loop of every other subscriber.
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error(error);
}

function call(handler, ...args) {
  if (typeof handler !== "function") return;
  try {
    handler(...args);
  } catch (error) {
    report(error);
  }
}

/** One watcher of one task; returned by `RealtimeAsyncClient.subscribe()`. */
export class Subscription {
  constructor(client, task, { onProgress, onFinal, onError } = {}) {
    this.task = task;
    this.record = null;
    this.active = true;
    this._client = client;
    this._handlers = { onProgress, onFinal, onError };
  }

  /** The seq of the last record delivered to this subscription (0: none yet). */
  get seq() {
    return this.record?.seq ?? 0;
  }

  /** Stop receiving updates; safe to call more than once. */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this._client._remove(this);
  }

  _deliver(record) {
    if (!this.active || (this.record && record.seq <= this.record.seq)) return;
    this.record = record;
    call(this._handlers.onProgress, record);
    if (isFinal(record)) {
      this.active = false;
      call(this._handlers.onFinal, record);
    }
  }

  _fail(error) {
    if (!this.active) return;
    this.active = false;
    call(this._handlers.onError, error);
  }

  // An error that does not end the subscription (a refused cancel()).
  _notify(error) {
    if (this.active) call(this._handlers.onError, error);
  }
}

/** The feed of every task the user may see; returned by `RealtimeAsyncClient.subscribeFeed()`. */
export class FeedSubscription {
  constructor(client, { onProgress, onError, onSubscribed } = {}) {
    this.active = true;
    this._client = client;
    this._handlers = { onProgress, onError, onSubscribed };
  }

  /** Stop receiving updates; safe to call more than once. */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this._client._removeFeed(this);
  }

  _deliver(record) {
    if (this.active) call(this._handlers.onProgress, record);
  }

  _subscribed() {
    if (this.active) call(this._handlers.onSubscribed);
  }

  _notify(error) {
    if (this.active) call(this._handlers.onError, error);
  }

  _fail(error) {
    if (!this.active) return;
    this.active = false;
    call(this._handlers.onError, error);
  }
}

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
    this.status = "idle";
    this.failures = 0; // connections in a row that ended before the server said anything
    this.everHeard = false; // whether any connection of this client ever worked
    this._Socket = Socket;
    this._tasks = new Map(); // task -> {subs, seq, token, record, delivered}
    this._feeds = new Set(); // FeedSubscriptions; the server holds one feed per connection for all of them
    this._feedSeen = new Map(); // task -> {seq, created}: what the feed delivered last, oldest first
    this._feedPing = null; // id of the ping sent after subscribe_feed: its pong confirms the feed
    this._feedConfirmed = false;
    this._cancels = new Map(); // id of the ping sent after a cancel -> task; errors before its pong are the cancel's
    this._socket = null;
    this._retries = 0; // reconnects since the last stable connection; drives the backoff
    this._timers = {};
    this._closed = false;
    this._pingId = 0;
    this._onOnline = () => {
      if (this._timers.retry) this._reconnectNow();
    };
    globalThis.addEventListener?.("online", this._onOnline);
  }

  /**
   * Watch `task`. `seq` is the last seq the caller saw (the server still sends
   * the current record once); `token` is a watch token for users without a session.
   */
  subscribe(task, { onProgress, onFinal, onError, token, seq } = {}) {
    if (this._closed) throw new Error("RealtimeAsyncClient: subscribe() after close().");
    if (typeof task !== "string" || !task) throw new TypeError("RealtimeAsyncClient: task must be a non-empty string.");
    const sub = new Subscription(this, task, { onProgress, onFinal, onError });
    let entry = this._tasks.get(task);
    if (!entry) {
      entry = { subs: new Set(), seq: Number(seq) || 0, token: token || undefined, record: null, delivered: false };
      this._tasks.set(task, entry);
      this._sendSubscribe(task, entry);
    } else {
      entry.token ||= token || undefined;
      // A later watcher of a task already followed gets its latest record at once.
      if (entry.record) queueMicrotask(() => sub._deliver(entry.record));
    }
    entry.subs.add(sub);
    this._clearTimer("idle");
    this._connect();
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
    this._clearTimer("idle");
    this._connect();
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
    const socket = this._socket;
    if (this._closed || !socket || socket.readyState !== 1) {
      const error = new Error("RealtimeAsyncClient: not connected; cancel over HTTP instead.");
      error.code = "not_connected";
      return Promise.reject(error);
    }
    // The server answers messages in order: an error for `task` before the pong of this ping is the cancel's.
    const id = `cancel-${++this._pingId}`;
    try {
      socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: "cancel", task }));
      socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: "ping", id }));
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
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    globalThis.removeEventListener?.("online", this._onOnline);
    for (const entry of this._tasks.values()) for (const sub of entry.subs) sub.active = false;
    for (const feed of this._feeds) feed.active = false;
    this._tasks.clear();
    this._feeds.clear();
    this._feedSeen.clear();
    this._dropSocket(1000);
    this._setStatus("closed");
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
    const socket = this._socket;
    if (!socket || socket.readyState !== 1) return; // sent on open
    this._send({ v: PROTOCOL_VERSION, type: "subscribe_feed" });
    // The feed has no snapshot; the pong says the server took it (and that this connection works).
    this._feedPing = `feed-${++this._pingId}`;
    this._send({ v: PROTOCOL_VERSION, type: "ping", id: this._feedPing });
  }

  /** Whether anything needs the socket: a task subscription or the feed. */
  _wanted() {
    return this._tasks.size > 0 || this._feeds.size > 0;
  }

  _maybeIdle() {
    if (this._wanted() || this._closed) return;
    this._clearTimer("retry");
    this._setTimer("idle", this.options.idleTimeout, () => {
      this._dropSocket(1000);
      this._setStatus("idle");
    });
  }

  _connect() {
    if (this._socket || this._closed || !this._wanted() || this._timers.retry) return;
    if (typeof this._Socket !== "function") {
      this._setStatus("unavailable");
      return;
    }
    let socket;
    try {
      socket = new this._Socket(this.url);
    } catch (error) {
      // A CSP connect-src refusal or a malformed URL throws here, every time.
      report(error);
      this._setStatus("unavailable");
      return;
    }
    this._socket = socket;
    this._heard = false;
    this._setStatus(this.status === "idle" ? "connecting" : "reconnecting");
    this._setTimer("connect", this.options.connectTimeout, () => this._lost(socket, 4000));
    socket.onopen = () => this._opened(socket);
    socket.onmessage = (event) => this._received(socket, event.data);
    socket.onclose = (event) => this._lost(socket, event.code);
    socket.onerror = () => {}; // a close event follows with the code
  }

  _opened(socket) {
    if (socket !== this._socket) return;
    this._clearTimer("connect");
    this._lastHeard = Date.now();
    this._setStatus("open");
    for (const [task, entry] of this._tasks) this._sendSubscribe(task, entry);
    if (this._feeds.size) this._sendFeed();
    this._setInterval("ping", this.options.pingInterval, () => this._ping(socket));
  }

  _ping(socket) {
    // Detects a half-open connection that would otherwise wait forever.
    if (Date.now() - this._lastHeard > this.options.pingInterval + this.options.pongTimeout) {
      this._lost(socket, 4001);
      return;
    }
    this._send({ v: PROTOCOL_VERSION, type: "ping", id: String(++this._pingId) });
  }

  _received(socket, data) {
    if (socket !== this._socket) return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || message.v !== PROTOCOL_VERSION) return;
    this._lastHeard = Date.now();
    if (!this._heard) {
      this._heard = true;
      this.everHeard = true;
      this.failures = 0;
      // Only a connection that stays up resets the backoff; one that drops at once keeps it growing.
      this._setTimer("stable", this.options.stableAfter, () => {
        this._retries = 0;
      });
      this._setStatus("open");
    }
    if (message.type === "progress") this._progress(message.task, message.data);
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
    this._toFeeds(task, record);
    const entry = this._tasks.get(task);
    if (!entry) return;
    // Progress is a state: an older or repeated record adds nothing. The
    // current record is still delivered once to a new subscriber.
    if (record.seq < entry.seq || (record.seq === entry.seq && entry.delivered)) return;
    entry.seq = record.seq;
    entry.record = record;
    entry.delivered = true;
    for (const sub of [...entry.subs]) sub._deliver(record);
    // A subscriber may have unsubscribed from its callback, which already let the task go.
    if (isFinal(record) && this._tasks.get(task) === entry) {
      this._tasks.delete(task);
      this._send({ v: PROTOCOL_VERSION, type: "unsubscribe", task });
      this._maybeIdle();
    }
  }

  _toFeeds(task, record) {
    if (!this._feeds.size) return;
    const seen = this._feedSeen.get(task);
    const created = record.created_at ?? null;
    // The same run: only newer states. A relaunch under the same name starts its seq again.
    if (seen && seen.created === created && record.seq <= seen.seq) return;
    this._feedSeen.delete(task); // re-inserted last: the map stays in order of last use
    this._feedSeen.set(task, { seq: record.seq, created });
    if (this._feedSeen.size > FEED_MEMORY) this._feedSeen.delete(this._feedSeen.keys().next().value);
    for (const feed of [...this._feeds]) feed._deliver(record);
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

  _lost(socket, code) {
    if (socket !== this._socket) return;
    this._dropSocket(1000);
    if (this._closed) return;
    if (!this._heard) this.failures += 1;
    if (!this._wanted()) {
      this._setStatus("idle");
      return;
    }
    // 4429: too many messages or connections; coming back soon would be refused again.
    const attempt = code === 4429 ? Number.POSITIVE_INFINITY : this._retries++;
    const delay = backoffDelay(attempt, this.backoff);
    this._setTimer("retry", delay, () => {
      delete this._timers.retry;
      this._connect();
    });
    this._setStatus("reconnecting");
  }

  _reconnectNow() {
    this._clearTimer("retry");
    this._connect();
  }

  _dropSocket(code) {
    const socket = this._socket;
    this._socket = null;
    // What was waiting on this connection's answers will never hear them.
    this._feedPing = null;
    this._feedConfirmed = false;
    this._cancels.clear();
    for (const name of ["connect", "ping", "stable"]) this._clearTimer(name);
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code);
    } catch {
      // already closing
    }
  }

  _sendSubscribe(task, entry) {
    const message = { v: PROTOCOL_VERSION, type: "subscribe", task };
    if (entry.seq) message.seq = entry.seq;
    if (entry.token) message.token = entry.token;
    this._send(message);
  }

  _send(message) {
    const socket = this._socket;
    // Not open: the subscriptions are sent again on open, nothing else is worth queueing.
    if (socket && socket.readyState === 1) socket.send(JSON.stringify(message));
  }

  _setStatus(status) {
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, failures: this.failures } }));
  }

  _setTimer(name, ms, callback) {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      callback();
    }, ms);
  }

  _setInterval(name, ms, callback) {
    this._clearTimer(name);
    this._timers[name] = setInterval(callback, ms);
  }

  _clearTimer(name) {
    if (this._timers[name] === undefined) return;
    clearTimeout(this._timers[name]);
    clearInterval(this._timers[name]);
    delete this._timers[name];
  }
}

/**
 * Follow one task through the polling endpoint (`AsyncManager.get_url()`)
 * with fetch() and JSON: the same records and callbacks as `subscribe()`.
 *
 * Unchanged polls cost a 304 (the last ETag is sent back); errors back off
 * exponentially; a 404 ends it with `onError({code: "not_found"})`. Returns
 * `{stop()}`.
 */
export function pollProgress(
  url,
  { task, interval = 1000, maxInterval = 30000, seq = 0, onProgress, onFinal, onError, fetch: fetcher } = {},
) {
  const doFetch = fetcher || globalThis.fetch.bind(globalThis);
  let etag = null;
  let errors = 0;
  let last = Number(seq) || 0;
  let delivered = false;
  let stopped = false;
  let timer = null;
  let controller = null;

  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    controller?.abort();
  };
  const schedule = () => {
    if (stopped) return;
    const delay = errors ? backoffDelay(errors, { initial: interval, max: maxInterval }) : interval;
    timer = setTimeout(tick, delay);
  };
  const fail = (code, message) => {
    stop();
    call(onError, { code, message, task });
  };

  async function tick() {
    controller = new AbortController();
    const headers = { Accept: "application/json" };
    if (etag) headers["If-None-Match"] = etag;
    let record = null;
    try {
      const response = await doFetch(url, {
        headers,
        credentials: "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 404 || response.status === 403) {
        fail("not_found", "No such task.");
        return;
      }
      if (response.status !== 304) {
        if (!response.ok) throw new Error(`HTTP ${response.status}`); // 5xx: retry, backing off
        const envelope = await response.json();
        record = envelope?.v === PROTOCOL_VERSION && envelope.type === "progress" ? envelope.data : null;
        if (!record || typeof record.seq !== "number") throw new Error("not a progress envelope");
        etag = response.headers.get("ETag");
      }
      errors = 0;
    } catch {
      if (stopped) return;
      errors += 1;
    }
    if (record && (record.seq > last || (record.seq === last && !delivered))) {
      last = record.seq;
      delivered = true;
      call(onProgress, record);
      if (isFinal(record)) {
        stop();
        call(onFinal, record);
        return;
      }
    }
    schedule();
  }

  tick();
  return { stop };
}
