// The server's markup of a widget (progress.html) and of a dashboard (my_tasks.html, row.html),
// built with the fake DOM of helpers.mjs: only the hooks the scripts use.

import { cases, h } from "./helpers.mjs";

export function widgetElement(task, options = {}) {
  const { seq = 1, state = "queued", transport = "auto", ws = "/ws/realtime-async/", stages = null } = options;
  const { events = null, probe = null, cancel = null } = options;
  return h(
    "div",
    {
      class: `ra-progress ra-progress--${state}`,
      "data-ra-task": task,
      "data-ra-state": state,
      "data-ra-seq": String(seq),
      "data-ra-widget": "",
      "data-ra-transport": transport,
      "data-ra-ws-url": ws,
      ...(events ? { "data-ra-events-url": events } : {}),
      ...(probe ? { "data-ra-probe-interval": String(probe) } : {}),
      "data-ra-poll-url": `/progress/${task}/`,
      "data-ra-poll-interval": "1000",
      "data-ra-i18n": JSON.stringify(cases.i18n),
    },
    h("span", { "data-ra-field": "state" }),
    ...(cancel ? [h("button", { "data-ra-cancel": "", "data-ra-cancel-url": cancel, "data-ra-csrf": "csrf" })] : []),
    h("div", { role: "progressbar" }, h("rect", { class: "ra-progress__fill", width: "0" })),
    h("span", { "data-ra-field": "percent" }),
    h("span", { "data-ra-field": "eta" }),
    ...(stages ? [stagesElement(stages)] : []),
    h("p", { "data-ra-field": "message" }),
  );
}

/** The stepper as progress.html renders it: stages are display()'s {name, state, stateLabel, current}. */
export function stagesElement(stages) {
  return h(
    "ol",
    { class: "ra-progress__stages", "data-ra-field": "stages", "aria-label": "Stages" },
    ...stages.map(({ name, state, stateLabel, current }) =>
      h(
        "li",
        { class: "ra-progress__stage", "data-ra-stage-state": state, ...(current ? { "aria-current": "step" } : {}) },
        h("span", { class: "ra-progress__stage-name" }, text(name)),
        h("span", { class: "ra-progress__stage-state" }, text(` ${stateLabel}`)),
      ),
    ),
  );
}

function text(value) {
  const node = h("span", {});
  node.textContent = value;
  return node;
}

/** The stepper of `element` as [name, state, aria-current, label] per item; null without a list. */
export function stepper(element) {
  const list = element.querySelector('[data-ra-field="stages"]');
  if (!list) return null;
  return list.children.map((item) => [
    item.querySelector(".ra-progress__stage-name")?.textContent,
    item.getAttribute("data-ra-stage-state"),
    item.getAttribute("aria-current"),
    item.querySelector(".ra-progress__stage-state")?.textContent,
  ]);
}

export function rowElement(task = "", { state = "queued", seq = 0, created = "" } = {}) {
  return h(
    "tr",
    { "data-task": task, "data-state": state, "data-seq": String(seq), "data-created": created },
    h("th", {}, h("span", { "data-ra-field": "title" }), h("small", { "data-ra-field": "task" })),
    h("td", { "data-ra-field": "state" }),
    h("td", {}, h("progress", { max: "100", value: "0" }), h("span", { "data-ra-field": "percent" })),
    h("td", {}, h("span", { "data-ra-field": "message" }), h("small", { "data-ra-field": "stage", hidden: "" })),
  );
}

/** The table and, by id, the <template> holding a blank row (give it to installDocument). */
export function dashboardTable(rows, { ws = "/ws/realtime-async/" } = {}) {
  const table = h(
    "table",
    {
      "data-ra-dashboard": "",
      "data-ra-row-template": "ra-dashboard-row",
      "data-ra-poll-url": "/tasks/",
      "data-ra-poll-interval": "1000",
      "data-ra-ws-url": ws,
      "data-ra-limit": "50",
      "data-ra-i18n": JSON.stringify(cases.i18n),
    },
    h("tbody", {}, ...rows),
  );
  const template = { content: h("div", {}, rowElement()) };
  return { table, byId: { "ra-dashboard-row": template } };
}

/** The text of the [data-ra-field] `field` inside `element`. */
export function field(element, name) {
  return element.querySelector(`[data-ra-field="${name}"]`)?.textContent;
}
