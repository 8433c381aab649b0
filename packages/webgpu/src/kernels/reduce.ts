/**
 * Reductions (sum, mean, max, min over any axes) and argmax along one axis.
 *
 * One workgroup reduces one output element: its invocations stride over the reduced elements,
 * then combine in workgroup memory. Floats accumulate in f32 (the CPU uses float64), i32 sums wrap
 * as the CPU's `| 0` does, max/min propagate NaN.
 */
import { type Kernel, type KernelTable, REDUCE_OPS, type ReduceOpName, stridesOf } from "@lightning-ts/tensor";
import type { Runtime } from "../runtime.js";
import { encodeI } from "../wgsl.js";
import { checkRank, groups, padded, viaF32 } from "./common.js";

const RWG = 64;

// Params: nOut, R (reduced count), keptRank, keptShape(8)@3, keptStrides(8)@11, redRank@19, redShape(8)@20, redStrides(8)@28.
const OFFSETS = /* wgsl */ `
fn offset_of(i: u32, rankAt: u32, shapeAt: u32, stridesAt: u32) -> u32 {
  var r = i;
  var off = 0u;
  for (var d = pu(rankAt); d > 0u; d = d - 1u) {
    let dim = pu(shapeAt + d - 1u);
    off = off + (r % dim) * pu(stridesAt + d - 1u);
    r = r / dim;
  }
  return off;
}
`;

const NAN_MAX = "select(select(max(a, b), a, is_nan(a)), b, is_nan(b))";
const NAN_MIN = "select(select(min(a, b), a, is_nan(a)), b, is_nan(b))";

/** Per op, for f32 (`f`) and i32 (`i`): the start value and how two partial results combine (WGSL in a, b). */
const REDUCE: Record<ReduceOpName, { init: { f: string; i: string }; combine: { f: string; i: string } }> = {
  sum: { init: { f: "0.0", i: "0" }, combine: { f: "a + b", i: "a + b" } },
  // The sum, divided by the count at the end.
  mean: { init: { f: "0.0", i: "0" }, combine: { f: "a + b", i: "a + b" } },
  max: { init: { f: "neg_inf()", i: "-2147483647 - 1" }, combine: { f: NAN_MAX, i: "max(a, b)" } },
  min: { init: { f: "pos_inf()", i: "2147483647" }, combine: { f: NAN_MIN, i: "min(a, b)" } },
};

function reduceKernel(rt: Runtime, op: ReduceOpName): Kernel<ReduceOpName, GPUBuffer> {
  return ({ inputs: [x], outputs: [y], attrs: { axes } }) => {
    checkRank(op, x.shape);
    const strides = stridesOf(x.shape);
    const kept = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
    const R = axes.reduce((a, i) => a * x.shape[i], 1);
    const params = [
      y.size,
      R,
      kept.length,
      ...padded(kept.map((i) => x.shape[i])),
      ...padded(kept.map((i) => strides[i])),
      axes.length,
      ...padded(axes.map((i) => x.shape[i])),
      ...padded(axes.map((i) => strides[i])),
    ];
    const isInt = x.dtype === "i32";
    const ty = isInt ? "i32" : "f32";
    const init = REDUCE[op].init[isInt ? "i" : "f"];
    const combine = REDUCE[op].combine[isInt ? "i" : "f"];
    const run = (target: GPUBuffer, outDtype: "f32" | "i32") =>
      rt.dispatch({
        key: `${op}:${x.dtype}`,
        shader: () => ({
          doc: [`x: ${JSON.stringify(x.shape)} ${x.dtype}`, `y: (nOut) ${outDtype}, one workgroup per element`],
          bindings: [
            { name: "x", dtype: x.dtype, access: "read" },
            { name: "y", access: "rw" },
          ],
          workgroupSize: RWG,
          decls: `${OFFSETS}
var<workgroup> part: array<${ty}, ${RWG}>;
fn combine(a: ${ty}, b: ${ty}) -> ${ty} { return ${combine}; }`,
          body: `  let o = wg;
  if (o >= pu(0u)) { return; }
  let base = offset_of(o, 2u, 3u, 11u);
  let R = pu(1u);
  var acc: ${ty} = ${init};
  for (var r = lid; r < R; r = r + ${RWG}u) { acc = combine(acc, x_${isInt ? "i" : "f"}(base + offset_of(r, 19u, 20u, 28u))); }
  part[lid] = acc;
  workgroupBarrier();
  for (var s = ${RWG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { part[lid] = combine(part[lid], part[lid + s]); }
    workgroupBarrier();
  }
  if (lid == 0u) {
    var v = part[0];
    ${op === "mean" ? "v = v / f32(R);" : ""}
    y[o] = ${isInt ? encodeI("i32", "v") : "bitcast<u32>(v)"};
  }`,
        }),
        bindings: [
          { buffer: x.storage, access: "read" },
          { buffer: target, access: "rw" },
        ],
        params,
        workgroups: y.size,
      });
    if (isInt) run(y.storage, "i32");
    else viaF32(rt, y, (target) => run(target, "f32"));
  };
}

export function reduceKernels(rt: Runtime) {
  // Index of the first maximum; NaN counts as the maximum (NumPy, PyTorch, the CPU backend).
  const argmax: Kernel<"argmax", GPUBuffer> = ({ inputs: [x], outputs: [y], attrs: { axis } }) => {
    const outer = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const n = x.shape[axis];
    const get = x.dtype === "i32" ? "x_i" : "x_f";
    rt.dispatch({
      key: `argmax:${x.dtype}`,
      shader: () => ({
        doc: [`x: (outer, n, inner) ${x.dtype}`, "y: (outer, inner) i32"],
        bindings: [
          { name: "x", dtype: x.dtype, access: "read" },
          { name: "y", access: "rw" },
        ],
        workgroupSize: 256,
        body: `  let outer = pu(0u); let n = pu(1u); let inner = pu(2u);
  if (gid >= outer * inner) { return; }
  let o = gid / inner; let k = gid % inner;
  var best = ${get}(o * n * inner + k);
  var at = 0u;
  ${x.dtype === "i32" ? "" : "if (!is_nan(best)) {"}
  for (var j = 1u; j < n; j = j + 1u) {
    let v = ${get}((o * n + j) * inner + k);
    ${x.dtype === "i32" ? "if (v > best) { best = v; at = j; }" : "if (is_nan(v)) { at = j; break; }\n    if (v > best) { best = v; at = j; }"}
  }
  ${x.dtype === "i32" ? "" : "}"}
  y[gid] = at;`,
      }),
      bindings: [
        { buffer: x.storage, access: "read" },
        { buffer: y.storage, access: "rw" },
      ],
      params: [outer, n, inner],
      workgroups: groups(outer * inner),
    });
  };

  return {
    ...(Object.fromEntries(REDUCE_OPS.map((op) => [op, reduceKernel(rt, op)])) as { [K in ReduceOpName]: Kernel<K, GPUBuffer> }),
    argmax,
  } satisfies Partial<KernelTable<GPUBuffer>>;
}

