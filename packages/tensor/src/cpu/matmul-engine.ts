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
 *   gemm(): k in slices of KC, then 4-row x 8-column micro-tiles, in WebAssembly SIMD
 * Packed blocks are zero-padded to whole micro-tiles, so the micro-kernel has no edge cases; the
 * valid part of the C block is then copied (first super-slice) or added (later ones) into C.
 * Without WebAssembly SIMD the same packed layout is multiplied by `jsGemm`, its plain twin.
 */

/** One thread's share of a (batched) matmul: rows [rowStart, rowEnd) of the flattened (batch·m, n) C. */
export interface GemmTask {
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
  run(task: GemmTask): void;
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
  const MR = 4; // micro-tile rows (must match matmul.wat)
  const NR = 8; // micro-tile columns (must match matmul.wat)
  const KC = 256; // k slice: a B micro-panel (256 x 8, 8 KB) stays in L1 while A micro-panels stream from L2
  const MC = 96; // rows per packed A block (multiple of MR)
  const NC = 512; // columns per packed B block (multiple of NR)
  const KS = 2048; // k per packed super-slice

  // Heap layout (f32 offsets): packed A (MC, KS) | packed B (KS, NC) | C block (MC, NC).
  const A0 = 0;
  const B0 = A0 + MC * KS;
  const C0 = B0 + KS * NC;
  const heapFloats = C0 + MC * NC;

  let gemm: (a: number, b: number, c: number, mc: number, nc: number, k: number, kc: number) => void;
  let heap: Float32Array;
  let simd = false;
  if (wasmBytes && typeof WebAssembly !== "undefined" && WebAssembly.validate(wasmBytes)) {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(wasmBytes), {});
    const memory = instance.exports.memory as WasmMemory;
    const need = Math.ceil((heapFloats * 4) / 65536) - memory.buffer.byteLength / 65536;
    if (need > 0) memory.grow(need);
    heap = new Float32Array(memory.buffer, 0, heapFloats);
    const wasmGemm = instance.exports.gemm as (...args: number[]) => void;
    gemm = (a, b, c, mc, nc, k, kc) => wasmGemm(a * 4, b * 4, c * 4, mc, nc, k, kc);
    simd = true;
  } else {
    heap = new Float32Array(heapFloats);
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

  // A rows [i0, i0 + mc) x columns [p0, p0 + ks) → heap[A0...], element (i, p) at src[base + i*rs + p*cs].
  function packA(src: Float32Array, base: number, rs: number, cs: number, mc: number, mcPad: number, ks: number): void {
    const h = heap;
    for (let pc = 0; pc < ks; pc += KC) {
      const kc = Math.min(KC, ks - pc);
      let panel = A0 + mcPad * pc;
      for (let i = 0; i < mcPad; i += MR, panel += MR * kc) {
        for (let r = 0; r < MR; r++) {
          let d = panel + r;
          if (i + r < mc) {
            let s = base + (i + r) * rs + pc * cs;
            for (let p = 0; p < kc; p++, d += MR, s += cs) h[d] = src[s]!;
          } else {
            for (let p = 0; p < kc; p++, d += MR) h[d] = 0;
          }
        }
      }
    }
  }

  // B rows [p0, p0 + ks) x columns [j0, j0 + nc) → heap[B0...], element (p, j) at src[base + p*rs + j*cs].
  function packB(src: Float32Array, base: number, rs: number, cs: number, nc: number, ncPad: number, ks: number): void {
    const h = heap;
    for (let pc = 0; pc < ks; pc += KC) {
      const kc = Math.min(KC, ks - pc);
      let panel = B0 + ncPad * pc;
      for (let j = 0; j < ncPad; j += NR, panel += NR * kc) {
        const cols = Math.min(NR, nc - j);
        let d = panel;
        let s = base + pc * rs + j * cs;
        for (let p = 0; p < kc; p++, d += NR, s += rs) {
          if (cols === NR && cs === 1) {
            h[d] = src[s]!;
            h[d + 1] = src[s + 1]!;
            h[d + 2] = src[s + 2]!;
            h[d + 3] = src[s + 3]!;
            h[d + 4] = src[s + 4]!;
            h[d + 5] = src[s + 5]!;
            h[d + 6] = src[s + 6]!;
            h[d + 7] = src[s + 7]!;
          } else {
            for (let q = 0; q < NR; q++) h[d + q] = q < cols ? src[s + q * cs] : 0;
          }
        }
      }
    }
  }

  // C rows [i0, i1) of one batch: c[cBase + i*n + j] = sum_p A(i, p) B(p, j).
  function blocked(t: GemmTask, aBase: number, bBase: number, cBase: number, i0: number, i1: number): void {
    const { a, b, c, m, n, k } = t;
    // A (m, k), or stored (k, m) when transposed; B (k, n), or stored (n, k).
    const rsA = t.transA ? 1 : k;
    const csA = t.transA ? m : 1;
    const rsB = t.transB ? 1 : n;
    const csB = t.transB ? k : 1;
    for (let jc = 0; jc < n; jc += NC) {
      const nc = Math.min(NC, n - jc);
      const ncPad = Math.ceil(nc / NR) * NR;
      for (let ps = 0; ps < k; ps += KS) {
        const ks = Math.min(KS, k - ps);
        packB(b, bBase + ps * rsB + jc * csB, rsB, csB, nc, ncPad, ks);
        for (let ic = i0; ic < i1; ic += MC) {
          const mc = Math.min(MC, i1 - ic);
          const mcPad = Math.ceil(mc / MR) * MR;
          packA(a, aBase + ic * rsA + ps * csA, rsA, csA, mc, mcPad, ks);
          gemm(A0, B0, C0, mcPad, ncPad, ks, KC);
          for (let r = 0; r < mc; r++) {
            const src = C0 + r * ncPad;
            const dst = cBase + (ic + r) * n + jc;
            if (ps === 0) c.set(heap.subarray(src, src + nc), dst);
            else for (let q = 0; q < nc; q++) c[dst + q] += heap[src + q];
          }
        }
      }
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

  return { simd, run };
}
