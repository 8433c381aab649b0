/**
 * Gradient checks by central finite differences in float64 on the CPU backend.
 *
 * The inputs are copied to a CPU backend (the current one, or a private one while `fn` runs) as f64 (integer inputs keep their dtype), and
 * `fn`'s outputs are projected on fixed pseudo-random weights, L(x) = Σ_k ⟨w_k, fn(x)_k⟩, so one
 * scalar check covers the whole vector–Jacobian product. The analytic gradient of L comes from
 * `valueAndGrad`; the numeric one from (L(x + εe_i) − L(x − εe_i)) / 2ε for every element i.
 */
import { add, cast, CpuBackend, createCpuBackend, type DType, getBackend, isFloat, keep, mul, scope, setBackend, sum, Tensor, tensor } from "@lightning-ts/tensor";
import { valueAndGrad } from "./grad.js";

export interface CheckGradOptions {
  /** Finite-difference step (default 1e-6). */
  eps?: number;
  /** An element passes when |analytic − numeric| ≤ atol + rtol · max(|analytic|, |numeric|). Default 1e-6. */
  atol?: number;
  /** Default 1e-5. */
  rtol?: number;
  /** Inputs to check (default: every float input). */
  wrt?: readonly number[];
  /** Inputs evaluated in their own dtype instead of f64, for ops that require one (e.g. an f32 state). */
  keepDType?: readonly number[];
  /** Seed of the projection weights (default 1). */
  seed?: number;
}

export interface InputCheck {
  /** Position of the input in `inputs`. */
  input: number;
  ok: boolean;
  /** Worst |a − n| / max(|a|, |n|) over the elements (0 where both are 0). */
  maxRelError: number;
  maxAbsError: number;
  /** Flat index of the element with the worst tolerance ratio, and its two values. */
  worst: { index: number; analytic: number; numeric: number };
}

export interface CheckGradReport {
  ok: boolean;
  inputs: InputCheck[];
}

let cpu: CpuBackend | null = null;
/** The current backend if it is a CPU one, else a private CPU backend (one thread: checks are small). */
function checkBackend(): CpuBackend {
  const current = getBackend();
  return current instanceof CpuBackend ? current : (cpu ??= createCpuBackend({ threads: 1 }));
}

/** Tiny deterministic generator for the projection weights (values in [−1, −0.25] ∪ [0.25, 1]). */
function weights(n: number, seed: number): Float64Array {
  let s = seed >>> 0 || 1;
  return Float64Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 2 ** 32;
    return u < 0.5 ? -0.25 - 1.5 * u : 0.25 + 1.5 * (u - 0.5);
  });
}

/**
 * Compares the analytic gradient of `fn` with central finite differences and reports the worst
 * error per input. `fn` may return any float tensor or a list of them.
 *
 * @example
 * const report = await checkGrad((a, b) => mul(a, b), [seeded(1).tensor([3, 5]), seeded(2).tensor([5])]);
 * console.log(report.ok, report.inputs.map((r) => r.maxRelError));
 */
export async function checkGrad(
  fn: (...inputs: Tensor[]) => Tensor | readonly Tensor[],
  inputs: readonly Tensor[],
  options: CheckGradOptions = {},
): Promise<CheckGradReport> {
  const { eps = 1e-6, atol = 1e-6, rtol = 1e-5, seed = 1, keepDType = [] } = options;
  const wrt = options.wrt ?? inputs.flatMap((t, i) => (isFloat(t.dtype) ? [i] : []));
  const backend = checkBackend();
  const dtypes: DType[] = inputs.map((t, i) => (isFloat(t.dtype) && !keepDType.includes(i) ? "f64" : t.dtype));
  const values = await Promise.all(inputs.map(async (t) => Float64Array.from(await t.data())));
  // fn may create tensors (constants, indices): they must land on the same backend.
  const previous = getBackend();
  setBackend(backend);
  const make = (i: number, v: ArrayLike<number>) => tensor(v, inputs[i].shape, { dtype: dtypes[i], backend });

  const base = values.map((v, i) => make(i, v));
  const projections: Tensor[] = [];
  try {
    const loss = (...xs: Tensor[]): Tensor => {
      const raw = fn(...xs);
      const outs = raw instanceof Tensor ? [raw] : [...raw];
      if (projections.length === 0) {
        // Made on the first call, inside valueAndGrad's scope, hence keep().
        outs.forEach((o, k) => projections.push(keep(tensor(weights(o.size, seed + k), o.shape, { dtype: o.dtype, backend }))));
      }
      return outs.map((o, k) => sum(mul(o, projections[k]))).reduce((a, b) => add64(a, b));
    };

    const { value, grads } = valueAndGrad(loss, { argnums: wrt })(...base);
    value.dispose();
    const analytic = grads.map((g, j) => {
      if (!g) throw new Error(`checkGrad: input ${wrt[j]} got no gradient (is it an integer tensor?)`);
      const data = Float64Array.from(g.dataSync());
      g.dispose();
      return data;
    });

    const evaluate = (i: number, v: Float64Array): number =>
      scope(() => {
        const xs = base.map((b, j) => (j === i ? make(i, v) : b));
        return Number(loss(...xs).dataSync()[0]);
      });

    const checks = wrt.map((i, j): InputCheck => {
      const v = Float64Array.from(values[i]);
      const numeric = new Float64Array(v.length);
      for (let e = 0; e < v.length; e++) {
        const x0 = v[e];
        v[e] = x0 + eps;
        const plus = evaluate(i, v);
        v[e] = x0 - eps;
        const minus = evaluate(i, v);
        v[e] = x0;
        numeric[e] = (plus - minus) / (2 * eps);
      }
      return compare(i, analytic[j], numeric, atol, rtol);
    });
    return { ok: checks.every((c) => c.ok), inputs: checks };
  } finally {
    for (const t of [...base, ...projections]) t.dispose();
    setBackend(previous);
  }
}

/** Adds two scalar losses (outputs may differ in dtype, e.g. an f32 state beside f64 values). */
function add64(a: Tensor, b: Tensor): Tensor {
  return add(a.dtype === "f64" ? a : cast(a, "f64"), b.dtype === "f64" ? b : cast(b, "f64"));
}

function compare(input: number, a: Float64Array, n: Float64Array, atol: number, rtol: number): InputCheck {
  let maxRel = 0;
  let maxAbs = 0;
  let worst = { index: -1, ratio: -1 };
  let ok = true;
  for (let e = 0; e < a.length; e++) {
    const d = Math.abs(a[e] - n[e]);
    const scale = Math.max(Math.abs(a[e]), Math.abs(n[e]));
    const ratio = Number.isNaN(d) ? Infinity : d / (atol + rtol * scale);
    if (!(ratio <= 1)) ok = false;
    maxAbs = Math.max(maxAbs, Number.isNaN(d) ? Infinity : d);
    maxRel = Math.max(maxRel, scale === 0 ? 0 : Number.isNaN(d) ? Infinity : d / scale);
    if (ratio > worst.ratio) worst = { index: e, ratio };
  }
  return { input, ok, maxRelError: maxRel, maxAbsError: maxAbs, worst: { index: worst.index, analytic: a[worst.index], numeric: n[worst.index] } };
}

/**
 * `checkGrad`, throwing an error that lists every failing input with its worst element.
 *
 * @example
 * await assertGrad((x) => softmax(x, 1), [seeded(3).tensor([4, 7])]);
 */
export async function assertGrad(
  fn: (...inputs: Tensor[]) => Tensor | readonly Tensor[],
  inputs: readonly Tensor[],
  options: CheckGradOptions = {},
): Promise<CheckGradReport> {
  const report = await checkGrad(fn, inputs, options);
  if (!report.ok) {
    const lines = report.inputs
      .filter((c) => !c.ok)
      .map(
        (c) =>
          `  input ${c.input} ${inputs[c.input].describe()}: max rel error ${c.maxRelError.toExponential(3)}, ` +
          `max abs error ${c.maxAbsError.toExponential(3)}; worst element ${c.worst.index}: ` +
          `analytic ${c.worst.analytic} vs numeric ${c.worst.numeric}`,
      );
    throw new Error(`assertGrad: the gradient does not match finite differences\n${lines.join("\n")}`);
  }
  return report;
}
