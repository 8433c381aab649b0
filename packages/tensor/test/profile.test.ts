import { describe, expect, it } from "vitest";
import { add, type Backend, createCpuBackend, formatProfile, matmul, mul, profileOps, scope, softmax, sum, tensor } from "../src/index.js";

/** The kernel table as a plain record, to compare entries before and after a profile. */
const entries = (b: Backend) => ({ ...(b.kernels as Record<string, unknown>) });

describe("profileOps", () => {
  it("counts the calls of each op that ran and times them, largest first", async () => {
    const cpu = createCpuBackend({ threads: 1 });
    const { result, profile } = await profileOps(cpu, () =>
      scope(() => {
        const a = tensor([[1, 2], [3, 4]], undefined, { backend: cpu });
        const b = matmul(a, a); // matmul
        const c = mul(add(b, b), b); // add, mul
        const d = mul(add(c, c), c); // add, mul
        return sum(matmul(d, a)).dataSync()[0]; // matmul, sum
      }),
    );
    expect(result).toBeGreaterThan(0);
    const calls = Object.fromEntries(profile.rows.map((r) => [r.op, r.calls]));
    expect(calls).toEqual({ matmul: 2, add: 2, mul: 2, sum: 1 });
    expect(profile.backend).toBe("cpu");
    expect(profile.rows.map((r) => r.ms)).toEqual([...profile.rows.map((r) => r.ms)].sort((x, y) => y - x));
    expect(profile.totalMs).toBeCloseTo(profile.rows.reduce((s, r) => s + r.ms, 0), 9);
    expect(profile.rows.reduce((s, r) => s + r.pct, 0)).toBeCloseTo(100, 6);
    expect(profile.wallMs).toBeGreaterThanOrEqual(profile.totalMs);
    cpu.dispose();
  });

  it("a composite op without a kernel is timed as the primitives of its decomposition", async () => {
    const cpu = createCpuBackend({ threads: 1 });
    const x = tensor([1, 2, 3], undefined, { backend: cpu });
    const fused = await profileOps(cpu, () => scope(() => softmax(x).dataSync()));
    expect(fused.profile.rows.map((r) => r.op)).toEqual(["softmax"]);
    delete (cpu.kernels as Record<string, unknown>).softmax;
    const decomposed = await profileOps(cpu, () => scope(() => softmax(x).dataSync()));
    expect(decomposed.result).toEqual(fused.result);
    expect(decomposed.profile.rows.map((r) => r.op).sort()).toEqual(["div", "exp", "max", "sub", "sum"]);
    x.dispose();
    cpu.dispose();
  });

  it("restores the kernel table after success and after a throw", async () => {
    const cpu = createCpuBackend({ threads: 1 });
    const before = entries(cpu);
    await profileOps(cpu, () => scope(() => add(tensor([1], undefined, { backend: cpu }), 1).dataSync()));
    expect(entries(cpu)).toEqual(before);
    for (const [op, k] of Object.entries(entries(cpu))) expect(k, op).toBe(before[op]);

    await expect(
      profileOps(cpu, () => {
        scope(() => add(tensor([1], undefined, { backend: cpu }), 1).dispose());
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    for (const [op, k] of Object.entries(entries(cpu))) expect(k, op).toBe(before[op]);
    // A kernel that throws also leaves the table as it was.
    await expect(profileOps(cpu, () => scope(() => matmul(tensor([1, 2], undefined, { backend: cpu }), tensor([1, 2, 3], undefined, { backend: cpu }))))).rejects.toThrow();
    for (const [op, k] of Object.entries(entries(cpu))) expect(k, op).toBe(before[op]);
    cpu.dispose();
  });

  it("refuses a backend without a timer, naming it, and a profile inside a profile", async () => {
    const cpu = createCpuBackend({ threads: 1 });
    const untimed = Object.assign(Object.create(cpu) as Backend, { name: "webgpu", timer: undefined });
    await expect(profileOps(untimed, () => 1)).rejects.toThrow(/the webgpu backend cannot time its kernels/);
    await expect(profileOps(cpu, () => profileOps(cpu, () => 1))).rejects.toThrow(/already being profiled/);
    cpu.dispose();
  });

  it("formats a table of the top ops with the rest summed", () => {
    const profile = {
      backend: "cuda",
      totalMs: 10,
      wallMs: 12.5,
      rows: [
        { op: "matmul", calls: 4, ms: 6, pct: 60 },
        { op: "lightningAttention", calls: 2, ms: 3, pct: 30 },
        { op: "add", calls: 10, ms: 1, pct: 10 },
      ],
    };
    const text = formatProfile(profile, 2);
    expect(text).toContain("matmul");
    expect(text).toContain("lightningAttention");
    expect(text).not.toMatch(/^add /m);
    expect(text).toMatch(/\(1 more ops\)\s+10\s+1\.00/);
    expect(text).toContain("kernels 10.00 ms of 12.50 ms wall on cuda (16 kernel calls)");
  });
});
