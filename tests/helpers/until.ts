// The one bounded wait of the tests: poll a probe until it answers, never longer than a deadline.

/** Thrown by a probe to end the wait at once (a child exited): no later poll can succeed. */
export class WaitAborted extends Error {}

const FIRST_POLL_MS = 5;
const MAX_POLL_MS = 100;

/**
 * Polls `probe` until it returns something truthy, and returns that. A probe that throws counts as
 * "not yet" (a server still starting refuses connections) and its last error is named if time runs
 * out; WaitAborted ends the wait at once. Polls start fast and slow down to every 100 ms, so a
 * long wait does not load a busy machine.
 */
export async function until<T>(
  what: string,
  probe: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let pollMs = FIRST_POLL_MS;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      if (err instanceof WaitAborted) throw err;
      lastError = err;
    }
    if (Date.now() > deadline) {
      const why = lastError === undefined ? '' : ` (last error: ${String(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
    pollMs = Math.min(MAX_POLL_MS, pollMs * 2);
  }
}
