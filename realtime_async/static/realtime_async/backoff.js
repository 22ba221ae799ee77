/** Retry delays shared by the socket's reconnects and both pollers (public through client.js). */

/**
 * Milliseconds to wait before retry number `attempt` (0-based): exponential,
 * capped, with "equal jitter" (between half and all of the step) so that many
 * clients cut off together do not come back in lockstep, and never at once.
 */
export function backoffDelay(attempt, { initial = 500, max = 30000, factor = 2 } = {}, random = Math.random) {
  const step = Math.min(max, initial * factor ** Math.max(0, attempt));
  return step / 2 + (random() * step) / 2;
}
