/**
 * Learning-rate schedules: plain functions of the step index (0 for the first update), composed
 * with `sequence`. Pure, so that a resumed run needs only the step counter to continue exactly.
 */

export type Schedule = (step: number) => number;

/** The same value at every step. */
export const constant =
  (value: number): Schedule =>
  () =>
    value;

/**
 * Rises linearly to `value` over `warmupSteps` updates, then stays there; the first update uses
 * value / warmupSteps, not 0, so that it does something.
 *
 * @example
 * const lr = linearWarmup(3e-4, 100); // lr(0) = 3e-6, lr(99) = lr(500) = 3e-4
 */
export function linearWarmup(value: number, warmupSteps: number): Schedule {
  checkSteps("linearWarmup", warmupSteps);
  return (step) => value * Math.min(1, (step + 1) / warmupSteps);
}

/**
 * Half a cosine from `value` at step 0 down to `floor` at `decaySteps`, then `floor`.
 *
 * @example
 * const lr = cosineDecay(3e-4, 1000, 3e-5); // lr(0) = 3e-4, lr(500) = 1.65e-4, lr(1000) = 3e-5
 */
export function cosineDecay(value: number, decaySteps: number, floor = 0): Schedule {
  checkSteps("cosineDecay", decaySteps);
  return (step) => floor + (value - floor) * 0.5 * (1 + Math.cos((Math.PI * Math.min(step, decaySteps)) / decaySteps));
}

/**
 * Runs `schedules[0]` until `boundaries[0]`, then `schedules[1]` with its step counted from that
 * boundary, and so on (there is one boundary fewer than schedules).
 *
 * @example
 * const lr = sequence([linearWarmup(1e-3, 50), cosineDecay(1e-3, 950, 1e-4)], [50]);
 */
export function sequence(schedules: readonly Schedule[], boundaries: readonly number[]): Schedule {
  if (schedules.length !== boundaries.length + 1) {
    throw new Error(`sequence: ${schedules.length} schedules need ${schedules.length - 1} boundaries, got ${boundaries.length}`);
  }
  if (boundaries.some((b, i) => !Number.isInteger(b) || b < (boundaries[i - 1] ?? 0))) {
    throw new Error(`sequence: boundaries must be non-decreasing non-negative integers, got ${JSON.stringify(boundaries)}`);
  }
  return (step) => {
    let i = 0;
    while (i < boundaries.length && step >= boundaries[i]) i++;
    return schedules[i](step - (boundaries[i - 1] ?? 0));
  };
}

/**
 * Linear warmup to `peak` over `warmupSteps`, then cosine decay to `floor` at `totalSteps`.
 *
 * @example
 * const lr = warmupCosine({ peak: 3e-4, warmupSteps: 100, totalSteps: 2000, floor: 3e-5 });
 */
export function warmupCosine(options: { peak: number; warmupSteps: number; totalSteps: number; floor?: number }): Schedule {
  const { peak, warmupSteps, totalSteps, floor = 0 } = options;
  if (!(totalSteps > warmupSteps)) throw new Error(`warmupCosine: totalSteps (${totalSteps}) must exceed warmupSteps (${warmupSteps})`);
  return sequence([linearWarmup(peak, warmupSteps), cosineDecay(peak, totalSteps - warmupSteps, floor)], [warmupSteps]);
}

function checkSteps(name: string, steps: number): void {
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`${name}: the number of steps must be a positive integer, got ${steps}`);
}
