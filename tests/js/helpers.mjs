// Test doubles for the browser modules under Node's test runner: a scripted
// WebSocket, a few browser globals, a tiny DOM, and the shared display cases.
// Not a test file itself (its name matches none of node --test's patterns).

import { readFileSync } from "node:fs";
import { mock } from "node:test";

// The modules resolve relative URLs against the page; Node has no page.
globalThis.location ??= { href: "http://testserver/page/" };

/** The cases tests/unit/test_display.py checks the Python side against. */
export const cases = JSON.parse(readFileSync(new URL("../display_cases.json", import.meta.url), "utf8"));

/**
 * A WebSocket class whose instances land in `sockets` and are driven by the
 * test: open(), deliver(message), drop(code). Sent frames are parsed into `sent`.
 */
export function fakeSockets() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = undefined;
      sockets.push(this);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(JSON.parse(text));
    }

    close(code) {
      this.readyState = 3;
      this.closedWith = code;
    }

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    deliver(message) {
      this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }

    drop(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code });
    }

    /** The frames of `type` sent so far. */
    frames(type) {
      return this.sent.filter((message) => message.type === type);
    }
  }
  return { FakeWebSocket, sockets };
}

/**
 * An EventSource class whose instances land in `sources` and are driven by the
 * test: open(), deliver(message), drop() (the browser reconnects by itself),
 * refuse() (a status but 200: it gives up). `tasks` and `tokens` read its URL.
 */
export function fakeEventSources() {
  const sources = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.closed = false;
      sources.push(this);
    }

    close() {
      this.readyState = 2;
      this.closed = true;
    }

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    deliver(message) {
      this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }

    drop() {
      this.readyState = 0;
      this.onerror?.({});
    }

    refuse() {
      this.readyState = 2;
      this.onerror?.({});
    }

    get tasks() {
      return new URL(this.url).searchParams.getAll("task");
    }

    get tokens() {
      return new URL(this.url).searchParams.getAll("token");
    }
  }
  return { FakeEventSource, sources };
}

/**
 * A fetch answering the polling endpoint from `answer(url)` (a record, or a
 * number: that HTTP status), recording each URL in `requests`.
 */
export function fakeFetch(answer) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    requests.push(init.method === "POST" ? `POST ${url}` : url);
    const data = answer(url, init);
    if (typeof data === "number") return { status: data, ok: false, headers: { get: () => null }, json: async () => ({}) };
    const body = { v: 1, type: "progress", task: data.task, data };
    return { status: 200, ok: true, headers: { get: () => null }, json: async () => body };
  };
  return { fetch, requests };
}

/** A progress envelope of `task`. */
export function progress(task, seq, state = "running", extra = {}) {
  return { v: 1, type: "progress", task, data: { task, seq, state, ...extra } };
}

/** Fake setTimeout, setInterval and Date, starting at 0; call the returned function to restore. */
export function fakeClock() {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 0 });
  return () => mock.timers.reset();
}

/** Advance the fake clock by `ms`, letting promises settle between timers. */
export async function tick(ms) {
  mock.timers.tick(ms);
  await flush();
}

/** Let pending promise callbacks and microtasks run (setImmediate is not faked). */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Math.random pinned to `value` (0: the shortest jittered delay, 1: the longest). */
export function pinRandom(value) {
  return mock.method(Math, "random", () => value);
}

// -- a tiny DOM: enough for LiveProgress and LiveDashboard --------------------

const SIMPLE = /^([a-z]+)?((?:\.[\w-]+)*)((?:\[[\w-]+(?:=(?:"[^"]*"|'[^']*'))?\])*)$/i;

function matches(element, selector) {
  const parts = SIMPLE.exec(selector.trim());
  if (!parts) throw new Error(`fake DOM: unsupported selector ${selector}`);
  const [, tag, classes, attributes] = parts;
  if (tag && element.tagName !== tag.toUpperCase()) return false;
  for (const name of classes.split(".").filter(Boolean)) if (!element.classList.contains(name)) return false;
  for (const [, name, , quoted] of attributes.matchAll(/\[([\w-]+)(=(?:"([^"]*)"|'([^']*)'))?\]/g)) {
    if (!element.hasAttribute(name)) return false;
    if (quoted !== undefined && element.getAttribute(name) !== quoted) return false;
  }
  return true;
}

function camelToData(name) {
  return `data-${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export class FakeElement extends EventTarget {
  constructor(tag, attributes = {}, children = []) {
    super();
    this.tagName = tag.toUpperCase();
    this.nodeType = 1;
    this.parentNode = null;
    this.children = [];
    this._attributes = new Map();
    this._text = "";
    this.disabled = false;
    const classes = new Set();
    this.classList = {
      add: (...names) => names.forEach((n) => classes.add(n)),
      remove: (...names) => names.forEach((n) => classes.delete(n)),
      contains: (name) => classes.has(name),
      toggle: (name, force) => ((force ?? !classes.has(name)) ? classes.add(name) : classes.delete(name)),
      [Symbol.iterator]: () => classes.values(),
    };
    this.dataset = new Proxy(
      {},
      {
        get: (_, name) => (typeof name === "string" ? (this.getAttribute(camelToData(name)) ?? undefined) : undefined),
        set: (_, name, value) => {
          this.setAttribute(camelToData(name), String(value));
          return true;
        },
        deleteProperty: (_, name) => {
          this.removeAttribute(camelToData(name));
          return true;
        },
      },
    );
    for (const [name, value] of Object.entries(attributes)) this.setAttribute(name, value);
    this.append(...children);
  }

  setAttribute(name, value) {
    if (name === "class") for (const c of String(value).split(/\s+/).filter(Boolean)) this.classList.add(c);
    else this._attributes.set(name, String(value));
  }

  getAttribute(name) {
    return this._attributes.has(name) ? this._attributes.get(name) : null;
  }

  hasAttribute(name) {
    return name === "class" ? [...this.classList].length > 0 : this._attributes.has(name);
  }

  removeAttribute(name) {
    this._attributes.delete(name);
  }

  get hidden() {
    return this.hasAttribute("hidden");
  }

  set hidden(value) {
    if (value) this.setAttribute("hidden", "");
    else this.removeAttribute("hidden");
  }

  get value() {
    return Number(this.getAttribute("value") ?? 0);
  }

  set value(value) {
    this.setAttribute("value", String(value));
  }

  get textContent() {
    return this.children.length ? this.children.map((child) => child.textContent).join("") : this._text;
  }

  set textContent(text) {
    this.children = [];
    this._text = String(text);
  }

  get isConnected() {
    return this.parentNode ? this.parentNode.isConnected : Boolean(this._root);
  }

  get rows() {
    return this.children.filter((child) => child.tagName === "TR");
  }

  get tBodies() {
    return this.children.filter((child) => child.tagName === "TBODY");
  }

  append(...nodes) {
    for (const node of nodes) {
      node.remove?.();
      node.parentNode = this;
      this.children.push(node);
    }
  }

  prepend(...nodes) {
    for (const node of nodes.reverse()) {
      node.remove?.();
      node.parentNode = this;
      this.children.unshift(node);
    }
  }

  insertBefore(node, reference) {
    if (!reference) {
      this.append(node);
      return node;
    }
    node.remove?.();
    node.parentNode = this;
    this.children.splice(this.children.indexOf(reference), 0, node);
    return node;
  }

  replaceWith(node) {
    const parent = this.parentNode;
    if (!parent) return;
    parent.insertBefore(node, this);
    this.remove();
  }

  replaceChildren(...nodes) {
    for (const child of this.children) child.parentNode = null;
    this.children = [];
    this.append(...nodes);
  }

  remove() {
    if (!this.parentNode) return;
    this.parentNode.children = this.parentNode.children.filter((child) => child !== this);
    this.parentNode = null;
  }

  matches(selector) {
    return matches(this, selector);
  }

  querySelectorAll(selector) {
    const found = [];
    const walk = (element) => {
      for (const child of element.children) {
        if (matches(child, selector)) found.push(child);
        walk(child);
      }
    };
    walk(this);
    return found;
  }

  querySelector(selector) {
    return this.querySelectorAll(selector)[0] ?? null;
  }

  cloneNode() {
    const copy = new FakeElement(this.tagName.toLowerCase());
    for (const [name, value] of this._attributes) copy.setAttribute(name, value);
    for (const name of this.classList) copy.classList.add(name);
    copy._text = this._text;
    copy.append(...this.children.map((child) => child.cloneNode(true)));
    return copy;
  }
}

/** Shorthand: h("span", {"data-ra-field": "state"}, ...children). */
export function h(tag, attributes, ...children) {
  return new FakeElement(tag, attributes, children);
}

/**
 * A document holding `elements` by id. Still "loading", so that the modules'
 * start-on-DOMContentLoaded never fires: the tests start what they test.
 */
export function installDocument(byId = {}) {
  globalThis.document = {
    readyState: "loading",
    cookie: "",
    addEventListener() {},
    getElementById: (id) => byId[id] ?? null,
    createElement: (tag) => new FakeElement(tag),
  };
  return globalThis.document;
}

/**
 * Give `doc` (a fresh fake document by default) the Page Visibility API: its
 * `visibilityState` starts "visible"; `show()` and `hide()` change it and
 * dispatch "visibilitychange". `listeners` counts the document's listeners of it.
 */
export function fakeVisibility(doc = installDocument()) {
  const target = new EventTarget();
  let listeners = 0;
  doc.visibilityState = "visible";
  doc.addEventListener = (type, listener, options) => {
    if (type === "visibilitychange") listeners += 1;
    target.addEventListener(type, listener, options);
  };
  doc.removeEventListener = (type, listener, options) => {
    if (type === "visibilitychange") listeners -= 1;
    target.removeEventListener(type, listener, options);
  };
  const set = (state) => {
    doc.visibilityState = state;
    target.dispatchEvent(new Event("visibilitychange"));
  };
  return {
    hide: () => set("hidden"),
    show: () => set("visible"),
    get listeners() {
      return listeners;
    },
  };
}
