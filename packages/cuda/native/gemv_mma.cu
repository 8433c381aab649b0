// Small-batch products on tensor cores for decoding: y (M, N) = x (M, K) · w (N, K)ᵀ with
// MMA_MIN_M ≤ M ≤ MMA_MAX_M rows of x, f16 or bf16, f32 sums, the output rounded once; with the
// prologues and epilogues of native/gemv.cu's `fusedLinear`. At 64 rows each weight element feeds
// 64 products: more than the CUDA cores of gemv.cu keep up with while the weights stream at memory
// speed, well within mma.sync's. The kernel is a stream of weights: everything below serves to keep
// enough of them in flight from the first cycle and to add nothing to the critical path.
//
//   - mma.sync m16n8k16 with w as A (16 weight rows × 16 k, row-major as stored) and xᵀ as B (k × 8
//     tokens; a row of x is k-contiguous, the "col" B layout); a warp holds 32 weight rows (two A
//     tiles) × all M (padded to 8·NT, NT ≤ 8 tiles of 8 tokens) in 2·NT·4 f32 registers, so each
//     B fragment read from shared memory serves two MMAs;
//   - k is a reduction index, so any bijection of it may be applied to both operands: a lane takes
//     8 consecutive k (one 16-byte load) of weight rows g and g + 8 and of token row g, which
//     serve two m16n8k16 steps (words 0–1 the first, 2–3 the second) without ldmatrix or shuffles;
//   - a block is 8 warps = RG row groups × 8/RG k slices of 32: RG = 4 (128 weight rows, stages of
//     64 k) or, where N is small, RG = 2 (64 rows, 128 k); a stage (16 KB of weights, the M rows of
//     x and, with a gated norm, of the gate) goes by cp.async into a ring of 2–8 stages of at most
//     110 KB (two blocks an SM, so the next launch's blocks find room to start under PDL), no more
//     stages than the block's share of k has; rows of x past M are never copied (zeros, their
//     products discarded). A stage row is 128 or 256 bytes
//     with its 16-byte chunks swizzled by row parity (chunk c at c ^ 4·(r & 1)), so that the 8 lanes
//     of a 16-byte load phase (rows g and g + 1, 64 bytes each) hit 32 distinct banks;
//   - one CTA barrier a stage: wait for stage st's copies, barrier (stage st landed for every
//     thread, and every warp is done with stage st − 1), issue the copies of stage st + ns − 1 into
//     the slot st − 1 left, then the MMAs of stage st;
//   - the slices of a tile meet in shared memory after the k loop, in slice order (deterministic:
//     a graph replay gives an eager call's bits); where the row tiles alone leave most SMs idle, a
//     cluster of ks = 2–8 blocks (sm_90+) splits k, each block staging only its share of x, and
//     the cluster adds its partial sums through distributed shared memory in rank order (each
//     block first adds its own slices, so a peer reads one value an element): no atomics;
//   - with the product of two weights, a warp's two tiles are the same 16 rows of w and of w2, so
//     that both sums of an output meet in the same block; with qkvuProjection's split
//     (gemv_split.cuh, gemv.cu's), each element goes where splitQkvu writes it.
//
// Prologue (SRMSNorm, optionally times the gate) without a pre-pass: the factor is one scalar a
// row, so p(x)·wᵀ = r · ((x ⊙ gate)·wᵀ) with r = 1 / sqrt(mean(x²) + eps). The MMA operand is x
// itself (with the gate: x ⊙ gate, multiplied from the staged tiles in registers and rounded to T
// once); the warps of row groups 0 and 1 also add the squares of the x they load (token tiles of
// their parity: every staged element once), f32 within a lane's packs (K / 32 / slices of them a
// row at most), double across lanes, slices and the cluster's blocks; these sums meet with the
// partial products, and the epilogue multiplies each row's f32 sum by r in f32 before the
// product, residual or split (a positive sum in f32 loses at most its length in units of 2⁻²⁴:
// far below one rounding of T). The rounding points differ from the chain's (rmsNorm rounds x·r to T, the
// mul by the gate rounds again, and the product uses those): here x enters the sums unrounded (x ⊙
// gate rounded once), so the result is at least as accurate as the chain's, but not its bits.
// Without a norm the rounding points are the chain's matmul's: one rounding of the f32 sum (plus
// the residual in f32).
//
// Launches use programmatic dependent launch where the device has it (LIGHTNING_CUDA_PDL=0 turns it
// off): before griddepcontrol.wait a block starts the copies of the ring's first weight stages and
// asks L2 for the rest of its share (where the whole weight fits the L2 budget); x, the gate and
// the residual are read only after the wait.
//
// Off unless LIGHTNING_CUDA_GEMV_MMA=1; where it declines (other M, dtype, alignment), gemv.cu's
// fusedLinear and qkvuProjection decline too and src/kernels.ts runs their chains.
#include <algorithm>
#include <cstring>

#include <cooperative_groups.h>

#include "device.cuh"
#include "gemv.cuh"
#include "gemv_device.cuh"
#include "gemv_split.cuh"
#include "mma.cuh"

namespace lts {
namespace {

constexpr int WARPS = 8, THREADS = WARPS * 32;
constexpr int WT = 2;  // 16-row A tiles a warp
constexpr int KW = 32;  // k a warp takes from a stage: one 16-byte load a lane, two m16n8k16 steps
constexpr int STAGE_WEIGHTS = 8192;  // weight elements a stage: 128 rows × 64 k or 64 × 128
constexpr int MAX_STAGES = 8;
constexpr int MAX_SLICES = WARPS / 2;  // k slices a block, at RG = 2
constexpr int MAX_CLUSTER = 8;  // blocks of a cluster (the portable limit)
// Shared memory a block: two blocks an SM.
constexpr int SMEM_BUDGET = 110 * 1024;
// Bytes of weights a launch asks L2 for before its wait (gemv.cu's budget): the whole weight or none.
constexpr int64_t L2_BUDGET = 24 << 20;

enum Prologue { PRO_NONE = 0, PRO_NORM = 1, PRO_GATE = 2 };
constexpr int EPI_RESIDUAL = 1, EPI_PRODUCT = 2;
// qkvuProjection: y is TNL's qkvu (B, 4·hid), written as splitQkvu's q, k (φ, LRPE), v and u.
constexpr int EPI_SPLIT = 4;

template <class T>
struct MmaArgs {
  const T* x;         // (M, k)
  const T* w;         // (n, k)
  const T* w2;        // (n, k), EPI_PRODUCT
  const T* gate;      // (M, k), PRO_GATE
  const T* residual;  // (M, n), EPI_RESIDUAL
  T* y;               // (M, n)
  SplitArgs<T> split;  // EPI_SPLIT
  int m, n, k;
  int rg;  // row groups of the block: 4 or 2
  int stages;  // of the ring, 2…MAX_STAGES
  int ks;  // blocks of a cluster, splitting k (1 below sm_90)
  bool prefetch;  // ask L2 for the block's weights before the wait
  float eps;
};

// The blocks of a cluster (sm_90+; the launcher asks for clusters of one block elsewhere).
__device__ __forceinline__ void clusterSync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster().sync();
#endif
}
template <class P>
__device__ __forceinline__ P* clusterPeer(P* p, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return cooperative_groups::this_cluster().map_shared_rank(p, rank);
#else
  return p;
#endif
}


// cp.async.wait_group takes an immediate: waits until at most `pending` groups are in flight.
__device__ __forceinline__ void cpAsyncWaitAtMost(int pending) {
  switch (pending) {
    case 0: cpAsyncWait<0>(); break;
    case 1: cpAsyncWait<1>(); break;
    case 2: cpAsyncWait<2>(); break;
    case 3: cpAsyncWait<3>(); break;
    case 4: cpAsyncWait<4>(); break;
    case 5: cpAsyncWait<5>(); break;
    default: cpAsyncWait<6>(); break;
  }
  static_assert(MAX_STAGES - 2 <= 6, "cpAsyncWaitAtMost covers every ring");
}

// A plain load (not asm), so that the compiler orders it with the barriers and stores around it.
template <class T>
__device__ __forceinline__ uint4 lds128(const T* p) { return *reinterpret_cast<const uint4*>(p); }

// Element offset of 16-byte chunk c of row r in a tile of rows of kc elements (128 or 256 bytes):
// the chunk's bit 2 flipped on odd rows, so that two neighbouring rows' 64-byte runs of the same
// chunks fall in the two halves of the 32 banks.
__device__ __forceinline__ int swizzled(int r, int c, int kc) { return r * kc + ((c ^ ((r & 1) << 2)) << 3); }

// Σ v² of the 8 values of a 16-byte pack, in f32 in k order (nn.cu's rmsNorm sums a pack so).
template <class T>
__device__ __forceinline__ float packSquares(const uint4& p) {
  const uint32_t words[4] = {p.x, p.y, p.z, p.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 v = unpack2<T>(words[i]);
    s = fmaf(v.x, v.x, s);
    s = fmaf(v.y, v.y, s);
  }
  return s;
}

// x ⊙ gate of a 16-byte pack, each product rounded to T once.
template <class T>
__device__ __forceinline__ uint4 gated(const uint4& x, const uint4& g) {
  auto mul = [](uint32_t a, uint32_t b) {
    const float2 u = unpack2<T>(a), v = unpack2<T>(b);
    return pack2<T>(__fmul_rn(u.x, v.x), __fmul_rn(u.y, v.y));
  };
  return make_uint4(mul(x.x, g.x), mul(x.y, g.y), mul(x.z, g.z), mul(x.w, g.w));
}

// The kernel's body (gemvMmaKernel below) for RG row groups of 32 weight rows × SL = 8 / RG
// slices of 32 k; a stage is ROWS × KC of the weights. `squares` and `rinv`: the kernel's static
// shared arrays.
template <class T, int NT, int PRO, int EPI, int RG>
__device__ __forceinline__ void gemvMmaBody(const MmaArgs<T>& a, double (*squares)[8 * NT], float* rinv) {
  constexpr int MP = 8 * NT;
  constexpr bool PRODUCT = (EPI & EPI_PRODUCT) != 0, RESIDUAL = (EPI & EPI_RESIDUAL) != 0;
  constexpr bool NORM = PRO != PRO_NONE, GATE = PRO == PRO_GATE;
  constexpr int SL = WARPS / RG, ROWS = 32 * RG, KC = KW * SL, PACKS = KC / 8, LP = SL == 2 ? 3 : 4;
  static_assert(ROWS * KC == STAGE_WEIGHTS && (RG == 2 || RG == 4), "a stage holds 128 × 64 or 64 × 128 weights");
  extern __shared__ uint4 smem4[];
  T* ring = reinterpret_cast<T*>(smem4);
  const int M = a.m, n = a.n, k = a.k, ns = a.stages, ks = a.ks;
  constexpr int OUT = PRODUCT ? ROWS / 2 : ROWS;  // output rows a block
  constexpr int XS = MP * KC, STAGE = STAGE_WEIGHTS + XS * (GATE ? 2 : 1);  // elements of x a stage, of a stage
  const int rank = blockIdx.x, b = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int stagesAll = (k + KC - 1) / KC;
  // Shares that differ by at most one stage.
  const int s0 = (int)((int64_t)rank * stagesAll / ks), nst = (int)((int64_t)(rank + 1) * stagesAll / ks) - s0;
  auto wSlot = [&](int slot) { return ring + slot * STAGE; };
  auto xSlot = [&](int slot) { return ring + slot * STAGE + STAGE_WEIGHTS; };
  auto gSlot = [&](int slot) { return ring + slot * STAGE + STAGE_WEIGHTS + XS; };
  // Weight row wr (0…ROWS-1) of the tile: its output row and its matrix. With the product, rows
  // 32q…32q+15 are w's and 32q+16…32q+31 w2's, both of output rows 16q…16q+15 of the tile.
  auto outRow = [&](int wr) { return PRODUCT ? b * OUT + (wr >> 5) * 16 + (wr & 15) : b * OUT + wr; };
  auto matrix = [&](int wr) { return PRODUCT && (wr & 16) != 0 ? a.w2 : a.w; };

  // The 16-byte packs of the block's stage st: PACKS a row; those past k or n are zero-filled.
  auto copyWeights = [&](int st) {
    T* dst = wSlot(st % ns);
    const int k0 = (s0 + st) * KC;
    for (int i = tid; i < ROWS * PACKS; i += THREADS) {
      const int r = i >> LP, c = i & (PACKS - 1), kk = k0 + 8 * c, row = outRow(r);
      const bool in = kk < k && row < n;
      cpAsync16(dst + swizzled(r, c, KC), matrix(r) + (in ? (int64_t)row * k + kk : 0), in ? 16 : 0);
    }
  };
  auto copyRows = [&](int st) {
    T* dx = xSlot(st % ns);
    T* dg = gSlot(st % ns);
    const int k0 = (s0 + st) * KC;
    for (int i = tid; i < M * PACKS; i += THREADS) {
      const int r = i >> LP, c = i & (PACKS - 1), kk = k0 + 8 * c;
      const bool in = kk < k;
      const int64_t at = in ? (int64_t)r * k + kk : 0;
      cpAsync16(dx + swizzled(r, c, KC), a.x + at, in ? 16 : 0);
      if constexpr (GATE) cpAsync16(dg + swizzled(r, c, KC), a.gate + at, in ? 16 : 0);
    }
  };

  // Weights are not what the kernel before writes: the ring's first weight stages and L2 requests
  // for the rest of the share start before the wait.
  const int early = min(ns - 1, nst);
  for (int st = 0; st < early; st++) copyWeights(st);
  if (a.prefetch && nst > early) {
    const int64_t from = (int64_t)(s0 + early) * KC * sizeof(T), to = min((int64_t)k, (int64_t)(s0 + nst) * KC) * sizeof(T);
    const int lines = (int)((to - from + 127) / 128);
    for (int i = tid; i < ROWS * lines; i += THREADS) {
      const int r = i / lines, l = i % lines, row = outRow(r);
      if (row < n) prefetchL2(reinterpret_cast<const char*>(matrix(r) + (int64_t)row * k) + from + (int64_t)l * 128);
    }
  }
  // Rows of x (and of the gate) past M are zeros in every slot (never copied): their products
  // are discarded, and zeros keep them finite.
  const int padPacks = (MP - M) * KC / 8;  // 16-byte packs of those rows a slot (all bits 0: +0)
  for (int i = tid; i < min(ns, nst) * padPacks; i += THREADS) {
    const int slot = i / padPacks, j = M * KC + 8 * (i % padPacks);
    *reinterpret_cast<uint4*>(xSlot(slot) + j) = make_uint4(0, 0, 0, 0);
    if constexpr (GATE) *reinterpret_cast<uint4*>(gSlot(slot) + j) = make_uint4(0, 0, 0, 0);
  }

  waitForPrevious();
  // Groups: stage st's x (with the first weights in group 0) is group st.
  for (int st = 0; st < ns - 1; st++) {
    if (st < nst) copyRows(st);
    cpAsyncCommit();
  }
  startNext();

  const int rg = warp / SL, s = warp % SL, g = lane >> 2, t = lane & 3;
  const int c = 4 * s + t;  // the lane's 16-byte chunk of a stage row
  // Row groups 0 and 1 add the squares of the token tiles of their parity (NORM).
  const bool sums = NORM && rg < 2;
  float acc[WT][NT][4];
#pragma unroll
  for (int i = 0; i < WT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
  float ss[(NT + 1) / 2];
#pragma unroll
  for (int j = 0; j < (NT + 1) / 2; j++) ss[j] = 0.0f;

  for (int st = 0; st < nst; st++) {
    cpAsyncWaitAtMost(ns - 2);
    __syncthreads();  // stage st landed for every thread; slot (st − 1) % ns is free again
    const int next = st + ns - 1;
    if (next < nst) {
      copyWeights(next);
      copyRows(next);
    }
    cpAsyncCommit();
    const int slot = st % ns;
    const T* ws = wSlot(slot);
    const T* xs = xSlot(slot);
    const T* gs = gSlot(slot);
    uint32_t af[WT][2][4];
#pragma unroll
    for (int i = 0; i < WT; i++) {
      const int wr = 32 * rg + 16 * i + g;
      const uint4 wa = lds128(ws + swizzled(wr, c, KC)), wb = lds128(ws + swizzled(wr + 8, c, KC));
      af[i][0][0] = wa.x, af[i][0][1] = wb.x, af[i][0][2] = wa.y, af[i][0][3] = wb.y;
      af[i][1][0] = wa.z, af[i][1][1] = wb.z, af[i][1][2] = wa.w, af[i][1][3] = wb.w;
    }
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int tr = 8 * j + g;
      uint4 xv = lds128(xs + swizzled(tr, c, KC));
      if constexpr (NORM)
        if (sums && (j & 1) == rg) ss[j >> 1] += packSquares<T>(xv);
      if constexpr (GATE) xv = gated<T>(xv, lds128(gs + swizzled(tr, c, KC)));
#pragma unroll
      for (int i = 0; i < WT; i++) {
        mma<T>(acc[i][j], af[i][0], xv.x, xv.y);
        mma<T>(acc[i][j], af[i][1], xv.z, xv.w);
      }
    }
  }
  cpAsyncWait<0>();
  __syncthreads();  // the ring is free: it takes the partial sums

  // part[slice][token][weight row], rows padded to ROWS + 4 floats: the fragment stores (rows g,
  // tokens 2t) of a warp fall in 32 distinct banks. c0, c1 at (row g, tokens 2t, 2t + 1), c2, c3
  // at row g + 8.
  float* part = reinterpret_cast<float*>(smem4);
  constexpr int LDP = ROWS + 4, SLICE = MP * LDP;
#pragma unroll
  for (int i = 0; i < WT; i++) {
    float* mine = part + s * SLICE + 32 * rg + 16 * i + g;
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int col = 8 * j + 2 * t;
      mine[col * LDP] = acc[i][j][0];
      mine[(col + 1) * LDP] = acc[i][j][1];
      mine[col * LDP + 8] = acc[i][j][2];
      mine[(col + 1) * LDP + 8] = acc[i][j][3];
    }
  }
  if constexpr (NORM) {
    if (sums) {
#pragma unroll
      for (int j = 0; j < NT; j++) {
        if ((j & 1) != rg) continue;
        double v = (double)ss[j >> 1];
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        if (t == 0) squares[s][8 * j + g] = v;
      }
    }
  }
  __syncthreads();
  const int slices = ks > 1 ? 1 : SL;  // of each block, read below
  if (ks > 1) {
    // The block's slices added in slice order first, so that a peer reads one value an element.
    for (int e = tid; e < M * ROWS; e += THREADS) {
      float* p = part + (e / ROWS) * LDP + e % ROWS;
      float v = p[0];
      for (int q = 1; q < SL; q++) v += p[q * SLICE];
      p[0] = v;
    }
    if constexpr (NORM)
      for (int m = tid; m < M; m += THREADS) {
        double v = squares[0][m];
        for (int q = 1; q < SL; q++) v += squares[q][m];
        squares[0][m] = v;
      }
    clusterSync();  // every block's sums are in place
  }
  if constexpr (NORM) {
    // Each row's factor from the squares of all k, in (rank, slice) order, in every block alike.
    for (int m = tid; m < M; m += THREADS) {
      double sum = 0.0;
#pragma unroll 4
      for (int q = 0; q < ks; q++) {
        const double* pq = ks > 1 ? clusterPeer(&squares[0][0], q) : &squares[0][0];
        for (int x = 0; x < slices; x++) sum += pq[x * MP + m];
      }
      rinv[m] = (float)(1.0 / sqrt(sum / (double)k + (double)a.eps));
    }
    __syncthreads();
  }
  // Outputs (token m, row r of the block), a contiguous share of them by each block of the
  // cluster: the partial sums added in (rank, slice) order, times the row's factor, the product
  // and the residual in f32; one rounding.
  const int total = M * OUT;
  const int lo = (int)((int64_t)rank * total / ks), hi = (int)((int64_t)(rank + 1) * total / ks);
#pragma unroll 1
  for (int i = lo + tid; i < hi; i += THREADS) {
    const int m = i / OUT, r = i % OUT;
    const int row = b * OUT + r;
    if (row >= n) continue;
    const int wr = PRODUCT ? (r >> 4) * 32 + (r & 15) : r;
    const int64_t at = (int64_t)m * n + row;
    // The residual's load first: its latency (an L2 hit, the kernel before wrote it) overlaps
    // the partial sums' reads.
    const float res = RESIDUAL ? toF(a.residual[at]) : 0.0f;
    float y1 = 0.0f, y2 = 0.0f;
    // Unrolled so that the loads of several peers are in flight before their adds.
#pragma unroll 4
    for (int q = 0; q < ks; q++) {
      const float* pq = (ks > 1 ? clusterPeer(part, q) : part) + m * LDP + wr;
      for (int x = 0; x < slices; x++) {
        y1 += pq[x * SLICE];
        if constexpr (PRODUCT) y2 += pq[x * SLICE + 16];
      }
    }
    if constexpr (NORM) {
      y1 = __fmul_rn(y1, rinv[m]);
      if constexpr (PRODUCT) y2 = __fmul_rn(y2, rinv[m]);
    }
    const float value = PRODUCT ? __fmul_rn(y1, y2) : y1;
    if constexpr ((EPI & EPI_SPLIT) != 0) {
      storeSplit(a.split, m, row, value);
    } else {
      a.y[at] = fromF<T>(RESIDUAL ? __fadd_rn(value, res) : value);
    }
  }
  if (ks > 1) clusterSync();  // no block leaves while another reads its shared memory
}

// y = p(x) · wᵀ (⊙ p(x) · w2ᵀ) (+ residual), all contiguous; k a multiple of 8; x, w, w2 and the
// gate 16-byte aligned. Block (rank, b): rows of tile b, the rank-th share of the stages of k.
// Dynamic shared memory: the ring (stages × (weights + MP·KC of x, and as much of the gate)),
// which also holds the slices' partial sums after the k loop.
template <class T, int NT, int PRO, int EPI>
__global__ void __launch_bounds__(THREADS, 2) gemvMmaKernel(const MmaArgs<T> a) {
  __shared__ double squares[MAX_SLICES][8 * NT];  // Σ x² of each row (padded to 8·NT), a slice's k of the block's share
  __shared__ float rinv[8 * NT];  // each row's norm factor

  // The body once for each geometry, so that its strides are constants (immediate offsets of the
  // shared-memory loads rather than registers).
  if (a.rg == 4) gemvMmaBody<T, NT, PRO, EPI, 4>(a, squares, rinv);
  else gemvMmaBody<T, NT, PRO, EPI, 2>(a, squares, rinv);
}

constexpr int mp(int nt) { return 8 * nt; }

// Bytes of a stage of the ring.
size_t stageBytes(int nt, int rg, bool gate) { return (size_t)(STAGE_WEIGHTS + mp(nt) * (KW * WARPS / rg) * (gate ? 2 : 1)) * 2; }

// Bytes of the slices' partial sums after the k loop (f32, rows padded by 4).
size_t partBytes(int nt, int rg) { return (size_t)(WARPS / rg) * mp(nt) * (32 * rg + 4) * sizeof(float); }

int smemLimit() {
  static PerDevice<int> bytes;
  return bytes.get([] {
    int dev = 0, v = 0;
    LTS_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
    LTS_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "gemv mma shared memory per block");
    return std::min(SMEM_BUDGET, v);
  });
}

template <class T, int NT, int PRO, int EPI>
void configure() {
  static PerDevice<int> done;
  done.get([] {
    LTS_CHECK(cudaFuncSetAttribute(gemvMmaKernel<T, NT, PRO, EPI>, cudaFuncAttributeMaxDynamicSharedMemorySize, smemLimit()), "gemv mma smem attribute");
    return 1;
  });
}

template <class T, int NT, int PRO, int EPI>
void launch(Context& c, const MmaArgs<T>& a, size_t smem) {
  configure<T, NT, PRO, EPI>();
  const int outRows = (EPI & EPI_PRODUCT) ? 16 * a.rg : 32 * a.rg;
  const int tiles = (a.n + outRows - 1) / outRows;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)a.ks, (unsigned)tiles);
  cfg.blockDim = dim3(THREADS);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = c.stream;
  cudaLaunchAttribute attr[2];
  int count = 0;
  if (pdlEnabled() && c.ccMajor >= 9) {
    attr[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[count++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (a.ks > 1) {
    attr[count].id = cudaLaunchAttributeClusterDimension;
    attr[count++].val.clusterDim = {(unsigned)a.ks, 1, 1};
  }
  cfg.attrs = attr;
  cfg.numAttrs = count;
  LTS_CHECK(cudaLaunchKernelEx(&cfg, gemvMmaKernel<T, NT, PRO, EPI>, a), "gemv mma kernel launch");
}

template <class T, int PRO, int EPI>
void launchTiles(Context& c, int nt, const MmaArgs<T>& a, size_t smem) {
  switch (nt) {
    case 1: return launch<T, 1, PRO, EPI>(c, a, smem);
    case 2: return launch<T, 2, PRO, EPI>(c, a, smem);
    case 4: return launch<T, 4, PRO, EPI>(c, a, smem);
    case 8: return launch<T, 8, PRO, EPI>(c, a, smem);
  }
}

template <class T, int PRO>
void launchEpilogue(Context& c, int nt, int epi, const MmaArgs<T>& a, size_t smem) {
  switch (epi) {
    case 0: return launchTiles<T, PRO, 0>(c, nt, a, smem);
    case EPI_RESIDUAL: return launchTiles<T, PRO, EPI_RESIDUAL>(c, nt, a, smem);
    case EPI_PRODUCT: return launchTiles<T, PRO, EPI_PRODUCT>(c, nt, a, smem);
    case EPI_RESIDUAL | EPI_PRODUCT: return launchTiles<T, PRO, EPI_RESIDUAL | EPI_PRODUCT>(c, nt, a, smem);
  }
}

// LIGHTNING_CUDA_GEMV_MMA: "1" uses the kernel, unset, empty or "0" leaves those products to the
// chain (read at each call, as LIGHTNING_CUDA_GEMV is, so a bench or test can compare the two).
bool enabled() {
  return envSwitch("LIGHTNING_CUDA_GEMV_MMA", false);
}

// How a launch of m rows runs: NT, the row groups, the ring's stages and bytes, the cluster size;
// `ok` false where the kernel does not apply (the switch off, rows, dtype, k not whole 16-byte
// packs, a pointer cp.async reads not on a 16-byte boundary).
struct Plan {
  bool ok = false;
  int nt = 0, rg = 4, stages = 0, ks = 1;
  size_t smem = 0;
  bool prefetch = false;
};

Plan plan(Context& c, int dt, int m, int n, int k, bool gate, bool product, std::initializer_list<const void*> packed) {
  Plan p;
  if (!enabled() || (dt != F16 && dt != BF16) || m < MMA_MIN_M || m > MMA_MAX_M || n < 1 || k < 1 || k % 8 != 0) return p;
  for (const void* ptr : packed)
    if (ptr != nullptr && !alignedTo(ptr, 16)) return p;
  p.nt = m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8;
  // Blocks to aim for: about one an SM, so that every SM streams weights. Row groups of 4 (128
  // weight rows) read x from L2 half as often as groups of 2; where they leave most SMs idle even
  // with clusters of 8 splitting k (N = 1,024: 8 tiles), 64-row tiles.
  const int64_t target = std::max(1, c.smCount * 9 / 10);
  int64_t tiles = 0;
  int stagesAll = 0;
  for (int rg : {4, 2}) {
    const int outRows = (product ? 16 : 32) * rg, kc = KW * WARPS / rg;
    tiles = (n + outRows - 1) / outRows;
    stagesAll = (k + kc - 1) / kc;
    int ks = 1;
    if (c.ccMajor >= 9)
      while (ks < MAX_CLUSTER && tiles * ks < target && ks < stagesAll) ks++;
    p.rg = rg;
    p.ks = ks;
    if (tiles * ks >= target) break;
  }
  if (tiles > 65535) return p;
  const size_t stage = stageBytes(p.nt, p.rg, gate);
  const int perBlock = (stagesAll + p.ks - 1) / p.ks;
  // As many stages as the budget holds, but no more than the block's share needs (stage st takes
  // slot st % stages: a share of fewer stages than the ring leaves the slots past it untouched).
  p.stages = std::max(2, std::min<int>({MAX_STAGES, (int)(smemLimit() / stage), perBlock + 1}));
  p.smem = std::max(std::min(p.stages, perBlock) * stage, partBytes(p.nt, p.rg));
  if (p.smem > (size_t)smemLimit()) return p;
  p.prefetch = (int64_t)n * k * 2 * (product ? 2 : 1) <= L2_BUDGET;
  p.ok = true;
  return p;
}

}  // namespace

// p: [x, w, gate, w2, residual, y] (0 where absent); i: [dtype, rows, n, k, norm, gate, product,
// residual]; f: [eps] — gemv.cu's fusedLinear's arguments.
bool fusedLinearMma(Context& c, const Args& args) {
  const int dt = (int)args.i.at(0), m = (int)args.i.at(1), n = (int)args.i.at(2), k = (int)args.i.at(3);
  const bool norm = args.i.at(4) != 0, gate = args.i.at(5) != 0, product = args.i.at(6) != 0, residual = args.i.at(7) != 0;
  const Plan p = plan(c, dt, m, n, k, gate, product, {args.ptr<void>(0), args.ptr<void>(1), args.ptr<void>(2), args.ptr<void>(3)});
  if (!p.ok) return false;
  const int pro = gate ? PRO_GATE : norm ? PRO_NORM : PRO_NONE;
  const int epi = (residual ? EPI_RESIDUAL : 0) | (product ? EPI_PRODUCT : 0);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const MmaArgs<T> a{args.ptr<const T>(0), args.ptr<const T>(1), args.ptr<const T>(3), args.ptr<const T>(2), args.ptr<const T>(4), args.ptr<T>(5), {},
                       m, n, k, p.rg, p.stages, p.ks, p.prefetch, (float)args.f.at(0)};
    switch (pro) {
      case PRO_NONE: return launchEpilogue<T, PRO_NONE>(c, p.nt, epi, a, p.smem);
      case PRO_NORM: return launchEpilogue<T, PRO_NORM>(c, p.nt, epi, a, p.smem);
      case PRO_GATE: return launchEpilogue<T, PRO_GATE>(c, p.nt, epi, a, p.smem);
    }
  };
  if (dt == F16) run(__half{});
  else run(__nv_bfloat16{});
  return true;
}

// p: [x, w, theta, positions, q, k, v, u]; i: [dtype, rows, n = 4·hid, k, heads, activation,
// theta dtype or -1]; f: [eps] — gemv.cu's qkvuProjection's arguments (which checked the activation).
// The plan is fusedLinear's with a norm, so that both give the same sums.
bool qkvuProjectionMma(Context& c, const Args& args) {
  const int dt = (int)args.i.at(0), m = (int)args.i.at(1), n = (int)args.i.at(2), k = (int)args.i.at(3);
  const int heads = (int)args.i.at(4), act = (int)args.i.at(5), thDt = (int)args.i.at(6);
  if (heads < 1 || n % (4 * heads) != 0) return false;
  const Plan p = plan(c, dt, m, n, k, false, false, {args.ptr<void>(0), args.ptr<void>(1)});
  if (!p.ok) return false;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const SplitArgs<T> split{args.ptr<T>(4), args.ptr<T>(5), args.ptr<T>(6), args.ptr<T>(7), args.ptr<const void>(2), thDt, args.ptr<const float>(3), heads, n / (4 * heads), act};
    const MmaArgs<T> a{args.ptr<const T>(0), args.ptr<const T>(1), nullptr, nullptr, nullptr, nullptr, split, m, n, k, p.rg, p.stages, p.ks, p.prefetch, (float)args.f.at(0)};
    launchTiles<T, PRO_NORM, EPI_SPLIT>(c, p.nt, a, p.smem);
  };
  if (dt == F16) run(__half{});
  else run(__nv_bfloat16{});
  return true;
}

}  // namespace lts
