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
// Sums are f32 (fmaf in a fixed order: deterministic, a graph replay gives the bits of an eager
// call); the output is rounded once to the storage dtype. The plain twin is cuBLAS (or the tiled
// kernel of matmul.cu), which LIGHTNING_CUDA_GEMV=0 selects. The limit of 4 rows is measured: on
// the H200 a 436M decode step took 0.93 ms with this kernel against 1.09 ms on cuBLAS at one row,
// but 1.20 against 1.07 at eight, where cuBLAS's tensor-core tiles win.
#include <cstring>

#include "device.cuh"
#include "gemv.cuh"

namespace lts {
namespace {

constexpr int WARPS = 8, THREADS = WARPS * 32;
constexpr int U = 2;  // 16-byte steps per row a lane loads before it computes
// Shared memory a block may take for x: two blocks still fit on an SM of 228 KB (bf16: K ≤ 12,600
// at M = 4); a larger x runs on cuBLAS.
constexpr size_t MAX_SMEM = 100 * 1024;

constexpr int pow2ceil(int v) { return v <= 1 ? 1 : 2 * pow2ceil((v + 1) / 2); }

// Rows of w per warp: more rows reuse each x element read from shared memory (and each conversion
// of it) for more FMAs; fewer leave more warps for small N.
constexpr int rowsPerWarp(int) { return 2; }

// 16 bytes of w: read once, so through the non-coherent path without a place in L1.
__device__ __forceinline__ uint4 loadStreaming(const uint4* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

__device__ __forceinline__ void prefetchL2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// The floats in one 32-bit word of T (two bf16 or f16 values, low half first, or one f32).
template <class T>
struct Words;
template <>
struct Words<float> {
  static constexpr int PER = 1;
  static __device__ __forceinline__ void unpack(uint32_t w, float* f) { f[0] = __uint_as_float(w); }
};
template <>
struct Words<__nv_bfloat16> {
  static constexpr int PER = 2;
  static __device__ __forceinline__ void unpack(uint32_t w, float* f) {
    f[0] = __uint_as_float(w << 16);  // a bf16 is the top half of the f32 of the same value
    f[1] = __uint_as_float(w & 0xffff0000u);
  }
};
template <>
struct Words<__half> {
  static constexpr int PER = 2;
  static __device__ __forceinline__ void unpack(uint32_t w, float* f) {
    __half2 h;
    memcpy(&h, &w, sizeof h);
    float2 v = __half22float2(h);
    f[0] = v.x, f[1] = v.y;
  }
};

// The 4·PER floats of a 16-byte pack.
template <class T>
__device__ __forceinline__ void unpack16(const uint4& p, float* f) {
  constexpr int PER = Words<T>::PER;
  Words<T>::unpack(p.x, f);
  Words<T>::unpack(p.y, f + PER);
  Words<T>::unpack(p.z, f + 2 * PER);
  Words<T>::unpack(p.w, f + 3 * PER);
}

// One halving step (and the rest by recursion): HALF values are kept of 2·HALF. A template
// rather than a loop, so that every index into v is a constant and v stays in registers.
template <int P, int HALF>
__device__ __forceinline__ void halvingStep(float (&v)[P], int lane, int& index) {
  if constexpr (HALF >= 1) {
    constexpr int o = 32 * HALF / P;  // 16 at the first step, then 8, 4…
    const bool upper = (lane & o) != 0;
#pragma unroll
    for (int i = 0; i < HALF; i++) {
      float send = upper ? v[i] : v[i + HALF];
      float keep = upper ? v[i + HALF] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
    if (upper) index += HALF;
    halvingStep<P, HALF / 2>(v, lane, index);
  }
}

// Sums each of the P values (a power of two ≤ 32) over the warp. Step by step, lanes `o` apart
// split the values still held in two halves, each keeping one half and adding its partner's copy
// of it. Returns the sum held by this lane and sets `index` to which of the P it is; the 32 / P
// lanes of a group hold the same one.
template <int P>
__device__ __forceinline__ float halvingSum(float (&v)[P], int lane, int& index) {
  static_assert(P >= 1 && P <= 32 && (P & (P - 1)) == 0, "P: a power of two up to 32");
  index = 0;
  halvingStep<P, P / 2>(v, lane, index);
#pragma unroll
  for (int o = 16 / P; o > 0; o >>= 1) v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
  return v[0];
}

// x: (M, k), w: (n, k), y: (M, n), all contiguous; k a multiple of EL; w 16-byte aligned; x too
// when xPacked. Dynamic shared memory: x (M·k elements of T), then WARPS·P floats of partial sums.
// Two blocks per SM: at most 128 registers a thread (M = 4 needs 64), 16 warps to keep loads in flight.
template <class T, int M>
__global__ void __launch_bounds__(THREADS, 2) gemvKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, int n, int k,
                                                         int ksplit, bool xPacked) {
  constexpr int EL = 16 / sizeof(T);  // elements per 16-byte pack
  constexpr int RW = rowsPerWarp(M);
  constexpr int C = RW * M;  // sums a warp owns per tile: (row r, x row m) at r·M + m
  constexpr int P = pow2ceil(C);
  extern __shared__ uint4 smem[];
  const int kv = k / EL;  // packs per row
  float* part = reinterpret_cast<float*>(smem + (size_t)M * kv);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int groups = WARPS / ksplit, g = warp / ksplit, s = warp % ksplit;
  const int per = (kv + ksplit - 1) / ksplit;
  const int vbeg = s * per, vend = min(kv, vbeg + per);
  const int tileRows = groups * RW;
  const int tiles = (n + tileRows - 1) / tileRows;

  // The first tile's w starts towards L2 while x is staged, so that the wait for x (from L2) and
  // the wait for w (from memory) overlap: most decode matmuls are a few MB, a latency or two long.
  if (blockIdx.x < tiles) {
    const int row0 = blockIdx.x * tileRows + g * RW;
#pragma unroll
    for (int r = 0; r < RW; r++) {
      const T* row = w + (int64_t)min(row0 + r, n - 1) * k;
      for (int v = vbeg + lane; v < vend && v < vbeg + 2 * 32 * U; v += 32) prefetchL2(row + v * EL);
    }
  }

  if (xPacked) {
    const uint4* xp = reinterpret_cast<const uint4*>(x);
    for (int i = threadIdx.x; i < M * kv; i += THREADS) smem[i] = xp[i];
  } else {
    T* xs = reinterpret_cast<T*>(smem);
    for (int i = threadIdx.x; i < M * k; i += THREADS) xs[i] = x[i];
  }
  __syncthreads();

  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int row0 = tile * tileRows + g * RW;
    // Rows past n read the last row (in bounds, never stored): no branch around the loads.
    const uint4* wr[RW];
#pragma unroll
    for (int r = 0; r < RW; r++) wr[r] = reinterpret_cast<const uint4*>(w + (int64_t)min(row0 + r, n - 1) * k);

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
    if (ksplit == 1) {
      const int row = row0 + index / M;
      if (holder && row < n) y[(int64_t)(index % M) * n + row] = fromF<T>(sum);
    } else {
      if (holder) part[warp * P + index] = sum;
      __syncthreads();
      // The slices of a row group are added in slice order: the same bits on every run.
      for (int t = threadIdx.x; t < groups * C; t += THREADS) {
        const int gg = t / C, i = t % C;
        float total = 0.0f;
        for (int ss = 0; ss < ksplit; ss++) total += part[(gg * ksplit + ss) * P + i];
        const int row = tile * tileRows + gg * RW + i / M;
        if (row < n) y[(int64_t)(i % M) * n + row] = fromF<T>(total);
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
template <class T, int M>
int configure() {
  static PerDevice<int> perSm;
  return perSm.get([] {
    LTS_CHECK(cudaFuncSetAttribute(gemvKernel<T, M>, cudaFuncAttributeMaxDynamicSharedMemorySize, smemLimit()), "gemv smem attribute");
    int b = 0;
    LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, gemvKernel<T, M>, THREADS, 0), "gemv occupancy");
    return std::max(1, b);
  });
}

template <class T, int M>
void launch(Context& c, const T* x, const T* w, T* y, int n, int k, size_t smem) {
  constexpr int EL = 16 / sizeof(T);
  constexpr int RW = rowsPerWarp(M);
  const int kv = k / EL;
  // Shared memory per block also counts the 1 KB the runtime reserves for each.
  const int resident = std::max(1, std::min(configure<T, M>(), smemPerSm() / (int)(smem + 1024)));
  const int64_t target = (int64_t)c.smCount * resident * WARPS;  // warps resident at once
  const int64_t rowGroups = (n + RW - 1) / RW;
  // Split K while the row groups alone leave warps idle, keeping each slice at least a warp wide.
  int ksplit = 1;
  while (ksplit < WARPS && rowGroups * ksplit < target && kv / (2 * ksplit) >= 32) ksplit *= 2;
  const int64_t tiles = (rowGroups + WARPS / ksplit - 1) / (WARPS / ksplit);
  const unsigned grid = (unsigned)std::min<int64_t>(tiles, (int64_t)c.smCount * resident);
  const bool xPacked = alignedTo(x, 16);
  gemvKernel<T, M><<<grid, THREADS, smem, c.stream>>>(x, w, y, n, k, ksplit, xPacked);
  LTS_CHECK(cudaGetLastError(), "gemv kernel launch");
}

template <class T>
void launchRows(Context& c, int m, const void* x, const void* w, void* y, int n, int k, size_t smem) {
  auto* xs = static_cast<const T*>(x);
  auto* ws = static_cast<const T*>(w);
  auto* ys = static_cast<T*>(y);
  switch (m) {
    case 1: return launch<T, 1>(c, xs, ws, ys, n, k, smem);
    case 2: return launch<T, 2>(c, xs, ws, ys, n, k, smem);
    case 3: return launch<T, 3>(c, xs, ws, ys, n, k, smem);
    case 4: return launch<T, 4>(c, xs, ws, ys, n, k, smem);
  }
  static_assert(GEMV_MAX_M == 4, "launchRows instantiates the kernel for every M up to GEMV_MAX_M");
}

// LIGHTNING_CUDA_GEMV: unset, empty or "1" uses the kernel, "0" leaves every matmul to cuBLAS
// (read at each call, as LIGHTNING_CUDA_STEP is, so a bench or test can compare the two).
bool enabled() {
  const char* v = getenv("LIGHTNING_CUDA_GEMV");
  if (!v || !*v || strcmp(v, "1") == 0) return true;
  if (strcmp(v, "0") == 0) return false;
  throw std::runtime_error(std::string("LIGHTNING_CUDA_GEMV: expected 0 or 1, got '") + v + "'");
}

}  // namespace

bool gemv(Context& c, int dt, const void* x, const void* w, void* y, int m, int n, int k) {
  if (dt != F32 && dt != F16 && dt != BF16) return false;
  if (!enabled() || m < 1 || m > GEMV_MAX_M || n < 1 || k < 1) return false;
  const int el = 16 / (int)dtypeSize(dt);
  // Every row of w must start on a 16-byte boundary for the pack loads; other k run on cuBLAS.
  if (k % el != 0 || !alignedTo(w, 16)) return false;
  const int p = pow2ceil(rowsPerWarp(m) * m);
  const size_t smem = (size_t)m * k * dtypeSize(dt) + (size_t)WARPS * p * sizeof(float);
  if (smem > (size_t)smemLimit()) return false;
  LTS_DISPATCH_FLOAT(dt, T, launchRows<T>(c, m, x, w, y, n, k, smem));
  return true;
}

}  // namespace lts
