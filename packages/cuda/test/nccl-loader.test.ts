/**
 * NCCL is loaded at run time: a LIGHTNING_NCCL_LIBRARY that points at no library is an error that
 * names the variable and the path, raised when NCCL is first needed (the addon itself loads). Needs
 * the addon but no GPU and no NCCL, so it runs in CI; skipped, with the reason printed, where the
 * addon was not built. (Own file: the library is looked up once per process.) Arguments of
 * createNcclCollective are checked before anything is loaded, so that part runs everywhere.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createCpuBackend } from "@lightning-ts/tensor";
import { type CudaBackend, createNcclCollective, ncclUnavailableReason, ncclUniqueId } from "../src/index.js";
import { loadAddon } from "../src/native.js";

let reason: string | null = null;
try {
  loadAddon();
} catch (err) {
  reason = err instanceof Error ? err.message : String(err);
  console.log(`[nccl-loader] skipped: ${reason}`);
}

const missing = join(mkdtempSync(join(tmpdir(), "lts-nccl-")), "no-such-dir", "libnccl.so.2");
process.env.LIGHTNING_NCCL_LIBRARY = missing;

describe.skipIf(reason !== null)("NCCL loader", () => {
  it("a LIGHTNING_NCCL_LIBRARY that names no library is a clear error", () => {
    const why = ncclUnavailableReason();
    expect(why).toContain(`LIGHTNING_NCCL_LIBRARY=${missing}`);
    expect(why).toContain("cannot open shared object file");
    // Using NCCL throws the same message; the addon (and the rest of the backend) still loads.
    expect(() => ncclUniqueId()).toThrow(`LIGHTNING_NCCL_LIBRARY=${missing}`);
    expect(typeof loadAddon().deviceCount).toBe("number");
  });
});

describe("createNcclCollective arguments", () => {
  it("refuses a backend that is not a CUDA backend, by name", async () => {
    const cpu = createCpuBackend();
    const id = new Uint8Array(128);
    await expect(createNcclCollective({ backend: cpu as unknown as CudaBackend, rank: 0, worldSize: 2, uniqueId: id })).rejects.toThrow(
      "createNcclCollective: backend must be a CudaBackend, got CpuBackend",
    );
    cpu.dispose();
  });
});
