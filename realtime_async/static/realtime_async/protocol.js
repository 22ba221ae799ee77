/**
 * What every part of the client agrees on: protocol v1's version, final states
 * and default endpoint (docs/protocol.md), how a server message is read, and how
 * callers' callbacks are run.
 * Public through client.js, except call(), report() and parseMessage().
 */

export const PROTOCOL_VERSION = 1;
// The same set as realtime_async's Python FINAL_STATES; tests/js checks both against tests/display_cases.json.
export const FINAL_STATES = Object.freeze(["success", "failure", "cancelled", "lost"]);
export const DEFAULT_URL = "/ws/realtime-async/";

/** A server message's text as a protocol v1 message; null for anything else (not JSON, another version). */
export function parseMessage(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return null;
  }
  return message && message.v === PROTOCOL_VERSION ? message : null;
}

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
 * Run a caller's callback; one that throws is reported, not rethrown, so that
 * it cannot break the socket loop (or the poll loop) of every other subscriber.
 */
export function call(handler, ...args) {
  if (typeof handler !== "function") return;
  try {
    handler(...args);
  } catch (error) {
    report(error);
  }
}

export function report(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error(error);
}
