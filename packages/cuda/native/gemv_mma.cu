// Small-batch products on tensor cores for decoding: y (M, N) = x (M, K) · w (N, K)ᵀ with
// MMA_MIN_M ≤ M ≤ MMA_MAX_M rows of x, f16 or bf16, f32 sums, the output rounded once; with the
// prologues and epilogues of native/gemv.cu's `fusedLinear` (the same rounding points, so the CPU
// chain stays the oracle). At 64 rows each weight element feeds 64 products: more than the CUDA
// cores of gemv.cu keep up with while the weights stream at memory speed, well within mma.sync's.
//
//   - mma.sync m16n8k16 with w as A (16 weight rows × 16 k, row-major as stored) and xᵀ as B (k × 8
//     tokens; a row of x is k-contiguous, the "col" B layout); a warp holds 16 weight rows × all M
//     (padded to 8·NT, NT ≤ 8 tiles of 8 tokens) in NT·4 f32 registers;
//   - k is a reduction index, so any bijection of it may be applied to both operands: a lane takes
//     8 consecutive k (one 16-byte load) of weight rows g and g + 8 and of token row g, which
//     serve two m16n8k16 steps (words 0–1 the first, 2–3 the second) without ldmatrix or shuffles;
//   - a block is 8 warps: RT = 2 tiles of 16 weight rows × S = 4 slices of KW = 32 k per stage of
//     KC = 128 k; stages (its 32 weight rows, the M rows of x, and the gate with a gated norm) go
//     through a ring of 2–4 stages in shared memory by cp.async (16-byte copies that need no
//     registers, so the ring, not the register file, sets the bytes in flight: up to 3 stages, 24
//     KB of weights and 48 KB of x a block at M = 64); rows of the ring are padded to 320 bytes so
//     that the 8 lanes of a 16-byte load phase (two rows, 64 bytes each) hit 32 distinct banks;
//   - the 4 slices of a tile are added through shared memory after the k loop, in slice order
//     (deterministic: a graph replay gives an eager call's bits), then the epilogue writes;
//   - where the row tiles alone leave most SMs idle (N = 1,024: 32 blocks), a cluster of ks = 2–8
//     blocks (sm_90+) splits k, each block staging only its share of x, and the cluster adds its
//     partial sums through distributed shared memory in (rank, slice) order: no atomics;
//   - with the product of two weights, the block's two tiles are rows r… of w and of w2 (16 output
//     rows a block), so that both sums of an output meet in the same block; with qkvuProjection's
//     split (gemv_split.cuh, gemv.cu's), each element goes where splitQkvu writes it.
//
// Prologue (SRMSNorm, optionally times the gate): a pre-pass over the M rows of x computes each
// row's factor in the order of nn.cu's rmsNorm (as gemv.cu's normRows: warp per row for k ≤ 4,096,
// else block per row with a double factor; rows shared out over a cluster); each stage of x is then normed in shared memory and
// rounded to T as the chain stores it (then times the gate, rounded again) before its products.
//
// Launches use programmatic dependent launch where the device has it (LIGHTNING_CUDA_PDL=0 turns it
// off): before griddepcontrol.wait a block asks L2 for its share of the weights (where the whole
// weight fits the L2 budget) and starts the copies of the ring's first weight stages; x, the gate
// and the residual are read only after the wait.
//
// Off unless LIGHTNING_CUDA_GEMV_MMA=1; where it declines (other M, dtype, alignment), gemv.cu's
// fusedLinear and qkvuProjection decline too and src/kernels.ts runs their chains.
#include <algorithm>
#include <cstring>

#include <cooperative_groups.h>

#include "device.cuh"
#include "gemv.cuh"
#include "gemv_split.cuh"
#include "mma.cuh"

namespace lts {
namespace {

constexpr int WARPS = 8, THREADS = WARPS * 32;
constexpr int RT = 2;  // 16-row weight tiles a block
constexpr int S = WARPS / RT;  // k slices a tile (one warp each)
constexpr int KW = 32;  // k a warp takes from a stage: two m16n8k16 steps
constexpr int KC = S * KW;  // k a stage
constexpr int WROWS = 16 * RT;  // weight rows a stage
constexpr int LD = KC + 32;  // elements between rows of the ring: 320 bytes ≡ 64 (mod 128)
constexpr int MAX_STAGES = 4;
// Shared memory for the ring: two blocks an SM where the ring of at least 2 stages fits.
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
  int stages;  // of the ring, 2…MAX_STAGES
  int ks;  // blocks of a cluster, splitting k (1 below sm_90)
  bool prefetch;  // ask L2 for the block's weights before the wait
  float eps;
};

__device__ __forceinline__ void waitForPrevious() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void startNext() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

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

__device__ __forceinline__ void prefetchL2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// cp.async.wait_group takes an immediate: waits until at most `pending` groups are in flight.
__device__ __forceinline__ void cpAsyncWaitAtMost(int pending) {
  switch (pending) {
    case 0: cpAsyncWait<0>(); break;
    case 1: cpAsyncWait<1>(); break;
    case 2: cpAsyncWait<2>(); break;
    default: cpAsyncWait<3>(); break;
  }
}

// A plain load (not asm), so that the compiler orders it with the barriers and stores around it.
template <class T>
__device__ __forceinline__ uint4 lds128(const T* p) { return *reinterpret_cast<const uint4*>(p); }

// Weight row r (0…WROWS-1) of block b's stage rows; rows past n read row n − 1 (in bounds, never
// stored). With the product, rows 0–15 are w's and 16–31 w2's, of the same 16 output rows.
template <class T, bool PRODUCT>
__device__ __forceinline__ const T* weightRow(const MmaArgs<T>& a, int b, int r) {
  if (PRODUCT) return (r < 16 ? a.w : a.w2) + (int64_t)min(b * 16 + (r & 15), a.n - 1) * a.k;
  return a.w + (int64_t)min(b * WROWS + r, a.n - 1) * a.k;
}

// y = p(x) · wᵀ (⊙ p(x) · w2ᵀ) (+ residual), all contiguous; k a multiple of 8; x, w, w2 and the
// gate 16-byte aligned. Dynamic shared memory: the ring (stages × (WROWS + MP·(1 + gate)) rows of
// LD elements), which also holds the slices' partial sums after the k loop.
template <class T, int NT, int PRO, int EPI>
__global__ void __launch_bounds__(THREADS, 2) gemvMmaKernel(const MmaArgs<T> a) {
  constexpr int MP = 8 * NT;  // rows of x, padded to whole n8 tiles
  constexpr bool PRODUCT = (EPI & EPI_PRODUCT) != 0, RESIDUAL = (EPI & EPI_RESIDUAL) != 0;
  constexpr bool GATE = PRO == PRO_GATE;
  constexpr int OUTROWS = PRODUCT ? 16 : WROWS;  // output rows a block
  constexpr int STAGE = (WROWS + MP * (GATE ? 2 : 1)) * LD;  // elements a stage
  extern __shared__ uint4 smem4[];
  T* ring = reinterpret_cast<T*>(smem4);
  __shared__ float rinv[MP];
  __shared__ double rinvD[MP];
  __shared__ double sd[32];

  const int M = a.m, n = a.n, k = a.k, ns = a.stages, ks = a.ks;
  // Block (rank, b): output rows of tile b, stages s0… of k (the cluster's rank-th share).
  const int rank = blockIdx.x, b = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int stagesAll = (k + KC - 1) / KC, share = (stagesAll + ks - 1) / ks;
  const int s0 = min(stagesAll, rank * share), nst = min(stagesAll, s0 + share) - s0;
  auto wStage = [&](int slot) { return ring + slot * STAGE; };
  auto xStage = [&](int slot) { return ring + slot * STAGE + WROWS * LD; };
  auto gStage = [&](int slot) { return ring + slot * STAGE + (WROWS + MP) * LD; };

  // The 16-byte packs of the block's stage st: KC / 8 a row; those past k are zero-filled.
  constexpr int PACKS = KC / 8;
  auto copyWeights = [&](int st) {
    T* dst = wStage(st % ns);
    for (int i = tid; i < WROWS * PACKS; i += THREADS) {
      const int r = i / PACKS, c = i % PACKS, kk = (s0 + st) * KC + c * 8;
      const T* src = weightRow<T, PRODUCT>(a, b, r);
      const bool in = kk < k && (PRODUCT ? b * 16 + (r & 15) : b * WROWS + r) < n;
      cpAsync16(dst + r * LD + c * 8, in ? src + kk : src, in ? 16 : 0);
    }
  };
  auto copyRows = [&](int st) {
    T* dx = xStage(st % ns);
    T* dg = gStage(st % ns);
    for (int i = tid; i < M * PACKS; i += THREADS) {
      const int r = i / PACKS, c = i % PACKS, kk = (s0 + st) * KC + c * 8;
      const int64_t at = (int64_t)r * k + kk;
      cpAsync16(dx + r * LD + c * 8, kk < k ? a.x + at : a.x, kk < k ? 16 : 0);
      if constexpr (GATE) cpAsync16(dg + r * LD + c * 8, kk < k ? a.gate + at : a.gate, kk < k ? 16 : 0);
    }
  };

  // Weights are not what the kernel before writes: their L2 requests and the ring's first weight
  // copies start before the wait.
  if (a.prefetch && nst > 0) {
    const int64_t from = (int64_t)s0 * KC * sizeof(T), to = min((int64_t)k, (int64_t)(s0 + nst) * KC) * sizeof(T);
    const int lines = (int)((to - from + 127) / 128);
    for (int i = tid; i < WROWS * lines; i += THREADS) {
      const int r = i / lines, l = i % lines;
      prefetchL2(reinterpret_cast<const char*>(weightRow<T, PRODUCT>(a, b, r)) + from + (int64_t)l * 128);
    }
  }
  for (int st = 0; st < ns - 1 && st < nst; st++) copyWeights(st);
  // Rows of x past M are zeros in every stage (never copied): their products are discarded, and
  // zeros keep them finite.
  for (int i = tid; i < ns * (MP - M) * LD; i += THREADS) {
    const int slot = i / ((MP - M) * LD), j = i % ((MP - M) * LD);
    xStage(slot)[M * LD + j] = fromF<T>(0.0f);
  }

  waitForPrevious();
  // Groups: stage st's x (with the first weights in group 0) is group st.
  for (int st = 0; st < ns - 1; st++) {
    if (st < nst) copyRows(st);
    cpAsyncCommit();
  }

  if constexpr (PRO != PRO_NONE) {
    // Each row's factor in nn.cu's rmsNorm order (the same sums as gemv.cu's normRows), row r by
    // the block of rank r % ks, then shared over the cluster.
    if (k <= 4096) {
      for (int r = rank + ks * warp; r < M; r += ks * WARPS) {
        const T* row = a.x + (int64_t)r * k;
        double ss = 0;
        for (int p = lane; p < k / 8; p += 32) {
          float s = 0;
#pragma unroll
          for (int e = 0; e < 8; e++) {
            const float v = toF(row[8 * p + e]);
            s = fmaf(v, v, s);
          }
          ss += s;
        }
        ss = warpSum(ss);
        if (lane == 0) rinv[r] = (float)(1.0 / sqrt(ss / (double)k + a.eps));
      }
    } else {
#pragma unroll 1
      for (int r = rank; r < M; r += ks) {
        const T* row = a.x + (int64_t)r * k;
        double ss = 0;
        for (int j = tid; j < k; j += THREADS) {
          const double v = toF(row[j]);
          ss += v * v;
        }
        const double f = 1.0 / sqrt(blockSum(ss, sd) / (double)k + a.eps);
        if (tid == 0) rinvD[r] = f;
      }
    }
    __syncthreads();
    if (ks > 1) {
      clusterSync();  // every row's factor is in its owner's shared memory; owners never rewrite theirs
      for (int r = tid; r < M; r += THREADS) {
        if (r % ks == rank) continue;
        if (k <= 4096) rinv[r] = clusterPeer(rinv, r % ks)[r];
        else rinvD[r] = clusterPeer(rinvD, r % ks)[r];
      }
      __syncthreads();
    }
  }
  startNext();

  const int rt = warp / S, s = warp % S, g = lane >> 2, t = lane & 3;
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;

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
    if constexpr (PRO != PRO_NONE) {
      // SRMSNorm (⊙ gate) of this stage's x in place, each product rounded to T as the chain stores it.
      T* xs = xStage(slot);
      const T* gs = gStage(slot);
      for (int i = tid; i < M * PACKS; i += THREADS) {
        const int r = i / PACKS, c = i % PACKS;
        if ((s0 + st) * KC + c * 8 >= k) continue;
        T* p = xs + r * LD + c * 8;
#pragma unroll
        for (int e = 0; e < 8; e++) {
          T v = k <= 4096 ? fromF<T>(__fmul_rn(toF(p[e]), rinv[r])) : fromF<T>((float)(toF(p[e]) * rinvD[r]));
          if constexpr (GATE) v = fromF<T>(__fmul_rn(toF(v), toF(gs[r * LD + c * 8 + e])));
          p[e] = v;
        }
      }
      __syncthreads();
    }
    const T* ws = wStage(slot) + (rt * 16 + g) * LD + s * KW + 8 * t;
    const uint4 wa = lds128(ws), wb = lds128(ws + 8 * LD);
    const uint32_t a0[4] = {wa.x, wb.x, wa.y, wb.y}, a1[4] = {wa.z, wb.z, wa.w, wb.w};
    const T* xs = xStage(slot) + g * LD + s * KW + 8 * t;
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const uint4 xv = lds128(xs + j * 8 * LD);
      mma<T>(acc[j], a0, xv.x, xv.y);
      mma<T>(acc[j], a1, xv.z, xv.w);
    }
  }
  cpAsyncWait<0>();
  __syncthreads();  // the ring is free: it takes the partial sums

  // part[(rt·S + s)·16 + row][token]: c0, c1 at (row g, tokens 2t, 2t + 1), c2, c3 at row g + 8.
  float* part = reinterpret_cast<float*>(smem4);
  {
    float* mine = part + (rt * S + s) * 16 * MP;
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int col = 8 * j + 2 * t;
      mine[g * MP + col] = acc[j][0];
      mine[g * MP + col + 1] = acc[j][1];
      mine[(g + 8) * MP + col] = acc[j][2];
      mine[(g + 8) * MP + col + 1] = acc[j][3];
    }
  }
  __syncthreads();
  if (ks > 1) clusterSync();  // every block's partial sums are in place
  // Output (token m, row r of the block), every ks-th one by this block of the cluster: the
  // partial sums are added in (rank, slice) order; the residual in f32; one rounding.
  for (int i = rank + ks * tid; i < M * OUTROWS; i += ks * THREADS) {
    const int m = i / OUTROWS, r = i % OUTROWS;
    const int row = b * OUTROWS + r;
    if (row >= n) continue;
    const int tile = PRODUCT ? 0 : r / 16, rr = r % 16;
    float total = 0.0f, second = 0.0f;
    for (int q = 0; q < ks; q++) {
      const float* pq = ks > 1 ? clusterPeer(part, q) : part;
      for (int ss = 0; ss < S; ss++) total += pq[((tile * S + ss) * 16 + rr) * MP + m];
      if constexpr (PRODUCT)
        for (int ss = 0; ss < S; ss++) second += pq[((S + ss) * 16 + rr) * MP + m];
    }
    if constexpr (PRODUCT) total = __fmul_rn(total, second);
    if constexpr ((EPI & EPI_SPLIT) != 0) {
      storeSplit(a.split, m, row, total);
    } else {
      const int64_t at = (int64_t)m * n + row;
      a.y[at] = fromF<T>(RESIDUAL ? __fadd_rn(total, toF(a.residual[at])) : total);
    }
  }
  if (ks > 1) clusterSync();  // no block leaves while another reads its shared memory
}

constexpr int mp(int nt) { return 8 * nt; }

size_t stageBytes(int nt, bool gate) { return (size_t)(WROWS + mp(nt) * (gate ? 2 : 1)) * LD * 2; }

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

bool pdlEnabled() {
  const char* v = getenv("LIGHTNING_CUDA_PDL");
  if (!v || !*v || strcmp(v, "1") == 0) return true;
  if (strcmp(v, "0") == 0) return false;
  throw std::runtime_error(std::string("LIGHTNING_CUDA_PDL: expected 0 or 1, got '") + v + "'");
}

template <class T, int NT, int PRO, int EPI>
void launch(Context& c, const MmaArgs<T>& a, size_t smem) {
  configure<T, NT, PRO, EPI>();
  const int outRows = (EPI & EPI_PRODUCT) ? 16 : WROWS;
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
  const char* v = getenv("LIGHTNING_CUDA_GEMV_MMA");
  if (!v || !*v || strcmp(v, "0") == 0) return false;
  if (strcmp(v, "1") == 0) return true;
  throw std::runtime_error(std::string("LIGHTNING_CUDA_GEMV_MMA: expected 0 or 1, got '") + v + "'");
}

// How a launch of m rows runs: NT, the ring's stages and bytes, the cluster size; `ok` false where
// the kernel does not apply (the switch off, rows, dtype, k not whole 16-byte packs, a pointer
// cp.async reads not on a 16-byte boundary).
struct Plan {
  bool ok = false;
  int nt = 0, stages = 0, ks = 1;
  size_t smem = 0;
  bool prefetch = false;
};

Plan plan(Context& c, int dt, int m, int n, int k, bool gate, bool product, std::initializer_list<const void*> packed) {
  Plan p;
  if (!enabled() || (dt != F16 && dt != BF16) || m < MMA_MIN_M || m > MMA_MAX_M || n < 1 || k < 1 || k % 8 != 0) return p;
  for (const void* ptr : packed)
    if (ptr != nullptr && !alignedTo(ptr, 16)) return p;
  p.nt = m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8;
  const size_t stage = stageBytes(p.nt, gate);
  p.stages = std::min<int>(MAX_STAGES, (int)(smemLimit() / stage));
  if (p.stages < 2) return p;
  p.smem = p.stages * stage;
  p.prefetch = (int64_t)n * k * 2 * (product ? 2 : 1) <= L2_BUDGET;
  // Where the row tiles alone leave most SMs idle (N = 1,024: 32 tiles), clusters of ks blocks
  // (sm_90+) split k, each block staging only its share of x: ks·tiles blocks, at least 2 stages each.
  const int tiles = (n + (product ? 16 : WROWS) - 1) / (product ? 16 : WROWS), stagesAll = (k + KC - 1) / KC;
  if (c.ccMajor >= 9)
    while (p.ks < 8 && (int64_t)tiles * p.ks * 2 <= c.smCount && stagesAll >= 4 * p.ks) p.ks *= 2;
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
  const int nt = p.nt;
  const size_t smem = p.smem;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const MmaArgs<T> a{args.ptr<const T>(0), args.ptr<const T>(1), args.ptr<const T>(3), args.ptr<const T>(2), args.ptr<const T>(4), args.ptr<T>(5), {},
                       m, n, k, p.stages, p.ks, p.prefetch, (float)args.f.at(0)};
    switch (pro) {
      case PRO_NONE: return launchEpilogue<T, PRO_NONE>(c, nt, epi, a, smem);
      case PRO_NORM: return launchEpilogue<T, PRO_NORM>(c, nt, epi, a, smem);
      case PRO_GATE: return launchEpilogue<T, PRO_GATE>(c, nt, epi, a, smem);
    }
  };
  if (dt == F16) run(__half{});
  else run(__nv_bfloat16{});
  return true;
}

// p: [x, w, theta, positions, q, k, v, u]; i: [dtype, rows, n = 4·hid, k, heads, activation,
// theta dtype or -1]; f: [eps] — gemv.cu's qkvuProjection's arguments (which checked the activation).
bool qkvuProjectionMma(Context& c, const Args& args) {
  const int dt = (int)args.i.at(0), m = (int)args.i.at(1), n = (int)args.i.at(2), k = (int)args.i.at(3);
  const int heads = (int)args.i.at(4), act = (int)args.i.at(5), thDt = (int)args.i.at(6);
  if (heads < 1 || n % (4 * heads) != 0) return false;
  const Plan p = plan(c, dt, m, n, k, false, false, {args.ptr<void>(0), args.ptr<void>(1)});
  if (!p.ok) return false;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const SplitArgs<T> split{args.ptr<T>(4), args.ptr<T>(5), args.ptr<T>(6), args.ptr<T>(7), args.ptr<const void>(2), thDt, args.ptr<const float>(3), heads, n / (4 * heads), act};
    const MmaArgs<T> a{args.ptr<const T>(0), args.ptr<const T>(1), nullptr, nullptr, nullptr, nullptr, split, m, n, k, p.stages, p.ks, p.prefetch, (float)args.f.at(0)};
    launchTiles<T, PRO_NORM, EPI_SPLIT>(c, p.nt, a, p.smem);
  };
  if (dt == F16) run(__half{});
  else run(__nv_bfloat16{});
  return true;
}

}  // namespace lts
