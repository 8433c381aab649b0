/**
 * A stand-in for the part of vitest's API the GPU test files use (describe, it/test, the four
 * hooks, skip/skipIf, expect with its common matchers), for places where vitest is not installed:
 * the bundled GPU test runner (run.ts here) and the WebGPU browser page. Tests are collected when
 * their file is imported and run by `runCollected`, in order, one at a time.
 *
 * Semantics follow vitest where the test files depend on them: beforeAll/afterAll run once per
 * describe block, around its tests, and only when it has tests to run; a failing beforeAll fails
 * the tests of its block; skipped blocks still declare their tests, so they are counted.
 */

type Fn = () => unknown;

interface Test {
  kind: "test";
  name: string;
  fn: Fn;
  skip: boolean;
  timeout?: number;
}

interface Suite {
  kind: "suite";
  name: string;
  skip: boolean;
  children: (Suite | Test)[];
  beforeAll: Fn[];
  afterAll: Fn[];
  beforeEach: Fn[];
  afterEach: Fn[];
}

const newSuite = (name: string, skip: boolean): Suite => ({ kind: "suite", name, skip, children: [], beforeAll: [], afterAll: [], beforeEach: [], afterEach: [] });

let root = newSuite("", false);
const stack: Suite[] = [root];
const current = () => stack[stack.length - 1];

function declareSuite(name: string, body: () => void, skip: boolean): void {
  const suite = newSuite(name, skip || current().skip);
  current().children.push(suite);
  stack.push(suite);
  try {
    const result = body() as unknown;
    if (result instanceof Promise) throw new Error(`describe("${name}"): an async body is not supported by the stand-in`);
  } finally {
    stack.pop();
  }
}

type Describe = ((name: string, body: () => void) => void) & {
  skip: (name: string, body: () => void) => void;
  skipIf: (condition: unknown) => (name: string, body: () => void) => void;
  runIf: (condition: unknown) => (name: string, body: () => void) => void;
};

export const describe: Describe = Object.assign((name: string, body: () => void) => declareSuite(name, body, false), {
  skip: (name: string, body: () => void) => declareSuite(name, body, true),
  skipIf: (condition: unknown) => (name: string, body: () => void) => declareSuite(name, body, Boolean(condition)),
  runIf: (condition: unknown) => (name: string, body: () => void) => declareSuite(name, body, !condition),
});

function declareTest(name: string, fn: Fn | undefined, timeout: number | undefined, skip: boolean): void {
  current().children.push({ kind: "test", name, fn: fn ?? (() => {}), skip: skip || current().skip || !fn, timeout });
}

/** vitest's `it.each` names: %s, %d, %i, %f, %j and %o take the row's values in order, %% is %. */
function eachName(name: string, row: readonly unknown[]): string {
  let next = 0;
  return name.replace(/%[sdifjo%]/g, (spec) => {
    if (spec === "%%") return "%";
    const value = row[next++];
    return spec === "%j" || spec === "%o" ? JSON.stringify(value) : String(value);
  });
}

type EachFn = <Row extends readonly unknown[]>(rows: readonly Row[]) => (name: string, fn: (...row: Row) => unknown, timeout?: number) => void;

type TestFn = ((name: string, fn?: Fn, timeout?: number) => void) & {
  skip: (name: string, fn?: Fn, timeout?: number) => void;
  skipIf: (condition: unknown) => (name: string, fn?: Fn, timeout?: number) => void;
  runIf: (condition: unknown) => (name: string, fn?: Fn, timeout?: number) => void;
  /** One test a row (rows of arrays, each spread into the test's arguments). */
  each: EachFn;
};

export const it: TestFn = Object.assign((name: string, fn?: Fn, timeout?: number) => declareTest(name, fn, timeout, false), {
  skip: (name: string, fn?: Fn, timeout?: number) => declareTest(name, fn, timeout, true),
  skipIf: (condition: unknown) => (name: string, fn?: Fn, timeout?: number) => declareTest(name, fn, timeout, Boolean(condition)),
  runIf: (condition: unknown) => (name: string, fn?: Fn, timeout?: number) => declareTest(name, fn, timeout, !condition),
  each:
    <Row extends readonly unknown[]>(rows: readonly Row[]) =>
    (name: string, fn: (...row: Row) => unknown, timeout?: number) => {
      for (const row of rows) declareTest(eachName(name, row), () => fn(...row), timeout, false);
    },
});
export const test = it;

export const beforeAll = (fn: Fn): void => void current().beforeAll.push(fn);
export const afterAll = (fn: Fn): void => void current().afterAll.push(fn);
export const beforeEach = (fn: Fn): void => void current().beforeEach.push(fn);
export const afterEach = (fn: Fn): void => void current().afterEach.push(fn);

// ---------------------------------------------------------------------------------------------
// expect

const show = (v: unknown): string => {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "function") return `[Function ${v.name || "anonymous"}]`;
  try {
    const text = JSON.stringify(v, (_k, x: unknown) => (ArrayBuffer.isView(x) && !(x instanceof DataView) ? Array.from(x as unknown as ArrayLike<number>) : x));
    if (text === undefined) return String(v);
    return text.length > 400 ? `${text.slice(0, 400)}…` : text;
  } catch {
    return String(v);
  }
};

/** vitest's toEqual: recursive, undefined properties ignored, NaN equal to NaN. */
function equal(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b)) {
    if (a.constructor !== b.constructor) return false;
    const x = a as unknown as ArrayLike<unknown>;
    const y = b as unknown as ArrayLike<unknown>;
    return x.length === y.length && Array.prototype.every.call(x, (v, i) => Object.is(v, y[i]));
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a instanceof Map || a instanceof Set || b instanceof Map || b instanceof Set) return equal([...(a as Iterable<unknown>)], [...(b as Iterable<unknown>)]);
  const defined = (o: object) => Object.keys(o).filter((k) => (o as Record<string, unknown>)[k] !== undefined);
  const ka = defined(a);
  const kb = defined(b);
  return ka.length === kb.length && ka.every((k) => equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

type Check = (actual: unknown, ...args: never[]) => { pass: boolean; message: string };

const MATCHERS = {
  toBe: (a: unknown, b: unknown) => ({ pass: Object.is(a, b), message: `expected ${show(a)} to be ${show(b)}` }),
  toEqual: (a: unknown, b: unknown) => ({ pass: equal(a, b), message: `expected ${show(a)} to equal ${show(b)}` }),
  toStrictEqual: (a: unknown, b: unknown) => ({ pass: equal(a, b), message: `expected ${show(a)} to strictly equal ${show(b)}` }),
  toBeNull: (a: unknown) => ({ pass: a === null, message: `expected ${show(a)} to be null` }),
  toBeUndefined: (a: unknown) => ({ pass: a === undefined, message: `expected ${show(a)} to be undefined` }),
  toBeDefined: (a: unknown) => ({ pass: a !== undefined, message: `expected ${show(a)} to be defined` }),
  toBeTruthy: (a: unknown) => ({ pass: Boolean(a), message: `expected ${show(a)} to be truthy` }),
  toBeFalsy: (a: unknown) => ({ pass: !a, message: `expected ${show(a)} to be falsy` }),
  toBeNaN: (a: unknown) => ({ pass: Number.isNaN(a), message: `expected ${show(a)} to be NaN` }),
  toBeGreaterThan: (a: unknown, b: number) => ({ pass: (a as number) > b, message: `expected ${show(a)} to be greater than ${b}` }),
  toBeGreaterThanOrEqual: (a: unknown, b: number) => ({ pass: (a as number) >= b, message: `expected ${show(a)} to be greater than or equal to ${b}` }),
  toBeLessThan: (a: unknown, b: number) => ({ pass: (a as number) < b, message: `expected ${show(a)} to be less than ${b}` }),
  toBeLessThanOrEqual: (a: unknown, b: number) => ({ pass: (a as number) <= b, message: `expected ${show(a)} to be less than or equal to ${b}` }),
  toBeCloseTo: (a: unknown, b: number, digits = 2) => ({ pass: Math.abs((a as number) - b) < 10 ** -digits / 2, message: `expected ${show(a)} to be close to ${b} (${digits} digits)` }),
  toHaveLength: (a: unknown, n: number) => ({ pass: (a as { length?: number })?.length === n, message: `expected length ${n}, got ${(a as { length?: number })?.length}` }),
  toContain: (a: unknown, item: unknown) => ({ pass: (a as { includes(x: unknown): boolean }).includes(item), message: `expected ${show(a)} to contain ${show(item)}` }),
  toMatch: (a: unknown, re: RegExp | string) => ({ pass: typeof re === "string" ? String(a).includes(re) : re.test(String(a)), message: `expected ${show(a)} to match ${String(re)}` }),
  toBeInstanceOf: (a: unknown, c: new (...args: never[]) => unknown) => ({ pass: a instanceof c, message: `expected ${show(a)} to be an instance of ${c.name}` }),
  toThrow: (a: unknown, want?: RegExp | string) => {
    let thrown: unknown = undefined;
    let threw = false;
    try {
      (a as () => unknown)();
    } catch (err) {
      threw = true;
      thrown = err;
    }
    return errorMatches(threw, thrown, want);
  },
} satisfies Record<string, Check>;

function errorMatches(threw: boolean, thrown: unknown, want?: RegExp | string) {
  const message = thrown instanceof Error ? thrown.message : String(thrown);
  const pass = threw && (want === undefined || (typeof want === "string" ? message.includes(want) : want.test(message)));
  return { pass, message: threw ? `expected an error matching ${String(want)}, got "${message}"` : `expected a function that throws${want ? ` ${String(want)}` : ""}` };
}

type Matchers = { [K in keyof typeof MATCHERS]: (...args: Parameters<(typeof MATCHERS)[K]> extends [unknown, ...infer R] ? R : never) => void };
type AsyncMatchers = { [K in keyof Matchers]: (...args: Parameters<Matchers[K]>) => Promise<void> };

export class AssertionError extends Error {
  override name = "AssertionError";
}

function matchers(actual: unknown, label: string | undefined, negate: boolean): Matchers {
  const out: Record<string, (...args: unknown[]) => void> = {};
  for (const [key, check] of Object.entries(MATCHERS)) {
    out[key] = (...args: unknown[]) => {
      const r = (check as (a: unknown, ...rest: unknown[]) => { pass: boolean; message: string })(actual, ...args);
      if (r.pass === negate) throw new AssertionError(`${label ? `${label}: ` : ""}${negate ? `not: ${r.message}` : r.message}`);
    };
  }
  return out as Matchers;
}

function settled(promise: unknown, label: string | undefined, want: "rejects" | "resolves", negate: boolean): AsyncMatchers {
  const out: Record<string, (...args: unknown[]) => Promise<void>> = {};
  for (const key of Object.keys(MATCHERS)) {
    out[key] = async (...args: unknown[]) => {
      let value: unknown;
      let rejected = false;
      try {
        value = await promise;
      } catch (err) {
        rejected = true;
        value = err;
      }
      if (want === "rejects" && key === "toThrow") {
        const r = errorMatches(rejected, value, args[0] as RegExp | string | undefined);
        if (r.pass === negate) throw new AssertionError(`${label ? `${label}: ` : ""}${r.message}`);
        return;
      }
      if ((want === "rejects") !== rejected) throw new AssertionError(`expected the promise to ${want === "rejects" ? "reject" : "resolve"}, it ${rejected ? `rejected: ${show(value)}` : "resolved"}`);
      (matchers(value, label, negate)[key as keyof Matchers] as (...a: unknown[]) => void)(...args);
    };
  }
  return out as AsyncMatchers;
}

export function expect(actual: unknown, label?: string) {
  return Object.assign(matchers(actual, label, false), {
    not: matchers(actual, label, true),
    rejects: Object.assign(settled(actual, label, "rejects", false), { not: settled(actual, label, "rejects", true) }),
    resolves: Object.assign(settled(actual, label, "resolves", false), { not: settled(actual, label, "resolves", true) }),
  });
}

// ---------------------------------------------------------------------------------------------
// running

export interface CaseResult {
  /** Block names and the test's name, joined by " > ". */
  name: string;
  ok: boolean;
  skipped: boolean;
  ms: number;
  error?: string;
}

export interface RunOptions {
  /** Runs only the tests whose full name passes (the others are left out, not counted). */
  filter?: (name: string) => boolean;
  /** Milliseconds a test or hook may take (default 300,000). */
  timeout?: number;
  /** Called with each result as it is known. */
  onResult?: (result: CaseResult) => void;
}

const errorText = (err: unknown) => (err instanceof Error ? (err.stack ?? err.message) : String(err));

async function withTimeout(fn: Fn, ms: number, what: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      Promise.resolve().then(fn),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const fullName = (path: string[], name: string) => [...path, name].filter(Boolean).join(" > ");

function selected(suite: Suite, path: string[], filter: (name: string) => boolean): boolean {
  return suite.children.some((c) => (c.kind === "suite" ? selected(c, [...path, c.name], filter) : filter(fullName(path, c.name))));
}

function runnable(suite: Suite, path: string[], filter: (name: string) => boolean): boolean {
  return suite.children.some((c) => (c.kind === "suite" ? !c.skip && runnable(c, [...path, c.name], filter) : !c.skip && filter(fullName(path, c.name))));
}

/**
 * Runs the tests collected so far, in declaration order, and forgets them (a later import starts
 * a fresh collection). Never throws: failures are results.
 */
export async function runCollected(options: RunOptions | ((name: string) => boolean) = {}): Promise<CaseResult[]> {
  const opts: RunOptions = typeof options === "function" ? { filter: options } : options;
  const filter = opts.filter ?? (() => true);
  const timeout = opts.timeout ?? 300_000;
  const results: CaseResult[] = [];
  const record = (r: CaseResult) => {
    results.push(r);
    opts.onResult?.(r);
  };
  const suite = root;
  root = newSuite("", false);
  stack.splice(0, stack.length, root);

  const skipAll = (s: Suite, path: string[], error?: string) => {
    for (const c of s.children) {
      if (c.kind === "suite") skipAll(c, [...path, c.name], error);
      else if (filter(fullName(path, c.name))) record({ name: fullName(path, c.name), ok: error === undefined, skipped: error === undefined, ms: 0, error });
    }
  };

  const runSuite = async (s: Suite, path: string[], each: { before: Fn[]; after: Fn[] }) => {
    if (!selected(s, path, filter)) return;
    if (s.skip || !runnable(s, path, filter)) return skipAll(s, path);
    for (const hook of s.beforeAll) {
      try {
        await withTimeout(hook, timeout, `beforeAll of "${fullName(path, "") || "the file"}"`);
      } catch (err) {
        return skipAll(s, path, `beforeAll failed: ${errorText(err)}`);
      }
    }
    const hooks = { before: [...each.before, ...s.beforeEach], after: [...s.afterEach, ...each.after] };
    for (const c of s.children) {
      if (c.kind === "suite") {
        await runSuite(c, [...path, c.name], hooks);
        continue;
      }
      const name = fullName(path, c.name);
      if (!filter(name)) continue;
      if (c.skip) {
        record({ name, ok: true, skipped: true, ms: 0 });
        continue;
      }
      const t0 = performance.now();
      let error: string | undefined;
      try {
        for (const h of hooks.before) await withTimeout(h, timeout, "beforeEach");
        await withTimeout(c.fn, c.timeout ?? timeout, `test "${c.name}"`);
      } catch (err) {
        error = errorText(err);
      }
      for (const h of hooks.after) {
        try {
          await withTimeout(h, timeout, "afterEach");
        } catch (err) {
          error ??= `afterEach failed: ${errorText(err)}`;
        }
      }
      record({ name, ok: error === undefined, skipped: false, ms: performance.now() - t0, error });
    }
    for (const hook of s.afterAll) {
      try {
        await withTimeout(hook, timeout, "afterAll");
      } catch (err) {
        record({ name: fullName(path, "afterAll"), ok: false, skipped: false, ms: 0, error: errorText(err) });
      }
    }
  };
  await runSuite(suite, [], { before: [], after: [] });
  return results;
}
