/**
 * The widget's log: a <details> under the bar ([data-ra-field="log"]), its
 * lines as text (never HTML), newest last, at most LOG_MEMORY of them.
 *
 * Screen readers are not told every line: the list is not a live region. A
 * separate polite status ([data-ra-field="log-status"]) says warnings and
 * errors as they come, at most one every ANNOUNCE_EVERY ms (the newest one
 * waiting wins); info, success and debug lines are there to read, not read out.
 */

import { LOG_MEMORY } from "./log.js";

export const ANNOUNCE_EVERY = 2000;
const LOUD = new Set(["warning", "error"]);

export class LogView {
  constructor(element, i18n = {}) {
    this.details = element.querySelector('[data-ra-field="log"]');
    this.status = element.querySelector('[data-ra-field="log-status"]');
    this.list = this.details?.querySelector(".ra-progress__log-lines") ?? null;
    this.count = this.details?.querySelector(".ra-progress__log-count") ?? null;
    this.dropped = this.details?.querySelector(".ra-progress__log-dropped") ?? null;
    this.i18n = i18n;
    this._waiting = null;
    this._timer = null;
    this._lastSaid = -Infinity;
    /** The number of the last line shown, whichever transport brought it (the widget may switch). */
    this.last = 0;
  }

  get enabled() {
    return Boolean(this.list);
  }

  /** Show `lines` (in order, new); `reset` clears what is shown first (the task was launched again). */
  add(lines, { reset = false, dropped = 0 } = {}) {
    if (!this.list) return;
    if (reset) {
      this.list.replaceChildren();
      this.last = 0;
    }
    const fresh = lines.filter((line) => line.n > this.last);
    if (!fresh.length && !reset) return;
    for (const line of fresh) this.list.append(this._item(line));
    if (fresh.length) this.last = fresh[fresh.length - 1].n;
    while (this.list.children.length > LOG_MEMORY) this.list.firstElementChild.remove();
    const shown = this.list.children.length;
    this.details.hidden = shown === 0;
    if (this.count) this.count.textContent = shown ? ` (${shown})` : "";
    this._dropped(dropped);
    const loud = fresh.filter((line) => LOUD.has(line.level));
    if (loud.length) this._announce(loud[loud.length - 1]);
  }

  _item(line) {
    const item = document.createElement("li");
    item.setAttribute("class", "ra-progress__log-line");
    item.setAttribute("data-ra-level", String(line.level));
    const time = document.createElement("time");
    const when = new Date(Number(line.t) * 1000);
    if (!Number.isNaN(when.getTime())) {
      time.setAttribute("datetime", when.toISOString());
      time.textContent = when.toLocaleTimeString();
    }
    const level = document.createElement("span");
    level.setAttribute("class", "ra-progress__log-level");
    level.textContent = ` ${this._level(line.level)} `;
    const text = document.createElement("span");
    text.setAttribute("class", "ra-progress__log-text");
    text.textContent = String(line.text ?? "");
    item.append(time, level, text);
    return item;
  }

  _level(level) {
    return this.i18n.log_levels?.[level] ?? String(level);
  }

  _dropped(count) {
    if (!this.dropped) return;
    const template = count === 1 ? this.i18n.log_dropped_one : this.i18n.log_dropped_other;
    const text = count > 0 && template ? template.replace("%(n)s", String(count)) : "";
    this.dropped.hidden = !text;
    if (this.dropped.textContent !== text) this.dropped.textContent = text;
  }

  _announce(line) {
    if (!this.status) return;
    this._waiting = line;
    if (this._timer) return;
    const wait = Math.max(0, this._lastSaid + ANNOUNCE_EVERY - Date.now());
    this._timer = setTimeout(() => {
      this._timer = null;
      const next = this._waiting;
      this._waiting = null;
      if (!next) return;
      this._lastSaid = Date.now();
      this.status.textContent = `${this._level(next.level)}: ${String(next.text ?? "")}`;
    }, wait);
  }

  stop() {
    clearTimeout(this._timer);
    this._timer = null;
  }
}
