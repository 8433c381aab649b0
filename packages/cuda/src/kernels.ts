/**
 * The CUDA kernel table: each op packs its tensors' device pointers and its dimensions into one
 * `launch` of a native launcher (native/*.cu documents each argument list). Shapes are handled
 * here, so the native side sees plain (outer, n, inner) splits, broadcast shapes or strides.
 *
 * Letters: B batch, H heads, T time, D query/key head dim, E value head dim, N rows, V vocabulary, M width.
 */
import {
  adamwScalars,
  BINARY_OPS,
  type BinaryOpName,
  broadcastStrides,
  byteSize,
  COMPARE_OPS,
  type CompareOpName,
  type DType,
  DTYPES,
  encode,
  type Kernel,
  type KernelTable,
  QKV_ACTIVATIONS,
  REDUCE_OPS,
  type ReduceOpName,
  seedKey,
  sizeOf,
  stridesOf,
  type TensorRef,
  UNARY_OPS,
  type UnaryOpName,
} from "@lightning-ts/tensor";
import { INDEX_ERRORS, type IndexErrorOp, LAUNCHERS, type LauncherName } from "./codes.js";
import type { NativeRuntime } from "./native.js";

/** Device memory of one tensor. `ptr` is 0 for an empty allocation. */
export interface CudaStorage {
  readonly ptr: number;
  readonly byteLength: number;
}

type Ref = TensorRef<CudaStorage>;

/**
 * Whether decodeLayer's chain folds its two SRMSNorms out of the products (src/kernels.ts
 * decodeLayer): bf16 above the small-M kernel's 4 rows, rows of whole 16-byte packs up to 4,096
 * wide (native/decode.cu's norm order), unless `LIGHTNING_CUDA_FOLD_NORM=0` or the tensor-core
 * small-batch kernel, which norms in its prologue, is on (`LIGHTNING_CUDA_GEMV_MMA=1`); read at each call.
 */
function foldsNorms(dtype: DType, rows: number, width: number): boolean {
  const env = process.env.LIGHTNING_CUDA_FOLD_NORM;
  if (env !== undefined && env !== "0" && env !== "1") throw new Error(`LIGHTNING_CUDA_FOLD_NORM: expected 0 or 1, got '${env}'`);
  if (env === "0" || process.env.LIGHTNING_CUDA_GEMV_MMA === "1") return false;
  return dtype === "bf16" && rows > 4 && rows <= 65535 && width % 8 === 0 && width <= 4096;
}

// Every code passed to the addon is an index into a list that native/op_codes.gen.h is generated
// from (scripts/gen-codes.mjs): DTYPES, UNARY_OPS, BINARY_OPS, COMPARE_OPS, REDUCE_OPS, LAUNCHERS,
// INDEX_ERRORS (+ 1).
function code(dtype: DType): number {
  if (dtype === "f64") throw new Error("the CUDA backend has no f64");
  return DTYPES.indexOf(dtype);
}

const LAUNCHER = Object.fromEntries(LAUNCHERS.map((name, i) => [name, i])) as Record<LauncherName, number>;
const indexError = (op: IndexErrorOp) => INDEX_ERRORS.findIndex((e) => e.op === op) + 1;

const shape = (s: readonly number[]) => [s.length, ...s];
const ptr = (t: Ref | undefined) => (t ? t.storage.ptr : 0);
/** lightningStep's integers after `early` where it has prompt segments: token rows and the error code. */
const segmentInts = (q: Ref, segments: Ref | undefined) => (segments ? [q.shape[0], indexError("lightningStep")] : []);

export function createKernels(rt: NativeRuntime): KernelTable<CudaStorage> {
  /** False when the launcher declined (fusedLinear beyond the small-M kernel): nothing was enqueued. */
  const launch = (name: LauncherName, tensors: (Ref | undefined)[], ints: number[], floats: number[] = []): boolean =>
    rt.launch(LAUNCHER[name], tensors.map(ptr), ints, floats);

  /**
   * a: (..., m, k), b: (..., k, n) after the transposes → y: (..., m, n); batch dims broadcast. With
   * `add` (y's shape, one matrix), y = a·b + add summed before the one rounding: false where the
   * launcher declines that (native/matmul.cu), and nothing was enqueued.
   */
  const matmulLaunch = (a: Ref, b: Ref, y: Ref, transA: boolean, transB: boolean, add?: Ref): boolean => {
    const ys = y.shape;
    const [m, n] = [ys[ys.length - 2], ys[ys.length - 1]];
    const as = a.shape;
    const k = transA ? as[as.length - 2] : as[as.length - 1];
    const batch = ys.slice(0, -2);
    const batchStrides = (s: readonly number[], matrix: number) => broadcastStrides(s.slice(0, -2), batch).map((st) => st * matrix);
    return launch("matmul", add ? [a, b, y, add] : [a, b, y], [
      code(a.dtype), transA ? 1 : 0, transB ? 1 : 0, m, n, k,
      ...shape(batch), ...shape(batchStrides(as, m * k)), ...shape(batchStrides(b.shape, k * n)),
    ]);
  };

  const unary = (op: UnaryOpName): Kernel<UnaryOpName, CudaStorage> => ({ inputs: [x], outputs: [y] }) =>
    launch("unary", [x, y], [UNARY_OPS.indexOf(op), code(x.dtype), x.size]);

  const binary = (op: BinaryOpName): Kernel<BinaryOpName, CudaStorage> => ({ inputs: [a, b], outputs: [y] }) =>
    launch("binary", [a, b, y], [BINARY_OPS.indexOf(op), code(a.dtype), ...shape(a.shape), ...shape(b.shape), ...shape(y.shape)]);

  const compare = (op: CompareOpName): Kernel<CompareOpName, CudaStorage> => ({ inputs: [a, b], outputs: [y] }) =>
    launch("compare", [a, b, y], [COMPARE_OPS.indexOf(op), code(a.dtype), ...shape(a.shape), ...shape(b.shape), ...shape(y.shape)]);

  const reduce = (op: ReduceOpName): Kernel<ReduceOpName, CudaStorage> => ({ inputs: [x], outputs: [y], attrs: { axes } }) =>
    launch("reduce", [x, y], [REDUCE_OPS.indexOf(op), code(x.dtype), code(y.dtype), ...shape(x.shape), ...shape(axes)]);

  /** dst[dstBase + Σ i·dstStrides] = src[srcBase + Σ i·srcStrides] over every index i of `dims`. */
  const stridedCopy = (src: Ref, dst: Ref, dims: readonly number[], srcStrides: number[], srcBase: number, dstStrides: number[], dstBase: number) =>
    launch("stridedCopy", [src, dst], [byteSize(src.dtype), srcBase, dstBase, ...shape(dims), ...shape(srcStrides), ...shape(dstStrides)]);

  const around = (s: readonly number[], axis: number) => ({ outer: sizeOf(s.slice(0, axis)), n: s[axis], inner: sizeOf(s.slice(axis + 1)) });

  const table: KernelTable<CudaStorage> = {
    ...(Object.fromEntries(UNARY_OPS.map((op) => [op, unary(op)])) as { [K in UnaryOpName]: Kernel<K, CudaStorage> }),
    ...(Object.fromEntries(BINARY_OPS.map((op) => [op, binary(op)])) as { [K in BinaryOpName]: Kernel<K, CudaStorage> }),
    ...(Object.fromEntries(COMPARE_OPS.map((op) => [op, compare(op)])) as { [K in CompareOpName]: Kernel<K, CudaStorage> }),
    ...(Object.fromEntries(REDUCE_OPS.map((op) => [op, reduce(op)])) as { [K in ReduceOpName]: Kernel<K, CudaStorage> }),

    // cond: u8, a, b → y, all broadcast
    where: ({ inputs: [c, a, b], outputs: [y] }) =>
      launch("where", [c, a, b, y], [byteSize(a.dtype), ...shape(c.shape), ...shape(a.shape), ...shape(b.shape), ...shape(y.shape)]),

    fill: ({ outputs: [y], attrs }) => {
      const raw = encode(y.dtype, [attrs.value]);
      const bytes = new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
      let bits = 0;
      for (let i = bytes.length - 1; i >= 0; i--) bits = bits * 256 + bytes[i];
      launch("fill", [y], [byteSize(y.dtype), y.size, bits]);
    },

    cast: ({ inputs: [x], outputs: [y] }) => launch("cast", [x, y], [code(x.dtype), code(y.dtype), x.size]),
    copy: ({ inputs: [x], outputs: [y] }) => launch("copy", [x, y], [x.size * byteSize(x.dtype)]),

    // x: (outer, n, inner) → y: i32 (outer, inner)
    argmax: ({ inputs: [x], outputs: [y], attrs: { axis } }) => {
      const { outer, n, inner } = around(x.shape, axis);
      launch("argmax", [x, y], [code(x.dtype), outer, n, inner]);
    },

    matmul: ({ inputs: [a, b], outputs: [y], attrs: { transA, transB } }) => void matmulLaunch(a, b, y, transA, transB),

    // Movement: gather form (strided source) for permute, slice, expand; scatter form for pad, concat.
    permute: ({ inputs: [x], outputs: [y], attrs: { perm } }) => {
      const xs = stridesOf(x.shape);
      stridedCopy(x, y, y.shape, perm.map((p) => xs[p]), 0, stridesOf(y.shape), 0);
    },
    slice: ({ inputs: [x], outputs: [y], attrs: { begin } }) => {
      const xs = stridesOf(x.shape);
      stridedCopy(x, y, y.shape, xs, begin.reduce((acc, b, i) => acc + b * xs[i], 0), stridesOf(y.shape), 0);
    },
    expand: ({ inputs: [x], outputs: [y] }) => stridedCopy(x, y, y.shape, broadcastStrides(x.shape, y.shape), 0, stridesOf(y.shape), 0),
    pad: ({ inputs: [x], outputs: [y], attrs: { before } }) => {
      launch("zero", [y], [y.size * byteSize(y.dtype)]);
      const ys = stridesOf(y.shape);
      stridedCopy(x, y, x.shape, stridesOf(x.shape), 0, ys, before.reduce((acc, b, i) => acc + b * ys[i], 0));
    },
    concat: ({ inputs, outputs: [y], attrs: { axis } }) => {
      const ys = stridesOf(y.shape);
      let start = 0;
      for (const x of inputs) {
        stridedCopy(x, y, x.shape, stridesOf(x.shape), 0, ys, start * ys[axis]);
        start += x.shape[axis];
      }
    },

    // x: (outer, n, inner), idx: i32 (K) → y: (outer, K, inner)
    gather: ({ inputs: [x, idx], outputs: [y], attrs: { axis } }) => {
      const { outer, n, inner } = around(x.shape, axis);
      launch("take", [x, idx, y], [byteSize(x.dtype), outer, n, idx.size, inner, indexError("gather")]);
    },
    // u: (outer, K, inner), idx: (K) → y: (outer, size, inner)
    scatterAdd: ({ inputs: [u, idx], outputs: [y], attrs: { axis, size } }) => {
      const outer = sizeOf(u.shape.slice(0, axis));
      const inner = sizeOf(u.shape.slice(axis + idx.shape.length));
      launch("scatterAdd", [u, idx, y], [code(u.dtype), outer, size, idx.size, inner, indexError("scatterAdd")]);
    },
    // weight: (V, M), ids: i32 (...) → y: (..., M)
    embedding: ({ inputs: [w, ids], outputs: [y] }) =>
      launch("take", [w, ids, y], [byteSize(w.dtype), 1, w.shape[0], ids.size, w.shape[1], indexError("embedding")]),
    // dy: (..., M), ids: (...) → dweight: (V, M)
    embeddingBackward: ({ inputs: [dy, ids], outputs: [dw], attrs: { vocabSize } }) =>
      launch("scatterAdd", [dy, ids, dw], [code(dy.dtype), 1, vocabSize, ids.size, dw.shape[1], indexError("embeddingBackward")]),

    softmax: ({ inputs: [x], outputs: [y], attrs: { axis } }) => {
      const { outer, n, inner } = around(x.shape, axis);
      launch("softmax", [x, y], [code(x.dtype), outer, n, inner, 0]);
    },
    logSoftmax: ({ inputs: [x], outputs: [y], attrs: { axis } }) => {
      const { outer, n, inner } = around(x.shape, axis);
      launch("softmax", [x, y], [code(x.dtype), outer, n, inner, 1]);
    },
    // logits: (N, V), labels: i32 (N) → loss: f32 (N)
    softmaxCrossEntropy: ({ inputs: [x, labels], outputs: [loss], attrs }) =>
      launch("xent", [x, labels, loss], [code(x.dtype), x.shape[0], x.shape[1], attrs.ignoreIndex]),
    // (logits (N, V), labels (N), dloss f32 (N)) → dlogits (N, V)
    softmaxCrossEntropyBackward: ({ inputs: [x, labels, g], outputs: [dx], attrs }) =>
      launch("xentBackward", [x, labels, g, dx], [code(x.dtype), x.shape[0], x.shape[1], attrs.ignoreIndex]),
    // x: (..., M) → y: (..., M)
    rmsNorm: ({ inputs: [x], outputs: [y], attrs: { eps } }) => {
      const M = x.shape[x.shape.length - 1] ?? 1;
      launch("rmsNorm", [x, y], [code(x.dtype), x.size / Math.max(M, 1), M], [eps]);
    },
    // x, dy: (N) → dx: (N), contiguous
    siluBackward: ({ inputs: [x, dy], outputs: [dx] }) => launch("siluBackward", [x, dy, dx], [code(x.dtype), x.size]),
    rmsNormBackward: ({ inputs: [x, dy], outputs: [dx], attrs: { eps } }) => {
      const M = x.shape[x.shape.length - 1] ?? 1;
      launch("rmsNorm", [x, dy, dx], [code(x.dtype), x.size / Math.max(M, 1), M], [eps]);
    },
    // x, y: (..., M) → s = x + y, n = rmsNorm(s): (..., M)
    addRmsNorm: ({ inputs: [x, y], outputs: [s, n], attrs: { eps } }) => {
      const M = x.shape[x.shape.length - 1];
      launch("addRmsNorm", [x, y, s, n], [code(x.dtype), x.size / Math.max(M, 1), M], [eps]);
    },
    // o, u: (..., M) → rmsNorm(o) ⊙ u: (..., M)
    rmsNormGate: ({ inputs: [o, u], outputs: [y], attrs: { eps } }) => {
      const M = o.shape[o.shape.length - 1];
      launch("rmsNormGate", [o, u, y], [code(o.dtype), o.size / Math.max(M, 1), M], [eps]);
    },
    // qkvu: (B, 4·H·hd); theta?: (H, hd); positions?: f32 (B) → q, k: (B, H, D); v: (B, H, hd); u: (B, H·hd)
    splitQkvu: ({ inputs: [x, theta, positions], outputs: [q, k, v, u], attrs: { heads, activation } }) => {
      const [B, W] = x.shape as [number, number];
      launch("splitQkvu", [x, theta, positions, q, k, v, u], [
        code(x.dtype), theta ? code(theta.dtype) : -1, B, heads, W / (4 * heads), QKV_ACTIVATIONS.indexOf(activation),
      ]);
    },

    // The Philox stream of rng.ts; the f32 parameters are rounded here exactly as rng.ts rounds them.
    randomUniform: ({ outputs: [y], attrs }) => {
      const [k0, k1] = seedKey(attrs.seed);
      const low = Math.fround(attrs.low);
      const range = Math.fround(Math.fround(attrs.high) - low);
      launch("random", [y], [code(y.dtype), y.size, k0, k1, attrs.offset, 0], [low, range]);
    },
    randomNormal: ({ outputs: [y], attrs }) => {
      const [k0, k1] = seedKey(attrs.seed);
      launch("random", [y], [code(y.dtype), y.size, k0, k1, attrs.offset, 1], [Math.fround(attrs.mean), Math.fround(attrs.std)]);
    },

    // q, k: (B, H, T, D); v: (B, H, T, E); slopes: f32 (H); initialState?: f32 (B, H, D, E) → o: (B, H, T, E), finalState: f32 (B, H, D, E)
    // [, segment states f32 (B, H, ⌈T/L⌉, D, E) with attrs.segmentTokens = L: made by the bf16/f16 kernels only]
    lightningAttention: ({ inputs: [q, k, v, slopes, s0], outputs: [o, sf, seg], attrs: { segmentTokens } }) => {
      const [B, H, T, D] = q.shape as [number, number, number, number];
      const ints = [code(q.dtype), B, H, T, D, v.shape[3]];
      if (seg) launch("lightningAttention", [q, k, v, slopes, s0, o, sf, seg], [...ints, segmentTokens ?? 0]);
      else launch("lightningAttention", [q, k, v, slopes, s0, o, sf], ints);
    },
    // (q, k, v, slopes, dO (B, H, T, E), dFinalState f32 (B, H, D, E), initialState?, segmentStates?) → (dq, dk, dv, dInitialState)
    lightningAttentionBackward: ({ inputs, outputs: [dq, dk, dv, ds0], attrs: { hasInitialState, segmentTokens } }) => {
      const [q, k, v, slopes, dO, dS] = inputs;
      const s0 = hasInitialState ? inputs[6] : undefined;
      const seg = segmentTokens ? inputs[hasInitialState ? 7 : 6] : undefined;
      const [B, H, T, D] = q.shape as [number, number, number, number];
      const ints = [code(q.dtype), B, H, T, D, v.shape[3]];
      if (seg) launch("lightningAttentionBackward", [q, k, v, slopes, dO, dS, s0, dq, dk, dv, ds0, seg], [...ints, segmentTokens ?? 0]);
      else launch("lightningAttentionBackward", [q, k, v, slopes, dO, dS, s0, dq, dk, dv, ds0], ints);
    },
    // k: (B, H, T, D); v: (B, H, T, E); slopes: f32 (H) → state: f32 (B, H, D, E) (native/lightning_state.cu)
    lightningState: ({ inputs: [k, v, slopes], outputs: [state], attrs: { reverse } }) => {
      const [B, H, T, D] = k.shape as [number, number, number, number];
      launch("lightningState", [k, v, slopes, state], [code(k.dtype), B, H, T, D, v.shape[3], reverse ? 1 : 0]);
    },
    // q, k: (N, H, D); v: (N, H, E); slopes: (H); state: f32 (B, H, D, E)[, segments: i32 (B + 1)] →
    // o: (N, H, E), newState: f32 (B, H, D, E)
    lightningStep: ({ inputs: [q, k, v, slopes, state, segments], outputs: [o, sn] }) => {
      const [B, H, D] = state.shape as [number, number, number, number];
      launch("lightningStep", [q, k, v, slopes, state, o, sn, segments], [code(q.dtype), B, H, D, v.shape[2], 0, ...segmentInts(q, segments)]);
    },

    // param: f32 (N), grad: f32/bf16/f16 (N), expAvg, expAvgSq: f32 (N) → param, expAvg, expAvgSq: f32 (N)[, param in castTo (N)].
    // The scalars go as float64 and the launcher rounds them to f32, as the decomposition's f32 operands are.
    adamwUpdate: ({ inputs: [p, g, m, v], outputs: [p1, m1, v1, half], attrs }) => {
      const k = adamwScalars(attrs);
      const floats = [k.beta1, k.oneMinusBeta1, k.beta2, k.oneMinusBeta2, k.decay, k.sqrtCorrection2, k.eps, k.stepSize];
      launch("adamw", [p, g, m, v, p1, m1, v1, half], [code(g.dtype), half ? code(half.dtype) : -1, p.size, attrs.weightDecay !== 0 ? 1 : 0], floats);
    },
  };

  // x: (R, K), w: (N, K)[, gate: (R, K)][, w2: (N, K)][, residual: (R, N)] → y: (R, N). One kernel
  // where native/gemv.cu's small-M kernel takes it (1–4 rows of f16/bf16, LIGHTNING_CUDA_GEMV not
  // 0); otherwise the kernels of the chain the decomposition runs (api/decompositions.ts), with its
  // bits, on temporaries freed once enqueued (the allocator is stream-ordered, and keeps blocks of
  // a graph being recorded for that graph). That chain is rmsNorm or rmsNormGate, one or two
  // matmuls, then mul and/or add; but where cuBLASLt takes the product (16 bits, 5–256 rows) a
  // residual is its C operand (β = 1, y = round(x·wᵀ + residual) as the small-M kernel rounds it,
  // not the chain's two roundings), so a TNL decode layer at 5–256 rows launches 12 kernels, not 14.
  table.fusedLinear = ({ inputs, outputs: [y], attrs: { norm, eps, gate, product, residual } }) => {
    const [x, w, ...rest] = inputs;
    let next = 0;
    const [g, w2, r] = [gate, product, residual].map((on) => (on ? rest[next++] : undefined));
    const [R, K] = x.shape as [number, number];
    const N = w.shape[0];
    if (y.size === 0) return;
    const dt = code(x.dtype);
    if (launch("fusedLinear", [x, w, g, w2, r, y], [dt, R, N, K, ...[norm, gate, product, residual].map(Number)], [eps])) return;
    const temps: number[] = [];
    const temp = (s: number[]): Ref => {
      const bytes = sizeOf(s) * byteSize(x.dtype);
      const p = rt.allocate(bytes);
      temps.push(p);
      return { storage: { ptr: p, byteLength: bytes }, shape: s, dtype: x.dtype, size: sizeOf(s) };
    };
    const binaryInto = (op: BinaryOpName, a: Ref, b: Ref, out: Ref) =>
      launch("binary", [a, b, out], [BINARY_OPS.indexOf(op), dt, ...shape(a.shape), ...shape(b.shape), ...shape(out.shape)]);
    const matmulInto = table.matmul as Kernel<"matmul", CudaStorage>;
    try {
      let xn = x;
      if (norm) {
        // rmsNormGate's kernel has the bits of rmsNorm then mul (native/decode.cu), in one launch.
        xn = temp([R, K]);
        if (g) launch("rmsNormGate", [x, g, xn], [dt, R, K], [eps]);
        else launch("rmsNorm", [x, xn], [dt, R, K], [eps]);
      }
      // The residual as the product's C (β = 1, one rounding of the f32 sum, as the small-M kernel
      // rounds it) where cuBLASLt takes it (16 bits, 5–256 rows, native/matmul.cu): no add kernel.
      if (r && !w2 && matmulLaunch(xn, w, y, false, true, r)) return;
      const product1 = w2 || r ? temp([R, N]) : y;
      matmulInto({ inputs: [xn, w], outputs: [product1], attrs: { transA: false, transB: true } });
      let value = product1;
      if (w2) {
        const product2 = temp([R, N]);
        matmulInto({ inputs: [xn, w2], outputs: [product2], attrs: { transA: false, transB: true } });
        value = r ? temp([R, N]) : y;
        binaryInto("mul", product1, product2, value);
      }
      if (r) binaryInto("add", r, value, y);
    } finally {
      for (const p of temps) rt.free(p);
    }
  };

  // x: (B, M), w: (4·hid, M)[, theta: (H, hd), positions: f32 (B)] → q, k: (B, H, D), v: (B, H, hd),
  // u: (B, hid). One kernel where fusedLinear's would run (the split as its epilogue, with the bits
  // of fusedLinear then splitQkvu); otherwise those two, through a temporary qkvu.
  table.qkvuProjection = ({ inputs: [x, w, theta, positions], outputs: [q, k, v, u], attrs: { eps, heads, activation, lrpe } }) => {
    const [B, K] = x.shape as [number, number];
    const W = w.shape[0];
    if (B * W === 0) return;
    const act = QKV_ACTIVATIONS.indexOf(activation);
    if (launch("qkvuProjection", [x, w, theta, positions, q, k, v, u], [code(x.dtype), B, W, K, heads, act, theta ? code(theta.dtype) : -1], [eps])) return;
    const bytes = B * W * byteSize(x.dtype);
    const p = rt.allocate(bytes);
    try {
      const qkvu: Ref = { storage: { ptr: p, byteLength: bytes }, shape: [B, W], dtype: x.dtype, size: B * W };
      (table.fusedLinear as Kernel<"fusedLinear", CudaStorage>)({ inputs: [x, w], outputs: [qkvu], attrs: { norm: true, eps, gate: false, product: false, residual: false } });
      (table.splitQkvu as Kernel<"splitQkvu", CudaStorage>)({ inputs: theta ? [qkvu, theta, positions] : [qkvu], outputs: [q, k, v, u], attrs: { heads, activation, lrpe } });
    } finally {
      rt.free(p);
    }
  };

  /**
   * x·w1ᵀ and x·w2ᵀ ((B, G) each) of one x (B, M): one cuBLASLt launch of both where the
   * productPair launcher takes them (native/matmul.cu: the weight at the lower address first, the
   * other as the batch's second matrix), else two products. Outputs from `temp`.
   */
  const gluProducts = (x: Ref, w1: Ref, w2: Ref, temp: (s: number[]) => Ref): [Ref, Ref] => {
    const [B, M] = x.shape as [number, number];
    const G = w1.shape[0];
    const both = temp([2, B, G]);
    const half = (i: number): Ref => {
      const bytes = B * G * byteSize(x.dtype);
      return { storage: { ptr: both.storage.ptr + i * bytes, byteLength: bytes }, shape: [B, G], dtype: x.dtype, size: B * G };
    };
    const w1First = w1.storage.ptr < w2.storage.ptr;
    if (launch("productPair", [x, w1First ? w1 : w2, w1First ? w2 : w1, both], [code(x.dtype), B, G, M])) return w1First ? [half(0), half(1)] : [half(1), half(0)];
    const [a, b] = [half(0), half(1)];
    for (const [w, y] of [[w1, a], [w2, b]] as const) matmulLaunch(x, w, y, false, true);
    return [a, b];
  };

  // h: (B, M), qkvu: (4·hid, M), out: (M, hid), l1, l2: (G, M), l3: (M, G), state: f32 (B, H, D, E),
  // slopes: f32 (H)[, theta: (H, hd), positions: f32 (B)] → h2: (B, M), next state (over state with
  // inPlace). One persistent kernel (native/decode_layer.cu) for 1–4 rows of f16/bf16: its weights
  // resident in the SMs' shared memory where they fit, else streamed through L2 with the next
  // layer's kernel prefetching beside it, when LIGHTNING_CUDA_DECODE_LAYER asks for it (1 that
  // choice, resident or stream; read at each call); otherwise, and by default (the kernel measured
  // slower than the chain on the H200), the op's chain of five kernels. Both take the intermediates
  // (q, k, v, u, o, h1, g) from one scratch block, freed once enqueued as fusedLinear's temporaries are.
  table.decodeLayer = ({ inputs: [h, wq, wo, w1, w2, w3, state, slopes, ...more], outputs: [h2, next], attrs: { heads, activation, lrpe, eps } }) => {
    const [B, M] = h.shape as [number, number];
    const [S, H, D, E] = state.shape as [number, number, number, number];
    const [theta, positions] = lrpe ? more : [];
    // With prompt segments h's B rows are tokens of S ≤ B sequences: every kernel but the step works
    // row by row, and the persistent kernel (one token per row) does not apply.
    const segments = more[lrpe ? 2 : 0];
    const G = w1.shape[0];
    const hid = H * E;
    if (B === 0) return;
    const size = byteSize(h.dtype);
    // The regions in native/decode_layer.cu's order, each in whole 16-byte packs.
    const regions = [[B, H, D], [B, H, D], [B, H, E], [B, hid], [B, H, E], [B, M], [B, G]];
    const packed = (n: number) => Math.ceil((n * size) / 16) * 16;
    const bytes = regions.reduce((sum, s) => sum + packed(sizeOf(s)), 0);
    const base = rt.allocate(bytes);
    try {
      const dt = code(h.dtype);
      const act = QKV_ACTIVATIONS.indexOf(activation);
      const scratch: Ref = { storage: { ptr: base, byteLength: bytes }, shape: [bytes / size], dtype: h.dtype, size: bytes / size };
      const launched =
        !segments &&
        launch("decodeLayer", [h, wq, wo, w1, w2, w3, state, slopes, theta, positions, h2, next, scratch], [
          dt, B, M, H, E, G, act, theta ? code(theta.dtype) : -1, bytes,
        ], [eps]);
      if (launched) return;
      let at = base;
      const [q, k, v, u, o, h1, g] = regions.map((s): Ref => {
        const n = packed(sizeOf(s));
        const ref = { storage: { ptr: at, byteLength: n }, shape: s, dtype: h.dtype, size: sizeOf(s) };
        at += n;
        return ref;
      });
      const kernel = <K extends "qkvuProjection" | "lightningStep" | "fusedLinear" | "matmul">(name: K): Kernel<K, CudaStorage> => {
        const k = table[name];
        if (typeof k !== "function") throw new Error(`decodeLayer: its chain runs the ${name} kernel, which is not in the CUDA kernel table (taken out?)`);
        return k as Kernel<K, CudaStorage>;
      };
      const linear = (inputs: Ref[], y: Ref, attrs: { norm: boolean; gate: boolean; product: boolean; residual: boolean }) =>
        kernel("fusedLinear")({ inputs, outputs: [y], attrs: { ...attrs, eps } });
      // Above the small-M kernel's rows, in bf16, the SRMSNorms before qkvu and before l1·l2 are
      // folded out of the products (each is linear in a row of its input): the products read the
      // raw rows, and the kernel after each (the split, the GLU's product) scales row r by
      // 1/rms(row r). Two kernels fewer a layer; the values are rounded at other places than in the
      // chain (each product before its scale), with the chain's error against float64.
      const fold = foldsNorms(h.dtype, B, M);
      const temps: number[] = [];
      const temp = (s: number[]): Ref => {
        const n = sizeOf(s) * size;
        const p = rt.allocate(n);
        temps.push(p);
        return { storage: { ptr: p, byteLength: n }, shape: s, dtype: h.dtype, size: sizeOf(s) };
      };
      const product = (x: Ref, w: Ref, y: Ref) => kernel("matmul")({ inputs: [x, w], outputs: [y], attrs: { transA: false, transB: true } });
      try {
        if (fold) {
          const raw = temp([B, wq.shape[0]]);
          product(h, wq, raw);
          const hd = wq.shape[0] / (4 * heads);
          launch("splitQkvu", [raw, theta, positions, q, k, v, u, h], [dt, theta ? code(theta.dtype) : -1, B, heads, hd, act, M], [eps]);
        } else {
          kernel("qkvuProjection")({ inputs: lrpe ? [h, wq, theta, positions] : [h, wq], outputs: [q, k, v, u], attrs: { heads, activation, lrpe, eps } });
        }
        // The kernel just before (the projection or the split) does not write the state: the step
        // may load it while that kernel finishes (native/lightning.cu, `early`).
        launch("lightningStep", [q, k, v, slopes, state, o, next, segments], [dt, S, H, D, E, 1, ...segmentInts(q, segments)]);
        const oRows: Ref = { ...o, shape: [B, hid] };
        linear([oRows, wo, u, h], h1, { norm: true, gate: true, product: false, residual: true });
        if (fold) {
          const [a, b] = gluProducts(h1, w1, w2, temp);
          launch("gluNorm", [a, b, h1, g], [dt, B, G, M], [eps]);
        } else {
          linear([h1, w1, w2], g, { norm: true, gate: false, product: true, residual: false });
        }
        linear([g, w3, h1], h2, { norm: false, gate: false, product: false, residual: true });
      } finally {
        for (const p of temps) rt.free(p);
      }
    } finally {
      rt.free(base);
    }
  };
  return table;
}
