// Optimizer updates: AdamW (PyTorch's form, as packages/autograd/src/optim/adamw.ts) in one pass
// over a parameter, its gradient and its two moments, with the new parameter also written rounded
// to bf16/f16 when the parameter is the f32 master copy of a half-precision weight.
//
// Every element does the ops of the decomposition (packages/tensor/src/api/decompositions.ts), in
// its order, each rounded to f32 (__fmul_rn & co. keep nvcc from contracting them into FMAs), with
// the scalars rounded to f32 once on the host as the CPU's scalar operands are. The CPU computes
// each op in float64 and rounds it to f32, which for +, −, ×, ÷ and √ of f32 values is the
// correctly rounded f32 result, so the two agree to the bit on finite values (subnormals
// included: the build uses neither --use_fast_math nor -ftz). Only NaNs may differ in their bits
// (payload, sign), never in being NaN. The bf16/f16 copy rounds to nearest even, as the CPU's cast.
// N: elements.
#include "device.cuh"

namespace lts {
namespace {

constexpr int THREADS = 256;

// The f32 scalars of one update (adamwScalars in packages/tensor/src/api/ops.ts).
struct AdamwScalars {
  float beta1, oneMinusBeta1, beta2, oneMinusBeta2, decay, sqrtCorrection2, eps, stepSize;
  bool decayOn;  // weightDecay ≠ 0: the decomposition skips the multiply by 1 − lr·λ otherwise
};

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// One element: (p, g, m, v) → (p, m, v), in place.
__device__ __forceinline__ void adamwElement(float& p, float g, float& m, float& v, const AdamwScalars& s) {
  m = __fadd_rn(__fmul_rn(m, s.beta1), __fmul_rn(g, s.oneMinusBeta1));
  v = __fadd_rn(__fmul_rn(v, s.beta2), __fmul_rn(__fmul_rn(g, g), s.oneMinusBeta2));
  float decayed = s.decayOn ? __fmul_rn(p, s.decay) : p;
  float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.sqrtCorrection2), s.eps);
  p = __fsub_rn(decayed, __fmul_rn(__fdiv_rn(m, denom), s.stepSize));
}

// param, expAvg, expAvgSq: f32 (N); grad: G (N) → paramOut, expAvgOut, expAvgSqOut: f32 (N),
// half: H (N) or null. Each thread takes VEC consecutive elements per iteration (16-byte loads of
// the f32 tensors when VEC = 4; the launcher checks the alignment); the tail goes one by one.
template <class G, class H, int VEC>
__global__ void adamwKernel(const float* __restrict__ p0, const G* __restrict__ g0, const float* __restrict__ m0,
                            const float* __restrict__ v0, float* __restrict__ p1, float* __restrict__ m1,
                            float* __restrict__ v1, H* __restrict__ half, int64_t n, AdamwScalars s) {
  int64_t groups = n / VEC;
  int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < groups; k += stride) {
    int64_t i = k * VEC;
    auto p = *reinterpret_cast<const Pack<float, VEC>*>(p0 + i);
    auto g = *reinterpret_cast<const Pack<G, VEC>*>(g0 + i);
    auto m = *reinterpret_cast<const Pack<float, VEC>*>(m0 + i);
    auto v = *reinterpret_cast<const Pack<float, VEC>*>(v0 + i);
    Pack<H, VEC> h;
#pragma unroll
    for (int j = 0; j < VEC; j++) {
      adamwElement(p.v[j], toF(g.v[j]), m.v[j], v.v[j], s);
      h.v[j] = fromF<H>(p.v[j]);
    }
    *reinterpret_cast<Pack<float, VEC>*>(p1 + i) = p;
    *reinterpret_cast<Pack<float, VEC>*>(m1 + i) = m;
    *reinterpret_cast<Pack<float, VEC>*>(v1 + i) = v;
    if (half) *reinterpret_cast<Pack<H, VEC>*>(half + i) = h;
  }
  for (int64_t i = groups * VEC + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    float p = p0[i], m = m0[i], v = v0[i];
    adamwElement(p, toF(g0[i]), m, v, s);
    p1[i] = p;
    m1[i] = m;
    v1[i] = v;
    if (half) half[i] = fromF<H>(p);
  }
}

template <class G, class H>
void launchAdamw(Context& c, const Args& a, int64_t n, const AdamwScalars& s) {
  const float* p0 = a.ptr<float>(0);
  const G* g0 = a.ptr<G>(1);
  const float *m0 = a.ptr<float>(2), *v0 = a.ptr<float>(3);
  float *p1 = a.ptr<float>(4), *m1 = a.ptr<float>(5), *v1 = a.ptr<float>(6);
  H* half = a.p.size() > 7 ? a.ptr<H>(7) : nullptr;
  // The caching allocator hands out aligned blocks, so this holds but for views at odd offsets.
  bool aligned = true;
  for (uint64_t q : a.p) aligned = aligned && q % 16 == 0;
  // A few blocks per SM, each thread looping: enough loads in flight to stream at bandwidth.
  int64_t cap = (int64_t)(c.smCount > 0 ? c.smCount : 132) * 8;
  if (aligned) {
    adamwKernel<G, H, 4><<<blocksFor((n + 3) / 4, THREADS, cap), THREADS, 0, c.stream>>>(p0, g0, m0, v0, p1, m1, v1, half, n, s);
  } else {
    adamwKernel<G, H, 1><<<blocksFor(n, THREADS, cap), THREADS, 0, c.stream>>>(p0, g0, m0, v0, p1, m1, v1, half, n, s);
  }
}

template <class G>
void launchAdamwHalf(Context& c, const Args& a, int halfDt, int64_t n, const AdamwScalars& s) {
  switch (halfDt) {
    case -1:  // no half output: H only types the null pointer
    case BF16: launchAdamw<G, __nv_bfloat16>(c, a, n, s); break;
    case F16: launchAdamw<G, __half>(c, a, n, s); break;
    default: throw std::runtime_error("adamw: unsupported castTo dtype code " + std::to_string(halfDt));
  }
}

// p: [param, grad, expAvg, expAvgSq, paramOut, expAvgOut, expAvgSqOut, half?];
// i: [grad dtype, half dtype or -1, N, weight decay on (0/1)];
// f: [beta1, 1 − beta1, beta2, 1 − beta2, 1 − lr·λ, √(1 − beta2ᵗ), eps, lr / (1 − beta1ᵗ)]
void adamw(Context& c, const Args& a) {
  int gradDt = (int)a.i.at(0), halfDt = (int)a.i.at(1);
  int64_t n = a.i.at(2);
  if (n == 0) return;
  AdamwScalars s{};
  float* f[] = {&s.beta1, &s.oneMinusBeta1, &s.beta2, &s.oneMinusBeta2, &s.decay, &s.sqrtCorrection2, &s.eps, &s.stepSize};
  for (size_t k = 0; k < 8; k++) *f[k] = (float)a.f.at(k);
  s.decayOn = a.i.at(3) != 0;
  switch (gradDt) {
    case F32: launchAdamwHalf<float>(c, a, halfDt, n, s); break;
    case BF16: launchAdamwHalf<__nv_bfloat16>(c, a, halfDt, n, s); break;
    case F16: launchAdamwHalf<__half>(c, a, halfDt, n, s); break;
    default: throw std::runtime_error("adamw: unsupported grad dtype code " + std::to_string(gradDt));
  }
  LTS_CHECK(cudaGetLastError(), "adamw kernel launch");
}

}  // namespace

void registerOptim(Registry& r) { r["adamw"] = adamw; }

}  // namespace lts
