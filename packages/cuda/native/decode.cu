// Fused kernels of a TNL decode step (one token per row), each in place of a chain of small ops:
//   addRmsNorm:  (x, y) → s = x + y, n = SRMSNorm(s)          (add, rmsNorm)
//   rmsNormGate: (o, u) → SRMSNorm(o) ⊙ u                       (rmsNorm, mul)
//   splitQkvu:   qkvu → q, k (φ, LRPE), v, u                    (4 slices, 2 φ, the LRPE chain)
// and two that take the SRMSNorm before a product out of it, as a factor of each output row
// (splitQkvu of x·Wᵀ for a raw x, and gluNorm): these round at other places than the chain.
// Each gives the bits of its chain as this backend runs it (elementwise.cu, nn.cu): the same f32
// operations in the same order, each rounded to the storage dtype where the chain stores a tensor,
// and SRMSNorm's sum of squares in the order of the rmsNorm kernel the chain would have run (one
// warp per row over 8-element packs for f16/bf16 with M % 8 == 0 and M ≤ 4,096, else 256 threads
// per row in double). Products and sums that the chain computes in separate kernels are written
// with __fmul_rn / __fadd_rn, so the compiler cannot contract them into an FMA the chain lacks.
// rmsNormGate and the folded splitQkvu launch with programmatic dependent launch (gemv_device.cuh
// launchPdl): each waits for the kernel before at entry, then lets the kernel after start (a decode
// layer's state step loads its state while the split finishes).
// Letters: B rows, H heads, hd head dim, hid = H·hd, M row width.
#include "device.cuh"
#include "gemv_device.cuh"
#include "gemv_split.cuh"

namespace lts {
namespace {

constexpr int BLOCK_THREADS = 256;  // nn.cu's block-per-row SRMSNorm
constexpr int SPLIT_THREADS = 256;

// The two 16-bit dtypes (the folded norms' kernels take no others).
#define LTS_DISPATCH_HALF(dt, T, ...)                                                     \
  switch (dt) {                                                                           \
    case ::lts::F16: { using T = __half; __VA_ARGS__; break; }                             \
    case ::lts::BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; }                     \
    default: throw std::runtime_error("expected f16 or bf16, got dtype code " + std::to_string(dt)); \
  }

// Whether nn.cu's rmsNorm runs its warp-per-row kernel for this dtype and width (normPacks > 0).
inline bool warpOrder(int dt, int64_t M) { return (dt == F16 || dt == BF16) && M % 8 == 0 && M <= 4096; }

// Eight elements from p as floats: one 16-byte load when VEC (p aligned), else one at a time.
template <bool VEC, class T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  if (VEC) {
    Pack<T, 8> q = loadPack<8>(p);
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = toF(q.v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = toF(p[e]);
  }
}

template <bool VEC, class T>
__device__ __forceinline__ void store8(T* p, const float (&v)[8]) {
  if (VEC) {
    Pack<T, 8> q;
#pragma unroll
    for (int e = 0; e < 8; e++) q.v[e] = fromF<T>(v[e]);
    storePack<8>(p, q);
  } else {
#pragma unroll
    for (int e = 0; e < 8; e++) p[e] = fromF<T>(v[e]);
  }
}

// 1/√(mean(row²) + eps) as nn.cu's rmsNormWarpKernel computes it: lane l sums packs l, l + 32, …
// (8 products in f32 each, the packs in double), then the warp adds its lanes.
template <bool VEC, class T>
__device__ __forceinline__ float warpInvRms(const T* row, int M, float eps) {
  const int lane = threadIdx.x & 31, np = M >> 3;
  double ss = 0;
  for (int p = lane; p < np; p += 32) {
    float v[8], s = 0;
    load8<VEC>(row + 8 * p, v);
#pragma unroll
    for (int e = 0; e < 8; e++) s = fmaf(v[e], v[e], s);
    ss += s;
  }
  ss = warpSum(ss);
  return (float)(1.0 / sqrt(ss / (double)M + eps));
}

// The same as nn.cu's rmsNormKernel: thread t sums elements t, t + 256, … in double, then the block.
template <class T>
__device__ __forceinline__ double blockInvRms(const T* row, int64_t M, float eps, double* sd) {
  double ss = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    double v = toF(row[j]);
    ss += v * v;
  }
  ss = blockSum(ss, sd);
  return 1.0 / sqrt(ss / (double)M + eps);
}

// x, y: (rows, M) → s = x + y, n = SRMSNorm(s): (rows, M). One warp per row. Each lane reads back
// only the elements of s it wrote, so no barrier is needed between the passes.
template <bool VEC, class T>
__global__ void __launch_bounds__(32) addRmsNormWarpKernel(const T* __restrict__ x, const T* __restrict__ y, T* s, T* __restrict__ n, int M, float eps) {
  const int64_t off = (int64_t)blockIdx.x * M;
  const int lane = threadIdx.x, np = M >> 3;
  for (int p = lane; p < np; p += 32) {
    float a[8], b[8];
    load8<VEC>(x + off + 8 * p, a);
    load8<VEC>(y + off + 8 * p, b);
#pragma unroll
    for (int e = 0; e < 8; e++) a[e] = __fadd_rn(a[e], b[e]);
    store8<VEC>(s + off + 8 * p, a);
  }
  const float r = warpInvRms<VEC>(s + off, M, eps);
  for (int p = lane; p < np; p += 32) {
    float v[8];
    load8<VEC>(s + off + 8 * p, v);
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = __fmul_rn(v[e], r);
    store8<VEC>(n + off + 8 * p, v);
  }
}

template <class T>
__global__ void __launch_bounds__(BLOCK_THREADS) addRmsNormBlockKernel(const T* __restrict__ x, const T* __restrict__ y, T* s, T* __restrict__ n, int64_t M, float eps) {
  __shared__ double sd[32];
  const int64_t off = (int64_t)blockIdx.x * M;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) s[off + j] = fromF<T>(__fadd_rn(toF(x[off + j]), toF(y[off + j])));
  const double r = blockInvRms(s + off, M, eps, sd);
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) n[off + j] = fromF<T>((float)(toF(s[off + j]) * r));
}

// o, u: (rows, M) → SRMSNorm(o) ⊙ u, the norm rounded to T before the product (as the chain stores it).
template <bool VEC, class T>
__global__ void __launch_bounds__(32) rmsNormGateWarpKernel(const T* __restrict__ o, const T* __restrict__ u, T* __restrict__ out, int M, float eps) {
  waitForPrevious();
  startNext();
  const int64_t off = (int64_t)blockIdx.x * M;
  const int lane = threadIdx.x, np = M >> 3;
  const float r = warpInvRms<VEC>(o + off, M, eps);
  for (int p = lane; p < np; p += 32) {
    float v[8], g[8];
    load8<VEC>(o + off + 8 * p, v);
    load8<VEC>(u + off + 8 * p, g);
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = __fmul_rn(toF(fromF<T>(__fmul_rn(v[e], r))), g[e]);
    store8<VEC>(out + off + 8 * p, v);
  }
}

template <class T>
__global__ void __launch_bounds__(BLOCK_THREADS) rmsNormGateBlockKernel(const T* __restrict__ o, const T* __restrict__ u, T* __restrict__ out, int64_t M, float eps) {
  __shared__ double sd[32];
  waitForPrevious();
  startNext();
  const int64_t off = (int64_t)blockIdx.x * M;
  const double r = blockInvRms(o + off, M, eps, sd);
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const T normed = fromF<T>((float)(toF(o[off + j]) * r));
    out[off + j] = fromF<T>(__fmul_rn(toF(normed), toF(u[off + j])));
  }
}

// qkvu: (B, 4·hid) → q, k: (B, H, D), v: (B, H, hd), u: (B, hid); with LRPE (theta: (H, hd) of
// dtype thDt, positions: f32 (B)) D = 2·hd and q = [a ⊙ cos(θp), a ⊙ sin(θp)], else D = hd.
// One thread per (row, channel c = h·hd + d): it writes q, k (both halves), v and u there.
// `scale` multiplies the row's four values first (1 leaves them as they are).
template <class T>
__device__ __forceinline__ void splitChannel(const T* __restrict__ row, int b, int c, float scale, const void* __restrict__ theta, int thDt, const float* __restrict__ positions,
                                             T* __restrict__ q, T* __restrict__ k, T* __restrict__ v, T* __restrict__ u, int H, int hd, int act, bool scaled) {
  const int hid = H * hd;
  const int64_t i = (int64_t)b * hid + c;
  const auto at = [&](int slice) { return scaled ? fromF<T>(__fmul_rn(toF(row[slice * hid + c]), scale)) : row[slice * hid + c]; };
  const T aq = activate(at(0), act), ak = activate(at(1), act);
  v[i] = at(2);
  u[i] = at(3);
  if (theta == nullptr) {
    q[i] = aq;
    k[i] = ak;
    return;
  }
  const int h = c / hd, d = c % hd;
  const int64_t o = ((int64_t)b * H + h) * 2 * hd + d;
  lrpePair(aq, theta, thDt, c, positions[b], q[o], q[o + hd]);
  lrpePair(ak, theta, thDt, c, positions[b], k[o], k[o + hd]);
}

template <class T>
__global__ void __launch_bounds__(SPLIT_THREADS) splitQkvuKernel(const T* __restrict__ x, const void* __restrict__ theta, int thDt, const float* __restrict__ positions,
                                                                 T* __restrict__ q, T* __restrict__ k, T* __restrict__ v, T* __restrict__ u, int B, int H, int hd, int act) {
  const int hid = H * hd;
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (int64_t)B * hid) return;
  const int b = (int)(i / hid), c = (int)(i % hid);
  splitChannel(x + (int64_t)b * 4 * hid, b, c, 1.0f, theta, thDt, positions, q, k, v, u, H, hd, act, false);
}

// 1/rms(row) for the whole block: warp 0 computes it in the rmsNorm warp kernel's order (M % 8 == 0,
// M ≤ 4,096) and hands it to the others through shared memory.
template <bool VEC, class T>
__device__ __forceinline__ float rowInvRms(const T* row, int M, float eps) {
  __shared__ float factor;
  if (threadIdx.x < 32) {
    const float s = warpInvRms<VEC>(row, M, eps);
    if (threadIdx.x == 0) factor = s;
  }
  __syncthreads();
  return factor;
}

// splitQkvu of x·Wᵀ for a raw (not normed) x: (B, M) — qkvuProjection's SRMSNorm folded out of the
// product, which is linear in each row of x: row b's four values times 1/rms(x_b) (the product
// rounded before the scale, where the chain rounds the normed row) before φ and LRPE. Block (·, b)
// is row b.
template <bool VEC, class T>
__global__ void __launch_bounds__(SPLIT_THREADS) splitQkvuNormKernel(const T* __restrict__ x, const T* __restrict__ h, int M, float eps, const void* __restrict__ theta, int thDt,
                                                                     const float* __restrict__ positions, T* __restrict__ q, T* __restrict__ k, T* __restrict__ v, T* __restrict__ u, int H,
                                                                     int hd, int act) {
  waitForPrevious();
  startNext();
  const int b = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
  const float scale = rowInvRms<VEC>(h + (int64_t)b * M, M, eps);
  if (c < H * hd) splitChannel(x + (int64_t)b * 4 * H * hd, b, c, scale, theta, thDt, positions, q, k, v, u, H, hd, act, true);
}

// a, b: (rows, N), the products x·W1ᵀ and x·W2ᵀ of a raw x: (rows, M) → g = (s·a) ⊙ (s·b), s =
// 1/rms(x row): the GLU of fusedLinear with its SRMSNorm folded out of the two products (each is
// linear in its row of x). Block (·, r) is row r.
template <bool VEC, class T>
__global__ void __launch_bounds__(SPLIT_THREADS) gluNormKernel(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ x, T* __restrict__ g, int N, int M, float eps) {
  const int r = blockIdx.y, n = blockIdx.x * blockDim.x + threadIdx.x;
  const float s = rowInvRms<VEC>(x + (int64_t)r * M, M, eps);
  if (n >= N) return;
  const int64_t i = (int64_t)r * N + n;
  g[i] = fromF<T>(__fmul_rn(__fmul_rn(toF(a[i]), s), __fmul_rn(toF(b[i]), s)));
}

bool allAligned(const Args& a, size_t count) {
  for (size_t j = 0; j < count; j++)
    if (!alignedTo(a.ptr<void>(j), 16)) return false;
  return true;
}

// p: [x, y, s, n]; i: [dtype, rows, M]; f: [eps]
void addRmsNorm(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t rows = a.i.at(1), M = a.i.at(2);
  float eps = (float)a.f.at(0);
  if (rows * M == 0) return;
  if (warpOrder(dt, M)) {
    const bool vec = allAligned(a, 4);
    LTS_DISPATCH_FLOAT(dt, T, {
      auto k = vec ? addRmsNormWarpKernel<true, T> : addRmsNormWarpKernel<false, T>;
      k<<<(unsigned)rows, 32, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<T>(3), (int)M, eps);
    });
  } else {
    LTS_DISPATCH_FLOAT(dt, T, addRmsNormBlockKernel<T><<<(unsigned)rows, BLOCK_THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<T>(3), M, eps));
  }
  LTS_CHECK(cudaGetLastError(), "addRmsNorm kernel launch");
}

// p: [o, u, y]; i: [dtype, rows, M]; f: [eps]
void rmsNormGate(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t rows = a.i.at(1), M = a.i.at(2);
  float eps = (float)a.f.at(0);
  if (rows * M == 0) return;
  if (warpOrder(dt, M)) {
    const bool vec = allAligned(a, 3);
    LTS_DISPATCH_FLOAT(dt, T, {
      auto k = vec ? rmsNormGateWarpKernel<true, T> : rmsNormGateWarpKernel<false, T>;
      launchPdl(c, k, dim3((unsigned)rows), dim3(32), 0, "rmsNormGate kernel launch", a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), (int)M, eps);
    });
  } else {
    LTS_DISPATCH_FLOAT(dt, T,
                       launchPdl(c, rmsNormGateBlockKernel<T>, dim3((unsigned)rows), dim3(BLOCK_THREADS), 0, "rmsNormGate kernel launch", a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), M, eps));
  }
}

// p: [qkvu, theta (0 without LRPE), positions (0 without LRPE), q, k, v, u[, x]];
// i: [dtype, theta dtype (−1 without LRPE), B, H, hd, activation (QkvActivation)[, M]]; f: [[eps]].
// With x (B, M) and M > 0, qkvu is x·Wᵀ of a raw x and each row is scaled by 1/rms(x row) first
// (splitQkvuNormKernel; f16/bf16 with M % 8 == 0 and M ≤ 4,096 only).
void splitQkvu(Context& c, const Args& a) {
  int dt = (int)a.i.at(0), thDt = (int)a.i.at(1);
  int64_t B = a.i.at(2), H = a.i.at(3), hd = a.i.at(4);
  int act = (int)a.i.at(5);
  const int64_t M = a.i.size() > 6 ? a.i.at(6) : 0;
  if (act < 0 || act >= kQkvActivationCount) throw std::runtime_error("splitQkvu: unknown activation code " + std::to_string(act));
  int64_t n = B * H * hd;
  if (n == 0) return;
  if (n > INT32_MAX) throw std::runtime_error("splitQkvu: more than 2^31 channels");
  const void* theta = thDt >= 0 ? a.ptr<void>(1) : nullptr;
  if (M > 0) {
    if (!warpOrder(dt, M)) throw std::runtime_error("splitQkvu: a folded norm needs f16/bf16 rows of a multiple of 8 elements up to 4,096, got dtype " + std::to_string(dt) + " and M " + std::to_string(M));
    if (B > 65535) throw std::runtime_error("splitQkvu: a folded norm takes at most 65,535 rows");
    const bool vec = alignedTo(a.ptr<void>(7), 16);
    const dim3 grid((unsigned)((H * hd + SPLIT_THREADS - 1) / SPLIT_THREADS), (unsigned)B);
    const float eps = (float)a.f.at(0);
    LTS_DISPATCH_HALF(dt, T, {
      auto k = vec ? splitQkvuNormKernel<true, T> : splitQkvuNormKernel<false, T>;
      launchPdl(c, k, grid, dim3(SPLIT_THREADS), 0, "splitQkvu kernel launch", a.ptr<T>(0), a.ptr<T>(7), (int)M, eps, theta, thDt, a.ptr<float>(2), a.ptr<T>(3), a.ptr<T>(4), a.ptr<T>(5),
                a.ptr<T>(6), (int)H, (int)hd, act);
    });
  } else {
    LTS_DISPATCH_FLOAT(dt, T,
                       splitQkvuKernel<T><<<blocksFor(n, SPLIT_THREADS, INT32_MAX), SPLIT_THREADS, 0, c.stream>>>(
                           a.ptr<T>(0), theta, thDt, a.ptr<float>(2), a.ptr<T>(3), a.ptr<T>(4), a.ptr<T>(5), a.ptr<T>(6), (int)B, (int)H, (int)hd, act));
  }
  LTS_CHECK(cudaGetLastError(), "splitQkvu kernel launch");
}

// p: [a, b, x, g]; i: [dtype, rows, N, M]; f: [eps]. g = (a / rms(x)) ⊙ (b / rms(x)) by rows
// (gluNormKernel): f16/bf16 with M % 8 == 0 and M ≤ 4,096.
void gluNorm(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t rows = a.i.at(1), N = a.i.at(2), M = a.i.at(3);
  if (rows * N == 0) return;
  if (!warpOrder(dt, M)) throw std::runtime_error("gluNorm: needs f16/bf16 rows of a multiple of 8 elements up to 4,096, got dtype " + std::to_string(dt) + " and M " + std::to_string(M));
  if (rows > 65535 || N > INT32_MAX) throw std::runtime_error("gluNorm: at most 65,535 rows of 2^31 elements");
  const bool vec = alignedTo(a.ptr<void>(2), 16);
  const dim3 grid((unsigned)((N + SPLIT_THREADS - 1) / SPLIT_THREADS), (unsigned)rows);
  const float eps = (float)a.f.at(0);
  LTS_DISPATCH_HALF(dt, T, {
    auto k = vec ? gluNormKernel<true, T> : gluNormKernel<false, T>;
    k<<<grid, SPLIT_THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<T>(3), (int)N, (int)M, eps);
  });
  LTS_CHECK(cudaGetLastError(), "gluNorm kernel launch");
}

}  // namespace

void registerDecode(Registry& r) {
  r["addRmsNorm"] = addRmsNorm;
  r["rmsNormGate"] = rmsNormGate;
  r["splitQkvu"] = splitQkvu;
  r["gluNorm"] = gluNorm;
}

}  // namespace lts
