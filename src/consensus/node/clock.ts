// The driver's only source of time. Production uses the process clock; the simulator injects
// virtual time so the same driver runs deterministically under skewed, paused and crashing nodes.

/** A timer handle from a `RaftClock`; only ever handed back to the same clock. */
export type TimerHandle = unknown;

/**
 * Time for the driver: timers, the tick interval, the deferral that batches inputs into one Ready,
 * and `now()` for contact ages.
 */
export interface RaftClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  setInterval(fn: () => void, ms: number): TimerHandle;
  clearInterval(handle: TimerHandle): void;
  /** Runs `fn` once the inputs of the current I/O phase have arrived. */
  defer(fn: () => void): void;
}

export const systemClock: RaftClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
  defer: (fn) => {
    setImmediate(fn);
  },
};
