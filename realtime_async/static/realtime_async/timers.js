/**
 * NamedTimers: the timeouts and intervals of one connection, by name, so that
 * setting one replaces it and closing clears them all (socket.js, sse.js).
 */

export class NamedTimers {
  constructor() {
    this._ids = {};
  }

  /** Whether the timer `name` is pending. */
  has(name) {
    return this._ids[name] !== undefined;
  }

  /** Run `callback` once in `ms` (replacing a pending `name`). */
  set(name, ms, callback) {
    this.clear(name);
    this._ids[name] = setTimeout(() => {
      delete this._ids[name];
      callback();
    }, ms);
  }

  /** Run `callback` every `ms` until cleared (replacing a pending `name`). */
  every(name, ms, callback) {
    this.clear(name);
    this._ids[name] = setInterval(callback, ms);
  }

  clear(name) {
    if (this._ids[name] === undefined) return;
    clearTimeout(this._ids[name]);
    clearInterval(this._ids[name]);
    delete this._ids[name];
  }

  clearAll() {
    for (const name of Object.keys(this._ids)) this.clear(name);
  }
}
