/**
 * @lightning-ts/testing: shared test helpers (dev-only), and the ones of @lightning-ts/tensor/testing.
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
// assertClose, seeded inputs and the float64 oracles ship with the tensor core (@lightning-ts/tensor/testing).
export { assertClose, closeness, type CloseOptions, type Closeness, seeded, type SeededRandom, oracle } from "@lightning-ts/tensor/testing";
export { describeBackends, availableBackends, registerTestBackend, type BackendProbe } from "./backends.js";
export { conformanceSuite, tolerance, type ConformanceOptions } from "./conformance.js";
