/**
 * The transport ladder: WebSocket, then Server-Sent Events, then polling, and
 * back up. One policy, applied by RealtimeAsyncClient to its tasks and by
 * page.js to the dashboard's feed (which only the WebSocket carries): when a
 * transport counts as failing, how long its first answer may take, how often a
 * better one is tried again. Not public: the client's `transport` and `probe`
 * options are the knobs.
 */

import { backoffDelay } from "./backoff.js";

/** The transports, best first. */
export const TRANSPORTS = Object.freeze(["ws", "sse", "poll"]);

// The server answers a subscribe (snapshot), a new event stream (snapshots) or subscribe_feed (pong) at once when
// it works; no answer in this long means the transport is no use, whatever its status says.
export const ANSWER_TIMEOUT_MS = 5000;

// How long to wait before trying a better transport again while a worse one carries on: 30 s, doubling up to
// 5 min, jittered so that the pages cut off together do not come back together.
export const PROBE = Object.freeze({ initial: 30000, max: 300000, factor: 2 });

/**
 * Whether a transport in `state` ({status, failures, everHeard}) should be left
 * for the next one down: it cannot be used in this browser (no WebSocket, a CSP
 * refusal), or its first connection failed before it ever worked (proxies that
 * refuse WebSockets or streams refuse them every time), or, after it worked, two
 * connections in a row failed (one drop is normal).
 */
export function failing({ status, failures, everHeard }) {
  return status === "unavailable" || failures >= (everHeard ? 2 : 1);
}

/**
 * Which transport a client uses (`via`). `rungs` are those it may use, best
 * first, each `{name, available(), start(), stop(), state}`: start() connects
 * (or keeps connecting), stop() lets go without retrying, `state` is
 * {status, failures, everHeard}. The rung in use is left for the next
 * available one down when it is failing() or has not answered within
 * `answerTimeout`; every better one is then probed after backoffDelay(attempt,
 * `probe`): started, and taken (the worse ones stop) as soon as it delivers,
 * else stopped again once it fails or stays silent for `answerTimeout`.
 * A rung used for `probe.initial` starts its probes from the first wait again.
 * Hooks: `wanted()` (whether anything needs a transport), `switched(via, previous)`.
 */
export class Ladder {
  constructor(rungs, { wanted, switched, probe = PROBE, answerTimeout = ANSWER_TIMEOUT_MS }) {
    this.rungs = rungs;
    this.probe = probe;
    this.via = rungs.find((rung) => rung.available())?.name ?? null;
    this._wanted = wanted;
    this._switched = switched;
    this._answerTimeout = answerTimeout;
    this._probing = new Set(); // rungs started by a probe, not in use yet
    this._attempts = new Map(); // rung -> probes in a row that failed
    this._timers = new Map(); // "answer", "probe:<rung>", "trial:<rung>", "stable:<rung>"
  }

  /** The state of the rung in use; "unavailable" when none can be used. */
  get state() {
    const rung = this._rung(this.via);
    if (rung) return rung.state;
    return { status: this._wanted() ? "unavailable" : "idle", failures: 0, everHeard: false };
  }

  /** Whether rung `name` should be connected: in use, or being probed. */
  active(name) {
    return this.via === name || this._probing.has(name);
  }

  /** Something is wanted: run the rung in use. `asked`: the server was just asked something, expect an answer. */
  wake(asked = false) {
    this.refresh();
    const rung = this._rung(this.via);
    if (!rung) return;
    rung.start();
    if (asked && !this._timers.has("answer")) this._setTimer("answer", this._answerTimeout, () => this._stepDown());
  }

  /** What may be used changed (tasks came or went): move off a rung that can no longer be used, or is failing. */
  refresh() {
    if (!this._wanted()) return;
    const current = this._rung(this.via);
    if (!current?.available()) {
      const below = this.rungs.slice(this.rungs.indexOf(current) + 1).find((rung) => rung.available());
      const next = below || this.rungs.find((rung) => rung.available());
      if (next) this._use(next.name);
      else if (current) this._use(null);
      return;
    }
    if (failing(current.state)) this._stepDown();
    this._scheduleProbes();
  }

  /** Nothing is wanted any more: no probes, no waiting for answers (the rungs idle by themselves). */
  sleep() {
    for (const name of [...this._timers.keys()]) if (!name.startsWith("stable:")) this._clearTimer(name);
    for (const name of [...this._probing]) {
      this._stopProbe(name);
      this._rung(name).stop();
    }
  }

  /** Rung `name` changed its status. */
  changed(name) {
    if (name === this.via) {
      if (failing(this._rung(name).state)) this._stepDown();
    } else if (this._probing.has(name)) {
      const { status } = this._rung(name).state;
      if (status === "reconnecting" || status === "unavailable" || status === "idle") this._probeFailed(name);
    }
  }

  /** Rung `name` delivered a message (called before the message is routed, so `via` names who brought it). */
  delivered(name) {
    if (name === this.via) this._clearTimer("answer");
    else if (this._probing.has(name)) this._use(name);
  }

  close() {
    for (const name of [...this._timers.keys()]) this._clearTimer(name);
    this._probing.clear();
    for (const rung of this.rungs) rung.stop();
  }

  // -- internals --------------------------------------------------------------

  _rung(name) {
    return this.rungs.find((rung) => rung.name === name) ?? null;
  }

  _below(name, other) {
    return this.rungs.findIndex((rung) => rung.name === name) > this.rungs.findIndex((rung) => rung.name === other);
  }

  // Leave the rung in use for the next available one down; the last one available keeps trying by itself.
  _stepDown() {
    const index = this.rungs.findIndex((rung) => rung.name === this.via);
    const next = this.rungs.slice(index + 1).find((rung) => rung.available());
    if (next) this._use(next.name);
  }

  _use(name) {
    const previous = this.via;
    this.via = name;
    this._clearTimer("answer");
    if (previous && previous !== name) this._clearTimer(`stable:${previous}`);
    for (const rung of this.rungs) {
      if (rung.name === name) continue;
      // Worse rungs stop; a better one stops unless a probe runs it (which goes on).
      if (!name || this._below(rung.name, name) || (rung.name === previous && !this._probing.has(previous))) {
        this._clearTimer(`probe:${rung.name}`);
        this._stopProbe(rung.name);
        if (rung.name === previous || this._below(rung.name, name)) rung.stop();
      }
    }
    if (name) {
      this._probing.delete(name);
      this._clearTimer(`trial:${name}`);
      this._clearTimer(`probe:${name}`);
      if (previous && this._below(previous, name)) {
        // Taken from below, by a probe: its probes start from the first wait again once it has lasted.
        this._setTimer(`stable:${name}`, this.probe.initial, () => this._attempts.delete(name));
      }
      this._rung(name).start();
      // A rung taken from above has not answered anything yet.
      if (previous && this._below(name, previous)) {
        this._setTimer("answer", this._answerTimeout, () => this._stepDown());
      }
    }
    this._switched(name, previous);
    this._scheduleProbes();
  }

  _scheduleProbes() {
    if (!this.via || !this._wanted()) return;
    for (const rung of this.rungs) {
      if (rung.name === this.via) break; // only the better ones
      const key = `probe:${rung.name}`;
      if (!rung.available() || this._probing.has(rung.name) || this._timers.has(key)) continue;
      const wait = backoffDelay(this._attempts.get(rung.name) ?? 0, this.probe);
      this._setTimer(key, wait, () => this._probe(rung));
    }
  }

  _probe(rung) {
    if (!this._wanted() || !rung.available() || !this._below(this.via, rung.name)) return; // asked again on wake
    this._probing.add(rung.name);
    this._setTimer(`trial:${rung.name}`, this._answerTimeout, () => this._probeFailed(rung.name));
    rung.start();
  }

  _probeFailed(name) {
    if (!this._probing.has(name)) return;
    this._attempts.set(name, (this._attempts.get(name) ?? 0) + 1);
    this._stopProbe(name);
    this._rung(name).stop();
    this._scheduleProbes();
  }

  _stopProbe(name) {
    this._probing.delete(name);
    this._clearTimer(`trial:${name}`);
  }

  _setTimer(name, ms, callback) {
    this._clearTimer(name);
    this._timers.set(
      name,
      setTimeout(() => {
        this._timers.delete(name);
        callback();
      }, ms),
    );
  }

  _clearTimer(name) {
    if (!this._timers.has(name)) return;
    clearTimeout(this._timers.get(name));
    this._timers.delete(name);
  }
}
