/**
 * Following one task over HTTP: pollProgress and fetchBreakdown (public through
 * client.js); fetchLog, the log lines RealtimeAsyncClient asks for off the WebSocket.
 */

import { backoffDelay } from "./backoff.js";
import { LogCursor } from "./log.js";
import { PROTOCOL_VERSION, call, isFinal } from "./protocol.js";
import { HIDDEN_FACTOR, pollTimer } from "./visibility.js";

/**
 * Follow one task through the polling endpoint (`AsyncManager.get_url()`)
 * with fetch() and JSON: the same records and callbacks as `subscribe()`.
 *
 * Unchanged polls cost a 304 (the last ETag is sent back); errors back off
 * exponentially; a 404 ends it with `onError({code: "not_found"})`. With
 * `onLog(lines, {reset, dropped})`, each poll asks for the log lines after the
 * last one it has (`?log_after=`; from `logAfter`, 0: all the server keeps).
 * While the page is hidden it polls `hiddenFactor` (10) times less often; when
 * it is shown again it polls at once, then at `interval` (1: ignore visibility).
 * `url` may be a function, asked before each poll. Returns `{stop()}`.
 */
export function pollProgress(
  url,
  {
    task,
    interval = 1000,
    maxInterval = 30000,
    seq = 0,
    onProgress,
    onFinal,
    onError,
    onLog,
    logAfter = 0,
    hiddenFactor = HIDDEN_FACTOR,
    fetch: fetcher,
  } = {},
) {
  const doFetch = fetcher || globalThis.fetch.bind(globalThis);
  let etag = null;
  let errors = 0;
  let last = Number(seq) || 0;
  let delivered = false;
  let stopped = false;
  let controller = null;
  const timer = pollTimer(tick, hiddenFactor); // slower while the page is hidden
  const log = onLog ? new LogCursor(logAfter) : null;
  const address = () => {
    const base = typeof url === "function" ? url() : url;
    return log ? withParam(base, "log_after", log.last) : base;
  };

  const stop = () => {
    stopped = true;
    timer.stop();
    controller?.abort();
  };
  const schedule = () => {
    if (stopped) return;
    const delay = errors ? backoffDelay(errors, { initial: interval, max: maxInterval }) : interval;
    timer.start(delay, interval);
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
      const response = await doFetch(address(), {
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
      } else {
        // A 304 may carry a newer ETag for the same state (the server re-issues them): send that one next.
        etag = response.headers.get("ETag") || etag;
      }
      errors = 0;
    } catch {
      if (stopped) return;
      errors += 1;
    }
    if (record && log && record.log) {
      // A polling answer has every kept line after log_after: history, whatever its seq.
      const step = log.history(record.log);
      if (step.lines.length || step.reset) call(onLog, step.lines, { reset: step.reset, dropped: log.dropped });
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

/**
 * A task's log lines after line `after`, once: GET `url` (its polling URL,
 * ?token= kept) with ?log_after=. Resolves to the record's `log`, `{last,
 * dropped, lines}` (docs/protocol.md, "Polling"); rejects on any other answer.
 */
export async function fetchLog(url, after, { fetch: fetcher } = {}) {
  const doFetch = fetcher || globalThis.fetch.bind(globalThis);
  const response = await doFetch(withParam(url, "log_after", after), {
    headers: { Accept: "application/json" },
    credentials: "same-origin",
    cache: "no-store",
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const envelope = await response.json();
  const record = envelope?.v === PROTOCOL_VERSION && envelope.type === "progress" ? envelope.data : null;
  if (!record || typeof record.seq !== "number") throw new Error("not a progress envelope");
  // A task that never logged has no `log`: its log is empty (a relaunch may have started it again).
  return record.log && typeof record.log.last === "number" ? record.log : { last: 0, dropped: 0, lines: [] };
}

/** `url` with the query parameter `name` set to `value`. */
export function withParam(url, name, value) {
  const [path, query = ""] = String(url).split("?", 2);
  const params = new URLSearchParams(query);
  params.set(name, String(value));
  return `${path}?${params}`;
}

/**
 * A group's breakdown, once: GET `url` (the parent's polling URL, `AsyncManager.get_url()`,
 * its ?token= kept) with ?parts=1. Resolves to the answer's `data`:
 * {seq, state, total, counts, parts: [{task, title, state, percent, error}], omitted}
 * (docs/protocol.md, "Groups"). Rejects with {code, message, task}: not_found (404),
 * bad_request (400: not a group's parent), http_<status>, network.
 */
export async function fetchBreakdown(url, { fetch: fetcher, signal } = {}) {
  const doFetch = fetcher || globalThis.fetch.bind(globalThis);
  let response;
  try {
    response = await doFetch(withParam(url, "parts", 1), {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (error) {
    throw { code: "network", message: String(error), task: null };
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // a proxy's error page: not an answer of the endpoint
  }
  if (!response.ok || body?.v !== PROTOCOL_VERSION || body.type !== "breakdown" || !Array.isArray(body.data?.parts)) {
    const code = body?.type === "error" && body.code ? body.code : `http_${response.status}`;
    const message = body?.message || `HTTP ${response.status}`;
    throw { code: response.status === 404 ? "not_found" : code, message, task: body?.task ?? null };
  }
  return body.data;
}
