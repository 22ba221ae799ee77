/**
 * The handles RealtimeAsyncClient gives its callers (public through client.js),
 * and what the feed remembers to drop repeats. The client routes messages; these
 * decide what reaches the caller's callbacks.
 */

import { call, isFinal } from "./protocol.js";

// How many tasks the feed remembers the last seq of (to drop repeats); the oldest are forgotten first.
const FEED_MEMORY = 1000;

/** One watcher of one task; returned by `RealtimeAsyncClient.subscribe()`. */
export class Subscription {
  constructor(client, task, { onProgress, onFinal, onError, onLog } = {}) {
    this.task = task;
    this.record = null;
    this.active = true;
    this._client = client;
    this._handlers = { onProgress, onFinal, onError, onLog };
    this._logAfter = 0;
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

  // Log lines come after the final state too (its last lines, a gap filled): `active` is not asked.
  _logged(lines, info) {
    const fresh = info.reset ? lines : lines.filter((line) => line.n > this._logAfter);
    if (info.reset) this._logAfter = 0;
    if (fresh.length) this._logAfter = fresh[fresh.length - 1].n;
    if (fresh.length || info.reset) call(this._handlers.onLog, fresh, info);
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
 * What the feed delivered last of each task, so that a repeat (the same state
 * again after a resubscribe) is dropped. Bounded: the tasks heard of longest
 * ago are forgotten first.
 */
export class FeedMemory {
  constructor(size = FEED_MEMORY) {
    this.size = size;
    this._seen = new Map(); // task -> {seq, created}, in order of last use
  }

  /** Whether `record` of `task` is new to the feed; remembers it if so. */
  isNew(task, record) {
    const seen = this._seen.get(task);
    const created = record.created_at ?? null;
    // The same run: only newer states. A relaunch under the same name starts its seq again.
    if (seen && seen.created === created && record.seq <= seen.seq) return false;
    this._seen.delete(task); // re-inserted last: the map stays in order of last use
    this._seen.set(task, { seq: record.seq, created });
    if (this._seen.size > this.size) this._seen.delete(this._seen.keys().next().value);
    return true;
  }

  clear() {
    this._seen.clear();
  }
}
