/**
 * Whether the page is seen (the Page Visibility API), for everything that asks
 * the server on a timer: the pollers (poll.js, the dashboard's rows), the
 * breakdown's fetches and the socket's reconnect wait. A hidden tab asks
 * seldom; when it is shown again they catch up at once, so that whoever comes
 * back sees the true state within one round trip. One "visibilitychange"
 * listener per page, however many watch it, and none while nobody does.
 * Not public: pollProgress's `hiddenFactor` is the knob.
 */

/** How much slower a hidden page polls: the interval times this. */
export const HIDDEN_FACTOR = 10;

const watchers = new Set();
let watched = null; // the document the one listener is on

/** Whether the page is hidden; false outside a browser, or where the API is missing. */
export function pageHidden() {
  return globalThis.document?.visibilityState === "hidden";
}

/** Call `callback(hidden)` on each visibility change until the returned function is called. */
export function watchVisibility(callback) {
  const doc = globalThis.document;
  if (typeof doc?.addEventListener !== "function") return () => {};
  if (watched !== doc) {
    watched?.removeEventListener?.("visibilitychange", changed);
    doc.addEventListener("visibilitychange", changed);
    watched = doc;
  }
  watchers.add(callback);
  return () => {
    watchers.delete(callback);
    if (watchers.size || !watched) return;
    watched.removeEventListener?.("visibilitychange", changed);
    watched = null;
  };
}

/** `delay`, or at least `interval` × `factor` while the page is hidden. */
export function visibleDelay(delay, interval, factor = HIDDEN_FACTOR) {
  return pageHidden() && factor > 1 ? Math.max(delay, interval * factor) : delay;
}

function changed() {
  const hidden = pageHidden();
  for (const callback of [...watchers]) callback(hidden);
}

/**
 * A poller's one-shot timer that follows the page's visibility: start(delay,
 * interval) runs `run` after `delay`, or after at least interval × `factor`
 * while the page is hidden (hiding stretches a pending wait); when the page is
 * shown again a pending wait ends at once. A `factor` of 1 ignores visibility.
 * Returns {start(delay, interval), stop(), pending}; stop() also lets go of the listener.
 */
export function pollTimer(run, factor = HIDDEN_FACTOR) {
  let timer = null;
  let since = 0;
  let delay = 0;
  let interval = 0;
  const fire = () => {
    timer = null;
    run();
  };
  const arm = () => {
    timer = setTimeout(fire, Math.max(0, since + visibleDelay(delay, interval, factor) - Date.now()));
  };
  const unwatch =
    factor > 1
      ? watchVisibility((hidden) => {
          if (timer === null) return; // a request is in flight: its answer schedules at the new pace
          clearTimeout(timer);
          if (hidden) arm();
          else fire(); // back in view: what is shown may be interval × factor old
        })
      : () => {};
  return {
    start(ms, base = ms) {
      clearTimeout(timer);
      since = Date.now();
      delay = ms;
      interval = base;
      arm();
    },
    stop() {
      clearTimeout(timer);
      timer = null;
      unwatch();
    },
    get pending() {
      return timer !== null;
    },
  };
}
