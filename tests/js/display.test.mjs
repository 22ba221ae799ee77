// display.js against tests/display_cases.json, the table the Python side is tested against too.

import assert from "node:assert/strict";
import { test } from "node:test";

import { cases } from "./helpers.mjs";
import { FINAL_STATES, isFinal } from "../../realtime_async/static/realtime_async/client.js";
import { showPart } from "../../realtime_async/static/realtime_async/breakdown.js";
import { display, displayStages, formatEta, groupSummary } from "../../realtime_async/static/realtime_async/display.js";
import { formatEta as widgetFormatEta } from "../../realtime_async/static/realtime_async/widget.js";

test("client.js's FINAL_STATES are the shared table's (and so the server's)", () => {
  assert.deepEqual([...FINAL_STATES].sort(), [...cases.final_states].sort());
  for (const state of cases.final_states) assert.ok(isFinal({ state }));
  assert.ok(!isFinal(null) && !isFinal({ state: "running" }));
});

for (const { seconds, text } of cases.eta) {
  test(`formatEta(${seconds}) is ${JSON.stringify(text)}`, () => {
    assert.equal(formatEta(seconds, cases.i18n), text);
  });
}

test("formatEta without i18n speaks English, and widget.js still exports it", () => {
  assert.equal(widgetFormatEta, formatEta);
  assert.equal(formatEta(5430), "1 h 31 min left");
  assert.equal(formatEta(Number.NaN), "");
  assert.equal(formatEta("12"), "");
});

for (const [index, { record, expect }] of cases.records.entries()) {
  test(`display case ${index}: ${JSON.stringify(record)}`, () => {
    const shown = display(record, cases.i18n);
    assert.deepEqual(
      {
        state: shown.state,
        state_label: shown.stateLabel,
        final: shown.final,
        indeterminate: shown.indeterminate,
        percent_value: shown.percentValue,
        percent_text: shown.percentText,
        eta_text: shown.etaText,
        message: shown.message,
        stages: shown.stages.map(({ name, state, stateLabel, current }) => ({
          name,
          state,
          state_label: stateLabel,
          current,
        })),
        stage_text: shown.stageText,
        group_text: shown.groupText,
      },
      expect,
    );
    // The number behind the texts: clamped, and there exactly when the texts are.
    if (shown.percent === null) assert.equal(expect.percent_value, null);
    else assert.ok(shown.percent >= 0 && shown.percent <= 100);
  });
}

test("display without i18n shows the raw state and no message for an unknown task", () => {
  const shown = display(null);
  assert.equal(shown.stateLabel, "unavailable");
  assert.equal(shown.message, "");
  assert.equal(display({ state: "failure", seq: 1 }).message, "");
});

test("displayStages without i18n speaks English; the stepper's keys are the ones shown", () => {
  const record = {
    state: "running",
    stage: "Save",
    stages: [
      { name: "Load", state: "done", weight: 1, percent: 100 },
      { name: "Save", state: "active", weight: 1, percent: 20 },
    ],
  };
  const { stages, stageText } = displayStages(record);
  assert.equal(stageText, "Stage 2 of 2: Save");
  assert.deepEqual(
    stages.map((stage) => stage.stateLabel),
    ["Done", "In progress"],
  );
  assert.deepEqual(displayStages(null), { stages: [], stageText: "" });
  // A label named like an Object property is no label.
  const odd = displayStages({ state: "running", stages: [{ name: "x", state: "constructor" }] });
  assert.equal(odd.stages[0].stateLabel, "constructor");
});

for (const { record, expect } of cases.translated.records) {
  test(`display in ${cases.translated.language}, case ${record.seq}: the stock messages translated, others as written`, () => {
    const shown = display(record, cases.translated.i18n);
    const got = { state_label: shown.stateLabel, eta_text: shown.etaText, message: shown.message };
    Object.assign(got, { stage_text: shown.stageText, group_text: shown.groupText });
    if (!("group_text" in expect)) delete got.group_text;
    assert.deepEqual(got, expect);
  });
}

for (const { part, expect } of cases.parts) {
  test(`a breakdown lists ${part.task} as the server does`, () => {
    const shown = showPart(part, cases.i18n);
    assert.deepEqual(
      {
        title: shown.title,
        state: shown.state,
        state_label: shown.stateLabel,
        percent_text: shown.percentText,
        error: shown.error,
      },
      expect,
    );
  });
}

test("groupSummary without i18n speaks English, digits grouped by threes", () => {
  const counts = { queued: 0, running: 185, success: 812, failure: 2, cancelled: 0, lost: 1 };
  assert.equal(groupSummary({ parts: 1000, counts }), "1,000 parts: 812 done, 3 failed, 185 running");
  assert.equal(groupSummary({ parts: 1, counts: {} }), "1 part");
  assert.equal(groupSummary(null), "");
  assert.equal(display({ state: "running", seq: 1 }).groupText, "");
});
