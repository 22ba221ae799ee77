/**
 * What only the WebSocket carries, for RealtimeAsyncClient: the feed of every
 * task the user may see (protocol "subscribe_feed") and "cancel". Server-Sent
 * Events and polling have neither: while the client is on one of them the feed
 * waits for the WebSocket to come back (the dashboard polls its rows
 * meanwhile), and cancel() rejects with not_connected (the widget then POSTs
 * to the cancel endpoint). Not public: use RealtimeAsyncClient.
 */

import { PROTOCOL_VERSION } from "./protocol.js";
import { FeedMemory, FeedSubscription } from "./subscriptions.js";

export class Feeds {
  /** `client`: the RealtimeAsyncClient (its WebSocket, its tasks' subscriptions, its "error" event). */
  constructor(client) {
    this.subs = new Set(); // FeedSubscriptions; the server holds one feed per connection for all of them
    this._client = client;
    this._seen = new FeedMemory(); // what the feed delivered last of each task
    this._ping = null; // id of the ping sent after subscribe_feed: its pong confirms the feed
    this._confirmed = false;
    this._cancels = new Map(); // id of the ping sent after a cancel -> task; errors before its pong are the cancel's
  }

  get size() {
    return this.subs.size;
  }

  add(handlers) {
    const feed = new FeedSubscription(this._client, handlers);
    this.subs.add(feed);
    if (this.subs.size === 1) this.send();
    else if (this._confirmed) queueMicrotask(() => feed._subscribed());
    return feed;
  }

  /** Forget `feed`; true when it was the last one (the server's feed is let go). */
  remove(feed) {
    if (!this.subs.delete(feed) || this.subs.size) return false;
    this._socket().send({ v: PROTOCOL_VERSION, type: "unsubscribe_feed" });
    this._reset();
    return true;
  }

  /** Ask for the feed, if the WebSocket is open (else it is asked for when it opens). */
  send() {
    const socket = this._socket();
    if (!socket.isOpen || !this.subs.size) return;
    socket.send({ v: PROTOCOL_VERSION, type: "subscribe_feed" });
    // The feed has no snapshot; the pong says the server took it (and that this connection works).
    this._ping = `feed-${socket.nextId()}`;
    socket.send({ v: PROTOCOL_VERSION, type: "ping", id: this._ping });
  }

  // The socket went: what was waiting on its answers will never hear them.
  dropped() {
    this._ping = null;
    this._confirmed = false;
    this._cancels.clear();
  }

  deliver(task, record) {
    if (!this.subs.size || !this._seen.isNew(task, record)) return;
    for (const feed of [...this.subs]) feed._deliver(record);
  }

  pong(id) {
    if (id != null && id === this._ping) {
      this._ping = null;
      this._confirmed = true;
      for (const feed of [...this.subs]) feed._subscribed();
    } else {
      this._cancels.delete(id); // accepted: its cancelled state follows as progress
    }
  }

  /** See RealtimeAsyncClient.cancel(). */
  cancel(task) {
    const socket = this._socket();
    if (this._client._closed || this._client.transport !== "ws" || !socket.isOpen) {
      const error = new Error("RealtimeAsyncClient: not connected; cancel over HTTP instead.");
      error.code = "not_connected";
      return Promise.reject(error);
    }
    // The server answers messages in order: an error for `task` before the pong of this ping is the cancel's.
    const id = `cancel-${socket.nextId()}`;
    try {
      socket.send({ v: PROTOCOL_VERSION, type: "cancel", task });
      socket.send({ v: PROTOCOL_VERSION, type: "ping", id });
    } catch (error) {
      return Promise.reject(error);
    }
    this._cancels.set(id, task);
    return Promise.resolve();
  }

  /** Handle the server error `message` if it is the feed's or a cancel's; false when it is a task's. */
  claims(message) {
    const error = { code: message.code, message: message.message, task: message.task };
    if (message.task == null) {
      // Errors naming no task: the feed's refusal (not_found for anonymous users, or the answer to subscribe_feed).
      if (this.subs.size && (this._ping || error.code === "not_found")) this._fail(error);
      else this._client.dispatchEvent(new CustomEvent("error", { detail: error }));
      return true;
    }
    const cancelId = [...this._cancels].find(([, task]) => task === message.task)?.[0];
    // A subscribe is never answered "forbidden": that is always a refused cancel.
    if (cancelId === undefined && error.code !== "forbidden") return false;
    this._cancels.delete(cancelId);
    this._refused({ ...error, action: "cancel" });
    return true;
  }

  close() {
    for (const feed of this.subs) feed.active = false;
    this.subs.clear();
    this._reset();
  }

  _socket() {
    return this._client._transports.socket;
  }

  _reset() {
    this._ping = null;
    this._confirmed = false;
    this._seen.clear();
  }

  _fail(error) {
    const feeds = [...this.subs];
    this.subs.clear();
    this._reset();
    for (const feed of feeds) feed._fail(error);
    this._client._maybeIdle();
  }

  _refused(error) {
    const entry = this._client._tasks.get(error.task);
    const targets = [...(entry ? entry.subs : []), ...this.subs];
    if (!targets.length) this._client.dispatchEvent(new CustomEvent("error", { detail: error }));
    for (const target of targets) target._notify(error);
  }
}
