/**
 * Fused row kernels: softmax, logSoftmax, softmax cross-entropy (forward and backward), SRMSNorm
 * (forward and backward). One workgroup per row; row sums and maxima combine in workgroup memory.
 * Arithmetic is f32 (the CPU uses float64); the max is subtracted before exp as on the CPU.
 */
import { type Kernel, type KernelTable } from "@lightning-ts/tensor";
import { ERROR_CODES, type Runtime } from "../runtime.js";
import { REPORT } from "./indexing.js";
import { f32Bits, type Ref, viaF32 } from "./common.js";

const RWG = 64;

const ROW_REDUCE = /* wgsl */ `
var<workgroup> red: array<f32, ${RWG}>;
fn row_sum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${RWG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
// Maximum that propagates NaN, like Math.max.
fn nmax(a: f32, b: f32) -> f32 { return select(select(max(a, b), a, is_nan(a)), b, is_nan(b)); }
fn row_max(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${RWG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = nmax(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
`;

const NEG_INF = "neg_inf()";

/**
 * Double-f32 sums (hi, lo) with Dekker's error-free product and Knuth's two-sum. They rely on exact
 * IEEE steps that compilers may rewrite: WGSL's fma is not always fused (on lavapipe it is a*b + c)
 * and shader compilers simplify c - (c - a) to a. nf() passes each step through an xor with a
 * parameter that is 0, which no compiler can see through.
 */
const TWO_FLOAT = /* wgsl */ `
fn nf(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ pu(3u)); }
fn split(a: f32) -> vec2<f32> { let c = nf(4097.0 * a); let hi = nf(c - nf(c - a)); return vec2<f32>(hi, nf(a - hi)); }
fn two_prod(a: f32, b: f32) -> vec2<f32> {
  let p = nf(a * b);
  let sa = split(a);
  let sb = split(b);
  let err = nf(nf(nf(nf(sa.x * sb.x) - p) + nf(sa.x * sb.y)) + nf(sa.y * sb.x)) + nf(sa.y * sb.y);
  return vec2<f32>(p, err);
}
fn two_sum(a: f32, b: f32) -> vec2<f32> {
  let s = nf(a + b);
  let bb = nf(s - a);
  return vec2<f32>(s, nf(a - nf(s - bb)) + nf(b - bb));
}
fn df_add(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let s = two_sum(a.x, b.x);
  let lo = nf(s.y + a.y) + b.y;
  return two_sum(s.x, lo);
}
var<workgroup> red2: array<vec2<f32>, ${RWG}>;
fn row_sum2(v: vec2<f32>, lid: u32) -> vec2<f32> {
  red2[lid] = v;
  workgroupBarrier();
  for (var s = ${RWG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red2[lid] = df_add(red2[lid], red2[lid + s]); }
    workgroupBarrier();
  }
  let r = red2[0];
  workgroupBarrier();
  return r;
}
`;

export function nnKernels(rt: Runtime) {
  function softmaxKernel(log: boolean): Kernel<"softmax" | "logSoftmax", GPUBuffer> {
    return ({ inputs: [x], outputs: [y], attrs: { axis } }) => {
      const outer = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
      const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
      const n = x.shape[axis];
      viaF32(rt, y, (target) =>
        rt.dispatch({
          key: `${log ? "logSoftmax" : "softmax"}:${x.dtype}`,
          shader: () => ({
            doc: [`x: (outer, n, inner) ${x.dtype}`, "y: (outer, n, inner) f32, one workgroup per (outer, inner) row"],
            bindings: [
              { name: "x", dtype: x.dtype, access: "read" },
              { name: "y", access: "rw" },
            ],
            workgroupSize: RWG,
            decls: ROW_REDUCE,
            body: `  let rows = pu(0u); let n = pu(1u); let inner = pu(2u);
  if (wg >= rows) { return; }
  let base = (wg / inner) * n * inner + wg % inner;
  var m = ${NEG_INF};
  for (var j = lid; j < n; j = j + ${RWG}u) { m = nmax(m, x_f(base + j * inner)); }
  m = row_max(m, lid);
  var s = 0.0;
  for (var j = lid; j < n; j = j + ${RWG}u) { s = s + exp(x_f(base + j * inner) - m); }
  s = row_sum(s, lid);
  let lse = log(s);
  for (var j = lid; j < n; j = j + ${RWG}u) {
    let z = x_f(base + j * inner) - m;
    y[base + j * inner] = bitcast<u32>(${log ? "z - lse" : "exp(z) / s"});
  }`,
          }),
          bindings: [
            { buffer: x.storage, access: "read" },
            { buffer: target, access: "rw" },
          ],
          params: [outer * inner, n, inner],
          workgroups: outer * inner,
        }),
      );
    };
  }

  /** Shared by the cross-entropy kernels: lse of row r, and the label check. */
  const CE = /* wgsl */ `
fn row_lse(r: u32, V: u32, lid: u32) -> f32 {
  var m = ${NEG_INF};
  for (var j = lid; j < V; j = j + ${RWG}u) { m = nmax(m, x_f(r * V + j)); }
  m = row_max(m, lid);
  var s = 0.0;
  for (var j = lid; j < V; j = j + ${RWG}u) { s = s + exp(x_f(r * V + j) - m); }
  s = row_sum(s, lid);
  return m + log(s);
}
// True when row r counts; reports labels outside [0, V) other than ignoreIndex.
fn label_ok(label: i32, r: u32, V: u32, lid: u32) -> bool {
  if (label == pi(2u)) { return false; }
  if (label < 0 || u32(label) >= V) {
    if (lid == 0u) { report(pu(3u), label, r, V); }
    return false;
  }
  return true;
}
`;

  const softmaxCrossEntropy: Kernel<"softmaxCrossEntropy", GPUBuffer> = ({ inputs: [logits, labels], outputs: [loss], attrs }) => {
    const [N, V] = logits.shape as [number, number];
    rt.dispatch({
      key: `softmaxCrossEntropy:${logits.dtype}`,
      shader: () => ({
        doc: [`x: (N, V) ${logits.dtype}`, "labels: (N) i32", "loss: (N) f32", "err: (4) atomic u32"],
        bindings: [
          { name: "x", dtype: logits.dtype, access: "read" },
          { name: "labels", dtype: "i32", access: "read" },
          { name: "loss", access: "rw" },
          { name: "err", access: "atomic" },
        ],
        workgroupSize: RWG,
        decls: ROW_REDUCE + REPORT + CE,
        // Params: N, V, ignoreIndex, error code.
        body: `  let N = pu(0u); let V = pu(1u);
  if (wg >= N) { return; }
  let label = labels_i(wg);
  let lse = row_lse(wg, V, lid);
  if (lid == 0u) {
    var v = 0.0;
    if (label_ok(label, wg, V, lid)) { v = lse - x_f(wg * V + u32(label)); }
    loss[wg] = bitcast<u32>(v);
  }`,
      }),
      bindings: [
        { buffer: logits.storage, access: "read" },
        { buffer: labels.storage, access: "read" },
        { buffer: loss.storage, access: "rw" },
        { buffer: rt.errorBuffer, access: "atomic" },
      ],
      params: [N, V, attrs.ignoreIndex >>> 0, ERROR_CODES.softmaxCrossEntropy],
      workgroups: N,
    });
  };

  // dlogits = (softmax(logits) − onehot(label)) · dloss, zero on ignored rows.
  const softmaxCrossEntropyBackward: Kernel<"softmaxCrossEntropyBackward", GPUBuffer> = ({ inputs: [logits, labels, dloss], outputs: [dx], attrs }) => {
    const [N, V] = logits.shape as [number, number];
    viaF32(rt, dx, (target) =>
      rt.dispatch({
        key: `softmaxCrossEntropyBackward:${logits.dtype}`,
        shader: () => ({
          doc: [`x: (N, V) ${logits.dtype}`, "labels: (N) i32", "g: (N) f32", "dx: (N, V) f32", "err: (4) atomic u32"],
          bindings: [
            { name: "x", dtype: logits.dtype, access: "read" },
            { name: "labels", dtype: "i32", access: "read" },
            { name: "g", dtype: "f32", access: "read" },
            { name: "dx", access: "rw" },
            { name: "err", access: "atomic" },
          ],
          workgroupSize: RWG,
          decls: ROW_REDUCE + REPORT + CE,
          body: `  let N = pu(0u); let V = pu(1u);
  if (wg >= N) { return; }
  let label = labels_i(wg);
  let lse = row_lse(wg, V, lid);
  let ok = label_ok(label, wg, V, lid);
  let gr = g_f(wg);
  for (var j = lid; j < V; j = j + ${RWG}u) {
    var v = 0.0;
    if (ok) { v = (exp(x_f(wg * V + j) - lse) - select(0.0, 1.0, i32(j) == label)) * gr; }
    dx[wg * V + j] = bitcast<u32>(v);
  }`,
        }),
        bindings: [
          { buffer: logits.storage, access: "read" },
          { buffer: labels.storage, access: "read" },
          { buffer: dloss.storage, access: "read" },
          { buffer: target, access: "rw" },
          { buffer: rt.errorBuffer, access: "atomic" },
        ],
        params: [N, V, attrs.ignoreIndex >>> 0, ERROR_CODES.softmaxCrossEntropyBackward],
        workgroups: N,
      }),
    );
  };

  function rmsKernel(backward: boolean, x: Ref, dy: Ref | null, y: Ref, eps: number): void {
    const M = x.shape[x.shape.length - 1];
    const rows = x.size / Math.max(M, 1);
    viaF32(rt, y, (target) =>
      rt.dispatch({
        key: `${backward ? "rmsNormBackward" : "rmsNorm"}:${x.dtype}`,
        shader: () => ({
          doc: [`x: (rows, M) ${x.dtype}`, ...(backward ? [`dy: (rows, M) ${x.dtype}`] : []), "y: (rows, M) f32"],
          bindings: [
            { name: "x", dtype: x.dtype, access: "read" },
            ...(backward ? [{ name: "dy", dtype: x.dtype, access: "read" as const }] : []),
            { name: "y", access: "rw" },
          ],
          workgroupSize: RWG,
          decls: ROW_REDUCE + TWO_FLOAT,
          // Forward: y = x · r, r = 1 / sqrt(ss / M + eps), ss = Σ x².
          // Backward: dx = r³ · (dy · eps + (dy · ss − x · Σ x·dy) / M), equal to the CPU's
          // r · (dy − x̂ · mean(x̂ · dy)) but written so that the cancellation between dy · ss and
          // x · Σ x·dy (severe when ss/M is not large against eps, e.g. rows of one small element)
          // happens on double-f32 sums, where it is exact enough.
          body: `  let rows = pu(0u); let M = pu(1u); let eps = pf(2u);
  if (wg >= rows) { return; }
  let base = wg * M;
  var ss = vec2<f32>(0.0, 0.0);
  for (var j = lid; j < M; j = j + ${RWG}u) { let v = x_f(base + j); ss = df_add(ss, two_prod(v, v)); }
  ss = row_sum2(ss, lid);
  let r = 1.0 / sqrt((ss.x + ss.y) / f32(M) + eps);
${
  backward
    ? `  var sxg = vec2<f32>(0.0, 0.0);
  for (var j = lid; j < M; j = j + ${RWG}u) { sxg = df_add(sxg, two_prod(x_f(base + j), dy_f(base + j))); }
  sxg = row_sum2(sxg, lid);
  let r3 = r * r * r;
  for (var j = lid; j < M; j = j + ${RWG}u) {
    let g = dy_f(base + j);
    let xj = x_f(base + j);
    let a = two_prod(g, ss.x);
    let b = two_prod(xj, sxg.x);
    let d = nf(a.x - b.x) + (nf(a.y - b.y) + nf(nf(g * ss.y) - nf(xj * sxg.y)));
    y[base + j] = bitcast<u32>(r3 * (g * eps + d / f32(M)));
  }`
    : `  for (var j = lid; j < M; j = j + ${RWG}u) { y[base + j] = bitcast<u32>(x_f(base + j) * r); }`
}`,
        }),
        bindings: [
          { buffer: x.storage, access: "read" },
          ...(dy ? [{ buffer: dy.storage, access: "read" as const }] : []),
          { buffer: target, access: "rw" },
        ],
        // The fourth word is nf()'s opaque zero.
        params: [rows, M, f32Bits(eps), 0],
        workgroups: rows,
      }),
    );
  }

  const rmsNorm: Kernel<"rmsNorm", GPUBuffer> = ({ inputs: [x], outputs: [y], attrs: { eps } }) => rmsKernel(false, x, null, y, eps);
  const rmsNormBackward: Kernel<"rmsNormBackward", GPUBuffer> = ({ inputs: [x, dy], outputs: [dx], attrs: { eps } }) =>
    rmsKernel(true, x, dy, dx, eps);

  return {
    softmax: softmaxKernel(false),
    logSoftmax: softmaxKernel(true),
    softmaxCrossEntropy,
    softmaxCrossEntropyBackward,
    rmsNorm,
    rmsNormBackward,
  } satisfies Partial<KernelTable<GPUBuffer>>;
}
