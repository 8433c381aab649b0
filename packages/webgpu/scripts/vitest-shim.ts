/**
 * The vitest stand-in of tools/gpu-tests (describe, it, hooks, expect, runCollected), for the
 * browser page (browser/entry.ts) and gpu-check.ts, where vitest is not available.
 */
export * from "../../../tools/gpu-tests/vitest.js";
