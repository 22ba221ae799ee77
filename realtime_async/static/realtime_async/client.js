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
 *   client.close();
 *
 * The socket opens on the first subscription, reconnects with exponential
 * backoff and jitter, and resubscribes every task with the last seq it saw,
 * so nothing is missed and nothing is delivered twice or out of order.
 * `pollProgress()` follows one task through the polling endpoint instead.
 */

export const PROTOCOL_VERSION = 1;
export const FINAL_STATES = Object.freeze(["success", "failure", "cancelled", "lost"]);
export const DEFAULT_URL = "/ws/realtime-async/";

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

  /** Close the socket and drop every subscription; the client cannot be used again. */
  close() {
    if (this._closed) return;
    this._closed = true;
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    globalThis.removeEventListener?.("online", this._onOnline);
    for (const entry of this._tasks.values()) for (const sub of entry.subs) sub.active = false;
    this._tasks.clear();
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

  _maybeIdle() {
    if (this._tasks.size || this._closed) return;
    this._clearTimer("retry");
    this._setTimer("idle", this.options.idleTimeout, () => {
      this._dropSocket(1000);
      this._setStatus("idle");
    });
  }

  _connect() {
    if (this._socket || this._closed || !this._tasks.size || this._timers.retry) return;
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
  }

  _progress(task, record) {
    const entry = this._tasks.get(task);
    if (!entry || !record || typeof record.seq !== "number") return;
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

  _error(message) {
    const error = { code: message.code, message: message.message, task: message.task };
    const entry = message.task != null ? this._tasks.get(message.task) : undefined;
    if (!entry) {
      this.dispatchEvent(new CustomEvent("error", { detail: error }));
      return;
    }
    // not_found, forbidden, limit, bad_request: asking again would get the same answer.
    this._tasks.delete(message.task);
    for (const sub of [...entry.subs]) sub._fail(error);
    this._maybeIdle();
  }

  _lost(socket, code) {
    if (socket !== this._socket) return;
    this._dropSocket(1000);
    if (this._closed) return;
    if (!this._heard) this.failures += 1;
    if (!this._tasks.size) {
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
