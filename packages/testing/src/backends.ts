/**
 * Run one suite on the backends under test. A package's tests are about its own backend: the CPU
 * package tests the CPU, and a GPU package registers its backend, which then replaces the CPU here
 * (the CPU suite runs in packages/testing/test/cpu-conformance.test.ts). A backend that cannot start is skipped through
 * the test runner with its reason in the suite's name and in a printed line, never silently; where
 * it is required (LIGHTNING_CUDA_REQUIRED=1, LIGHTNING_WEBGPU_REQUIRED=1) that is a failing test.
 */
import { type Backend, createCpuBackend, getBackend, setBackend } from "@lightning-ts/tensor";
import { afterAll, beforeAll, describe, it } from "vitest";

export interface BackendProbe {
  name: string;
  /** Creates the backend, or throws an Error whose message says why it cannot start here. */
  create(): Promise<Backend> | Backend;
  /**
   * Why this backend must start here (e.g. "LIGHTNING_CUDA_REQUIRED=1"), or nothing: a required
   * backend that cannot start fails the run instead of being skipped.
   */
  requiredBy?: string | null;
}

const cpuProbe: BackendProbe = { name: "cpu", create: () => createCpuBackend() };
const registered: BackendProbe[] = [];

/**
 * Makes `backend` the one under test (GPU packages register theirs from their test setup). The
 * CPU stays under test only where nothing else is registered.
 */
export function registerTestBackend(probe: BackendProbe): void {
  if (!registered.some((p) => p.name === probe.name)) registered.push(probe);
}

function underTest(): BackendProbe[] {
  return registered.length > 0 ? registered : [cpuProbe];
}

type Availability = { name: string; backend: Backend } | { name: string; reason: string; requiredBy?: string | null };
const started = new Map<string, Promise<Availability>>();

/** The backends under test that start here, and a reason for each one that does not. */
export function availableBackends(): Promise<Availability[]> {
  return Promise.all(
    underTest().map((p) => {
      let entry = started.get(p.name);
      if (!entry) {
        entry = (async (): Promise<Availability> => {
          try {
            return { name: p.name, backend: await p.create() };
          } catch (err) {
            return { name: p.name, reason: err instanceof Error ? err.message : String(err), requiredBy: p.requiredBy };
          }
        })();
        started.set(p.name, entry);
      }
      return entry;
    }),
  );
}

const reported = new Set<string>();

/**
 * The line a test run prints once: which backends run, and why any does not. For example
 * `[cuda] backends under test: cpu (reference); cuda skipped: no CUDA device`.
 */
export function describeAvailability(entries: Availability[]): string {
  const gpuRun = entries.some((e) => e.name !== "cpu");
  const running = entries.filter((e) => "backend" in e).map((e) => `${e.name} (${(e as { backend: Backend }).backend.capabilities.device})`);
  const parts = [[...(gpuRun ? ["cpu (reference)"] : []), ...running].join(", ") || "none"];
  for (const e of entries) {
    if ("reason" in e) parts.push(`${e.name} ${e.requiredBy ? `FAILED to start (required by ${e.requiredBy})` : "skipped"}: ${e.reason}`);
  }
  return `[${entries.map((e) => e.name).join(", ")}] backends under test: ${parts.join("; ")}`;
}

/**
 * Declares `suite` once per backend under test, with that backend made current for its tests.
 * Use with top-level await in a test file.
 */
export async function describeBackends(name: string, suite: (backend: () => Backend) => void): Promise<void> {
  const entries = await availableBackends();
  const line = describeAvailability(entries);
  if (!reported.has(line)) {
    reported.add(line);
    console.log(line);
  }
  for (const entry of entries) {
    if ("reason" in entry) {
      const unavailable = (): Backend => {
        throw new Error(`${entry.name} cannot start: ${entry.reason}`);
      };
      if (entry.requiredBy) {
        it(`${name} [${entry.name}]: the backend starts (required by ${entry.requiredBy})`, () => {
          throw new Error(`${entry.name} is required here (${entry.requiredBy}) but cannot start: ${entry.reason}`);
        });
      }
      // The tests are declared, then skipped by the runner, so the report counts them.
      describe.skip(`${name} [${entry.name} skipped: ${entry.reason}]`, () => suite(unavailable));
      continue;
    }
    describe(`${name} [${entry.name}]`, () => {
      let previous: Backend | null = null;
      beforeAll(() => {
        previous = getBackend();
        setBackend(entry.backend);
      });
      afterAll(() => {
        if (previous) setBackend(previous);
      });
      suite(() => entry.backend);
    });
  }
}
