// backoffDelay: exponential, capped, with equal jitter.

import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay } from "../../realtime_async/static/realtime_async/client.js";

test("the step doubles from `initial` and is capped at `max`", () => {
  const longest = [0, 1, 2, 3, 10].map((n) => backoffDelay(n, { initial: 500, max: 30000 }, () => 1));
  assert.deepEqual(longest, [500, 1000, 2000, 4000, 30000]);
  assert.equal(backoffDelay(Number.POSITIVE_INFINITY, { initial: 500, max: 30000 }, () => 1), 30000);
  assert.equal(backoffDelay(-3, { initial: 500 }, () => 1), 500);
  assert.equal(backoffDelay(2, { initial: 100, factor: 3 }, () => 1), 900);
});

test("jitter keeps each delay within [step / 2, step]", () => {
  assert.deepEqual(
    [0, 1, 2].map((n) => backoffDelay(n, { initial: 500, max: 30000 }, () => 0)),
    [250, 500, 1000],
  );
  for (let attempt = 0; attempt < 12; attempt++) {
    const step = Math.min(30000, 500 * 2 ** attempt);
    for (const r of [0, 0.25, 0.5, 0.999]) {
      const delay = backoffDelay(attempt, {}, () => r);
      assert.ok(delay >= step / 2 && delay <= step, `${attempt}/${r}: ${delay}`);
    }
  }
  // With the real Math.random: spread out, never below half the step.
  const delays = Array.from({ length: 200 }, () => backoffDelay(3));
  assert.ok(delays.every((d) => d >= 2000 && d <= 4000));
  assert.ok(new Set(delays).size > 100);
});
