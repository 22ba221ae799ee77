/** Following one task without a WebSocket (public through client.js). */

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
 * Returns `{stop()}`.
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
    if (!log) return url;
    const [path, query = ""] = url.split("?", 2);
    const params = new URLSearchParams(query);
    params.set("log_after", String(log.last));
    return `${path}?${params}`;
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
 * A group's breakdown, once: GET `url` (the parent's polling URL, `AsyncManager.get_url()`,
 * its ?token= kept) with ?parts=1. Resolves to the answer's `data`:
 * {seq, state, total, counts, parts: [{task, title, state, percent, error}], omitted}
 * (docs/protocol.md, "Groups"). Rejects with {code, message, task}: not_found (404),
 * bad_request (400: not a group's parent), http_<status>, network.
 */
export async function fetchBreakdown(url, { fetch: fetcher, signal } = {}) {
  const doFetch = fetcher || globalThis.fetch.bind(globalThis);
  const [path, query = ""] = String(url).split("?", 2);
  const params = new URLSearchParams(query);
  params.set("parts", "1");
  let response;
  try {
    response = await doFetch(`${path}?${params}`, {
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
