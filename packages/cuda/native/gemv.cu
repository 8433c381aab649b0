// Small-M matrix-vector products for decoding: y (M, N) = x (M, K) · w (N, K)ᵀ with M ≤ 4 rows
// of x (one token per sequence of a batch) and w a row-major weight, `linear` of the TNL model.
// Such a product only streams w: at M = 1 every weight element is used once, so the time is the
// weight bytes over the memory bandwidth. cuBLAS picks tiles of 64 or more rows for it and leaves
// most SMs idle (decode-step profile: 0.25–1.4 TB/s of the H200's ~4.5); this kernel keeps every
// SM streaming:
//
//   - x is copied into shared memory once per block (M·K elements as stored) and read from there;
//   - each warp owns RW rows of w and a slice of K; a lane loads 16 bytes of each of its rows per
//     step, U steps before its arithmetic, so that 16·RW·U bytes per lane are in flight;
//   - where N alone gives too few warps to cover the GPU (N = 1,024), the warps of a block split K
//     (ksplit of them per row group) and add their partial sums through shared memory;
//   - blocks loop over row tiles (grid ≤ what is resident at once), so x is staged once per block
//     even for the vocabulary head (N = 50,272);
//   - a warp reduces its RW·M sums (padded to P, a power of two) with a halving butterfly:
//     P − 1 + 5 − log₂P shuffles instead of 5·P, each lane ending with one finished sum.
//
// The same kernel runs `fusedLinear` (a decode step's linear layer with its neighbours folded in),
// templated on a prologue and an epilogue so that the plain product compiles to what it was:
//
//   - prologue: each block norms its staged rows of x in shared memory (SRMSNorm, the sum of squares
//     in the order of nn.cu's rmsNorm kernel, so the normed x has the chain's bits), optionally times
//     a gate read from global memory, each rounded to T as the chain stores it, before any product;
//   - epilogue: a residual added in f32, and/or the product of two weights' sums: a warp's two
//     weight rows are then row r of w and row r of w2, one output row, so the registers and loads
//     per lane are those of the plain kernel; or (`qkvuProjection`) the split of TNL's qkvu into
//     q, k, v, u with φ and LRPE, each element written where splitQkvu writes it.
//
// Launches use programmatic dependent launch where the device has it (sm_90+, LIGHTNING_CUDA_PDL=0
// turns it off): a block starts its share of the weights (up to L2_BUDGET a launch) towards L2
// while the kernel before it finishes, and waits (griddepcontrol.wait) before it reads x or
// writes anything.
//
// Sums are f32 (fmaf in a fixed order: deterministic, a graph replay gives the bits of an eager
// call); the output is rounded once to the storage dtype. The plain twin is cuBLAS (or the tiled
// kernel of matmul.cu), which LIGHTNING_CUDA_GEMV=0 selects. The limit of 4 rows is measured: on
// the H200 a 436M decode step took 0.93 ms with this kernel against 1.09 ms on cuBLAS at one row,
// but 1.20 against 1.07 at eight, where cuBLAS's tensor-core tiles win.
#include <algorithm>
#include <cstring>

#include "device.cuh"
#include "gemv.cuh"
#include "gemv_device.cuh"
#include "gemv_split.cuh"

namespace lts {
namespace {

constexpr int WARPS = 8, THREADS = WARPS * 32;
// Blocks an SM holds: the launch bound, and the most the launcher counts on even where an
// instantiation's registers would allow a third, so that every prologue and epilogue splits a
// product exactly as the plain kernel does (the same sums in the same order).
constexpr int BLOCKS_PER_SM = 2;
constexpr int U = 2;  // 16-byte steps per row a lane loads before it computes
// Shared memory a block may take for x: two blocks still fit on an SM of 228 KB (bf16: K ≤ 12,600
// at M = 4); a larger x runs on cuBLAS.
constexpr size_t MAX_SMEM = 100 * 1024;
// Bytes of weights a launch prefetches to L2 before its first loads: the decode step's largest
// (the GLU's two 5.8 MB inputs, 11.5 MB) whole, with room left in the H200's 50 MB L2 (40 MB on the A100)
// for the kernel still running.
constexpr int64_t L2_BUDGET = 24 << 20;

// Rows of w per warp: more rows reuse each x element read from shared memory (and each conversion
// of it) for more FMAs; fewer leave more warps for small N.
constexpr int rowsPerWarp(int) { return 2; }

// What the prologue does to the staged rows of x, and what the epilogue adds (bits: 1 residual,
// 2 product of two weights).
enum Prologue { PRO_NONE = 0, PRO_NORM = 1, PRO_GATE = 2 };
constexpr int EPI_RESIDUAL = 1, EPI_PRODUCT = 2;
// qkvuProjection: y is TNL's qkvu (B, 4·hid), written as splitQkvu's q, k (φ, LRPE), v and u.
constexpr int EPI_SPLIT = 4;

template <class T>
struct GemvArgs {
  const T* x;         // (M, k)
  const T* w;         // (n, k)
  const T* w2;        // (n, k), EPI_PRODUCT
  const T* gate;      // (M, k), PRO_GATE
  const T* residual;  // (M, n), EPI_RESIDUAL
  T* y;               // (M, n)
  SplitArgs<T> split;  // EPI_SPLIT
  int n, k, ksplit;
  int prefetchTiles;  // tiles of w a block prefetches to L2 before it waits (≥ 1)
  bool xPacked;
  float eps;
};

// SRMSNorm of the staged rows (native/gemv_device.cuh) with this kernel's block of THREADS.
template <class T, int M, int PRO>
__device__ __forceinline__ void normRows(T* xs, const T* __restrict__ gate, int k, float eps) {
  normStagedRows<T, M, PRO == PRO_GATE, THREADS>(xs, gate, k, eps);
}

// y = x · wᵀ (+ prologue, epilogue), all contiguous; k a multiple of EL; w (and w2) 16-byte
// aligned; x too when xPacked. Dynamic shared memory: x (M·k elements of T), then WARPS·P floats
// of partial sums. Two blocks per SM: at most 128 registers a thread (M = 4 needs 64), 16 warps
// to keep loads in flight.
template <class T, int M, int PRO, int EPI>
__global__ void __launch_bounds__(THREADS, BLOCKS_PER_SM) gemvKernel(const GemvArgs<T> a) {
  constexpr int EL = 16 / sizeof(T);  // elements per 16-byte pack
  constexpr bool PRODUCT = (EPI & EPI_PRODUCT) != 0, RESIDUAL = (EPI & EPI_RESIDUAL) != 0;
  constexpr int RW = rowsPerWarp(M);  // weight rows per warp
  static_assert(!PRODUCT || RW == 2, "a product pairs row r of w with row r of w2");
  constexpr int OUT = PRODUCT ? 1 : RW;  // output rows per warp
  constexpr int C = RW * M;  // sums a warp owns per tile: (weight row r, x row m) at r·M + m
  constexpr int P = pow2ceil(C);
  extern __shared__ uint4 smem[];
  const int n = a.n, k = a.k, ksplit = a.ksplit;
  const int kv = k / EL;  // packs per row
  float* part = reinterpret_cast<float*>(smem + (size_t)M * kv);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int groups = WARPS / ksplit, g = warp / ksplit, s = warp % ksplit;
  const int per = (kv + ksplit - 1) / ksplit;
  const int vbeg = s * per, vend = min(kv, vbeg + per);
  const int tileRows = groups * OUT;
  const int tiles = (n + tileRows - 1) / tileRows;
  // Weight row r of the warp whose first output row is row0; rows past n read the last row (in
  // bounds, never stored): no branch around the loads.
  auto weightRow = [&](int r, int row0) -> const T* {
    if (PRODUCT) return (r == 0 ? a.w : a.w2) + (int64_t)min(row0, n - 1) * k;
    return a.w + (int64_t)min(row0 + r, n - 1) * k;
  };

  // The block's first prefetchTiles tiles of w (all of its share where they fit the L2 budget
  // the launcher computed) start towards L2 while the kernel before finishes and x is staged, so
  // that those waits and the wait for w (from memory) overlap: most decode matmuls are a few MB,
  // a latency or two long, and at kernel start far less than the whole weight would otherwise be
  // in flight. Weights are not what the kernel before writes, and a prefetch is only a hint, so
  // this comes before the wait.
  for (int tile = blockIdx.x, t = 0; tile < tiles && t < a.prefetchTiles; tile += gridDim.x, t++) {
    const int row0 = tile * tileRows + g * OUT;
#pragma unroll
    for (int r = 0; r < RW; r++) {
      const T* row = weightRow(r, row0);
      for (int v = vbeg + lane; v < vend; v += 32) prefetchL2(row + v * EL);
    }
  }

  waitForPrevious();
  if (a.xPacked) {
    const uint4* xp = reinterpret_cast<const uint4*>(a.x);
    for (int i = threadIdx.x; i < M * kv; i += THREADS) smem[i] = xp[i];
  } else {
    T* xs = reinterpret_cast<T*>(smem);
    for (int i = threadIdx.x; i < M * k; i += THREADS) xs[i] = a.x[i];
  }
  __syncthreads();
  if constexpr (PRO != PRO_NONE) {
    normRows<T, M, PRO>(reinterpret_cast<T*>(smem), a.gate, k, a.eps);
    __syncthreads();
  }
  startNext();

  // y[m, row] from the f32 result of the dot products: the residual added in f32, then one rounding
  // (or, with EPI_SPLIT, the element written as splitQkvu writes it).
  auto store = [&](int m, int row, float v) {
    if constexpr ((EPI & EPI_SPLIT) != 0) {
      storeSplit(a.split, m, row, v);
    } else {
      const int64_t at = (int64_t)m * n + row;
      a.y[at] = fromF<T>(RESIDUAL ? __fadd_rn(v, toF(a.residual[at])) : v);
    }
  };

  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int row0 = tile * tileRows + g * OUT;
    const uint4* wr[RW];
#pragma unroll
    for (int r = 0; r < RW; r++) wr[r] = reinterpret_cast<const uint4*>(weightRow(r, row0));

    float acc[P];
#pragma unroll
    for (int i = 0; i < P; i++) acc[i] = 0.0f;

    for (int v0 = vbeg + lane; v0 < vend; v0 += 32 * U) {
      uint4 wp[U][RW];
#pragma unroll
      for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < RW; r++) wp[u][r] = v0 + 32 * u < vend ? loadStreaming(wr[r] + v0 + 32 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int v = v0 + 32 * u;
        if (v >= vend) continue;  // a zero pack times an infinite x would still add a NaN
        float wf[RW][EL];
#pragma unroll
        for (int r = 0; r < RW; r++) unpack16<T>(wp[u][r], wf[r]);
#pragma unroll
        for (int m = 0; m < M; m++) {
          float xf[EL];
          unpack16<T>(smem[m * kv + v], xf);
#pragma unroll
          for (int r = 0; r < RW; r++)
#pragma unroll
            for (int e = 0; e < EL; e++) acc[r * M + m] = fmaf(wf[r][e], xf[e], acc[r * M + m]);
        }
      }
    }

    int index = 0;
    const float sum = halvingSum<P>(acc, lane, index);
    const bool holder = (lane & (32 / P - 1)) == 0 && index < C;
    if (ksplit == 1 && !PRODUCT) {
      const int row = row0 + index / M;
      if (holder && row < n) store(index % M, row, sum);
    } else {
      // A product's two sums sit in different lanes (and a split row's slices in different warps):
      // they meet in shared memory.
      if (holder) part[warp * P + index] = sum;
      __syncthreads();
      // The slices of a row group are added in slice order: the same bits on every run.
      for (int t = threadIdx.x; t < groups * OUT * M; t += THREADS) {
        const int gg = t / (OUT * M), i = t % (OUT * M);
        float total = 0.0f, second = 0.0f;
        for (int ss = 0; ss < ksplit; ss++) total += part[(gg * ksplit + ss) * P + i];
        if (PRODUCT)
          for (int ss = 0; ss < ksplit; ss++) second += part[(gg * ksplit + ss) * P + M + i];
        const int row = tile * tileRows + gg * OUT + i / M;
        if (row < n) store(i % M, row, PRODUCT ? __fmul_rn(total, second) : total);
      }
      __syncthreads();  // part is written again by the next tile
    }
  }
}

// Shared memory a block of this kernel may take on the current device: MAX_SMEM, or less where
// the device offers less (sm_86 and sm_89: 99 KB a block).
int smemLimit() {
  static PerDevice<int> bytes;
  return bytes.get([] {
    int dev = 0, v = 0;
    LTS_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
    LTS_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "gemv shared memory per block");
    return std::min((int)MAX_SMEM, v);
  });
}

int smemPerSm() {
  static PerDevice<int> bytes;
  return bytes.get([] {
    int dev = 0, v = 0;
    LTS_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
    LTS_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev), "gemv shared memory per SM");
    return v;
  });
}

// Per device and instantiation: the shared-memory limit raised to smemLimit(), and the blocks per
// SM that registers and threads allow.
template <class T, int M, int PRO, int EPI>
int configure() {
  static PerDevice<int> perSm;
  return perSm.get([] {
    auto kernel = gemvKernel<T, M, PRO, EPI>;
    LTS_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smemLimit()), "gemv smem attribute");
    int b = 0;
    LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, THREADS, 0), "gemv occupancy");
    return std::max(1, b);
  });
}

template <class T, int M, int PRO, int EPI>
void launch(Context& c, GemvArgs<T> a, size_t smem) {
  constexpr int EL = 16 / sizeof(T);
  constexpr int RW = rowsPerWarp(M);
  constexpr int OUT = (EPI & EPI_PRODUCT) ? 1 : RW;
  const int kv = a.k / EL;
  // Shared memory per block also counts the 1 KB the runtime reserves for each.
  const int resident = std::max(1, std::min({configure<T, M, PRO, EPI>(), BLOCKS_PER_SM, smemPerSm() / (int)(smem + 1024)}));
  const int64_t target = (int64_t)c.smCount * resident * WARPS;  // warps resident at once
  const int64_t rowGroups = (a.n + OUT - 1) / OUT;
  // Split K while the row groups alone leave warps idle, keeping each slice at least a warp wide.
  int ksplit = 1;
  while (ksplit < WARPS && rowGroups * ksplit < target && kv / (2 * ksplit) >= 32) ksplit *= 2;
  a.ksplit = ksplit;
  const int64_t tiles = (rowGroups + WARPS / ksplit - 1) / (WARPS / ksplit);
  // One wave: every block is resident at once (it loops over tiles), which is also what lets the
  // kernel after this one start early without taking a slot a block of this one still needs.
  const unsigned grid = (unsigned)std::min<int64_t>(tiles, (int64_t)c.smCount * resident);
  // Prefetch the whole weight where it takes at most L2_BUDGET, else as many rounds of tiles as do.
  const int64_t roundBytes = (int64_t)grid * (WARPS / ksplit) * RW * a.k * (int64_t)sizeof(T);
  const int64_t perBlock = (tiles + grid - 1) / grid;
  a.prefetchTiles = (int)std::max<int64_t>(1, std::min<int64_t>(perBlock, L2_BUDGET / std::max<int64_t>(1, roundBytes)));

  launchPdl(c, gemvKernel<T, M, PRO, EPI>, dim3(grid), dim3(THREADS), smem, "gemv kernel launch", a);
}

template <class T, int PRO, int EPI>
void launchRows(Context& c, int m, const GemvArgs<T>& a, size_t smem) {
  switch (m) {
    case 1: return launch<T, 1, PRO, EPI>(c, a, smem);
    case 2: return launch<T, 2, PRO, EPI>(c, a, smem);
    case 3: return launch<T, 3, PRO, EPI>(c, a, smem);
    case 4: return launch<T, 4, PRO, EPI>(c, a, smem);
  }
  static_assert(GEMV_MAX_M == 4, "launchRows instantiates the kernel for every M up to GEMV_MAX_M");
}

template <class T, int PRO>
void launchEpilogue(Context& c, int m, int epi, const GemvArgs<T>& a, size_t smem) {
  switch (epi) {
    case 0: return launchRows<T, PRO, 0>(c, m, a, smem);
    case EPI_RESIDUAL: return launchRows<T, PRO, EPI_RESIDUAL>(c, m, a, smem);
    case EPI_PRODUCT: return launchRows<T, PRO, EPI_PRODUCT>(c, m, a, smem);
    case EPI_RESIDUAL | EPI_PRODUCT: return launchRows<T, PRO, EPI_RESIDUAL | EPI_PRODUCT>(c, m, a, smem);
  }
}

// LIGHTNING_CUDA_GEMV: unset, empty or "1" uses the kernel, "0" leaves every matmul to cuBLAS
// (read at each call, as LIGHTNING_CUDA_STEP is, so a bench or test can compare the two).
bool enabled() {
  return envSwitch("LIGHTNING_CUDA_GEMV", true);
}

// The dynamic shared memory the kernel needs for m rows of width k, or 0 where it does not apply
// (the checks shared by `gemv` and `fusedLinear`).
size_t smemFor(int dt, int m, int n, int k, const void* w) {
  if (!enabled() || m < 1 || m > GEMV_MAX_M || n < 1 || k < 1) return 0;
  const int el = 16 / (int)dtypeSize(dt);
  // Every row of w must start on a 16-byte boundary for the pack loads; other k run on cuBLAS.
  if (k % el != 0 || !alignedTo(w, 16)) return 0;
  const int p = pow2ceil(rowsPerWarp(m) * m);
  const size_t smem = (size_t)m * k * dtypeSize(dt) + (size_t)WARPS * p * sizeof(float);
  return smem > (size_t)smemLimit() ? 0 : smem;
}

}  // namespace

bool gemv(Context& c, int dt, const void* x, const void* w, void* y, int m, int n, int k) {
  if (dt != F32 && dt != F16 && dt != BF16) return false;
  const size_t smem = smemFor(dt, m, n, k, w);
  if (smem == 0) return false;
  LTS_DISPATCH_FLOAT(dt, T, {
    GemvArgs<T> a{static_cast<const T*>(x), static_cast<const T*>(w), nullptr, nullptr, nullptr, static_cast<T*>(y), {}, n, k, 1, 1, alignedTo(x, 16), 0.0f};
    launchRows<T, PRO_NONE, 0>(c, m, a, smem);
  });
  return true;
}

// p: [x, w, gate, w2, residual, y] (0 where absent); i: [dtype, rows, n, k, norm, gate, product,
// residual]; f: [eps]. One kernel for 1…GEMV_MAX_M rows of f16/bf16 (what the small-M kernel
// takes); otherwise it enqueues nothing and declines, and src/kernels.ts runs the chain.
void fusedLinear(Context& c, const Args& args) {
  const int dt = (int)args.i.at(0), m = (int)args.i.at(1), n = (int)args.i.at(2), k = (int)args.i.at(3);
  const bool norm = args.i.at(4) != 0, gate = args.i.at(5) != 0, product = args.i.at(6) != 0, residual = args.i.at(7) != 0;
  const size_t smem = dt == F16 || dt == BF16 ? smemFor(dt, m, n, k, args.ptr<void>(1)) : 0;
  if (smem == 0 || (product && !alignedTo(args.ptr<void>(3), 16))) {
    // More rows than this kernel takes may run on gemv_mma.cu's tensor cores.
    if (!fusedLinearMma(c, args)) c.declined = true;
    return;
  }
  const int pro = gate ? PRO_GATE : norm ? PRO_NORM : PRO_NONE;
  const int epi = (residual ? EPI_RESIDUAL : 0) | (product ? EPI_PRODUCT : 0);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    GemvArgs<T> a{args.ptr<const T>(0), args.ptr<const T>(1), args.ptr<const T>(3), args.ptr<const T>(2), args.ptr<const T>(4), args.ptr<T>(5),
                  {}, n, k, 1, 1, alignedTo(args.ptr<void>(0), 16), (float)args.f.at(0)};
    switch (pro) {
      case PRO_NONE: return launchEpilogue<T, PRO_NONE>(c, m, epi, a, smem);
      case PRO_NORM: return launchEpilogue<T, PRO_NORM>(c, m, epi, a, smem);
      case PRO_GATE: return launchEpilogue<T, PRO_GATE>(c, m, epi, a, smem);
    }
  };
  if (dt == F16) run(__half{});
  else run(__nv_bfloat16{});
}

// p: [x, w, theta, positions, q, k, v, u] (theta and positions 0 without LRPE); i: [dtype, rows,
// n = 4·hid, k, heads, activation, theta dtype or -1]; f: [eps]. The normed projection with
// splitQkvu as its epilogue, in one kernel where the small-M kernel applies to f16/bf16; else it
// declines, and src/kernels.ts runs fusedLinear then splitQkvu.
void qkvuProjection(Context& c, const Args& args) {
  const int dt = (int)args.i.at(0), m = (int)args.i.at(1), n = (int)args.i.at(2), k = (int)args.i.at(3);
  const int heads = (int)args.i.at(4), act = (int)args.i.at(5), thDt = (int)args.i.at(6);
  if (act < 0 || act >= kQkvActivationCount) throw std::runtime_error("qkvuProjection: unknown activation code " + std::to_string(act));
  const size_t smem = dt == F16 || dt == BF16 ? smemFor(dt, m, n, k, args.ptr<void>(1)) : 0;
  if (smem == 0 || heads < 1 || n % (4 * heads) != 0) {
    // More rows than this kernel takes may run on gemv_mma.cu's tensor cores.
    if (!qkvuProjectionMma(c, args)) c.declined = true;
    return;
  }
  auto run = [&](auto zero) {
    using T = decltype(zero);
    SplitArgs<T> split{args.ptr<T>(4), args.ptr<T>(5), args.ptr<T>(6), args.ptr<T>(7), args.ptr<const void>(2), thDt, args.ptr<const float>(3), heads, n / (4 * heads), act};
    GemvArgs<T> a{args.ptr<const T>(0), args.ptr<const T>(1), nullptr, nullptr, nullptr, nullptr, split, n, k, 1, 1, alignedTo(args.ptr<void>(0), 16), (float)args.f.at(0)};
    launchRows<T, PRO_NORM, EPI_SPLIT>(c, m, a, smem);
  };
  if (dt == F16) run(__half{});
  else run(__nv_bfloat16{});
}

}  // namespace lts
