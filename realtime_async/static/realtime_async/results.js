/**
 * A succeeded task's result link and downloads: the rule (displayResults, the
 * same as the server's _web/results.py, both checked against the "results"
 * cases of tests/display_cases.json) and the markup (renderResults, the same
 * as progress.html's and row.html's data-ra-field="results").
 *
 * Results show once the task succeeded, never before. A link or file whose URL
 * is not an http(s) URL or a path on this site is left out, whatever the record
 * holds: no javascript:, data:, //host or backslash ever becomes an href. A
 * watch-token viewer's downloads carry the token (they have no session).
 * Text goes in with textContent and URLs with setAttribute: nothing is parsed as HTML.
 */

const MAX_URL_LENGTH = 2048;

/** `url` when it is an http(s) URL or a path on this site (printable ASCII), else null. */
export function safeUrl(url) {
  if (typeof url !== "string" || url.length > MAX_URL_LENGTH || !/^[!-~]+$/.test(url) || url.includes("\\")) {
    return null;
  }
  if (/^https?:\/\/[^/?#]+(?:[/?#].*)?$/is.test(url)) return url;
  return url.startsWith("/") && !url.startsWith("//") ? url : null;
}

function withToken(url, token) {
  if (!token) return url;
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

/**
 * What to show of `record`'s results: {links: [{url, label}], files: [{url, name, text}]},
 * both empty unless the task succeeded. `i18n` is the server's data-ra-i18n.
 */
export function displayResults(record, i18n = {}, token = "") {
  const shown = { links: [], files: [] };
  if (!record || record.state !== "success") return shown;
  const entries = (value) => (Array.isArray(value) ? value : []).filter((entry) => entry && typeof entry === "object");
  for (const entry of entries(record.links)) {
    const url = safeUrl(entry.url);
    if (url === null) continue;
    const label = typeof entry.label === "string" && entry.label ? entry.label : i18n.result_link || "Open the result";
    shown.links.push({ url, label });
  }
  for (const entry of entries(record.files)) {
    const url = safeUrl(entry.url);
    if (url === null || typeof entry.name !== "string" || !entry.name) continue;
    const text = String(i18n.download || "Download %(name)s").replace("%(name)s", entry.name);
    shown.files.push({ url: withToken(url, token), name: entry.name, text });
  }
  return shown;
}

const drawn = new WeakMap(); // container -> the JSON of what it shows

/**
 * Show `shown` (displayResults()) in `container` ([data-ra-field="results"]), hidden when empty.
 * Redrawn only when it changed, so a screen reader is not told the same links again.
 */
export function renderResults(container, shown) {
  if (!container) return;
  const key = JSON.stringify(shown);
  if (drawn.get(container) === key) return;
  drawn.set(container, key);
  const doc = globalThis.document;
  const nodes = [];
  for (const { url, label } of shown.links) {
    const link = doc.createElement("a");
    link.setAttribute("class", "ra-progress__link");
    link.setAttribute("href", url);
    link.setAttribute("rel", "noopener");
    link.textContent = label;
    nodes.push(link);
  }
  for (const { url, name, text } of shown.files) {
    const button = doc.createElement("a");
    button.setAttribute("class", "ra-progress__download");
    button.setAttribute("href", url);
    button.setAttribute("download", name);
    button.textContent = text;
    nodes.push(button);
  }
  container.replaceChildren(...nodes);
  container.hidden = nodes.length === 0;
}
