/**
 * A compute backend by name. The CPU backend ships with the tensor core; the GPU backends live in
 * optional packages (`@lightning-ts/webgpu`, `@lightning-ts/cuda`) that are imported only when
 * their backend is asked for, so a program runs where they are not installed. A backend that
 * cannot start is an error that names it, its package and the reason, never a silent fallback.
 *
 * @example
 * import { setBackend } from "@lightning-ts/tensor";
 * import { createBackend } from "@lightning-ts/backends";
 * setBackend(await createBackend("cuda")); // throws: backend "cuda" (@lightning-ts/cuda) cannot start: no CUDA device: …
 */
import { type Backend, createCpuBackend, setBackend } from "@lightning-ts/tensor";

/** Every backend name, in the order the CLIs list them. */
export const BACKEND_NAMES = ["cpu", "webgpu", "cuda"] as const;

export type BackendName = (typeof BACKEND_NAMES)[number];

/** The package each backend comes from. */
export const BACKEND_PACKAGES: Readonly<Record<BackendName, string>> = {
  cpu: "@lightning-ts/tensor",
  webgpu: "@lightning-ts/webgpu",
  cuda: "@lightning-ts/cuda",
};

export interface BackendOptions {
  /** CPU worker threads (the calling thread included); ignored by the GPU backends. */
  threads?: number;
  /** Which CUDA device (`cuda:1` is `{ device: 1 }`); ignored by the other backends. */
  device?: number;
}

/** Why a backend could not be created: an unknown name, a package that does not load, or a start that failed. */
export type BackendFailure = "unknown" | "not-loaded" | "cannot-start";

export class BackendError extends Error {
  override name = "BackendError";
  constructor(
    message: string,
    /** The name asked for. */
    readonly backend: string,
    readonly failure: BackendFailure,
    /** The short reason, without the backend's name: what `startBackend` prints. */
    readonly reason: string,
  ) {
    super(message);
  }
}

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * Imports a GPU backend's package. The specifiers are literal so that bundlers and test runners
 * can resolve them; the packages are optional peers, so the import itself may fail.
 */
async function loadFactory(name: "webgpu" | "cuda"): Promise<(options: BackendOptions) => Backend | Promise<Backend>> {
  try {
    if (name === "webgpu") {
      const { createWebGpuBackend } = await import("@lightning-ts/webgpu");
      return () => createWebGpuBackend();
    }
    const { createCudaBackend } = await import("@lightning-ts/cuda");
    return ({ device }) => createCudaBackend(device === undefined ? {} : { device });
  } catch (err) {
    const pkg = BACKEND_PACKAGES[name];
    const reason = `the package ${pkg} could not be loaded: ${message(err)}`;
    throw new BackendError(
      `backend "${name}" needs the package ${pkg}, which could not be loaded (${message(err)}); install and build it (in this repository: pnpm build) or use the cpu backend`,
      name,
      "not-loaded",
      reason,
    );
  }
}

/**
 * Creates the backend called `name`.
 *
 * @throws BackendError for an unknown name (listing the known ones), a GPU package that cannot be
 * loaded, or a backend that cannot start on this machine (no device, addon not built…).
 *
 * @example
 * const backend = await createBackend("cpu", { threads: 2 });
 */
export async function createBackend(name: string, options: BackendOptions = {}): Promise<Backend> {
  if (!isBackendName(name)) {
    const reason = `unknown backend "${name}"; known: ${BACKEND_NAMES.join(", ")}`;
    throw new BackendError(reason, name, "unknown", reason);
  }
  if (name === "cpu") return createCpuBackend(options.threads === undefined ? {} : { threads: options.threads });
  const create = await loadFactory(name);
  try {
    return await create(options);
  } catch (err) {
    throw new BackendError(`backend "${name}" (${BACKEND_PACKAGES[name]}) cannot start: ${message(err)}`, name, "cannot-start", message(err));
  }
}

/**
 * Creates the backend called `name` and makes it the current one; where it cannot start here,
 * logs `<name>: skipped, cannot start (<reason>)` and returns null, so a run over several
 * backends goes on with the others.
 *
 * @example
 * for (const name of ["cpu", "cuda"] as const) {
 *   const backend = await startBackend(name, {}, console.error);
 *   if (!backend) continue; // "cuda: skipped, cannot start (no CUDA device: …)"
 * }
 */
export async function startBackend(name: string, options: BackendOptions, log: (line: string) => void): Promise<Backend | null> {
  try {
    const backend = await createBackend(name, options);
    setBackend(backend);
    return backend;
  } catch (err) {
    log(`${name}: skipped, cannot start (${err instanceof BackendError ? err.reason : message(err)})`);
    return null;
  }
}
