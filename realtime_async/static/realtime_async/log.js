/**
 * A task's log on the client (public through client.js): the lines a watcher
 * has, and what to ask the server for. docs/protocol.md, "Log lines".
 *
 * Lines arrive two ways: in the `log` of the progress record that wrote them
 * (live), and in `log` messages and polling answers (history: every line kept
 * after a number). A live record whose lines do not follow the last one held
 * (a record was skipped: coalescing, a slow reader) means a gap; the cursor
 * then waits for a history answer instead of jumping over it. Lines are never
 * delivered twice or out of order.
 */

// Lines a client keeps per task, to replay to a watcher that joins later (the server keeps LOG_MAX_LINES).
export const LOG_MEMORY = 1000;

export class LogCursor {
  constructor(after = 0) {
    /** The number of the last line delivered (0: none). */
    this.last = Number(after) || 0;
    /** How many of the oldest lines the server no longer keeps. */
    this.dropped = 0;
    /** A history answer is awaited (a subscribe with log_after, or a `log` request). */
    this.asked = false;
    this.lines = [];
  }

  /**
   * Take the `log` of a progress record. Returns `{lines, reset, ask}`: the new
   * lines in order, whether the log started again (a relaunch under the same
   * name: drop what you show), and whether to ask for the lines after `last`.
   */
  live(log) {
    if (!log || typeof log.last !== "number") return { lines: [], reset: false, ask: false };
    const reset = this._resetIf(log.last);
    this.dropped = log.dropped ?? this.dropped;
    if (this.asked) return { lines: [], reset, ask: false }; // the answer brings these too
    const carried = Array.isArray(log.lines) ? log.lines.filter((line) => line?.n > this.last) : [];
    const next = carried.length ? carried[0].n : log.last + 1;
    if (log.last > this.last && next !== this.last + 1) {
      this.asked = true;
      return { lines: [], reset, ask: true };
    }
    return { lines: this._take(carried), reset, ask: false };
  }

  /** Take a history answer (`log` message, or a polling answer's `log`): every kept line after `last`. */
  history(log) {
    this.asked = false;
    if (!log || typeof log.last !== "number") return { lines: [], reset: false, ask: false };
    const reset = this._resetIf(log.last);
    this.dropped = log.dropped ?? this.dropped;
    const lines = this._take((Array.isArray(log.lines) ? log.lines : []).filter((line) => line?.n > this.last));
    this.last = Math.max(this.last, log.last); // lines after `last` the answer lacks were dropped: none will come
    return { lines, reset, ask: false };
  }

  _resetIf(last) {
    if (last >= this.last) return false;
    this.last = 0;
    this.lines = [];
    return true;
  }

  _take(lines) {
    const taken = [];
    for (const line of lines) {
      if (typeof line.n !== "number" || line.n <= this.last) continue;
      this.last = line.n;
      taken.push(line);
    }
    if (taken.length) {
      this.lines.push(...taken);
      if (this.lines.length > LOG_MEMORY) this.lines.splice(0, this.lines.length - LOG_MEMORY);
    }
    return taken;
  }
}
