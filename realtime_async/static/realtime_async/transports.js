/**
 * The three transports under RealtimeAsyncClient and the ladder between them:
 * the WebSocket (socket.js), Server-Sent Events (sse.js) and polling (poll.js),
 * climbed down and back up by ladder.js's policy. Each hands the client the
 * protocol's messages, named by the transport that brought them; the client
 * alone decides what is new (one seq check per task), so a record that two
 * transports bring is delivered once, and never out of order.
 * Not public: use RealtimeAsyncClient.
 */

import { Ladder, TRANSPORTS } from "./ladder.js";
import { fetchLog, pollProgress, withParam } from "./poll.js";
import { PROTOCOL_VERSION } from "./protocol.js";
import { EventStream } from "./sse.js";
import { Connection } from "./socket.js";

export class Transports {
  /**
   * `owner` (the client): {wanted(), tasks() (its Map task -> entry), eventsUrl(), opened(), received(message, via),
   * dropped(), statusChanged(detail), switched(via)}. `transport`: "auto" (every rung) or one of TRANSPORTS.
   */
  constructor(owner, { url, transport, Socket, Source, fetch, options, backoff, probe, pollInterval }) {
    this._owner = owner;
    this._fetch = fetch;
    this._pollInterval = pollInterval;
    this._polls = new Map(); // task -> pollProgress handle, while polling
    this._shown = null; // the last status detail sent
    const wanted = (name) => owner.wanted() && this.ladder.active(name);
    this.socket = new Connection(
      {
        wanted: () => wanted("ws"),
        opened: () => owner.opened(),
        received: (message) => this._received("ws", message),
        dropped: () => owner.dropped(),
        statusChanged: () => this._changed("ws"),
      },
      { url, Socket, options, backoff },
    );
    this.stream = new EventStream(
      {
        url: () => owner.eventsUrl(),
        tasks: () => [...owner.tasks()].map(([task, entry]) => [task, entry.token]),
        received: (message) => this._received("sse", message),
        statusChanged: () => this._changed("sse"),
      },
      { Source, backoff },
    );
    const polling = { status: "idle", failures: 0, everHeard: true };
    this._polling = polling;
    const rungs = {
      ws: {
        available: () => typeof Socket === "function",
        start: () => this.socket.connect(),
        stop: () => this.socket.suspend(),
        state: this.socket,
      },
      sse: {
        available: () => Boolean(owner.eventsUrl()) && typeof Source === "function" && owner.tasks().size > 0,
        start: () => this.stream.start(),
        stop: () => this.stream.stop(),
        state: this.stream,
      },
      poll: {
        available: () => [...owner.tasks().values()].some((entry) => entry.pollUrl),
        start: () => {
          polling.status = "open";
          this._syncPolls();
        },
        stop: () => {
          polling.status = "idle";
          this._syncPolls();
        },
        state: polling,
      },
    };
    const names = transport === "auto" ? TRANSPORTS : [transport];
    this.ladder = new Ladder(
      names.map((name) => ({ name, ...rungs[name] })),
      {
        probe,
        wanted: () => owner.wanted(),
        switched: (via) => {
          owner.switched(via);
          this._show();
        },
      },
    );
  }

  /** The transport in use: "ws", "sse", "poll", or null when none can be used. */
  get transport() {
    return this.ladder.via;
  }

  get state() {
    return this.ladder.state;
  }

  /** Something is wanted; `asked`: the server was asked something just now (its answer is awaited). */
  connect(asked = false) {
    this.ladder.wake(asked);
  }

  /**
   * The set of tasks (or a token) changed. `reopen`: the event stream must learn it (a task came, or went
   * before its final state; one that ended is no longer streamed anyway).
   */
  tasksChanged(reopen = true) {
    if (reopen || !this._owner.tasks().size) this.stream.changed(); // none left: it closes
    if (this.ladder.active("poll")) this._syncPolls();
    this.ladder.refresh();
  }

  /** The log lines of `task` after line `after`, over HTTP; resolves to the record's `log`. */
  fetchLog(url, after) {
    return fetchLog(url, after, { fetch: this._fetch });
  }

  /** Nothing is wanted: the socket closes after its idle timeout, the stream and the polls already stopped. */
  idleSoon() {
    this.ladder.sleep();
    this.socket.idleSoon();
  }

  close() {
    this.socket.close();
    this.stream.close();
    this.ladder.close();
  }

  _received(via, message) {
    this.ladder.delivered(via); // first: a probe that delivers is the transport in use by the time the client hears
    this._owner.received(message, via);
  }

  _changed(name) {
    this.ladder.changed(name);
    if (name === this.ladder.via) this._show();
  }

  // One poller per task that has a polling URL, while polling is in use.
  _syncPolls() {
    const tasks = this._owner.tasks();
    const on = this._polling.status === "open";
    for (const [task, poll] of this._polls) {
      if (on && tasks.get(task)?.pollUrl) continue;
      poll.stop();
      this._polls.delete(task);
    }
    if (!on) return;
    for (const [task, entry] of tasks) {
      if (!entry.pollUrl || this._polls.has(task)) continue;
      // With a log, each poll asks for the lines after the cursor: the answer's `log.lines` are history.
      const url = () => (entry.log ? withParam(entry.pollUrl, "log_after", entry.log.last) : entry.pollUrl);
      const poll = pollProgress(url, {
        task,
        seq: entry.seq,
        interval: this._pollInterval,
        fetch: this._fetch,
        onProgress: (data) => this._received("poll", { v: PROTOCOL_VERSION, type: "progress", task, data }),
        onError: (error) => this._received("poll", { v: PROTOCOL_VERSION, type: "error", ...error, task }),
      });
      this._polls.set(task, poll);
    }
  }

  _show() {
    const { status, failures } = this.ladder.state;
    const detail = { status, failures, transport: this.ladder.via };
    const shown = this._shown;
    if (shown && shown.status === status && shown.failures === failures && shown.transport === detail.transport) return;
    this._shown = detail;
    this._owner.statusChanged(detail);
  }
}
