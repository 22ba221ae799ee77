/**
 * How a state record is shown: the one set of display rules of the widget
 * (widget.js) and the dashboard (dashboard.js). The server renders the first
 * state with the same rules in Python; tests/display_cases.json is the table
 * both sides are tested against, so the text of a server-rendered state and
 * of the next live one cannot differ.
 *
 * `i18n` is the object the server sends in data-ra-i18n:
 * {states: {state: label}, eta_s, eta_min, eta_h, unavailable, failed,
 *  stages, stage, stage_states: {stage state: label}, messages: {English: translated},
 *  group: {summary, thousands, parts, one: {...}, other: {...}}, ...}.
 * Every user-facing word comes from it, in the page's language (display.py
 * translates it); the English defaults below only serve pages without it.
 */

import { isFinal } from "./protocol.js";

/** A stock message of the package (stored in English) in the page's language; any other text as written. */
function stock(text, i18n) {
  const messages = i18n.messages || {};
  return typeof text === "string" && Object.hasOwn(messages, text) ? messages[text] : text;
}

function interpolate(template, values) {
  return String(template).replace(/%\((\w+)\)s/g, (_, name) => String(values[name] ?? ""));
}

/**
 * "5 s left", "3 min left", "2 h 5 min left"; "" when unknown. Minutes round
 * half up (Math.round, for these non-negative numbers), seconds up: "0 s" never shows.
 */
export function formatEta(seconds, i18n = {}) {
  if (typeof seconds !== "number" || !(seconds >= 0)) return "";
  if (seconds < 60) return interpolate(i18n.eta_s || "%(n)s s left", { n: Math.max(1, Math.ceil(seconds)) });
  if (seconds < 3600) return interpolate(i18n.eta_min || "%(n)s min left", { n: Math.round(seconds / 60) });
  const minutes = Math.round(seconds / 60);
  return interpolate(i18n.eta_h || "%(h)s h %(m)s min left", { h: Math.floor(minutes / 60), m: minutes % 60 });
}

const STAGE_STATES = {
  pending: "Not started",
  active: "In progress",
  done: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};

/**
 * The stepper of `record`: [{name, state, stateLabel, current}] in declared
 * order ([] without stages; entries without a string name are left out) and
 * the current stage's text, "Stage 2 of 3: Process" ("" when none is current).
 * The current stage is the one the record's `stage` names, else the first
 * active one; a final task has none.
 */
export function displayStages(record, i18n = {}, final = isFinal(record)) {
  const raw = record ? record.stages : null;
  if (!Array.isArray(raw)) return { stages: [], stageText: "" };
  const labels = i18n.stage_states || STAGE_STATES;
  const stages = [];
  for (const entry of raw) {
    if (!entry || typeof entry !== "object" || Array.isArray(entry) || typeof entry.name !== "string") continue;
    const state = typeof entry.state === "string" ? entry.state : "pending";
    const stateLabel = Object.hasOwn(labels, state) ? labels[state] : state;
    stages.push({ name: entry.name, state, stateLabel, current: false });
  }
  const names = stages.map((stage) => stage.name);
  let current = names.indexOf(record.stage);
  if (current < 0) current = stages.findIndex((stage) => stage.state === "active");
  if (final || current < 0) return { stages, stageText: "" };
  stages[current].current = true;
  const template = i18n.stage || "Stage %(n)s of %(total)s: %(name)s";
  return { stages, stageText: interpolate(template, { n: current + 1, total: stages.length, name: names[current] }) };
}

const GROUP_WORDS = {
  success: "%(n)s done",
  failure: "%(n)s failed",
  cancelled: "%(n)s cancelled",
  running: "%(n)s running",
  queued: "%(n)s queued",
};
const GROUP = {
  summary: "%(parts)s: %(counts)s",
  thousands: ",",
  parts: "Parts",
  one: { ...GROUP_WORDS, parts: "%(n)s part", omitted: "%(n)s more part not listed." },
  other: { ...GROUP_WORDS, parts: "%(n)s parts", omitted: "%(n)s more parts not listed." },
};
// The summary's pieces in order, each the states it counts: a lost part is a failed one (display.py's _SUMMARY).
const SUMMARY = [
  ["success", ["success"]],
  ["failure", ["failure", "lost"]],
  ["cancelled", ["cancelled"]],
  ["running", ["running"]],
  ["queued", ["queued"]],
];

/** A group's word for `n` (`key`: parts, success, ..., omitted), its number grouped: "1,000 parts". */
export function groupWord(key, n, i18n = {}) {
  const strings = i18n.group || GROUP;
  const forms = (n === 1 ? strings.one : strings.other) || {};
  const template = Object.hasOwn(forms, key) ? forms[key] : "%(n)s";
  return interpolate(template, { n: formatCount(n, i18n) });
}

/** `1234` as "1,234": digits grouped by three with the page language's separator (display.py's format_count). */
export function formatCount(n, i18n = {}) {
  const separator = (i18n.group || GROUP).thousands ?? ",";
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, () => separator);
}

/**
 * A group parent's `group` in words, "1,000 parts: 812 done, 3 failed, 185 running"
 * ("" when it is none); states no part is in are left out, lost parts count as failed.
 */
export function groupSummary(group, i18n = {}) {
  if (!group || typeof group !== "object" || !group.counts || typeof group.counts !== "object") return "";
  if (!Number.isInteger(group.parts)) return "";
  const pieces = [];
  for (const [key, states] of SUMMARY) {
    const n = states.reduce((sum, state) => {
      const value = group.counts[state];
      return Number.isInteger(value) && value > 0 ? sum + value : sum;
    }, 0);
    if (n) pieces.push(groupWord(key, n, i18n));
  }
  const parts = groupWord("parts", group.parts, i18n);
  if (!pieces.length) return parts;
  return interpolate((i18n.group || GROUP).summary, { parts, counts: pieces.join(", ") });
}

/**
 * What to show of `record` (null: the task cannot be shown):
 * {state, stateLabel, final, indeterminate, percent, percentValue, percentText, etaText, message,
 *  stages, stageText, groupText} (stages and stageText: displayStages(); groupText: groupSummary()).
 * `percent` is the number clamped to 0..100 (null: unknown); `percentValue` its
 * string for aria-valuenow, one decimal rounded half up without a trailing ".0";
 * `percentText` is floored, so that "100%" means done.
 */
export function display(record, i18n = {}) {
  const state = record ? record.state : "unavailable";
  const percent = record && typeof record.percent === "number" ? Math.min(100, Math.max(0, record.percent)) : null;
  const final = isFinal(record);
  let message;
  if (!record) message = i18n.unavailable;
  else if (state === "failure" || state === "lost") message = stock(record.error, i18n) || i18n.failed;
  else message = stock(record.message ?? "", i18n);
  return {
    state,
    stateLabel: i18n.states?.[state] ?? state,
    final,
    // Running with no percent: work is going on, how much is done is unknown.
    indeterminate: percent === null && state === "running",
    percent,
    percentValue: percent === null ? null : String(Math.round(percent * 10) / 10),
    percentText: percent === null ? "" : `${Math.floor(percent)}%`,
    etaText: record && !final ? formatEta(record.eta, i18n) : "",
    message: message || "",
    ...displayStages(record, i18n, final),
    groupText: record ? groupSummary(record.group, i18n) : "",
  };
}
