/**
 * Run one suite on every backend that can start on this machine. A backend that cannot start is
 * skipped with its reason printed, never silently.
 */
import { type Backend, createCpuBackend, getBackend, setBackend } from "@lightning-ts/tensor";
import { afterAll, beforeAll, describe } from "vitest";

export interface BackendProbe {
  name: string;
  /** Creates the backend, or throws an Error whose message says why it cannot start here. */
  create(): Promise<Backend> | Backend;
}

const probes: BackendProbe[] = [{ name: "cpu", create: () => createCpuBackend() }];

/** Adds a backend for `describeBackends` (GPU packages register theirs from their test setup). */
export function registerTestBackend(probe: BackendProbe): void {
  if (!probes.some((p) => p.name === probe.name)) probes.push(probe);
}

type Availability = { name: string; backend: Backend } | { name: string; reason: string };
let cache: Promise<Availability[]> | null = null;

/** The backends that start here, and a reason for each one that does not. */
export function availableBackends(): Promise<Availability[]> {
  cache ??= Promise.all(
    probes.map(async (p): Promise<Availability> => {
      try {
        return { name: p.name, backend: await p.create() };
      } catch (err) {
        return { name: p.name, reason: err instanceof Error ? err.message : String(err) };
      }
    }),
  );
  return cache;
}

/**
 * Declares `suite` once per available backend, with that backend made current for its tests.
 * Use with top-level await in a test file.
 */
export async function describeBackends(name: string, suite: (backend: () => Backend) => void): Promise<void> {
  for (const entry of await availableBackends()) {
    if ("reason" in entry) {
      console.log(`[describeBackends] ${name}: skipping backend '${entry.name}': ${entry.reason}`);
      describe.skip(`${name} [${entry.name}: ${entry.reason}]`, () => {});
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
