// results.js against the "results" cases of tests/display_cases.json (the Python side: tests/unit/test_results.py),
// and its markup: links with rel="noopener", downloads as <a download>, text never parsed as HTML.

import assert from "node:assert/strict";
import { test } from "node:test";

import { cases, h, installDocument } from "./helpers.mjs";
import { displayResults, renderResults, safeUrl } from "../../realtime_async/static/realtime_async/results.js";

installDocument();

for (const [index, { record, token, expect }] of cases.results.entries()) {
  test(`results case ${index}: ${JSON.stringify(record)}`, () => {
    assert.deepEqual(displayResults(record, cases.i18n, token), expect);
  });
}

test("safeUrl keeps http(s) URLs and paths on this site only", () => {
  for (const url of ["/a/", "/a?b#c", "http://x.example", "https://x.example/p"]) assert.equal(safeUrl(url), url);
  for (const url of ["javascript:x", "//x.example", "/\\x", "x/y", "", " /a", "/a\n", "/é", null, 3]) {
    assert.equal(safeUrl(url), null, String(url));
  }
  assert.equal(safeUrl(`/${"a".repeat(2048)}`), null);
});

test("renderResults draws links and download buttons, hides an empty container, redraws only on change", () => {
  const container = h("p", { "data-ra-field": "results", hidden: "" });
  const shown = displayResults(cases.results[0].record, cases.i18n, cases.results[0].token);
  renderResults(container, shown);
  assert.equal(container.hidden, false);
  const [link, file] = container.children;
  assert.equal(link.tagName, "A");
  assert.equal(link.getAttribute("href"), "/reports/7/");
  assert.equal(link.getAttribute("rel"), "noopener");
  assert.equal(link.textContent, "Open the report");
  assert.equal(file.getAttribute("download"), "report <7>.csv");
  assert.equal(file.textContent, "Download report <7>.csv");
  const before = container.children;
  renderResults(container, displayResults(cases.results[0].record, cases.i18n, cases.results[0].token));
  assert.equal(container.children, before, "unchanged results are not redrawn");
  renderResults(container, displayResults({ state: "running" }, cases.i18n));
  assert.equal(container.children.length, 0);
  assert.equal(container.hidden, true);
  renderResults(null, shown); // a custom template without the container: nothing to do
});
