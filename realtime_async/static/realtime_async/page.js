/**
 * What the page scripts (widget.js, the dashboard's dashboard.js) share, so
 * that a page with both behaves as one: one RealtimeAsyncClient, hence one
 * WebSocket, per endpoint; one rule for when to fall back to polling; one way
 * to start. Only sharedClient() is public (re-exported by widget.js).
 */

import { RealtimeAsyncClient } from "./client.js";
import { websocketUrl } from "./protocol.js";

// The server answers a subscribe (snapshot) or subscribe_feed (pong) at once on a
// working socket; no answer in this long means the socket is no use, whatever its status says.
export const ANSWER_TIMEOUT_MS = 5000;

const clients = new Map(); // ws url -> client: every widget and dashboard of the page shares one socket

/** The page's shared client for `url` (one socket per endpoint, however many widgets and dashboards). */
export function sharedClient(url) {
  const key = websocketUrl(url);
  let client = clients.get(key);
  if (!client) {
    client = new RealtimeAsyncClient({ url: key });
    clients.set(key, client);
  }
  return client;
}

/**
 * Whether to poll instead: the socket cannot connect (the first try failed, or
 * no WebSocket at all), or keeps failing after it once worked. One failure is
 * enough before the socket ever worked (proxies that refuse WebSockets refuse
 * them every time); after, one drop is normal, a second one in a row is not.
 */
export function shouldPoll(client) {
  const limit = client.everHeard ? 2 : 1;
  return client.status === "unavailable" || client.failures >= limit;
}

/**
 * Apply the fallback policy to one user of `client`: `fallBack()` runs when
 * shouldPoll(client) holds at start or on a status change, or when the socket
 * did not answer within ANSWER_TIMEOUT_MS; `onStatus(status)` first sees every
 * status. Returns {answered(), stop()}: answered() says the socket answered (no
 * more timeout), stop() lets go. Going back from polling is the caller's: it
 * stops polling when the socket delivers again.
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
