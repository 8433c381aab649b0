/**
 * Oracles of `fusedLinear`, shared by its CPU tests here and its CUDA tests
 * (packages/cuda/test/fused-linear.test.ts): the chain of ops the TNL decode step ran before it,
 * and a float64 host reference with an error bound per element.
 *
 * Letters: x [R, K], w and w2 [N, K], gate [R, K], residual [R, N], y [R, N]; p = rmsNorm(x) ⊙ gate.
 *
 * The bound: the float64 reference starts from p rounded to the storage dtype (the op stores the
 * normed x before its products, so that rounding is part of its value, not an error); then
 *   - the sums are f32 (f64 for f64) in chains of at most K + 8 additions: (K + 8)·u_acc·Σ|p·w|;
 *   - p itself may land one ulp away from the reference's where the f32 norm factor and the
 *     reference's sit on two sides of a rounding boundary: 4·u·max|p·w| (a few such elements);
 *   - the output is rounded once (u·|y|), and a chain of ops also rounds each product, their
 *     product and the sum before the residual add (u·(3|p1·p2| + |p1| …), `kind` "chain").
 * u is the unit roundoff of the dtype (2⁻⁸ bf16, 2⁻¹¹ f16, 2⁻²⁴ f32, 2⁻⁵³ f64).
 */
import * as T from "@lightning-ts/tensor";

export const EPS = 1e-6;

export interface Variant {
  name: string;
  norm: boolean;
  gate: boolean;
  product: boolean;
  residual: boolean;
}

const variant = (name: string, norm: boolean, gate: boolean, product: boolean, residual: boolean): Variant => ({ name, norm, gate, product, residual });

/** Every part on and off: the four a TNL decode layer uses (qkvu, out, l1·l2, l3), the head, and the rest. */
export const VARIANTS: Variant[] = [
  variant("plain", false, false, false, false),
  variant("norm (qkvu, head)", true, false, false, false),
  variant("norm·gate", true, true, false, false),
  variant("residual (l3)", false, false, false, true),
  variant("norm, product (l1·l2)", true, false, true, false),
  variant("norm·gate, residual (out)", true, true, false, true),
  variant("product, residual", false, false, true, true),
  variant("norm·gate, product, residual", true, true, true, true),
];

export interface FusedInputs {
  x: T.Tensor;
  w: T.Tensor;
  gate?: T.Tensor;
  w2?: T.Tensor;
  residual?: T.Tensor;
}

type Rng = { tensor(shape: readonly number[], options?: { std?: number; dtype?: T.DType; backend?: T.Backend }): T.Tensor };

/** Fresh inputs for `v`: x of std 2 (never zero rows), weights of std 1/√K. */
export function makeInputs(rng: Rng, R: number, K: number, N: number, v: Variant, dtype: T.DType, backend?: T.Backend): FusedInputs {
  const ws = 1 / Math.sqrt(K);
  return {
    x: rng.tensor([R, K], { dtype, std: 2, backend }),
    w: rng.tensor([N, K], { dtype, std: ws, backend }),
    gate: v.gate ? rng.tensor([R, K], { dtype, backend }) : undefined,
    w2: v.product ? rng.tensor([N, K], { dtype, std: ws, backend }) : undefined,
    residual: v.residual ? rng.tensor([R, N], { dtype, backend }) : undefined,
  };
}

/** The options of `fusedLinear` for these inputs. */
export function optionsOf(i: FusedInputs, v: Variant): T.FusedLinearOptions {
  return { norm: v.norm ? { eps: EPS, gate: i.gate } : undefined, second: i.w2, residual: i.residual };
}

/** The model's chain before fusedLinear: rmsNorm, mul by the gate, matmul(s), mul, add. */
export function chain(i: FusedInputs, v: Variant): T.Tensor {
  let p = v.norm ? T.rmsNorm(i.x, EPS) : i.x;
  if (i.gate) p = T.mul(p, i.gate);
  let y = T.matmul(p, i.w, { transB: true });
  if (i.w2) y = T.mul(y, T.matmul(p, i.w2, { transB: true }));
  if (i.residual) y = T.add(i.residual, y);
  return y;
}

const UNIT: Record<string, number> = { bf16: 2 ** -8, f16: 2 ** -11, f32: 2 ** -24, f64: 2 ** -53 };

const host = T.createCpuBackend({ threads: 1 });

/** `values` rounded to `dtype` as a tensor of it stores them. */
function roundTo(values: Float64Array, dtype: T.DType): Float64Array {
  const t = T.tensor(values, [values.length], { dtype, backend: host });
  const r = Float64Array.from(t.dataSync());
  t.dispose();
  return r;
}

export interface Reference {
  /** y in float64 from p as stored. */
  y: Float64Array;
  /** The bound on |got − y| of each element (see the file's header). */
  bound: Float64Array;
}

/** The float64 reference of `fusedLinear` and its error bound, for a fused kernel or the chain of ops. */
export async function reference(i: FusedInputs, v: Variant, kind: "fused" | "chain"): Promise<Reference> {
  const dtype = i.x.dtype;
  const [R, K] = i.x.shape as [number, number];
  const N = i.w.shape[0];
  const read = async (t?: T.Tensor) => (t ? Float64Array.from(await t.data()) : undefined);
  const [x, w, gate, w2, res] = await Promise.all([read(i.x), read(i.w), read(i.gate), read(i.w2), read(i.residual)]);
  let p: Float64Array = x!;
  if (v.norm) {
    const normed = new Float64Array(R * K);
    for (let r = 0; r < R; r++) {
      let ss = 0;
      for (let k = 0; k < K; k++) ss += p[r * K + k] ** 2;
      const inv = 1 / Math.sqrt(ss / K + EPS);
      for (let k = 0; k < K; k++) normed[r * K + k] = p[r * K + k] * inv;
    }
    p = roundTo(normed, dtype);
    if (gate) p = roundTo(p.map((value, j) => value * gate[j]), dtype);
  }
  const u = UNIT[dtype];
  const uAcc = dtype === "f64" ? UNIT.f64 : UNIT.f32;
  const y = new Float64Array(R * N);
  const bound = new Float64Array(R * N);
  /** Σ p·w, Σ|p·w| and max|p·w| of row r of p with row n of a weight. */
  const dot = (wt: Float64Array, r: number, n: number) => {
    let s = 0;
    let abs = 0;
    let big = 0;
    for (let k = 0; k < K; k++) {
      const t = p[r * K + k] * wt[n * K + k];
      s += t;
      abs += Math.abs(t);
      big = Math.max(big, Math.abs(t));
    }
    return { s, abs, big };
  };
  for (let r = 0; r < R; r++) {
    for (let n = 0; n < N; n++) {
      const a = dot(w!, r, n);
      const b = w2 ? dot(w2, r, n) : { s: 1, abs: 0, big: 0 };
      const value = a.s * b.s;
      const scale = w2 ? a.abs * Math.abs(b.s) + b.abs * Math.abs(a.s) : a.abs;
      const big = w2 ? a.big * Math.abs(b.s) + b.big * Math.abs(a.s) : a.big;
      const out = res ? res[r * N + n] + value : value;
      let e = (K + 8) * uAcc * scale + (v.norm ? 4 * u * big : 0) + u * Math.abs(out) + 4 * uAcc * (Math.abs(value) + Math.abs(out));
      if (kind === "chain") e += u * ((w2 ? 3 : 0) * Math.abs(value) + (res ? Math.abs(value) : 0));
      y[r * N + n] = out;
      bound[r * N + n] = e;
    }
  }
  return { y, bound };
}

/** Throws, naming the worst element, unless every |got − y| is within its bound (NaN never passes). */
export function expectWithin(got: ArrayLike<number>, ref: Reference, label: string): void {
  if (got.length !== ref.y.length) throw new Error(`${label}: ${got.length} values, expected ${ref.y.length}`);
  let worst = -1;
  let ratio = 0;
  for (let j = 0; j < got.length; j++) {
    const d = Math.abs(got[j] - ref.y[j]);
    const q = Number.isNaN(d) ? Infinity : d / ref.bound[j];
    if (q > ratio) [worst, ratio] = [j, q];
  }
  if (ratio > 1) {
    throw new Error(`${label}: element ${worst} is ${got[worst]}, the float64 reference ${ref.y[worst]} (|Δ| ${Math.abs(got[worst] - ref.y[worst])} > bound ${ref.bound[worst]})`);
  }
}
