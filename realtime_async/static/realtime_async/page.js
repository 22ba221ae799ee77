/**
 * What the page scripts (widget.js, the dashboard's dashboard.js) share, so
 * that a page with both behaves as one: one RealtimeAsyncClient, hence one
 * connection, per endpoint; one transport policy; one way to start. Only
 * sharedClient() is public (re-exported by widget.js).
 *
 * The policy is ladder.js's, in one place for both: the client climbs from the
 * WebSocket to Server-Sent Events to polling for the widgets' tasks, and back
 * up (RealtimeAsyncClient's `transport: "auto"`); the dashboard's feed, which
 * only the WebSocket carries, is polled for by the same rule (watchFallback).
 */

import { RealtimeAsyncClient } from "./client.js";
import { ANSWER_TIMEOUT_MS, PROBE, failing } from "./ladder.js";
import { websocketUrl } from "./protocol.js";

export { ANSWER_TIMEOUT_MS };

const clients = new Map(); // "<ws url> <transport>" -> client: the widgets and dashboards of a page share one

/**
 * The page's shared client for `url` and `transport` (one connection per endpoint, however many widgets
 * and dashboards). `eventsUrl` (the SSE endpoint) is taken from whichever caller knows it; `pollInterval`
 * and `probeInterval` (the first wait before a better transport is tried again, ms) from the first.
 */
export function sharedClient(url, { transport = "auto", eventsUrl, pollInterval, probeInterval } = {}) {
  const key = `${websocketUrl(url)} ${transport}`;
  let client = clients.get(key);
  if (!client) {
    const probe = probeInterval > 0 ? { initial: probeInterval, max: probeInterval * (PROBE.max / PROBE.initial) } : {};
    client = new RealtimeAsyncClient({ url: websocketUrl(url), transport, eventsUrl, pollInterval, probe });
    clients.set(key, client);
  } else if (eventsUrl && !client.eventsUrl) {
    client.eventsUrl = eventsUrl;
  }
  return client;
}

/**
 * Whether the WebSocket is no use for now, so that what only it carries (the
 * feed) must be polled for: the client left it for another transport, or it is
 * failing() (ladder.js: unavailable, one failure before it ever worked, two in
 * a row after).
 */
export function shouldPoll(client) {
  return (client.transport != null && client.transport !== "ws") || failing(client);
}

/**
 * Apply the policy to one user of `client` that needs the WebSocket (the
 * dashboard's feed): `fallBack()` runs when shouldPoll(client) holds at start
 * or on a status change, or when the socket did not answer within
 * ANSWER_TIMEOUT_MS; `onStatus(status)` first sees every status. Returns
 * {answered(), stop()}: answered() says the socket answered (no more timeout),
 * stop() lets go. Going back from polling is the caller's: it stops polling
 * when the socket delivers again.
 */
export function watchFallback(client, fallBack, onStatus) {
  const timer = setTimeout(fallBack, ANSWER_TIMEOUT_MS);
  const check = () => {
    onStatus?.(client.status);
    if (shouldPoll(client)) fallBack();
  };
  client.addEventListener("status", check);
  check();
  return {
    answered: () => clearTimeout(timer),
    stop() {
      clearTimeout(timer);
      client.removeEventListener("status", check);
    },
  };
}

/** Start every element matching `selector` in `root` (an element or the document) not started yet. */
export function startAll(root, selector, started, create) {
  const found = [];
  if (root.matches?.(selector)) found.push(root);
  if (root.querySelectorAll) found.push(...root.querySelectorAll(selector));
  for (const element of found) {
    if (started.has(element)) continue;
    const instance = create(element);
    started.set(element, instance);
    instance.start();
  }
}

/** Run `start` once the document is parsed (now, if it is); nothing outside a browser. */
export function whenReady(start) {
  if (typeof document === "undefined") return;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => start(), { once: true });
  else start();
}

/** The JSON of a data-ra-* attribute; {} when missing or broken, so that the defaults apply. */
export function readJson(text) {
  try {
    return JSON.parse(text || "{}");
  } catch {
    return {};
  }
}
