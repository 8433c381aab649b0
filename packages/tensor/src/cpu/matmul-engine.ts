/**
 * The cache-blocked f32 GEMM that every matmul thread runs (the main thread and each worker).
 *
 * `createGemmEngine` must stay self-contained: workers are started from its source text
 * (`createGemmEngine.toString()`, see matmul-pool.ts), so it may use nothing from outside its own
 * body — no imports, no module constants, no helpers — only globals (Math, WebAssembly, typed arrays).
 *
 * Blocking (the BLIS loop nest), for C (m, n) = A (m, k) . B (k, n):
 *   jc: n in blocks of NC columns              pack B block  (ks, nc) once, reuse for every ic
 *   ps: k in super-slices of KS                (bounds the packed-B memory for very long k)
 *   ic: rows in blocks of MC                    pack A block  (mc, ks)
 *   gemm(): k in slices of KC, then MR-row x 8-column micro-tiles, in WebAssembly SIMD
 * Packed blocks are zero-padded to whole micro-tiles, so the micro-kernel has no edge cases; the
 * valid part of the C block is then copied (first super-slice) or added (later ones) into C.
 * MR comes from the module (6 for the relaxed-SIMD FMA kernel, 4 for the plain one); without
 * WebAssembly SIMD the same packed layout is multiplied by `jsGemm`, its plain twin.
 *
 * Packed-B cache: a task with `bKey` (small-M products such as decoding, x (1, k) · W (k, n))
 * keeps its whole packed B in this engine's heap under that key and reuses it on the next call
 * with the same key, instead of re-packing W every call (at M = 1 packing costs several times the
 * multiply). The caller owns the key's lifetime and calls `forget(key)` when B's storage is written
 * or freed; the cache is bounded and starts over when full.
 */

/** One thread's share of a (batched) matmul: rows [rowStart, rowEnd) of the flattened (batch·m, n) C. */
export interface GemmTask {
  /** Identity of B's storage: packed B is cached under it (see `forget`). Main thread only. */
  bKey?: object;
  a: Float32Array;
  b: Float32Array;
  c: Float32Array;
  /** Element offsets of each batch's A and B matrices (broadcast batches repeat an offset). */
  aOffsets: Float64Array;
  bOffsets: Float64Array;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  rowStart: number;
  rowEnd: number;
}

export interface GemmEngine {
  readonly simd: boolean;
  /** Rows of the micro-tile: thread shares are cut in multiples of it. */
  readonly mr: number;
  run(task: GemmTask): void;
  /** Drops the packed B cached under `key` (its storage was written or freed). */
  forget(key: object): void;
  /** Floats of packed B held in the cache (for tests and diagnostics). */
  cachedFloats(): number;
}

// The few WebAssembly declarations used here (the project's lib setting has no DOM types).
declare const WebAssembly: {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
};
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}

export function createGemmEngine(wasmBytes: Uint8Array | null): GemmEngine {
  let MR = 4; // micro-tile rows: the module's exported "mr"
  const NR = 8; // micro-tile columns (both .wat kernels)
  const KC = 256; // k slice: a B micro-panel (256 x 8, 8 KB) stays in L1 while A micro-panels stream from L2
  const MC = 96; // rows per packed A block (a multiple of every MR: 4 and 6); A block 96 KB, in L2
  const NC = 512; // columns per packed B block (multiple of NR)
  const KS = 2048; // k per packed super-slice
  const CACHE_FLOATS = 16 * 2 ** 20; // packed-B cache bound: 64 MiB per thread

  // Heap layout (f32 offsets): packed A (MC, KS) | packed B (KS, NC) | C block (MC, NC) | staging
  // (a source block copied in, (KS, NC) at most) | packed-B cache.
  const A0 = 0;
  const B0 = A0 + MC * KS;
  const C0 = B0 + KS * NC;
  const STAGE = C0 + MC * NC;
  const heapFloats = STAGE + KS * NC;

  let gemm: (a: number, b: number, c: number, mc: number, nc: number, k: number, kc: number) => void;
  // The module's packer (see matmul.wat): null for the plain JS engine.
  let wasmPack: ((src: number, rs: number, cs: number, rows: number, rowsPad: number, kc: number, r: number, dst: number) => void) | null = null;
  let heap: Float32Array;
  // Makes the heap at least `floats` long; views taken before a call are stale after it.
  let reserve: (floats: number) => void;
  let simd = false;
  if (wasmBytes && typeof WebAssembly !== "undefined" && WebAssembly.validate(wasmBytes)) {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(wasmBytes), {});
    const memory = instance.exports.memory as WasmMemory;
    reserve = (floats) => {
      const need = Math.ceil((floats * 4) / 65536) - memory.buffer.byteLength / 65536;
      if (need > 0) memory.grow(need);
      heap = new Float32Array(memory.buffer);
    };
    reserve(heapFloats);
    MR = (instance.exports.mr as { value: number } | undefined)?.value ?? 4;
    const wasmGemm = instance.exports.gemm as (...args: number[]) => void;
    gemm = (a, b, c, mc, nc, k, kc) => wasmGemm(a * 4, b * 4, c * 4, mc, nc, k, kc);
    wasmPack = instance.exports.pack as typeof wasmPack;
    simd = true;
  } else {
    heap = new Float32Array(heapFloats);
    reserve = (floats) => {
      if (floats <= heap.length) return;
      const grown = new Float32Array(Math.max(floats, heap.length * 2));
      grown.set(heap);
      heap = grown;
    };
    gemm = jsGemm;
  }

  // The plain twin of matmul.wat's gemm, same packed layout, offsets in floats.
  function jsGemm(a: number, b: number, c: number, mc: number, nc: number, k: number, kcMax: number): void {
    const h = heap;
    for (let pc = 0; pc < k; pc += kcMax) {
      const kc = Math.min(kcMax, k - pc);
      const aSlice = a + mc * pc;
      const bSlice = b + nc * pc;
      for (let j = 0; j < nc; j += NR) {
        const bp = bSlice + j * kc;
        for (let i = 0; i < mc; i += MR) {
          const ap = aSlice + i * kc;
          for (let r = 0; r < MR; r++) {
            let c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;
            for (let p = 0; p < kc; p++) {
              const x = h[ap + p * MR + r];
              const q = bp + p * NR;
              c0 += x * h[q];
              c1 += x * h[q + 1];
              c2 += x * h[q + 2];
              c3 += x * h[q + 3];
              c4 += x * h[q + 4];
              c5 += x * h[q + 5];
              c6 += x * h[q + 6];
              c7 += x * h[q + 7];
            }
            const o = c + (i + r) * nc + j;
            if (pc > 0) {
              c0 += h[o]; c1 += h[o + 1]; c2 += h[o + 2]; c3 += h[o + 3];
              c4 += h[o + 4]; c5 += h[o + 5]; c6 += h[o + 6]; c7 += h[o + 7];
            }
            h[o] = c0; h[o + 1] = c1; h[o + 2] = c2; h[o + 3] = c3;
            h[o + 4] = c4; h[o + 5] = c5; h[o + 6] = c6; h[o + 7] = c7;
          }
        }
      }
    }
  }

  // Packing reads the source along its contiguous dimension (the loop order follows the strides):
  // reading across rows instead, as a plain panel-by-panel loop does, made packing cost about as
  // much as a 2-thread 512³ multiply (7.5 ns per element against 0.8).

  // A rows [i0, i0 + mc) x columns [p0, p0 + ks) → heap[A0...], element (i, p) at src[base + i*rs + p*cs].
  function jsPackA(src: Float32Array, base: number, rs: number, cs: number, mc: number, mcPad: number, ks: number): void {
    const h = heap;
    for (let pc = 0; pc < ks; pc += KC) {
      const kc = Math.min(KC, ks - pc);
      let panel = A0 + mcPad * pc;
      for (let i = 0; i < mcPad; i += MR, panel += MR * kc) {
        const rows = Math.min(MR, mc - i);
        if (cs === 1 || rows < MR) {
          // Row-major A: each row is contiguous along p.
          for (let r = 0; r < MR; r++) {
            let d = panel + r;
            if (r < rows) {
              let s = base + (i + r) * rs + pc * cs;
              for (let p = 0; p < kc; p++, d += MR, s += cs) h[d] = src[s]!;
            } else {
              for (let p = 0; p < kc; p++, d += MR) h[d] = 0;
            }
          }
        } else {
          // Transposed A: the MR rows of one p are contiguous.
          let s = base + i * rs + pc * cs;
          for (let p = 0, d = panel; p < kc; p++, s += cs) {
            for (let r = 0, q = s; r < MR; r++, q += rs) h[d++] = src[q]!;
          }
        }
      }
    }
  }

  // B rows [p0, p0 + ks) x columns [j0, j0 + nc) → heap[dst...], element (p, j) at src[base + p*rs + j*cs].
  function jsPackB(src: Float32Array, base: number, rs: number, cs: number, nc: number, ncPad: number, ks: number, dst: number): void {
    const h = heap;
    const full = cs === 1 ? Math.floor(nc / NR) * NR : 0;
    for (let pc = 0; pc < ks; pc += KC) {
      const kc = Math.min(KC, ks - pc);
      const slice = dst + ncPad * pc;
      // Row-major B: walk each source row once, dealing 8 values to each full panel.
      for (let p = 0; p < kc; p++) {
        let s = base + (pc + p) * rs;
        for (let j = 0, d = slice + p * NR; j < full; j += NR, s += NR, d += NR * kc) {
          h[d] = src[s]!;
          h[d + 1] = src[s + 1]!;
          h[d + 2] = src[s + 2]!;
          h[d + 3] = src[s + 3]!;
          h[d + 4] = src[s + 4]!;
          h[d + 5] = src[s + 5]!;
          h[d + 6] = src[s + 6]!;
          h[d + 7] = src[s + 7]!;
        }
      }
      // The other panels (all of them for a transposed B, whose columns are contiguous along p):
      // the NR columns of a panel are read side by side, zero past nc.
      for (let j = full, panel = slice + full * kc; j < ncPad; j += NR, panel += NR * kc) {
        const cols = Math.min(NR, nc - j);
        let d = panel;
        let s = base + pc * rs + j * cs;
        for (let p = 0; p < kc; p++, d += NR, s += rs) {
          for (let q = 0; q < NR; q++) h[d + q] = q < cols ? src[s + q * cs] : 0;
        }
      }
    }
  }

  // `count` runs of `len` floats, `stride` apart in src from `start`, copied side by side to the
  // staging area: TypedArray.set is a bulk copy (~0.2 ns per float even from shared memory), where
  // a JavaScript loop moves ~1.5 ns per float.
  function stage(src: Float32Array, start: number, stride: number, count: number, len: number): void {
    const h = heap;
    if (stride === len) h.set(src.subarray(start, start + count * len), STAGE);
    else for (let r = 0; r < count; r++) h.set(src.subarray(start + r * stride, start + r * stride + len), STAGE + r * len);
  }

  // With WebAssembly, a block is staged with bulk copies and packed by the module; the JS packers
  // remain for the plain engine and for strides matmul never uses (neither dimension contiguous).
  function packA(src: Float32Array, base: number, rs: number, cs: number, mc: number, mcPad: number, ks: number): void {
    if (!wasmPack || (cs !== 1 && rs !== 1)) return jsPackA(src, base, rs, cs, mc, mcPad, ks);
    // Staged compactly: element (i, p) at STAGE + i*srs + p*scs.
    const [srs, scs] = cs === 1 ? [ks, 1] : [1, mc];
    if (cs === 1) stage(src, base, rs, mc, ks);
    else stage(src, base, cs, ks, mc);
    for (let pc = 0; pc < ks; pc += KC) wasmPack(STAGE + pc * scs, srs, scs, mc, mcPad, Math.min(KC, ks - pc), MR, A0 + mcPad * pc);
  }

  function packB(src: Float32Array, base: number, rs: number, cs: number, nc: number, ncPad: number, ks: number, dst: number): void {
    if (!wasmPack || (cs !== 1 && rs !== 1)) return jsPackB(src, base, rs, cs, nc, ncPad, ks, dst);
    // Staged compactly; the packer's rows are B's columns: element (p, j) at STAGE + j*srs + p*scs.
    const [srs, scs] = cs === 1 ? [1, nc] : [ks, 1];
    if (cs === 1) stage(src, base, rs, ks, nc);
    else stage(src, base, cs, nc, ks);
    for (let pc = 0; pc < ks; pc += KC) wasmPack(STAGE + pc * scs, srs, scs, nc, ncPad, Math.min(KC, ks - pc), NR, dst + ncPad * pc);
  }

  // The packed-B cache: whole packed matrices after the fixed heap, in insertion order.
  interface Packed {
    bBase: number;
    transB: boolean;
    n: number;
    k: number;
    /** Heap offset of each (jc, ps) block, in loop order. */
    blocks: number[];
  }
  const cache = new Map<object, Packed>();
  let cacheEnd = heapFloats;

  // Packed B of a task with a key: the cached blocks, packed now on a miss; null when too large to keep.
  function packedB(t: GemmTask, key: object, bBase: number, rsB: number, csB: number): Packed | null {
    const { n, k } = t;
    const hit = cache.get(key);
    if (hit && hit.bBase === bBase && hit.transB === t.transB && hit.n === n && hit.k === k) return hit;
    const floats = Math.ceil(n / NR) * NR * k;
    if (floats > CACHE_FLOATS) return null;
    if (cacheEnd + floats > heapFloats + CACHE_FLOATS) {
      cache.clear();
      cacheEnd = heapFloats;
    }
    reserve(cacheEnd + floats);
    const entry: Packed = { bBase, transB: t.transB, n, k, blocks: [] };
    for (let jc = 0; jc < n; jc += NC) {
      const nc = Math.min(NC, n - jc);
      const ncPad = Math.ceil(nc / NR) * NR;
      for (let ps = 0; ps < k; ps += KS) {
        const ks = Math.min(KS, k - ps);
        packB(t.b, bBase + ps * rsB + jc * csB, rsB, csB, nc, ncPad, ks, cacheEnd);
        entry.blocks.push(cacheEnd);
        cacheEnd += ncPad * ks;
      }
    }
    cache.delete(key);
    cache.set(key, entry);
    return entry;
  }

  // C rows [i0, i1) of one batch: c[cBase + i*n + j] = sum_p A(i, p) B(p, j).
  function blocked(t: GemmTask, aBase: number, bBase: number, cBase: number, i0: number, i1: number): void {
    const { a, b, c, m, n, k } = t;
    // A (m, k), or stored (k, m) when transposed; B (k, n), or stored (n, k).
    const rsA = t.transA ? 1 : k;
    const csA = t.transA ? m : 1;
    const rsB = t.transB ? 1 : n;
    const csB = t.transB ? k : 1;
    const cached = t.bKey ? packedB(t, t.bKey, bBase, rsB, csB) : null;
    let block = 0;
    for (let jc = 0; jc < n; jc += NC) {
      const nc = Math.min(NC, n - jc);
      const ncPad = Math.ceil(nc / NR) * NR;
      for (let ps = 0; ps < k; ps += KS) {
        const ks = Math.min(KS, k - ps);
        const bPanel = cached ? cached.blocks[block++] : B0;
        if (!cached) packB(b, bBase + ps * rsB + jc * csB, rsB, csB, nc, ncPad, ks, B0);
        for (let ic = i0; ic < i1; ic += MC) {
          const mc = Math.min(MC, i1 - ic);
          const mcPad = Math.ceil(mc / MR) * MR;
          packA(a, aBase + ic * rsA + ps * csA, rsA, csA, mc, mcPad, ks);
          gemm(A0, bPanel, C0, mcPad, ncPad, ks, KC);
          storeC(c, cBase + ic * n + jc, n, mc, nc, ncPad, ps > 0);
        }
      }
    }
  }

  // The valid (mc, nc) part of the C block (row stride ncPad) into C (row stride n), written or
  // added. TypedArray.set is a bulk copy (~0.4 ns per float into shared memory, against ~1.7 for a
  // JavaScript loop), but each row's view costs an allocation: chunked Lightning Attention runs
  // thousands of 64x64 products per call, where a view per row (c.set(heap.subarray(...)))
  // cost more than the multiply. So: one copy when the rows are contiguous on both sides, a copy
  // per row when rows are long, a loop otherwise and for accumulation.
  function storeC(c: Float32Array, dst: number, n: number, mc: number, nc: number, ncPad: number, add: boolean): void {
    const h = heap;
    if (!add && nc === n && nc === ncPad) {
      c.set(h.subarray(C0, C0 + mc * nc), dst);
      return;
    }
    for (let r = 0, src = C0; r < mc; r++, src += ncPad, dst += n) {
      if (add) for (let q = 0; q < nc; q++) c[dst + q] += h[src + q];
      else if (nc >= 64) c.set(h.subarray(src, src + nc), dst);
      else for (let q = 0; q < nc; q++) c[dst + q] = h[src + q];
    }
  }

  function run(t: GemmTask): void {
    const { m, n, k } = t;
    for (let row = t.rowStart; row < t.rowEnd; ) {
      const batch = Math.floor(row / m);
      const i0 = row - batch * m;
      const i1 = Math.min(m, i0 + (t.rowEnd - row));
      const cBase = batch * m * n;
      if (k === 0) t.c.fill(0, cBase + i0 * n, cBase + i1 * n);
      else blocked(t, t.aOffsets[batch], t.bOffsets[batch], cBase, i0, i1);
      row += i1 - i0;
    }
  }

  return {
    simd,
    get mr() {
      return MR;
    },
    run,
    forget: (key) => void cache.delete(key),
    cachedFloats: () => [...cache.values()].reduce((sum, e) => sum + Math.ceil(e.n / NR) * NR * e.k, 0),
  };
}
