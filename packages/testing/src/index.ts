/**
 * @lightning-ts/testing: shared test helpers (dev-only).
 *
 * @example
 * await describeBackends("add", (getBackend) => {
 *   it("matches the float64 oracle", async () => {
 *     const rng = seeded(1);
 *     const a = rng.tensor([3, 5]);
 *     assertClose(await add(a, a).data(), Array.from(await a.data(), (x) => 2 * x));
 *   });
 * });
 */
export { assertClose, closeness, type CloseOptions, type Closeness } from "./close.js";
export { seeded, type SeededRandom } from "./random.js";
export { describeBackends, availableBackends, registerTestBackend, type BackendProbe } from "./backends.js";
export { conformanceSuite, tolerance, type ConformanceOptions } from "./conformance.js";
export * as oracle from "./oracle.js";
