/**
 * Events per second over a sliding window, in constant memory: counts are kept in 10 ms slots (a
 * ring of window / 10 ms), so a server generating tens of thousands of tokens per second records
 * each token with one addition and answers the rate with one pass over a few hundred slots.
 * (Keeping one entry per token and dropping old ones with Array.shift costs a copy of the whole
 * array per drop once it is large: at 20,000 tokens/s that stalled the event loop for seconds.)
 */
export class RateWindow {
  readonly #slotMs: number;
  readonly #counts: Float64Array;
  /** The slot index (time / slotMs) each ring entry counts, or −1. */
  readonly #slots: Float64Array;

  constructor(
    readonly windowMs = 5000,
    slotMs = 10,
  ) {
    if (!(windowMs > 0) || !(slotMs > 0) || windowMs % slotMs !== 0) throw new RangeError(`RateWindow: windowMs (${windowMs}) must be a positive multiple of slotMs (${slotMs})`);
    this.#slotMs = slotMs;
    this.#counts = new Float64Array(windowMs / slotMs);
    this.#slots = new Float64Array(windowMs / slotMs).fill(-1);
  }

  /** Records `n` events at time `now` (ms, performance.now()). */
  add(n = 1, now = performance.now()): void {
    const slot = Math.floor(now / this.#slotMs);
    const i = slot % this.#counts.length;
    if (this.#slots[i] !== slot) {
      this.#slots[i] = slot;
      this.#counts[i] = 0;
    }
    this.#counts[i] += n;
  }

  /** Events per second over the window ending at `now`. */
  perSecond(now = performance.now()): number {
    const current = Math.floor(now / this.#slotMs);
    const oldest = current - this.#counts.length + 1;
    let total = 0;
    for (let i = 0; i < this.#counts.length; i++) if (this.#slots[i] >= oldest && this.#slots[i] <= current) total += this.#counts[i];
    return total / (this.windowMs / 1000);
  }
}
