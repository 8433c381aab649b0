/**
 * RateWindow: the rate over a sliding window from 10 ms slots, against counting the events inside
 * the window directly; old slots forgotten when the ring comes round; a million events at 20,000
 * per second (the ring's memory is fixed: window / slot entries).
 */
import { describe, expect, it } from "vitest";
import { RateWindow } from "../src/rate.js";

describe("RateWindow", () => {
  it("counts the events of the window, slot by slot", () => {
    const w = new RateWindow(1000, 10);
    // Events at seeded-random times over 3 s; the rate at a time is the events of the 100 slots ending there.
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const times: number[] = [];
    let t = 50_000;
    for (let i = 0; i < 4000; i++) {
      t += rand() * 1.5;
      times.push(t);
      w.add(1, t);
      if (i % 97 === 0) {
        const current = Math.floor(t / 10);
        const inside = times.filter((x) => Math.floor(x / 10) > current - 100).length;
        expect(w.perSecond(t)).toBeCloseTo(inside / 1, 9);
      }
    }
    // Long after, nothing is in the window.
    expect(w.perSecond(t + 5000)).toBe(0);
  });

  it("adds counts and forgets a slot when the ring comes round", () => {
    const w = new RateWindow(100, 10);
    w.add(3, 1000);
    w.add(2, 1005);
    expect(w.perSecond(1005)).toBe(50); // 5 events in 0.1 s
    w.add(7, 1100); // the same ring entry, 100 ms later: the old count is dropped
    expect(w.perSecond(1100)).toBe(70);
  });

  it("records a million events at 20,000 per second and reads their rate", () => {
    const w = new RateWindow(5000, 10);
    for (let i = 0; i < 1_000_000; i++) {
      w.add(1, i / 20); // 20,000 per second for 50 s
      if (i % 40_000 === 0) w.perSecond(i / 20);
    }
    expect(w.perSecond(999_999 / 20)).toBeCloseTo(20_000, -2);
  });

  it("refuses a window that is not a whole number of slots", () => {
    expect(() => new RateWindow(1005, 10)).toThrow(/positive multiple of slotMs/);
  });
});
