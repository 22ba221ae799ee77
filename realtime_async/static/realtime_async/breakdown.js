/**
 * A group's breakdown in the widget ([data-ra-field="breakdown"], rendered by
 * the server for {% live_progress parent breakdown=True %}): the summary
 * ("1,000 parts: 812 done, 3 failed, 185 running"), then the parts the server
 * lists (at most BREAKDOWN_LIMIT: beyond it the failed ones, then the running
 * ones; docs/protocol.md, "Groups"), each with its title, state and percent, a
 * failed one with its error.
 *
 * The widget tells it of each new record of the parent (changed()). The summary
 * follows the record's counts at once; the list is fetched again from the
 * polling endpoint (fetchBreakdown, ?parts=1) at most once every `interval` ms
 * (2 s) while the records change, never with more than one request in flight,
 * and once more after the final state, then never again. While the page is
 * hidden it fetches nothing; shown again, it fetches once if records came in
 * between (the summary kept up all along). Neither the summary
 * nor the list is a live region: the bar and the message say what matters.
 */

import { fetchBreakdown, isFinal } from "./client.js";
import { display, groupSummary, groupWord } from "./display.js";
import { setText } from "./stepper.js";
import { pageHidden, watchVisibility } from "./visibility.js";

/** The least time between two fetches of the parts, in ms. */
export const BREAKDOWN_INTERVAL = 2000;
const MAX_ERRORS = 3; // failed fetches in a row before it waits for the next record

export class BreakdownView {
  /** `url`: the parent's polling URL; `fetch` and `interval` for tests. */
  constructor(element, { url = "", i18n = {}, fetch, interval = BREAKDOWN_INTERVAL } = {}) {
    this.root = element.querySelector('[data-ra-field="breakdown"]');
    this.url = url;
    this.i18n = i18n;
    this.fetch = fetch;
    this.interval = interval;
    this.stopped = !this.root;
    this._wanted = false; // a record came since the last fetch started
    this._final = false; // ... and it was final: the next fetch is the last
    this._busy = false;
    this._timer = null;
    this._last = -Infinity; // when the last fetch started
    this._errors = 0;
    this._controller = null;
    this._unwatch = null; // set while a fetch waits for the page to be shown
  }

  /** The parent has a new record: show its counts, fetch the parts again when the interval allows. */
  changed(record) {
    if (this.stopped || !record) return;
    if (record.group) this._summary(groupSummary(record.group, this.i18n));
    if (!this.url) return;
    this._wanted = true;
    this._final = isFinal(record);
    this._errors = 0;
    this._schedule();
  }

  /** Fetch no more. */
  stop() {
    this.stopped = true;
    clearTimeout(this._timer);
    this._timer = null;
    this._controller?.abort();
    this._unwatchVisibility();
  }

  _schedule() {
    if (this.stopped || this._busy || this._timer || !this._wanted) return;
    if (pageHidden()) {
      // Nobody sees the list: fetch it when the page is shown again, once.
      this._unwatch ??= watchVisibility((hidden) => {
        if (hidden) return;
        this._unwatchVisibility();
        this._schedule();
      });
      return;
    }
    const wait = Math.max(0, this._last + this.interval - Date.now());
    this._timer = setTimeout(() => this._fetch(), wait);
  }

  _unwatchVisibility() {
    this._unwatch?.();
    this._unwatch = null;
  }

  async _fetch() {
    this._timer = null;
    if (pageHidden()) {
      this._schedule(); // hidden since the timer was set: wait for the page to be shown
      return;
    }
    const last = this._final;
    this._wanted = false;
    this._busy = true;
    this._last = Date.now();
    this._controller = typeof AbortController === "function" ? new AbortController() : null;
    try {
      const answer = await fetchBreakdown(this.url, { fetch: this.fetch, signal: this._controller?.signal });
      if (!this.stopped) this.render(answer);
    } catch (error) {
      // The task went away or is no group: stop. Anything else: try again after the interval, a few times.
      if (error?.code === "not_found" || error?.code === "bad_request") this.stopped = true;
      else if (++this._errors <= MAX_ERRORS) {
        this._wanted = true;
        this._final ||= last;
      }
    }
    this._busy = false;
    if (last && !this._wanted) this.stopped = true; // the final state's parts are shown: nothing will change
    this._schedule();
  }

  /** Draw a ?parts=1 answer: the summary, the listed parts (items reused by task), the note on the others. */
  render(answer) {
    this._summary(groupSummary({ parts: answer.total, counts: answer.counts }, this.i18n));
    const list = this.root.querySelector('[data-ra-field="parts"]');
    if (list) {
      const items = new Map();
      for (const item of [...list.children]) items.set(item.getAttribute("data-ra-part"), item);
      const wanted = answer.parts.map((part) => partItem(items.get(part.task), part, this.i18n));
      const kept = new Set(wanted);
      for (const item of [...list.children]) if (!kept.has(item)) item.remove();
      wanted.forEach((item, index) => {
        if (list.children[index] !== item) list.insertBefore(item, list.children[index] ?? null);
      });
    }
    const note = this.root.querySelector('[data-ra-field="breakdown-omitted"]');
    if (note) {
      setText(note, answer.omitted ? groupWord("omitted", answer.omitted, this.i18n) : "");
      if (note.hidden !== !answer.omitted) note.hidden = !answer.omitted;
    }
  }

  _summary(text) {
    const node = this.root.querySelector('[data-ra-field="breakdown-summary"]');
    if (node && text) setText(node, text);
  }
}

/**
 * `part` of a ?parts=1 answer as the list shows it, by the rules of any record (display.js):
 * {title, state, stateLabel, percentText, error}; `error` only for a failed or lost part, translated.
 */
export function showPart(part, i18n = {}) {
  const shown = display({ state: part.state, percent: part.percent, error: part.error }, i18n);
  const failed = part.state === "failure" || part.state === "lost";
  return {
    title: part.title || part.task,
    state: shown.state,
    stateLabel: shown.stateLabel,
    percentText: shown.percentText,
    error: failed ? shown.message : "",
  };
}

/** `item` (made when missing) showing `part` as progress.html does: title, state, percent, a failed one's error. */
function partItem(item, part, i18n) {
  const shown = showPart(part, i18n);
  if (!item) {
    item = document.createElement("li");
    item.setAttribute("class", "ra-progress__part");
    item.setAttribute("data-ra-part", part.task);
  }
  if (item.getAttribute("data-ra-part-state") !== shown.state) item.setAttribute("data-ra-part-state", shown.state);
  const fields = [
    ["title", shown.title],
    ["state", shown.stateLabel],
    ["percent", shown.percentText],
    ["error", shown.error],
  ];
  for (const [name, text] of fields) {
    let span = item.querySelector(`.ra-progress__part-${name}`);
    if (!span && !text) continue;
    if (!span) {
      span = document.createElement("span");
      span.setAttribute("class", `ra-progress__part-${name}`);
      item.append(span);
    }
    setText(span, name === "title" ? text : text && ` ${text}`);
    if (span.hidden !== !text) span.hidden = !text;
  }
  return item;
}
