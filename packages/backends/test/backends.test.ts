import { cudaUnavailableReason } from "@lightning-ts/cuda";
import { getBackend } from "@lightning-ts/tensor";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BACKEND_NAMES, BackendError, createBackend, isBackendName, startBackend } from "../src/index.js";

describe("createBackend", () => {
  it("knows cpu, webgpu and cuda", () => {
    expect(BACKEND_NAMES).toEqual(["cpu", "webgpu", "cuda"]);
    expect(isBackendName("cuda")).toBe(true);
    expect(isBackendName("tpu")).toBe(false);
  });

  it("creates the CPU backend with the asked thread count", async () => {
    const backend = await createBackend("cpu", { threads: 1 });
    expect(backend.name).toBe("cpu");
    backend.dispose();
  });

  it("rejects an unknown name, listing the known ones", async () => {
    const err = await createBackend("tpu").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendError);
    expect((err as BackendError).failure).toBe("unknown");
    expect((err as Error).message).toBe('unknown backend "tpu"; known: cpu, webgpu, cuda');
  });

  it("starts CUDA, or says which package cannot start and why", async () => {
    const reason = cudaUnavailableReason();
    const result = await createBackend("cuda").then(
      (backend) => backend,
      (e: unknown) => e,
    );
    if (reason === null) {
      expect((result as { name: string }).name).toBe("cuda");
      (result as { dispose(): void }).dispose();
      return;
    }
    expect(result).toBeInstanceOf(BackendError);
    const err = result as BackendError;
    expect(err.failure).toBe("cannot-start");
    expect(err.reason).toBe(reason);
    expect(err.message).toBe(`backend "cuda" (@lightning-ts/cuda) cannot start: ${reason}`);
  });
});

describe("startBackend", () => {
  it("makes the backend current", async () => {
    const lines: string[] = [];
    const backend = await startBackend("cpu", { threads: 1 }, (line) => lines.push(line));
    expect(backend).not.toBeNull();
    expect(getBackend()).toBe(backend);
    expect(lines).toEqual([]);
  });

  it("reports a backend that cannot start as skipped, and returns null", async () => {
    const lines: string[] = [];
    expect(await startBackend("tpu", {}, (line) => lines.push(line))).toBeNull();
    expect(lines).toEqual(['tpu: skipped, cannot start (unknown backend "tpu"; known: cpu, webgpu, cuda)']);
    const reason = cudaUnavailableReason();
    if (reason !== null) {
      expect(await startBackend("cuda", {}, (line) => lines.push(line))).toBeNull();
      expect(lines[1]).toBe(`cuda: skipped, cannot start (${reason})`);
    }
  });
});

describe("a GPU package that cannot be loaded", () => {
  afterEach(() => {
    vi.doUnmock("@lightning-ts/webgpu");
    vi.resetModules();
  });

  it("names the backend and the package", async () => {
    vi.resetModules();
    vi.doMock("@lightning-ts/webgpu", () => {
      throw new Error("Cannot find package '@lightning-ts/webgpu'");
    });
    const fresh = await import("../src/index.js");
    const err = await fresh.createBackend("webgpu").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(fresh.BackendError);
    expect((err as BackendError).failure).toBe("not-loaded");
    expect((err as Error).message).toMatch(/^backend "webgpu" needs the package @lightning-ts\/webgpu, which could not be loaded \(.+\); install and build it/);
    expect((err as BackendError).reason).toMatch(/^the package @lightning-ts\/webgpu could not be loaded: /);
  });
});
