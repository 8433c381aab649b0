// Skinny products for decoding above the small-M kernel's rows: y (M, N) = x (M, K) · w (N, K)ᵀ
// (+ add, y's shape, in f32 before the one rounding) for SKINNY_MIN_M ≤ M ≤ SKINNY_MAX_M rows of
// f16/bf16, f32 sums. At 64 rows cuBLAS(Lt) runs the 436M decode products at 1–1.4 TB/s of
// weights: a few dozen tiles, each a few µs long (KERNELS.md). This kernel is a stream of weights
// with as few instructions around it as the stream allows:
//
//   - a block is WARPS warps × 16 weight rows (one m16 A tile a warp) × all M tokens (padded to
//     8·NT), over a share of k; a warp holds its weights for the whole share in registers, loaded
//     by 16-byte loads before griddepcontrol.wait (weights are never what the kernel before
//     writes), so every weight byte of the launch is in flight from the first cycles;
//   - k is a reduction index, so any bijection of it may be applied to both operands: lane (g, t)
//     takes 8 consecutive k (one 16-byte load) at chunks t and t + 4 of a 64-k step, of weight
//     rows g and g + 8 and of token row g, which serve four m16n8k16 MMAs without ldmatrix;
//   - x (the block's share of k, all tokens) is staged once in shared memory by cp.async and read
//     by every warp, its 16-byte chunks swizzled by row parity so that a load phase hits 32 banks;
//   - where the row tiles alone leave SMs idle, a cluster of ks = 2, 4 or 8 blocks splits k; after the
//     MMAs each block puts its f32 sums in shared memory and finishes a contiguous share of the
//     tile's tokens, adding the cluster's sums in rank order through distributed shared memory:
//     no atomics, no workspace, the same bits on every run and in a graph replay.
//
// The sum of an output: f32 MMA accumulation over the block's share, then the shares in rank order,
// then `add`, one rounding — the error bound of a K-long f32 sum (test/matmul-oracle.ts).
//
// Applies (else returns false, having enqueued nothing, and the caller takes cuBLAS): sm_90+ (it
// uses clusters), f16/bf16, k a multiple of 8, x and w on 16-byte boundaries, a block's share of k
// at most MAX_STEPS steps of 64 (the registers that hold it), and weights of at most 64 MB (the
// vocabulary head stays on cuBLAS, which streams it at bandwidth). Off unless LIGHTNING_CUDA_SKINNY=1;
// LIGHTNING_CUDA_DEBUG=1 prints one line per shape with the plan it ran.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

#include <cooperative_groups.h>

#include "device.cuh"
#include "gemv.cuh"
#include "gemv_device.cuh"
#include "mma.cuh"

namespace lts {
namespace {

constexpr int KSTEP = 64;  // k a step: 4 lanes × two 16-byte chunks
constexpr int MAX_STEPS = 6;  // steps of a block's share, held in registers (96 a thread)
constexpr int MAX_CLUSTER = 8;  // the portable cluster limit
constexpr int64_t MAX_WEIGHTS = 32 << 20;  // elements of w

template <class T>
struct SkinnyArgs {
  const T* x;    // (m, k)
  const T* w;    // (n, k)
  const T* add;  // (m, n) or null
  T* y;          // (m, n)
  int m, n, k, ks;
};

// Element offset of 16-byte chunk c (0…7) of row r in a 64-k stage: bit 2 of the chunk flipped on
// odd rows, so that lanes (g, t) of a load phase (rows g, g + 1 × chunks t…t + 3) hit 32 banks.
__device__ __forceinline__ int swz(int r, int c) { return r * KSTEP + ((c ^ ((r & 1) << 2)) << 3); }

__device__ __forceinline__ uint4 ldg128(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

template <class T, int NT, int WARPS, bool ADD>
__global__ void __launch_bounds__(WARPS * 32, 1) skinnyKernel(const SkinnyArgs<T> a) {
  constexpr int MP = 8 * NT, ROWS = 16 * WARPS, THREADS = WARPS * 32, LDP = ROWS + 4;
  extern __shared__ uint4 smem4[];
  T* xs = reinterpret_cast<T*>(smem4);
  float* part = reinterpret_cast<float*>(smem4);
  const int rank = blockIdx.x, tile = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int M = a.m, n = a.n, k = a.k, ks = a.ks;
  const int stepsAll = (k + KSTEP - 1) / KSTEP;
  // Shares that differ by at most one step.
  const int s0 = (int)((int64_t)rank * stepsAll / ks), nst = (int)((int64_t)(rank + 1) * stepsAll / ks) - s0;

  // The warp's weights for the whole share: rows g and g + 8 of its tile, chunks t and t + 4.
  const int r0 = tile * ROWS + 16 * warp + g;
  uint4 wv[MAX_STEPS][2][2];
#pragma unroll
  for (int s = 0; s < MAX_STEPS; s++)
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int c = 0; c < 2; c++) {
        const int row = r0 + 8 * h, kk = (s0 + s) * KSTEP + 8 * (t + 4 * c);
        wv[s][h][c] = s < nst && row < n && kk < k ? ldg128(a.w + (int64_t)row * k + kk) : make_uint4(0, 0, 0, 0);
      }

  waitForPrevious();  // x and add may be the kernel before's output
  // The share of x, every token row of the padding included (rows past M copied as zeros).
  for (int i = tid; i < nst * MP * 8; i += THREADS) {
    const int s = i / (MP * 8), r = (i / 8) % MP, c = i % 8, kk = (s0 + s) * KSTEP + 8 * c;
    const bool in = r < M && kk < k;
    cpAsync16(xs + s * MP * KSTEP + swz(r, c), a.x + (in ? (int64_t)r * k + kk : 0), in ? 16 : 0);
  }
  cpAsyncCommit();
  cpAsyncWait<0>();
  __syncthreads();

  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
#pragma unroll
  for (int s = 0; s < MAX_STEPS; s++) {
    if (s < nst) {
      const T* xst = xs + s * MP * KSTEP;
      const uint4 lo0 = wv[s][0][0], hi0 = wv[s][1][0], lo1 = wv[s][0][1], hi1 = wv[s][1][1];
      // A fragments (rows g | g + 8) of four k16 steps: words 0–1 and 2–3 of each chunk.
      const uint32_t af[4][4] = {{lo0.x, hi0.x, lo0.y, hi0.y}, {lo0.z, hi0.z, lo0.w, hi0.w}, {lo1.x, hi1.x, lo1.y, hi1.y}, {lo1.z, hi1.z, lo1.w, hi1.w}};
#pragma unroll
      for (int j = 0; j < NT; j++) {
        const uint4 x0 = *reinterpret_cast<const uint4*>(xst + swz(8 * j + g, t));
        const uint4 x1 = *reinterpret_cast<const uint4*>(xst + swz(8 * j + g, t + 4));
        mma<T>(acc[j], af[0], x0.x, x0.y);
        mma<T>(acc[j], af[1], x0.z, x0.w);
        mma<T>(acc[j], af[2], x1.x, x1.y);
        mma<T>(acc[j], af[3], x1.z, x1.w);
      }
    }
  }
  startNext();
  __syncthreads();  // every warp is done with x: the area takes the sums

  // part[token][row of the tile], rows padded by 4 floats (the fragment stores hit 32 banks):
  // c0, c1 at (row g, tokens 2t, 2t + 1), c2, c3 at row g + 8.
#pragma unroll
  for (int j = 0; j < NT; j++) {
    float* p = part + (8 * j + 2 * t) * LDP + 16 * warp + g;
    p[0] = acc[j][0];
    p[LDP] = acc[j][1];
    p[8] = acc[j][2];
    p[LDP + 8] = acc[j][3];
  }
  if (ks > 1) cooperative_groups::this_cluster().sync();
  else __syncthreads();

  // Tokens [mlo, mhi) of the tile are this block's to finish: the cluster's sums in rank order,
  // then add, one rounding.
  const int mlo = (int)((int64_t)rank * M / ks), mhi = (int)((int64_t)(rank + 1) * M / ks);
  const int count = (mhi - mlo) * ROWS;
  for (int e = tid; e < count; e += THREADS) {
    const int m = mlo + e / ROWS, r = e % ROWS, row = tile * ROWS + r;
    if (row >= n) continue;
    const int64_t at = (int64_t)m * n + row;
    const float extra = ADD ? toF(a.add[at]) : 0.0f;
    float v = 0.0f;
    if (ks > 1) {
#pragma unroll 4
      for (int q = 0; q < ks; q++) v += cooperative_groups::this_cluster().map_shared_rank(part, q)[m * LDP + r];
    } else {
      v = part[m * LDP + r];
    }
    a.y[at] = fromF<T>(ADD ? __fadd_rn(v, extra) : v);
  }
  if (ks > 1) cooperative_groups::this_cluster().sync();  // no block leaves while a peer reads it
}

template <class T, int NT, int WARPS, bool ADD>
void launch(Context& c, const SkinnyArgs<T>& a, int tiles, size_t smem) {
  auto kernel = skinnyKernel<T, NT, WARPS, ADD>;
  static PerDevice<int> configured;
  configured.get([&] {
    LTS_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024), "skinny smem attribute");
    return 1;
  });
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)a.ks, (unsigned)tiles);
  cfg.blockDim = dim3(WARPS * 32);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = c.stream;
  cudaLaunchAttribute attr[2];
  int count = 0;
  if (pdlEnabled()) {
    attr[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[count++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (a.ks > 1) {
    attr[count].id = cudaLaunchAttributeClusterDimension;
    attr[count++].val.clusterDim = {(unsigned)a.ks, 1, 1};
  }
  cfg.attrs = attr;
  cfg.numAttrs = count;
  LTS_CHECK(cudaLaunchKernelEx(&cfg, kernel, a), "skinny kernel launch");
}

template <class T, int WARPS, bool ADD>
void launchTiles(Context& c, int nt, const SkinnyArgs<T>& a, int tiles, size_t smem) {
  switch (nt) {
    case 1: return launch<T, 1, WARPS, ADD>(c, a, tiles, smem);
    case 2: return launch<T, 2, WARPS, ADD>(c, a, tiles, smem);
    case 4: return launch<T, 4, WARPS, ADD>(c, a, tiles, smem);
    case 8: return launch<T, 8, WARPS, ADD>(c, a, tiles, smem);
  }
}

// LIGHTNING_CUDA_SKINNY: "1" uses the kernel; unset, empty or "0" leaves these products to cuBLAS
// (read at each product, so that a bench or test compares both in one process). Off by default:
// slower than cuBLASLt at every decode batch measured (KERNELS.md).
bool enabled() {
  return envSwitch("LIGHTNING_CUDA_SKINNY", false);
}

struct Plan {
  int nt = 0, warps = 8, tiles = 0, ks = 1;
  size_t smem = 0;
};

// Blocks: about one an SM, each a stream of up to 64 KB of weights, within one wave (an 8-warp
// block takes an SM's registers, a 4-warp block half of them). Clusters of 1, 2, 4 or 8 (powers of
// two pack the 16–18 SMs of a GPC; clusters of 3 or 6 left SMs idle and spilled into a second wave).
// The first plan that reaches 90% of the SMs, trying 128-row tiles first (x is read from L2 once a
// tile) and the narrowest split; else the one with the most blocks.
bool plan(Context& c, int m, int n, int k, Plan& p) {
  p.nt = m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8;
  const int stepsAll = (k + KSTEP - 1) / KSTEP;
  const int64_t target = std::max(1, c.smCount * 9 / 10);
  int64_t best = 0;
  for (int warps : {8, 4}) {
    const int64_t tiles = (n + 16 * warps - 1) / (16 * warps), capacity = (int64_t)c.smCount * (8 / warps);
    for (int ks = 1; ks <= std::min(MAX_CLUSTER, stepsAll); ks *= 2) {
      const int64_t blocks = tiles * ks;
      if ((stepsAll + ks - 1) / ks > MAX_STEPS || blocks > capacity || tiles > 65535 || blocks <= best) continue;
      best = blocks;
      p.warps = warps, p.tiles = (int)tiles, p.ks = ks;
      if (blocks >= target) break;
    }
    if (best >= target) break;
  }
  if (best == 0) return false;
  const int share = (stepsAll + p.ks - 1) / p.ks;
  const size_t x = (size_t)8 * p.nt * KSTEP * share * 2, sums = (size_t)8 * p.nt * (16 * p.warps + 4) * sizeof(float);
  p.smem = std::max(x, sums);
  return true;
}

// LIGHTNING_CUDA_DEBUG=1: one line per distinct shape, with the plan.
void debugNote(int dt, int m, int n, int k, bool add, const Plan& p) {
  static const bool on = [] {
    const char* v = getenv("LIGHTNING_CUDA_DEBUG");
    return v && *v && *v != '0';
  }();
  if (!on) return;
  static std::mutex mu;
  static std::set<std::string> seen;
  char line[200];
  snprintf(line, sizeof line, "matmul %s m=%d n=%d k=%d%s -> skinny (%d warps, %d tiles, cluster %d)", dt == F16 ? "f16" : "bf16", m, n, k,
           add ? " +add" : "", p.warps, p.tiles, p.ks);
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(line).second) fprintf(stderr, "[lightning-cuda] %s\n", line);
}

}  // namespace

bool skinny(Context& c, int dt, const void* x, const void* w, void* y, int m, int n, int k, const void* add) {
  if ((dt != F16 && dt != BF16) || m < SKINNY_MIN_M || m > SKINNY_MAX_M || n < 1 || k < 1 || k % 8 != 0) return false;
  if (c.ccMajor < 9 || (int64_t)n * k > MAX_WEIGHTS || !alignedTo(x, 16) || !alignedTo(w, 16) || !enabled()) return false;
  Plan p;
  if (!plan(c, m, n, k, p)) return false;
  debugNote(dt, m, n, k, add != nullptr, p);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const SkinnyArgs<T> a{(const T*)x, (const T*)w, (const T*)add, (T*)y, m, n, k, p.ks};
    if (p.warps == 8) {
      if (add) launchTiles<T, 8, true>(c, p.nt, a, p.tiles, p.smem);
      else launchTiles<T, 8, false>(c, p.nt, a, p.tiles, p.smem);
    } else {
      if (add) launchTiles<T, 4, true>(c, p.nt, a, p.tiles, p.smem);
      else launchTiles<T, 4, false>(c, p.nt, a, p.tiles, p.smem);
    }
  };
  if (dt == F16) run(__half{});
  else run(__nv_bfloat16{});
  return true;
}

}  // namespace lts
