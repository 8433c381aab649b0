/**
 * Just enough of vitest's API (describe, it, beforeAll, afterAll, expect) to run the shared
 * conformance suite in a plain Node process or a browser page, where vitest is not available.
 */
type Fn = () => unknown;
interface Case {
  name: string;
  fn: Fn;
  before: Fn[];
  after: Fn[];
}

const cases: Case[] = [];
const stack: { name: string; before: Fn[]; after: Fn[] }[] = [];

export function describe(name: string, body: () => void): void {
  stack.push({ name, before: [], after: [] });
  body();
  stack.pop();
}
describe.skip = (_name: string, _body: () => void) => {};

export function it(name: string, fn: Fn): void {
  const scope = stack[stack.length - 1];
  cases.push({ name: [...stack.map((s) => s.name), name].join(" > "), fn, before: scope?.before ?? [], after: scope?.after ?? [] });
}

export const beforeAll = (fn: Fn) => stack[stack.length - 1]?.before.push(fn);
export const afterAll = (fn: Fn) => stack[stack.length - 1]?.after.push(fn);

function same(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

export function expect(actual: unknown) {
  return {
    toEqual(want: unknown) {
      if (!same(actual, want)) throw new Error(`expected ${JSON.stringify(want)}, got ${JSON.stringify(actual)}`);
    },
    toBe(want: unknown) {
      if (!Object.is(actual, want)) throw new Error(`expected ${String(want)}, got ${String(actual)}`);
    },
  };
}

export interface CaseResult {
  name: string;
  ok: boolean;
  ms: number;
  error?: string;
}

/** Runs the collected cases in order (hooks once per describe block) and forgets them. */
export async function runCollected(filter: (name: string) => boolean = () => true): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  const todo = cases.splice(0).filter((c) => filter(c.name));
  const started = new Set<Fn[]>();
  for (let i = 0; i < todo.length; i++) {
    const c = todo[i]!;
    if (!started.has(c.before)) {
      started.add(c.before);
      for (const f of c.before) await f();
    }
    const t0 = performance.now();
    try {
      await c.fn();
      results.push({ name: c.name, ok: true, ms: performance.now() - t0 });
    } catch (err) {
      results.push({ name: c.name, ok: false, ms: performance.now() - t0, error: String((err as Error).message ?? err) });
    }
    if (todo[i + 1]?.after !== c.after) for (const f of c.after) await f();
  }
  return results;
}
