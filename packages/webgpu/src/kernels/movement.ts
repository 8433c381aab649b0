/**
 * Movement kernels: permute, slice, pad, concat, expand. They move raw element bits, whatever the
 * dtype; one invocation assembles one output word.
 *
 * permute, slice, pad and expand are one kernel: output element c (a multi-index) reads input
 * offset base + Σ_d (c_d − before_d) · stride_d, or zero where c_d − before_d falls outside the
 * input (padding). Broadcast dims have stride 0.
 */
import { byteSize, type Kernel, type KernelTable, stridesOf } from "@lightning-ts/tensor";
import type { Runtime } from "../runtime.js";
import { wordCount, wordLoop } from "../wgsl.js";
import { bstrides, checkRank, copyWords, groups, padded, type Ref, WG } from "./common.js";

// Params: n, words, rank, outShape(8)@3, strides(8)@11, before(8)@19, srcShape(8)@27, base@35.
const STRIDED_INDEX = /* wgsl */ `
// The input offset of output element i, or 0xffffffff where it lies in the padding.
fn src_index(i: u32) -> u32 {
  var r = i;
  var off = pu(35u);
  for (var d = pu(2u); d > 0u; d = d - 1u) {
    let k = d - 1u;
    let dim = pu(3u + k);
    let c = i32(r % dim) - pi(19u + k);
    r = r / dim;
    if (c < 0 || c >= pi(27u + k)) { return 0xffffffffu; }
    off = off + u32(c) * pu(11u + k);
  }
  return off;
}
`;

interface StridedView {
  strides: readonly number[];
  before?: readonly number[];
  srcShape?: readonly number[];
  base?: number;
}

/**
 * The word offset where `y` starts in `x` when the view is one contiguous run of whole words (a
 * slice of leading rows, an identity permute or expand), else null.
 */
function contiguousRun(y: Ref, v: StridedView): number | null {
  if (v.before !== undefined) return null;
  const want = stridesOf(y.shape);
  if (y.shape.some((dim, d) => dim > 1 && v.strides[d] !== want[d])) return null;
  const bytes = byteSize(y.dtype);
  const base = v.base ?? 0;
  // A run that starts or ends inside a word would carry its neighbours' bits along.
  if ((base * bytes) % 4 !== 0 || (y.size * bytes) % 4 !== 0) return null;
  return (base * bytes) / 4;
}

function strided(rt: Runtime, op: string, x: Ref, y: Ref, v: StridedView): void {
  checkRank(op, y.shape);
  const run = rt.plainKernels ? null : contiguousRun(y, v);
  if (run !== null) {
    copyWords(rt, x.storage, run, y.storage, wordCount(y.dtype, y.size));
    return;
  }
  const r = y.shape.length;
  const nw = wordCount(y.dtype, y.size);
  const padding = v.before !== undefined;
  rt.dispatch({
    key: `strided:${y.dtype}:${padding ? "pad" : "nopad"}`,
    shader: () => ({
      doc: [`x: (any, strided view) ${x.dtype}`, `y: (n) ${y.dtype}`],
      bindings: [
        { name: "x", dtype: x.dtype, access: "read" },
        { name: "y", access: "rw" },
      ],
      workgroupSize: WG,
      decls: STRIDED_INDEX,
      body: wordLoop("y", y.dtype, padding ? "select(x_raw(src_index(i)), 0u, src_index(i) == 0xffffffffu)" : "x_raw(src_index(i))"),
    }),
    bindings: [
      { buffer: x.storage, access: "read" },
      { buffer: y.storage, access: "rw" },
    ],
    params: [
      y.size,
      nw,
      r,
      ...padded(y.shape),
      ...padded(v.strides),
      ...padded(v.before ?? new Array<number>(r).fill(0)).map((b) => b >>> 0),
      ...padded(v.srcShape ?? y.shape),
      v.base ?? 0,
    ],
    workgroups: groups(nw),
  });
}

function concatGroup(rt: Runtime, xs: readonly Ref[], y: Ref, axis: number): void {
  const outer = y.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const rowOut = y.size / Math.max(outer, 1);
  const rows = xs.map((x) => x.size / Math.max(outer, 1));
  const names = xs.map((_, j) => `x${j}`);
  const nw = wordCount(y.dtype, y.size);
  // Params: n, words, rowOut, then (start, rowIn) per input.
  const params = [y.size, nw, rowOut];
  let start = 0;
  rows.forEach((row) => {
    params.push(start, row);
    start += row;
  });
  const pick = names
    .map((n, j) => `  if (rest < pu(${3 + 2 * j}u) + pu(${4 + 2 * j}u)) { return ${n}_raw(o * pu(${4 + 2 * j}u) + rest - pu(${3 + 2 * j}u)); }`)
    .join("\n");
  rt.dispatch({
    key: `concat:${y.dtype}:${xs.length}`,
    shader: () => ({
      doc: [...names.map((n) => `${n}: (outer, rows_j) ${y.dtype}`), `y: (outer, rowOut) ${y.dtype}`],
      bindings: [...names.map((name) => ({ name, dtype: y.dtype, access: "read" as const })), { name: "y", access: "rw" as const }],
      workgroupSize: WG,
      decls: `fn elem(i: u32) -> u32 {
  let o = i / pu(2u);
  let rest = i % pu(2u);
${pick}
  return 0u;
}`,
      body: wordLoop("y", y.dtype, "elem(i)"),
    }),
    bindings: [...xs.map((x) => ({ buffer: x.storage, access: "read" as const })), { buffer: y.storage, access: "rw" }],
    params,
    workgroups: groups(nw),
  });
}

export function movementKernels(rt: Runtime, maxInputs: number) {
  const permute: Kernel<"permute", GPUBuffer> = ({ inputs: [x], outputs: [y], attrs: { perm } }) => {
    const s = stridesOf(x.shape);
    strided(rt, "permute", x, y, { strides: perm.map((p) => s[p]) });
  };

  const slice: Kernel<"slice", GPUBuffer> = ({ inputs: [x], outputs: [y], attrs: { begin } }) => {
    const s = stridesOf(x.shape);
    strided(rt, "slice", x, y, { strides: s, base: begin.reduce((acc, b, i) => acc + b * s[i], 0) });
  };

  const pad: Kernel<"pad", GPUBuffer> = ({ inputs: [x], outputs: [y], attrs: { before } }) => {
    strided(rt, "pad", x, y, { strides: stridesOf(x.shape), before, srcShape: x.shape });
  };

  const expand: Kernel<"expand", GPUBuffer> = ({ inputs: [x], outputs: [y] }) => {
    strided(rt, "expand", x, y, { strides: bstrides(x.shape, y.shape).slice(0, y.shape.length) });
  };

  const concat: Kernel<"concat", GPUBuffer> = ({ inputs, outputs: [y], attrs: { axis } }) => {
    // Parameter words and storage bindings bound the inputs of one dispatch; more inputs are
    // concatenated in groups first (concat is associative along one axis).
    const limit = Math.max(2, Math.min(maxInputs, 28));
    if (inputs.length <= limit) {
      concatGroup(rt, inputs, y, axis);
      return;
    }
    const temps: Ref[] = [];
    for (let j = 0; j < inputs.length; j += limit) {
      const part = inputs.slice(j, j + limit);
      const shape = [...y.shape];
      shape[axis] = part.reduce((a, x) => a + x.shape[axis], 0);
      const size = shape.reduce((a, b) => a * b, 1);
      const t: Ref = { storage: rt.acquire(size * byteSize(y.dtype)), shape, dtype: y.dtype, size };
      concatGroup(rt, part, t, axis);
      temps.push(t);
    }
    concat({ inputs: temps, outputs: [y], attrs: { axis } });
    for (const t of temps) rt.release(t.storage);
  };

  return { permute, slice, pad, concat, expand } satisfies Partial<KernelTable<GPUBuffer>>;
}
