/**
 * The precision policy on the CPU: a bf16 model trains like the f32 one (f32 master weights and
 * moments in the optimizer), f16 with dynamic loss scaling skips overflowing steps, bf16
 * checkpoints are stored and loaded bit for bit, and --dtype is checked against the backend.
 */
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { disposeTree, valueAndGrad } from "@lightning-ts/autograd";
import { AdamW, clipGradNorm, GradScaler, loadOptimizerState, saveOptimizerState } from "@lightning-ts/autograd/optim";
import { collectTensors, f32BitsToBf16, getBackend, type Tensor } from "@lightning-ts/tensor";
import { readSafetensors } from "@lightning-ts/tensor/node";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../src/cli-main.js";
import {
  disposeParams,
  initParams,
  loadCheckpoint,
  loss,
  makeConfig,
  type ModelDType,
  namedParameters,
  precision,
  type Precision,
  resolveDType,
  saveCheckpoint,
  TnlInputError,
  type TnlParams,
} from "../src/index.js";
import { FIXTURE_DIR } from "./fixture.js";

const tmp = mkdtempSync(join(tmpdir(), "tnl-precision-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// Odd sizes throughout: vocabulary 23, width 30 over 3 heads of 10, channel mixer 46, sequences of 13.
const config = makeConfig({ vocabSize: 23, dModel: 30, numLayers: 2, numHeads: 3, gluDim: 46 });
const V = config.vocabSize;
/** A learnable task: next = previous + 1 (mod V) after a start that depends on the step and row. */
const batch = (step: number) => Array.from({ length: 5 }, (_, b) => Array.from({ length: 13 }, (_, t) => (step * 7 + b * 5 + t) % V));
const optimizer = () => new AdamW({ lr: 0.01, betas: [0.9, 0.95], weightDecay: 0.1 });

/** One training step of the usual loop: loss, gradients, clipping, AdamW. */
function trainStep(params: TnlParams, opt: AdamW, step: number, p: Precision): { params: TnlParams; loss: number } {
  const { value, grads } = valueAndGrad((q: TnlParams) => loss(q, config, batch(step), { compute: p.compute }))(params);
  const { grads: clipped, norm } = clipGradNorm(grads, 1.0);
  const next = opt.step(params, clipped);
  const out = value.dataSync()[0];
  disposeTree([value, grads, clipped, norm]);
  return { params: next, loss: out };
}

function run(p: Precision, steps: number): { losses: number[]; params: TnlParams; opt: AdamW } {
  let params = initParams(config, { seed: 3, dtype: p.param });
  const opt = optimizer();
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const r = trainStep(params, opt, s, p);
    params = r.params;
    losses.push(r.loss);
  }
  return { losses, params, opt };
}

/** The dtypes of the tensors in a tree (parameters or gradients). */
const dtypes = (tree: unknown) => [...new Set(collectTensors(tree).map((t) => t.dtype))];
const bits = async (t: Tensor) => Array.from(new Uint16Array((await t.bytes()).buffer));

describe("bf16 training on the CPU", () => {
  const STEPS = 40;
  const f32 = run(precision("f32"), STEPS);
  const bf16 = run(precision("bf16"), STEPS);
  afterAll(() => {
    for (const r of [f32, bf16]) {
      disposeParams(r.params);
      r.opt.dispose();
    }
  });

  it("tracks the f32 run's loss: mean |Δloss| ≤ 2%, every step within 5%", () => {
    const rel = f32.losses.map((l, i) => Math.abs(bf16.losses[i] - l) / l);
    const mean = rel.reduce((a, b) => a + b, 0) / rel.length;
    console.log(
      `loss f32 ${f32.losses[0].toFixed(3)} → ${f32.losses.at(-1)!.toFixed(3)}, bf16 ${bf16.losses[0].toFixed(3)} → ${bf16.losses.at(-1)!.toFixed(3)}; ` +
        `|Δ|/loss mean ${(100 * mean).toFixed(2)}%, max ${(100 * Math.max(...rel)).toFixed(2)}%`,
    );
    expect(f32.losses.at(-1)!).toBeLessThan(0.5 * f32.losses[0]); // it learns
    expect(mean).toBeLessThan(0.02);
    expect(Math.max(...rel)).toBeLessThan(0.05);
  });

  it("keeps the model in bf16 and f32 master weights and moments in the optimizer", async () => {
    expect(dtypes(bf16.params)).toEqual(["bf16"]);
    const { tensors, meta } = bf16.opt.stateDict();
    expect(meta.step).toBe(STEPS);
    const named = namedParameters(config, bf16.params);
    const paths = Object.keys(tensors).filter((k) => k.startsWith("master/")).map((k) => k.slice("master/".length));
    expect(paths.length).toBe(Object.keys(named).length);
    for (const [key, t] of Object.entries(tensors)) expect(t.dtype, key).toBe("f32");
    // The model copy is the master rounded once to nearest even, bit for bit.
    const embedMaster = tensors["master/embed"];
    const f32Bits = new Uint32Array((await embedMaster.bytes()).buffer);
    expect(await bits(bf16.params.embed)).toEqual(Array.from(f32Bits, f32BitsToBf16));
    // And the master holds what bf16 cannot: it is not itself on the bf16 grid.
    expect(Array.from(f32Bits).some((b) => (b & 0xffff) !== 0)).toBe(true);
    for (const t of Object.values(tensors)) t.dispose();
    // The f32 run has no master copies: the parameters are their own.
    expect(Object.keys(f32.opt.stateDict().tensors).some((k) => k.startsWith("master/"))).toBe(false);
  });

  it("an f32-parameter model computing in bf16 gets f32 gradients and the bf16 model's loss", () => {
    const params = initParams(config, { seed: 3 });
    const ids = batch(0);
    const { value, grads } = valueAndGrad((q: TnlParams) => loss(q, config, ids, { compute: "bf16" }))(params);
    expect(value.dtype).toBe("f32"); // the loss is f32 whatever the compute dtype
    expect(dtypes(grads)).toEqual(["f32"]);
    // The same bf16-rounded weights and compute; only LRPE θ differs (kept f32 here, stored bf16 there).
    expect(value.dataSync()[0]).toBeCloseTo(bf16.losses[0], 4);
    disposeTree([value, grads]);
    disposeParams(params);
  });

  it("resumes bit for bit from a bf16 checkpoint and the optimizer file", async () => {
    const a = run(precision("bf16"), 6);
    const dir = join(tmp, "resume");
    await saveCheckpoint(dir, { config, params: a.params });
    await saveOptimizerState(a.opt, join(dir, "optimizer.safetensors"));
    const back = await loadCheckpoint(dir, { dtype: "bf16" });
    const opt = optimizer();
    await loadOptimizerState(opt, join(dir, "optimizer.safetensors"));
    let [x, y] = [a.params, back.params];
    for (let s = 6; s < 9; s++) {
      const rx = trainStep(x, a.opt, s, precision("bf16"));
      const ry = trainStep(y, opt, s, precision("bf16"));
      expect(ry.loss).toBe(rx.loss);
      [x, y] = [rx.params, ry.params];
    }
    const [nx, ny] = [namedParameters(config, x), namedParameters(config, y)];
    for (const name of Object.keys(nx)) expect(await bits(ny[name]), name).toEqual(await bits(nx[name]));
    disposeParams(x);
    disposeParams(y);
    a.opt.dispose();
    opt.dispose();
  });
});

describe("f16 with dynamic loss scaling", () => {
  it("skips a step whose gradients overflow and halves the scale, then trains", async () => {
    let params = initParams(config, { seed: 3, dtype: "f16" });
    const opt = optimizer();
    // 2^22 overflows f16 (max 65504) in the backward pass of this model: an injected overflow.
    const scaler = new GradScaler({ initScale: 2 ** 22, growthInterval: 4 });
    const log: { scale: number; skipped: boolean; loss: number }[] = [];
    for (let s = 0; s < 30; s++) {
      const scale = scaler.scale;
      const { value, grads } = valueAndGrad((q: TnlParams) => scaler.scaleLoss(loss(q, config, batch(s))))(params);
      expect(dtypes(grads)).toEqual(["f16"]);
      const unscaled = scaler.unscale(grads);
      const { grads: clipped, norm } = clipGradNorm(unscaled, 1.0);
      const before = params;
      const r = await scaler.step(opt, params, clipped);
      params = r.params;
      if (r.skipped) expect(params).toBe(before); // nothing changed, nothing disposed
      log.push({ scale, skipped: r.skipped, loss: value.dataSync()[0] / scale });
      disposeTree([value, grads, unscaled, clipped, norm]);
    }
    const skipped = log.filter((l) => l.skipped);
    console.log(`f16: ${skipped.length} skipped steps at scales ${skipped.map((l) => `2^${Math.log2(l.scale)}`).join(", ")}; final scale 2^${Math.log2(scaler.scale)}`);
    expect(log[0].skipped).toBe(true);
    expect(log[1].scale).toBe(2 ** 21); // halved
    for (let i = 1; i < log.length; i++) expect(log[i].scale).toBe(log[i - 1].skipped ? log[i - 1].scale / 2 : log[i].scale);
    expect(opt.stepCount).toBe(log.length - skipped.length); // skipped steps do not count
    expect(dtypes(params)).toEqual(["f16"]);
    const taken = log.filter((l) => !l.skipped);
    expect(taken.at(-1)!.loss).toBeLessThan(0.6 * taken[0].loss);
    disposeParams(params);
    opt.dispose();
  });
});

describe("bf16 checkpoints", () => {
  it("save and load bf16 weights byte for byte, with no pass through f32", async () => {
    const params = initParams(config, { seed: 5, dtype: "bf16" });
    await saveCheckpoint(join(tmp, "bf16"), { config, params });
    const file = join(tmp, "bf16", "model.safetensors");
    const { tensors } = await readSafetensors(file);
    const named = namedParameters(config, params);
    for (const [name, t] of Object.entries(named)) {
      expect(tensors[name].dtype, name).toBe("bf16"); // stored as BF16 by default: the parameters' own dtype
      expect(await tensors[name].bytes(), name).toEqual(await t.bytes());
    }
    const back = await loadCheckpoint(join(tmp, "bf16"), { dtype: "bf16" });
    const again = namedParameters(config, back.params);
    for (const name of Object.keys(named)) expect(await again[name].bytes(), name).toEqual(await named[name].bytes());
    await saveCheckpoint(join(tmp, "bf16-again"), back);
    expect(readFileSync(join(tmp, "bf16-again", "model.safetensors"))).toEqual(readFileSync(file));
    for (const t of Object.values(tensors)) t.dispose();
    disposeParams(params);
    disposeParams(back.params);
  });

  it("round an f32 checkpoint to bf16 once, to nearest even", async () => {
    const model = await loadCheckpoint(FIXTURE_DIR, { dtype: "bf16" });
    const { tensors } = await readSafetensors(join(FIXTURE_DIR, "model.safetensors"));
    for (const [name, t] of Object.entries(namedParameters(model.config, model.params))) {
      expect(tensors[name].dtype).toBe("f32");
      const want = Array.from(new Uint32Array((await tensors[name].bytes()).buffer.slice(0)), f32BitsToBf16);
      expect(await bits(t), name).toEqual(want);
    }
    for (const t of Object.values(tensors)) t.dispose();
    disposeParams(model.params);
  });
});

describe("--dtype", () => {
  const fake = (name: string, dtypes: string[]) => ({ name, capabilities: { ...getBackend().capabilities, dtypes } }) as never;

  it("defaults to bf16 on cuda and f32 on cpu and webgpu", () => {
    expect(resolveDType(fake("cuda", ["f32", "f16", "bf16"]))).toBe("bf16");
    expect(resolveDType(fake("webgpu", ["f32", "f16", "bf16"]))).toBe("f32");
    expect(resolveDType(getBackend())).toBe("f32");
    for (const d of ["bf16", "f16", "f32"] as ModelDType[]) expect(resolveDType(getBackend(), d)).toBe(d);
  });

  it("names --dtype, the backend and its dtypes when the backend lacks the one asked for", () => {
    expect(() => resolveDType(fake("webgpu", ["f32", "i32", "u8"]), "bf16")).toThrow(TnlInputError);
    expect(() => resolveDType(fake("webgpu", ["f32", "i32", "u8"]), "bf16")).toThrow(
      "--dtype bf16: the webgpu backend has no bf16 (it has f32, i32, u8; usable here: f32)",
    );
    expect(() => resolveDType(getBackend(), "f64")).toThrow('--dtype must be one of bf16, f16, f32, got "f64"');
  });

  it("tnl generate and logits take --dtype, and refuse one that is not a model dtype", async () => {
    const io = () => {
      const r = { out: "", err: "" };
      return { r, io: { stdout: (t: string) => (r.out += t), stderr: (t: string) => (r.err += t) } };
    };
    const bad = io();
    expect(await main(["generate", "--model", FIXTURE_DIR, "--prompt-ids", "[[1, 2]]", "--dtype", "f64"], bad.io)).toBe(1);
    expect(bad.r.err).toBe('tnl: --dtype must be one of bf16, f16, f32, got "f64"\n');
    const ok = io();
    expect(await main(["generate", "--model", FIXTURE_DIR, "--prompt-ids", "[[1, 2, 3]]", "--max-tokens", "3", "--dtype", "bf16"], ok.io)).toBe(0);
    expect((JSON.parse(ok.r.out) as { ids: number[][] }).ids[0]).toHaveLength(3);
    const help = io();
    await main(["generate", "--help"], help.io);
    expect(help.r.out).toContain("--dtype <dtype>");
    expect(help.r.out.replace(/\s+/g, " ")).toContain("default: bf16 on cuda for bf16/f16 checkpoints, f16 on webgpu with shader-f16, else f32");
  });
});
