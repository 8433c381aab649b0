// Fused row kernels: softmax and logSoftmax along an axis, softmax cross-entropy and its backward,
// SRMSNorm (x / sqrt(mean(x²) + eps)) and its backward. One block per row; f32 math, sums in f32
// tree order except where a row is a softmax normaliser (double, to stay near the CPU's float64).
// f16/bf16 have faster forms (below the f32 ones): cross-entropy in one online pass of f32 __expf
// over 16-byte packs, SRMSNorm with one warp per row held in registers. The f32 kernels stay the
// exact reference. Letters: N rows, V vocabulary, M row width.
#include <cfloat>

#include "device.cuh"

namespace lts {
namespace {

constexpr int THREADS = 256;

// x: (outer, n, inner) → y: same; one block per (outer, inner) line
template <class T>
__global__ void softmaxKernel(const T* x, T* y, int64_t n, int64_t inner, bool log) {
  __shared__ float sm[32];
  __shared__ double sd[32];
  int64_t line = blockIdx.x, o = line / inner, i = line % inner;
  const T* xs = x + o * n * inner + i;
  T* ys = y + o * n * inner + i;
  float m = -INFINITY;
  bool nan = false;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    float v = toF(xs[j * inner]);
    nan = nan || isnan(v);
    m = fmaxf(m, v);
  }
  m = blockMax(m, sm);
  nan = __syncthreads_or(nan);
  if (nan) m = NAN;
  double s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += exp((double)toF(xs[j * inner]) - m);
  s = blockSum(s, sd);
  double lse = log ? ::log(s) : 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    double z = (double)toF(xs[j * inner]) - m;
    ys[j * inner] = fromF<T>((float)(log ? z - lse : exp(z) / s));
  }
}

// Row log-sum-exp of logits (V), shared by forward and backward.
template <class T>
__device__ double rowLse(const T* x, int64_t V, float* sm, double* sd) {
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, toF(x[j]));
  m = blockMax(m, sm);
  double s = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += exp((double)toF(x[j]) - m);
  s = blockSum(s, sd);
  return m + ::log(s);
}

// logits: (N, V), labels: i32 (N) → loss: f32 (N)
template <class T>
__global__ void xentKernel(const T* x, const int* labels, float* loss, int64_t V, int ignore, DeviceError* err) {
  __shared__ float sm[32];
  __shared__ double sd[32];
  int64_t r = blockIdx.x;
  int label = labels[r];
  if (label == ignore) {
    if (threadIdx.x == 0) loss[r] = 0;
    return;
  }
  if (label < 0 || label >= V) {
    if (threadIdx.x == 0) reportError(err, ERR_SOFTMAX_CROSS_ENTROPY, (int)r, label, V);
    return;
  }
  double lse = rowLse(x + r * V, V, sm, sd);
  if (threadIdx.x == 0) loss[r] = (float)(lse - toF(x[r * V + label]));
}

// (logits (N, V), labels (N), dloss f32 (N)) → dlogits (N, V) = (softmax − onehot) · dloss
template <class T>
__global__ void xentBackwardKernel(const T* x, const int* labels, const float* g, T* dx, int64_t V, int ignore, DeviceError* err) {
  __shared__ float sm[32];
  __shared__ double sd[32];
  int64_t r = blockIdx.x;
  int label = labels[r];
  const T* xr = x + r * V;
  T* dr = dx + r * V;
  if (label == ignore || label < 0 || label >= V) {
    if (label != ignore && threadIdx.x == 0) reportError(err, ERR_SOFTMAX_CROSS_ENTROPY_BACKWARD, (int)r, label, V);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dr[j] = fromF<T>(0.0f);
    return;
  }
  double lse = rowLse(xr, V, sm, sd);
  double gr = g[r];
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
    dr[j] = fromF<T>((float)((exp((double)toF(xr[j]) - lse) - (j == label ? 1.0 : 0.0)) * gr));
}

// x: (rows, M) → y: (rows, M). Sums in double: the backward's difference of two nearly equal
// terms would otherwise magnify f32 rounding past the f32 tolerance.
template <class T>
__global__ void rmsNormKernel(const T* x, T* y, int64_t M, float eps) {
  __shared__ double sd[32];
  const T* xr = x + blockIdx.x * M;
  T* yr = y + blockIdx.x * M;
  double ss = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    double v = toF(xr[j]);
    ss += v * v;
  }
  ss = blockSum(ss, sd);
  double r = 1.0 / sqrt(ss / (double)M + eps);
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) yr[j] = fromF<T>((float)(toF(xr[j]) * r));
}

// (x, dy): (rows, M) → dx = r · (dy − x̂ · mean(x̂ · dy)), x̂ = x · r
template <class T>
__global__ void rmsNormBackwardKernel(const T* x, const T* dy, T* dx, int64_t M, float eps) {
  __shared__ double sd[32];
  const T* xr = x + blockIdx.x * M;
  const T* gr = dy + blockIdx.x * M;
  T* dr = dx + blockIdx.x * M;
  double ss = 0, dot = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    double v = toF(xr[j]);
    ss += v * v;
    dot += v * toF(gr[j]);
  }
  ss = blockSum(ss, sd);
  dot = blockSum(dot, sd);
  double r = 1.0 / sqrt(ss / (double)M + eps);
  double mean = dot * r / (double)M;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) dr[j] = fromF<T>((float)(r * (toF(gr[j]) - toF(xr[j]) * r * mean)));
}

// ---- f16/bf16 cross-entropy: one online pass, f32 __expf, 16-byte packs ----
//
// Each thread keeps a running max m and s = Σ exp(x − m) over its share of the row, rescaling s when
// m grows (once per pack of 8, rarely after the first few); the block then takes M = max m and
// S = Σ s · exp(m − M) in double, and lse = M + log S. m starts at −FLT_MAX rather than −∞, so a −∞
// logit adds exp(−∞) = 0 (never −∞ − (−∞)); NaN and +∞ still make the row NaN, as in the f32 kernel.
//
// Error, V = 50,272, |logits| ≤ 30 (so |x − M| ≤ 60), against the float64 reference:
// - x − m is exact up to 2⁻²⁴ relative (both are f16/bf16 values); __expf is ex2.approx(x · log₂e):
//   ≤ 2 ulp plus the rounding of its argument, |x − m| · 1.44 · 2⁻²⁴ relative. Weighted by the terms
//   themselves (a term at distance d weighs e^−d against the max term's 1), the relative error of S
//   from exp is ≤ ~(2 + max_d d·e^−d·V/(1 + V e^−d) · 1.44) · 2⁻²⁴ ≈ 1e-6 (worst d ≈ ln V ≈ 11).
// - sums of positive terms in f32: 8 per pack (≤ 7 ulp), then ≤ 25 packs per thread (V / 8 / 256):
//   ≤ ~32 · 2⁻²⁴ ≈ 2e-6 relative to S; the block combine is in double (exact enough).
// So log S is off by ≤ ~3e-6 absolute, the loss (≈ ln V ≈ 10.8 for an untrained row) by ≤ ~3e-7
// relative, well inside 1e-5; a confident row (loss ≪ 1) keeps the same ≤ 3e-6 absolute error.
// The backward's softmax exp(x − M − log S) has the same ≤ ~1e-5 relative error, far below the
// 2⁻⁸ (bf16) or 2⁻¹¹ (f16) of the stored gradient.

constexpr int XENT_THREADS = 256;
constexpr int XENT_UNROLL = 4;  // packs a thread loads before it uses them: 4 × 16 bytes in flight

struct OnlineLse {
  float m = -FLT_MAX, s = 0;
  template <class T, int K>
  __device__ __forceinline__ void add(const Pack<T, K>& q) {
    float v[K], pm = -FLT_MAX;
#pragma unroll
    for (int k = 0; k < K; k++) {
      v[k] = toF(q.v[k]);
      pm = fmaxf(pm, v[k]);
    }
    if (pm > m) {
      s *= __expf(m - pm);
      m = pm;
    }
    float ps = 0;
#pragma unroll
    for (int k = 0; k < K; k++) ps += __expf(v[k] - m);
    s += ps;
  }
};

// log S of a row (lse = m + log S, m the row max, returned through m). VEC: V % 8 == 0 and x
// 16-byte aligned; else one element at a time.
template <class T, bool VEC>
__device__ double rowLogSumHalf(const T* __restrict__ x, int V, float* sm, double* sd, float& m) {
  OnlineLse a;
  if (VEC) {
    const int np = V >> 3, step = blockDim.x;
    for (int p = threadIdx.x; p < np; p += XENT_UNROLL * step) {
      Pack<T, 8> q[XENT_UNROLL];
#pragma unroll
      for (int u = 0; u < XENT_UNROLL; u++)
        if (p + u * step < np) q[u] = loadPack<8>(x + 8 * (p + u * step));
#pragma unroll
      for (int u = 0; u < XENT_UNROLL; u++)
        if (p + u * step < np) a.add(q[u]);
    }
  } else {
    for (int j = threadIdx.x; j < V; j += blockDim.x) a.add(Pack<T, 1>{{x[j]}});
  }
  m = blockMax(a.m, sm);
  double s = blockSum((double)(a.s * expf(a.m - m)), sd);
  return ::log(s);
}

template <class T>
__device__ __forceinline__ Pack<T, 8> zeroPack() {
  Pack<T, 8> z;
#pragma unroll
  for (int k = 0; k < 8; k++) z.v[k] = fromF<T>(0.0f);
  return z;
}

// logits: (N, V) f16/bf16, labels: i32 (N) → loss: f32 (N)
template <class T, bool VEC>
__global__ void __launch_bounds__(XENT_THREADS) xentHalfKernel(const T* __restrict__ x, const int* __restrict__ labels, float* __restrict__ loss, int V, int ignore, DeviceError* err) {
  __shared__ float sm[32];
  __shared__ double sd[32];
  int64_t r = blockIdx.x;
  int label = labels[r];
  if (label == ignore) {
    if (threadIdx.x == 0) loss[r] = 0;
    return;
  }
  if (label < 0 || label >= V) {
    if (threadIdx.x == 0) reportError(err, ERR_SOFTMAX_CROSS_ENTROPY, (int)r, label, V);
    return;
  }
  const T* xr = x + r * V;
  float m;
  double logS = rowLogSumHalf<T, VEC>(xr, V, sm, sd, m);
  if (threadIdx.x == 0) loss[r] = (float)((double)m + logS - toF(xr[label]));
}

// (logits (N, V), labels (N), dloss f32 (N)) → dlogits (N, V) = (softmax − onehot) · dloss, f32 math
template <class T, bool VEC>
__global__ void __launch_bounds__(XENT_THREADS) xentBackwardHalfKernel(const T* __restrict__ x, const int* __restrict__ labels, const float* __restrict__ g, T* __restrict__ dx, int V, int ignore, DeviceError* err) {
  __shared__ float sm[32];
  __shared__ double sd[32];
  int64_t r = blockIdx.x;
  int label = labels[r];
  const T* xr = x + r * V;
  T* dr = dx + r * V;
  const int np = V >> 3, step = blockDim.x;
  if (label == ignore || label < 0 || label >= V) {
    if (label != ignore && threadIdx.x == 0) reportError(err, ERR_SOFTMAX_CROSS_ENTROPY_BACKWARD, (int)r, label, V);
    if (VEC) {
      const Pack<T, 8> z = zeroPack<T>();
      for (int p = threadIdx.x; p < np; p += step) storePack(dr + 8 * p, z);
    } else {
      for (int j = threadIdx.x; j < V; j += step) dr[j] = fromF<T>(0.0f);
    }
    return;
  }
  float m;
  const float logS = (float)rowLogSumHalf<T, VEC>(xr, V, sm, sd, m);
  const float gr = g[r];
  // p = exp((x − m) − log S): x − m is exact-ish and log S ≤ ln V, so the f32 argument loses little.
  if (VEC) {
    for (int p = threadIdx.x; p < np; p += XENT_UNROLL * step) {
      Pack<T, 8> q[XENT_UNROLL];
#pragma unroll
      for (int u = 0; u < XENT_UNROLL; u++)
        if (p + u * step < np) q[u] = loadPack<8>(xr + 8 * (p + u * step));
#pragma unroll
      for (int u = 0; u < XENT_UNROLL; u++) {
        const int pp = p + u * step;
        if (pp < np) {
          Pack<T, 8> o;
#pragma unroll
          for (int k = 0; k < 8; k++) {
            float d = __expf((toF(q[u].v[k]) - m) - logS) - (8 * pp + k == label ? 1.0f : 0.0f);
            o.v[k] = fromF<T>(d * gr);
          }
          storePack(dr + 8 * pp, o);
        }
      }
    }
  } else {
    for (int j = threadIdx.x; j < V; j += step)
      dr[j] = fromF<T>((__expf((toF(xr[j]) - m) - logS) - (j == label ? 1.0f : 0.0f)) * gr);
  }
}

// The f16/bf16 cross-entropy (backward: p = [logits, labels, dloss, dlogits]): packed where V % 8 == 0
// and the logits (and dlogits) are 16-byte aligned, so that every row is.
template <class T>
void launchXentHalf(Context& c, const Args& a, int64_t N, int V, int ignore, bool backward) {
  bool vec = V % 8 == 0 && alignedTo(a.ptr<void>(0), 16) && (!backward || alignedTo(a.ptr<void>(3), 16));
  if (backward) {
    auto k = vec ? xentBackwardHalfKernel<T, true> : xentBackwardHalfKernel<T, false>;
    k<<<(unsigned)N, XENT_THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<int>(1), a.ptr<float>(2), a.ptr<T>(3), V, ignore, c.error);
  } else {
    auto k = vec ? xentHalfKernel<T, true> : xentHalfKernel<T, false>;
    k<<<(unsigned)N, XENT_THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<int>(1), a.ptr<float>(2), V, ignore, c.error);
  }
}

// ---- f16/bf16 SRMSNorm: one warp per row, the row in registers ----
//
// For M % 8 == 0, M ≤ 256 · P and 16-byte aligned pointers: lane l holds packs l, l + 32, … (P of
// them), so x and dy are read once and the result written once. Eight rows (warps) per block.
//
// Sums: a product of two f16 (11-bit significands) or bf16 (8-bit) values is exact in f32, so each
// pack's 8 products are summed in f32 (≤ 7 · 2⁻²⁴ of that pack's Σ|terms|) and the packs in double,
// across the warp too: the mean square and x · dy are then within ~2⁻²¹ of Σ|terms|, which moves the
// backward's r · (dy − x̂ · mean(x̂ · dy)) — the cancellation the block kernels above keep in double
// for f32 outputs — by ~1e-6 of r · |dy|, far below the 2⁻⁹ (bf16) / 2⁻¹² (f16) of the stored result.
// The outputs are f32 products with coefficients rounded once from double (2⁻²⁴ each). Doing it all
// in double, as the block kernels do, costs f32↔f64 conversions (16 per clock per SM on sm_90) that
// are as slow as the memory at this size, and registers that M = 4,096 does not have.

// Makes the compiler forget what it knows of a pack's values, so that it keeps the 16 packed bytes
// live rather than the 8 floats converted from them (which doubles the registers a row takes).
template <class T>
__device__ __forceinline__ void keepPacked(Pack<T, 8>& q) {
  unsigned* w = reinterpret_cast<unsigned*>(&q);
  asm volatile("" : "+r"(w[0]), "+r"(w[1]), "+r"(w[2]), "+r"(w[3]));
}

constexpr int NORM_WARPS = 8;

template <class T, int P>
__global__ void __launch_bounds__(32 * NORM_WARPS) rmsNormWarpKernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int M, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = (int64_t)blockIdx.x * NORM_WARPS + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp leaves together
  const T* xr = x + row * M;
  T* yr = y + row * M;
  const int np = M >> 3;
  Pack<T, 8> q[P];
#pragma unroll
  for (int k = 0; k < P; k++)
    if (lane + 32 * k < np) q[k] = loadPack<8>(xr + 8 * (lane + 32 * k));
  double ss = 0;
#pragma unroll
  for (int k = 0; k < P; k++)
    if (lane + 32 * k < np) {
      float s = 0;
#pragma unroll
      for (int e = 0; e < 8; e++) {
        float v = toF(q[k].v[e]);
        s = fmaf(v, v, s);
      }
      ss += s;
    }
  ss = warpSum(ss);
  const float r = (float)(1.0 / sqrt(ss / (double)M + eps));
#pragma unroll
  for (int k = 0; k < P; k++)
    if (lane + 32 * k < np) {
      keepPacked(q[k]);
      Pack<T, 8> o;
#pragma unroll
      for (int e = 0; e < 8; e++) o.v[e] = fromF<T>(toF(q[k].v[e]) * r);
      storePack(yr + 8 * (lane + 32 * k), o);
    }
}

// dx = r · (dy − x̂ · mean(x̂ · dy)) = a1 · dy − a2 · x, a1 = r, a2 = r² · mean(x̂ · dy).
template <class T, int P>
__global__ void __launch_bounds__(32 * NORM_WARPS) rmsNormBackwardWarpKernel(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, int64_t rows, int M, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = (int64_t)blockIdx.x * NORM_WARPS + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* xr = x + row * M;
  const T* gr = dy + row * M;
  T* dr = dx + row * M;
  const int np = M >> 3;
  Pack<T, 8> qx[P], qg[P];
#pragma unroll
  for (int k = 0; k < P; k++)
    if (lane + 32 * k < np) {
      qx[k] = loadPack<8>(xr + 8 * (lane + 32 * k));
      qg[k] = loadPack<8>(gr + 8 * (lane + 32 * k));
    }
  double ss = 0, dot = 0;
#pragma unroll
  for (int k = 0; k < P; k++)
    if (lane + 32 * k < np) {
      float s = 0, d = 0;
#pragma unroll
      for (int e = 0; e < 8; e++) {
        float v = toF(qx[k].v[e]);
        s = fmaf(v, v, s);
        d = fmaf(v, toF(qg[k].v[e]), d);
      }
      ss += s;
      dot += d;
    }
  ss = warpSum(ss);
  dot = warpSum(dot);
  const double r = 1.0 / sqrt(ss / (double)M + eps);
  const double mean = dot * r / (double)M;  // mean(x̂ · dy)
  const float a1 = (float)r, a2 = (float)(r * r * mean);
#pragma unroll
  for (int k = 0; k < P; k++)
    if (lane + 32 * k < np) {
      keepPacked(qx[k]);
      keepPacked(qg[k]);
      Pack<T, 8> o;
#pragma unroll
      for (int e = 0; e < 8; e++) o.v[e] = fromF<T>(fmaf(-a2, toF(qx[k].v[e]), a1 * toF(qg[k].v[e])));
      storePack(dr + 8 * (lane + 32 * k), o);
    }
}

// Packs per lane for a warp-per-row SRMSNorm of width M, or 0 where the block kernels run.
inline int normPacks(int64_t M) {
  if (M % 8 != 0 || M > 4096) return 0;
  return M <= 256 ? 1 : M <= 1024 ? 4 : M <= 2048 ? 8 : 16;
}

template <class T>
void launchRmsNormWarp(Context& c, const Args& a, int P, int64_t rows, int M, float eps) {
  unsigned blocks = (unsigned)((rows + NORM_WARPS - 1) / NORM_WARPS), threads = 32 * NORM_WARPS;
  const T* x = a.ptr<T>(0);
#define LTS_NORM_CASE(PP)                                                                                                         \
  case PP:                                                                                                                        \
    if (a.p.size() == 2) rmsNormWarpKernel<T, PP><<<blocks, threads, 0, c.stream>>>(x, a.ptr<T>(1), rows, M, eps);               \
    else rmsNormBackwardWarpKernel<T, PP><<<blocks, threads, 0, c.stream>>>(x, a.ptr<T>(1), a.ptr<T>(2), rows, M, eps);          \
    break;
  switch (P) {
    LTS_NORM_CASE(1)
    LTS_NORM_CASE(4)
    LTS_NORM_CASE(8)
    LTS_NORM_CASE(16)
    default: throw std::runtime_error("rmsNorm: no warp kernel for " + std::to_string(P) + " packs per lane");
  }
#undef LTS_NORM_CASE
}

// p: [x, y]; i: [dtype, outer, n, inner, log]
void softmax(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t outer = a.i.at(1), n = a.i.at(2), inner = a.i.at(3);
  bool log = a.i.at(4) != 0;
  if (outer * inner * n == 0) return;
  LTS_DISPATCH_FLOAT(dt, T, softmaxKernel<T><<<(unsigned)(outer * inner), THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), n, inner, log));
  LTS_CHECK(cudaGetLastError(), "softmax kernel launch");
}

// p: [logits, labels, loss]; i: [dtype, N, V, ignoreIndex]
void xent(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t N = a.i.at(1), V = a.i.at(2);
  int ignore = (int)a.i.at(3);
  if (N == 0) return;
  if (dt == F16) launchXentHalf<__half>(c, a, N, (int)V, ignore, false);
  else if (dt == BF16) launchXentHalf<__nv_bfloat16>(c, a, N, (int)V, ignore, false);
  else LTS_DISPATCH_FLOAT(dt, T, xentKernel<T><<<(unsigned)N, THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<int>(1), a.ptr<float>(2), V, ignore, c.error));
  LTS_CHECK(cudaGetLastError(), "softmaxCrossEntropy kernel launch");
}

// p: [logits, labels, dloss, dlogits]; i: [dtype, N, V, ignoreIndex]
void xentBackward(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t N = a.i.at(1), V = a.i.at(2);
  int ignore = (int)a.i.at(3);
  if (N == 0) return;
  if (dt == F16) launchXentHalf<__half>(c, a, N, (int)V, ignore, true);
  else if (dt == BF16) launchXentHalf<__nv_bfloat16>(c, a, N, (int)V, ignore, true);
  else LTS_DISPATCH_FLOAT(dt, T, xentBackwardKernel<T><<<(unsigned)N, THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<int>(1), a.ptr<float>(2), a.ptr<T>(3), V, ignore, c.error));
  LTS_CHECK(cudaGetLastError(), "softmaxCrossEntropyBackward kernel launch");
}

// p: [x, y] or [x, dy, dx]; i: [dtype, rows, M]; f: [eps]
void rmsNorm(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t rows = a.i.at(1), M = a.i.at(2);
  float eps = (float)a.f.at(0);
  if (rows * M == 0) return;
  int P = dt == F16 || dt == BF16 ? normPacks(M) : 0;
  bool aligned = true;
  for (size_t j = 0; j < a.p.size(); j++) aligned = aligned && alignedTo(a.ptr<void>(j), 16);
  if (P > 0 && aligned) {
    if (dt == F16) launchRmsNormWarp<__half>(c, a, P, rows, (int)M, eps);
    else launchRmsNormWarp<__nv_bfloat16>(c, a, P, rows, (int)M, eps);
  } else if (a.p.size() == 2) {
    LTS_DISPATCH_FLOAT(dt, T, rmsNormKernel<T><<<(unsigned)rows, THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), M, eps));
  } else {
    LTS_DISPATCH_FLOAT(dt, T, rmsNormBackwardKernel<T><<<(unsigned)rows, THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), M, eps));
  }
  LTS_CHECK(cudaGetLastError(), "rmsNorm kernel launch");
}

}  // namespace

void registerNn(Registry& r) {
  r["softmax"] = softmax;
  r["xent"] = xent;
  r["xentBackward"] = xentBackward;
  r["rmsNorm"] = rmsNorm;
}

}  // namespace lts
