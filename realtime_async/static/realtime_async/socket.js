/**
 * The connection under RealtimeAsyncClient: one WebSocket at a time, that comes
 * back after a drop. It knows nothing of tasks; its owner says whether a
 * connection is wanted, what to send once it opens, what messages mean, and
 * what to forget when it drops; the transport ladder (ladder.js) suspends it
 * while another transport carries on. Not public: use RealtimeAsyncClient.
 */

import { backoffDelay } from "./backoff.js";
import { PROTOCOL_VERSION, parseMessage, report } from "./protocol.js";
import { watchVisibility } from "./visibility.js";
import { NamedTimers } from "./timers.js";

export class Connection {
  /**
   * `owner`: {wanted(), opened(), received(message), dropped(), statusChanged(status)}.
   * `options`: {connectTimeout, pingInterval, pongTimeout, idleTimeout, stableAfter} (ms),
   * `backoff`: {initial, max, factor}; both are read when used, so changes apply.
   */
  constructor(owner, { url, Socket, options, backoff }) {
    this.url = url;
    this.options = options;
    this.backoff = backoff;
    this.status = "idle";
    this.failures = 0; // connections in a row that ended before the server said anything
    this.everHeard = false; // whether any connection ever worked
    this._owner = owner;
    this._Socket = Socket;
    this._socket = null;
    this._heard = false;
    this._lastHeard = 0;
    this._retries = 0; // reconnects since the last stable connection; drives the backoff
    this._timers = new NamedTimers();
    this._closed = false;
    this._pingId = 0;
    this._onOnline = () => {
      // Back online: the wait for the next try is no longer worth sitting out.
      if (this._timers.has("retry")) {
        this._timers.clear("retry");
        this.connect();
      }
    };
    globalThis.addEventListener?.("online", this._onOnline);
    // Shown again: the user should see the true state within one round trip, not after the
    // backoff. A hidden page keeps its socket (the server only pushes changes); after a 4429 it waits.
    this._tooMany = false;
    this._unwatch = watchVisibility((hidden) => {
      if (!hidden && !this._tooMany) this._onOnline();
    });
  }

  /** Whether a socket is open, so that what is sent now reaches the server. */
  get isOpen() {
    return Boolean(this._socket) && this._socket.readyState === 1;
  }

  /** A fresh id for a ping whose pong the owner waits for. */
  nextId() {
    return ++this._pingId;
  }

  /** Open a socket if none is open or waiting to retry and the owner wants one; cancels an idle close. */
  connect() {
    this._timers.clear("idle");
    if (this._socket || this._closed || !this._owner.wanted() || this._timers.has("retry")) return;
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
    this._timers.set("connect", this.options.connectTimeout, () => this._lost(socket, 4000));
    socket.onopen = () => this._opened(socket);
    socket.onmessage = (event) => this._received(socket, event.data);
    socket.onclose = (event) => this._lost(socket, event.code);
    socket.onerror = () => {}; // a close event follows with the code
  }

  /** Send `message` (an object) if the socket is open; else drop it: the owner resends its state on open. */
  send(message) {
    if (this.isOpen) this._socket.send(JSON.stringify(message));
  }

  /** Nothing is wanted any more: close the socket after idleTimeout, unless connect() comes first. */
  idleSoon() {
    if (this._closed) return;
    this._timers.clear("retry");
    this._timers.set("idle", this.options.idleTimeout, () => {
      this._dropSocket(1000);
      this._setStatus("idle");
    });
  }

  /** Let go of the socket and of any retry, for now (another transport carries on): connect() starts again. */
  suspend() {
    if (this._closed) return;
    this._timers.clear("retry");
    this._timers.clear("idle");
    this._dropSocket(1000);
    if (this.status !== "idle") this._setStatus("idle");
  }

  /** Close for good. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._timers.clearAll();
    globalThis.removeEventListener?.("online", this._onOnline);
    this._unwatch();
    this._dropSocket(1000);
    this._setStatus("closed");
  }

  _opened(socket) {
    if (socket !== this._socket) return;
    this._timers.clear("connect");
    this._lastHeard = Date.now();
    this._setStatus("open");
    this._owner.opened();
    this._timers.every("ping", this.options.pingInterval, () => this._ping(socket));
  }

  _ping(socket) {
    // Detects a half-open connection that would otherwise wait forever.
    if (Date.now() - this._lastHeard > this.options.pingInterval + this.options.pongTimeout) {
      this._lost(socket, 4001);
      return;
    }
    this.send({ v: PROTOCOL_VERSION, type: "ping", id: String(this.nextId()) });
  }

  _received(socket, data) {
    if (socket !== this._socket) return;
    const message = parseMessage(data);
    if (!message) return;
    this._lastHeard = Date.now();
    if (!this._heard) {
      this._heard = true;
      this.everHeard = true;
      this.failures = 0;
      // Only a connection that stays up resets the backoff; one that drops at once keeps it growing.
      this._timers.set("stable", this.options.stableAfter, () => {
        this._retries = 0;
      });
      this._setStatus("open");
    }
    this._owner.received(message);
  }

  _lost(socket, code) {
    if (socket !== this._socket) return;
    this._dropSocket(1000);
    if (this._closed) return;
    if (!this._heard) this.failures += 1;
    if (!this._owner.wanted()) {
      this._setStatus("idle");
      return;
    }
    // 4429: too many messages or connections; coming back soon would be refused again.
    this._tooMany = code === 4429;
    const attempt = this._tooMany ? Number.POSITIVE_INFINITY : this._retries++;
    const delay = backoffDelay(attempt, this.backoff);
    this._timers.set("retry", delay, () => this.connect());
    this._setStatus("reconnecting");
  }

  _dropSocket(code) {
    const socket = this._socket;
    this._socket = null;
    this._owner.dropped();
    for (const name of ["connect", "ping", "stable"]) this._timers.clear(name);
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code);
    } catch {
      // already closing
    }
  }

  _setStatus(status) {
    this.status = status;
    this._owner.statusChanged(status);
  }
}
