// Log lines on the client: LogCursor's order and gaps, the client's history and
// gap requests over a scripted WebSocket, and pollProgress's log_after.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { fakeClock, fakeSockets, flush, pinRandom, progress, tick } from "./helpers.mjs";
import { LogCursor, RealtimeAsyncClient, pollProgress } from "../../realtime_async/static/realtime_async/client.js";

const line = (n, text = `line ${n}`, level = "info") => ({ n, t: 1764382000 + n, level, text });
const numbers = (lines) => lines.map((entry) => entry.n);

let restoreClock;
let client;

beforeEach(() => {
  restoreClock = fakeClock();
  pinRandom(1);
});

afterEach(() => {
  client?.close();
  restoreClock();
  mock.restoreAll();
});

test("LogCursor takes lines in order, once, and asks when a record skipped some", () => {
  const cursor = new LogCursor();
  assert.deepEqual(numbers(cursor.live({ last: 2, dropped: 0, lines: [line(1), line(2)] }).lines), [1, 2]);
  assert.deepEqual(cursor.live({ last: 2, dropped: 0, lines: [line(1), line(2)] }).lines, []); // a repeat
  const gap = cursor.live({ last: 5, dropped: 0, lines: [line(5)] }); // 3 and 4 rode on a skipped record
  assert.deepEqual([gap.lines, gap.ask], [[], true]);
  assert.equal(cursor.live({ last: 6, dropped: 0, lines: [line(6)] }).ask, false); // asked already: wait
  const answer = cursor.history({ last: 6, dropped: 0, lines: [line(3), line(4), line(5), line(6)] });
  assert.deepEqual(numbers(answer.lines), [3, 4, 5, 6]);
  assert.deepEqual(numbers(cursor.live({ last: 7, dropped: 0, lines: [line(7)] }).lines), [7]);
  assert.equal(cursor.live({ last: 8, dropped: 0 }).ask, true); // a record with no lines beyond the last held
});

test("LogCursor: a log that starts again resets; lines the server dropped are skipped, not waited for", () => {
  const cursor = new LogCursor(40);
  const reset = cursor.live({ last: 2, dropped: 0, lines: [line(1), line(2)] });
  assert.equal(reset.reset, true);
  assert.equal(reset.ask, false);
  assert.deepEqual(numbers(reset.lines), [1, 2]);
  const trimmed = new LogCursor();
  const answer = trimmed.history({ last: 700, dropped: 200, lines: [line(201), line(202)] });
  assert.deepEqual(numbers(answer.lines), [201, 202]);
  assert.equal(trimmed.last, 700); // what the answer lacks is gone for good
  assert.equal(trimmed.dropped, 200);
});

test("the client asks for history with log_after, fills gaps with a log request, and resumes after a reconnect", async () => {
  const fake = fakeSockets();
  client = new RealtimeAsyncClient({ WebSocket: fake.FakeWebSocket });
  const seen = [];
  client.subscribe("t-1", { onLog: (lines, info) => seen.push([numbers(lines), info.reset]) });
  const socket = fake.sockets[0];
  socket.open();
  assert.deepEqual(socket.frames("subscribe"), [{ v: 1, type: "subscribe", task: "t-1", log_after: 0 }]);
  socket.deliver(progress("t-1", 3, "running", { log: { last: 2, dropped: 0 } }));
  socket.deliver({ v: 1, type: "log", task: "t-1", last: 2, dropped: 0, lines: [line(1), line(2)] });
  socket.deliver(progress("t-1", 4, "running", { log: { last: 3, dropped: 0, lines: [line(3)] } }));
  socket.deliver(progress("t-1", 6, "running", { log: { last: 5, dropped: 0, lines: [line(5)] } }));
  assert.deepEqual(socket.frames("log"), [{ v: 1, type: "log", task: "t-1", after: 3 }]);
  socket.deliver({ v: 1, type: "log", task: "t-1", last: 5, dropped: 0, lines: [line(4), line(5)] });
  assert.deepEqual(seen, [
    [[1, 2], false],
    [[3], false],
    [[4, 5], false],
  ]);
  socket.drop(1006);
  await tick(60_000);
  const again = fake.sockets[1];
  again.open();
  assert.equal(again.frames("subscribe")[0].log_after, 5);
  await flush();
});

test("a final record with a gap keeps the task until its last lines came", () => {
  const fake = fakeSockets();
  client = new RealtimeAsyncClient({ WebSocket: fake.FakeWebSocket });
  const seen = [];
  client.subscribe("t-1", { token: "tok", onLog: (lines) => seen.push(...numbers(lines)) });
  const socket = fake.sockets[0];
  socket.open();
  socket.deliver(progress("t-1", 2, "running", { log: { last: 1, dropped: 0 } }));
  socket.deliver({ v: 1, type: "log", task: "t-1", last: 1, dropped: 0, lines: [line(1)] });
  socket.deliver(progress("t-1", 9, "success", { log: { last: 4, dropped: 0, lines: [line(4)] } }));
  assert.deepEqual(socket.frames("unsubscribe"), []); // not yet: lines 2 and 3 are asked for
  assert.deepEqual(socket.frames("log"), [{ v: 1, type: "log", task: "t-1", after: 1, token: "tok" }]);
  socket.deliver({ v: 1, type: "log", task: "t-1", last: 4, dropped: 0, lines: [line(2), line(3), line(4)] });
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.deepEqual(socket.frames("unsubscribe"), [{ v: 1, type: "unsubscribe", task: "t-1" }]);
});

test("a subscriber without onLog asks for no log", () => {
  const fake = fakeSockets();
  client = new RealtimeAsyncClient({ WebSocket: fake.FakeWebSocket });
  client.subscribe("t-1", {});
  fake.sockets[0].open();
  assert.equal("log_after" in fake.sockets[0].frames("subscribe")[0], false);
});

test("pollProgress asks for the lines after the last one it has", async () => {
  const requests = [];
  const bodies = [
    { log: { last: 2, dropped: 0, lines: [line(1), line(2)] }, seq: 3 },
    { log: { last: 3, dropped: 0, lines: [line(3)] }, seq: 4, state: "success" },
  ];
  const fetch = async (url) => {
    requests.push(url);
    const { seq, state = "running", log } = bodies.shift();
    const body = { v: 1, type: "progress", task: "t-1", data: { task: "t-1", seq, state, log } };
    return { status: 200, ok: true, headers: { get: () => null }, json: async () => body };
  };
  const seen = [];
  pollProgress("/p/t-1/?token=a", { task: "t-1", fetch, onLog: (lines) => seen.push(...numbers(lines)) });
  await flush();
  await tick(1000);
  assert.deepEqual(requests, ["/p/t-1/?token=a&log_after=0", "/p/t-1/?token=a&log_after=2"]);
  assert.deepEqual(seen, [1, 2, 3]);
});
