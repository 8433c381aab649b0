/** The test files of the bundle: a module build.mjs generates, one importer per file. */
declare module "gpu-tests:suites" {
  export const SUITES: Record<string, () => Promise<unknown>>;
}
