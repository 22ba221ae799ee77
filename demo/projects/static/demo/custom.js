// The custom-frontend page: everything through the dependency-free JS client.
import { RealtimeAsyncClient } from "/static/realtime_async/client.js";

const app = document.getElementById("custom-app");
const log = document.getElementById("custom-log");
const client = new RealtimeAsyncClient();

function line(task) {
  const li = document.createElement("li");
  li.dataset.task = task;
  li.textContent = `${task}: queued`;
  log.prepend(li);
  return li;
}

app.addEventListener("click", async (event) => {
  const kind = event.target.dataset?.kind;
  if (!kind) return;
  const response = await fetch(app.dataset.launchUrl, {
    method: "POST",
    headers: { "X-CSRFToken": app.dataset.csrf, "X-Requested-With": "fetch", Accept: "application/json" },
    body: new URLSearchParams({ kind }),
  });
  const body = await response.json();
  if (!response.ok) {
    line("error").textContent = body.error;
    return;
  }
  const li = line(body.task);
  client.subscribe(body.task, {
    onProgress(record) {
      const pct = record.percent == null ? "" : ` ${Math.round(record.percent)}%`;
      li.textContent = `${record.task}: ${record.state}${pct} ${record.message || ""}`;
      li.dataset.state = record.state;
    },
    onError(error) {
      li.textContent = `${body.task}: ${error.code}`;
    },
  });
});
