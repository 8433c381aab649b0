/** Helpers shared by the kernel families: tensor refs, grid sizes, f32 scratch outputs. */
import { broadcastStrides, type DType, type TensorRef } from "@lightning-ts/tensor";
import type { Runtime } from "../runtime.js";
import { encodeF, MAX_RANK, wordCount, wordLoop } from "../wgsl.js";

export type Ref = TensorRef<GPUBuffer>;

export const WG = 256;

export const groups = (n: number, size = WG) => Math.ceil(n / size);

export const f32Bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0];

export function checkRank(op: string, shape: readonly number[]): void {
  if (shape.length > MAX_RANK) throw new Error(`${op}: rank ${shape.length} exceeds the WebGPU backend's limit of ${MAX_RANK}`);
}

/** Parameter words for a shape padded to MAX_RANK. */
export function padded(values: readonly number[]): number[] {
  return [...values, ...new Array<number>(MAX_RANK - values.length).fill(0)];
}

/** Strides of `shape` read as broadcast to `outShape`, padded to MAX_RANK. */
export function bstrides(shape: readonly number[], outShape: readonly number[]): number[] {
  return padded(broadcastStrides(shape, outShape));
}

/**
 * Runs `body` with an f32 buffer standing in for `out`, then stores it in `out`'s dtype. Kernels
 * whose invocations write single elements use this for 16-bit and 8-bit outputs.
 */
export function viaF32(rt: Runtime, out: Ref, body: (target: GPUBuffer) => void): void {
  if (out.dtype === "f32") {
    body(out.storage);
    return;
  }
  const scratch = rt.acquire(out.size * 4);
  body(scratch);
  storeF32As(rt, scratch, out);
  rt.release(scratch);
}

/** out = f32 values of `src` rounded to out's dtype (round to nearest even for f16/bf16). */
export function storeF32As(rt: Runtime, src: GPUBuffer, out: Ref): void {
  const dtype: DType = out.dtype;
  rt.dispatch({
    key: `store_f32_as:${dtype}`,
    shader: () => ({
      doc: [`src: (n) f32`, `y: (n) ${dtype}`],
      bindings: [
        { name: "src", dtype: "f32", access: "read" },
        { name: "y", access: "rw" },
      ],
      workgroupSize: WG,
      body: wordLoop("y", dtype, encodeF(dtype, "src_f(i)")),
    }),
    bindings: [
      { buffer: src, access: "read" },
      { buffer: out.storage, access: "rw" },
    ],
    params: [out.size, wordCount(dtype, out.size)],
    workgroups: groups(wordCount(dtype, out.size)),
  });
}

/** 16-byte vectors each invocation of the fast copy moves. */
const COPY_VECTORS_PER_INVOCATION = 4;

/**
 * dst[to, to + n) = src[from, from + n), in 32-bit words. The bulk moves as 16-byte vectors when `from`
 * is a multiple of 4 words: each invocation issues the loads of four vectors (a workgroup's 256
 * neighbours apart, so every load of a warp stays one contiguous run) before their stores, so
 * four times the bytes are in flight per invocation as with one vector each, and a quarter of
 * the workgroups are launched; a GPU needs many bytes in flight to reach its copy bandwidth. The
 * last n mod 4 words, or everything when `from` is unaligned, go one word at a time (also the
 * plain twin, with `plainKernels`). The vector kernel binds only the ranges it reads and writes.
 */
export function copyWords(rt: Runtime, src: GPUBuffer, from: number, dst: GPUBuffer, n: number, to = 0): void {
  const align = rt.device.limits.minStorageBufferOffsetAlignment;
  // The vector kernel writes from the start of its destination binding, so `to` must be aligned.
  const vectors = rt.plainKernels || from % 4 !== 0 || (to * 4) % align !== 0 ? 0 : Math.floor(n / 4);
  const per = COPY_VECTORS_PER_INVOCATION;
  if (vectors > 0) {
    // Only the bytes read are bound (from the aligned offset at or below the first): a slice of a
    // large buffer is then a small binding.
    const offset = Math.floor((from * 4) / align) * align;
    const shift = (from * 4 - offset) / 16;
    const loads = Array.from({ length: per }, (_, j) => `let v${j} = x[off + i + ${j * WG}u];`).join(" ");
    const stores = Array.from({ length: per }, (_, j) => `y[i + ${j * WG}u] = v${j};`).join(" ");
    rt.dispatch({
      key: "copy_vec4",
      shader: () => ({
        doc: ["x: (any) vec4<u32>", "y: (n4) vec4<u32>"],
        bindings: [
          { name: "x", access: "read", vec4: true },
          { name: "y", access: "rw", vec4: true },
        ],
        workgroupSize: WG,
        // Params: vectors, source offset in vectors. Vectors i, i + 256, … of the workgroup's block.
        body: `  let n = pu(0u); let off = pu(1u);
  let i = wg * ${per * WG}u + lid;
  if (i + ${(per - 1) * WG}u < n) {
    ${loads}
    ${stores}
  } else {
    for (var j = 0u; j < ${per}u; j = j + 1u) {
      if (i + j * ${WG}u < n) { y[i + j * ${WG}u] = x[off + i + j * ${WG}u]; }
    }
  }`,
      }),
      bindings: [
        { buffer: src, access: "read", offset, size: (shift + vectors) * 16 },
        { buffer: dst, access: "rw", offset: to * 4, size: vectors * 16 },
      ],
      params: [vectors, shift],
      workgroups: groups(vectors, per * WG),
    });
  }
  const done = vectors * 4;
  if (done === n) return;
  rt.dispatch({
    key: "copy",
    shader: () => ({
      doc: ["x: (any) u32", "y: (n) u32"],
      bindings: [
        { name: "x", access: "read" },
        { name: "y", access: "rw" },
      ],
      workgroupSize: WG,
      // Params: words, source offset, destination offset.
      body: `  if (gid < pu(0u)) { y[pu(2u) + gid] = x[pu(1u) + gid]; }`,
    }),
    bindings: [
      { buffer: src, access: "read" },
      { buffer: dst, access: "rw" },
    ],
    params: [n - done, from + done, to + done],
    workgroups: groups(n - done),
  });
}

/** A new f32 copy of a float tensor (f16/bf16 decoded exactly), for kernels that read f32 vectors; release its storage after use. */
export function widenToF32(rt: Runtime, x: Ref): Ref {
  const storage = rt.acquire(x.size * 4);
  rt.dispatch({
    key: `widen_f32:${x.dtype}`,
    shader: () => ({
      doc: [`x: (n) ${x.dtype}`, "y: (n) f32"],
      bindings: [
        { name: "x", dtype: x.dtype, access: "read" },
        { name: "y", access: "rw" },
      ],
      workgroupSize: WG,
      body: `  if (gid < pu(0u)) { y[gid] = bitcast<u32>(x_f(gid)); }`,
    }),
    bindings: [
      { buffer: x.storage, access: "read" },
      { buffer: storage, access: "rw" },
    ],
    params: [x.size],
    workgroups: groups(x.size),
  });
  return { storage, shape: x.shape, dtype: "f32", size: x.size };
}

const XYZW = ["x", "y", "z", "w"];

/**
 * WGSL: n vec4 accumulators `name0 … name{n−1}`, zero. Named variables with the products below
 * unrolled, not an array indexed in loops: no shader compiler then has a reason to spill them
 * from registers.
 */
export function accumulators(n: number, name = "acc"): string {
  return Array.from({ length: n }, (_, i) => `var ${name}${i} = vec4<f32>(0.0);`).join("\n  ");
}

/**
 * WGSL: the outer-product update of a register tile, unrolled: for row r (component r mod 4 of
 * `rows[r / 4]`) and column vector `cols[h]`, accumulator r·cols.length + h += row · column.
 */
export function outerProductFma(rows: readonly string[], cols: readonly string[], name = "acc"): string {
  const lines: string[] = [];
  for (let r = 0; r < rows.length * 4; r++) {
    for (let h = 0; h < cols.length; h++) {
      const acc = `${name}${r * cols.length + h}`;
      lines.push(`${acc} = fma(vec4<f32>(${rows[r >> 2]}.${XYZW[r & 3]}), ${cols[h]}, ${acc});`);
    }
  }
  return lines.join("\n      ");
}

/** The component letter of index i (0…3) of a vec4. */
export const component = (i: number) => XYZW[i];

/**
 * WGSL: the stores of an 8×8 register tile, unrolled: rows ty·4 + r and 64 + ty·4 + r (r < 4),
 * columns tx·4 and 64 + tx·4; `store(row, col, acc)` gives the statement for one vec4.
 */
export function tileStores8x8(row0: string, col0: string, store: (row: string, col: string, acc: string) => string): string {
  const lines: string[] = [];
  for (let r = 0; r < 8; r++) {
    for (let h = 0; h < 2; h++) {
      const row = `(${row0} + ${r < 4 ? "" : "64u + "}ty * 4u + ${r % 4}u)`;
      const col = `(${col0} + ${h * 64}u + tx * 4u)`;
      lines.push(store(row, col, `acc${r * 2 + h}`));
    }
  }
  return lines.join("\n  ");
}

/**
 * WGSL, unrolled: the masked, decayed 64 × 64 scores of a Lightning block, this invocation's 4×4
 * (rows p = ty·4 + i, columns p' = tx·4 + c, from sc0…sc3 and `slope`), written transposed into the
 * workgroup array `target` as target[p'·16 + p/4].
 */
export function maskedScores(target: string): string {
  const cols: string[] = [];
  for (let c = 0; c < 4; c++) {
    const rows = [0, 1, 2, 3].map((i) => `if (pc <= ty * 4u + ${i}u) { col.${component(i)} = exp(-slope * f32(ty * 4u + ${i}u - pc)) * sc${i}.${component(c)}; }`);
    cols.push(`{
    let pc = tx * 4u + ${c}u;
    var col = vec4<f32>(0.0);
    ${rows.join("\n    ")}
    ${target}[pc * 16u + ty] = col;
  }`);
  }
  return cols.join("\n  ");
}

/**
 * WGSL: 16 steps of the 8×8 register tile's outer products over the staged operands As and Bs
 * (V vec4 a row: this invocation's two vec4 of each at ty, 16 + ty and tx, 16 + tx).
 */
export function stagedProduct(V: number): string {
  return `for (var pp = 0u; pp < 16u; pp = pp + 1u) {
        let a0 = As[pp * ${V}u + ty];
        let a1 = As[pp * ${V}u + 16u + ty];
        let b0 = Bs[pp * ${V}u + tx];
        let b1 = Bs[pp * ${V}u + 16u + tx];
        ${outerProductFma(["a0", "a1"], ["b0", "b1"])}
      }`;
}

/**
 * WGSL: the (batch·head, segment, 128 × 128 tile of D × E) of this workgroup, for `segments`
 * segments a batch·head, tiles `V` vectors wide: lb (within the chunk), bh, sg, d04, e04, the head's
 * slope, and ty, tx of a 16 × 16 invocation grid; workgroups past the chunk's heads return. Params:
 * 3 H, 4 heads in the chunk, 6 tiles of D, 7 (eT) tiles of E, 8 first batch·head of the chunk.
 */
export function tileWorkgroup(segments: string, V: number): string {
  return `let perBh = ${segments} * pu(6u) * eT;
  let lb = wg / perBh;
  if (lb >= pu(4u)) { return; }
  let bh = pu(8u) + lb;
  var r = wg % perBh;
  let sg = r / (pu(6u) * eT);
  r = r % (pu(6u) * eT);
  let d04 = (r / eT) * ${V}u;
  let e04 = (r % eT) * ${V}u;
  let slope = slopes_f(bh % pu(3u));
  let ty = lid / 16u;
  let tx = lid % 16u;`;
}

/**
 * WGSL: the 16-token stages of one block's kᵀ v product (block t0, m tokens; decayed k rows in
 * rk0/rk1 and v rows in rv0/rv1, staged through the workgroup arrays As and Bs): each stage is
 * stored, the next fetched (`within` the block at j0 + 16, else the next block's first stage by
 * `next` while blk + 1 < segEnd), then multiplied into the 8×8 register tile.
 */
export function blockStages(V: number, within: string, next: string): string {
  return `for (var j0 = 0u; j0 < m; j0 = j0 + 16u) {
      As[lid] = rk0; As[lid + 256u] = rk1;
      Bs[lid] = rv0; Bs[lid + 256u] = rv1;
      workgroupBarrier();
      if (j0 + 16u < m) {
      ${within}
      } else if (blk + 1u < segEnd) {
      ${next}
      }
      ${stagedProduct(V)}
      workgroupBarrier();
    }`;
}

/**
 * WGSL: one word of every 32-byte sector of the next 64 token rows of k and v (this tile's
 * columns d04…, e04…), loaded now into tk0…tk3 and tv0…tv3 (0 where `touch` is off or `when` is
 * false) and summed by the caller into a sink after the current block (`TOUCHED_SUM`), so that the
 * rows reach L2 a block ahead of their stage loads. `when(p)` says whether the p-th next token
 * exists, `row(p)` is its row in k and v.
 */
export function touchNextKv(touch: boolean, when: (p: string) => string, row: (p: string) => string): string {
  const loads = [0, 1, 2, 3].map(
    (i) => `{ let sct = lid + ${i * 256}u; let p = sct / 16u; let c4 = (sct % 16u) * 2u;
      if (${when("p")}) {
        let row = ${row("p")};
        if (d04 + c4 < D4) { tk${i} = bitcast<f32>(k[row * D4 + d04 + c4].x); }
        if (e04 + c4 < E4) { tv${i} = bitcast<f32>(v[row * E4 + e04 + c4].x); }
      } }`,
  );
  return [[0, 1, 2, 3].map((i) => `var tk${i} = 0.0; var tv${i} = 0.0;`).join(" "), ...(touch ? loads : [])].join("\n    ");
}

/** WGSL: the sum of the words `touchNextKv` loaded. */
export const TOUCHED_SUM = [0, 1, 2, 3].map((i) => `tk${i} + tv${i}`).join(" + ");
