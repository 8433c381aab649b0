// Random kernels: the Philox4x32-10 stream of packages/tensor/src/rng.ts, bit for bit. Every float
// step is one correctly rounded f32 operation (__fmul_rn / __fadd_rn keep nvcc from fusing them
// into FMAs), and log, cos and sqrt are built from those exactly as rng.ts builds them.
#include "device.cuh"

namespace lts {
namespace {

constexpr uint32_t M0 = 0xd2511f53u, M1 = 0xcd9e8d57u, W0 = 0x9e3779b9u, W1 = 0xbb67ae85u;

__device__ __forceinline__ void philox(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; round++) {
    if (round > 0) k0 += W0, k1 += W1;
    uint32_t lo0 = M0 * c[0], hi0 = __umulhi(M0, c[0]);
    uint32_t lo1 = M1 * c[2], hi1 = __umulhi(M1, c[2]);
    uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0, c[1] = lo1, c[2] = n2, c[3] = lo0;
  }
}

__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }

__constant__ float LOG_Q[9] = {-0.499999881f, 0.333333254f, -0.250015765f, 0.200020581f, -0.166092694f,
                               0.141803533f,  -0.132400766f, 0.129124328f,  -0.0763828382f};
__constant__ float COS_C[6] = {1.0f, -19.7392082f, 64.9393921f, -85.4568176f, 60.2446404f, -26.4262562f};
__constant__ float SIN_C[5] = {6.28318548f, -41.3417015f, 81.6052475f, -76.7058563f, 42.0586929f};

// ln(a · 2^-24) for an integer a in [1, 2^24)
__device__ float logScaled(uint32_t a) {
  int e = 31 - __clz(a);
  float m = ldexpf((float)a, -e);  // exact: a power-of-two scaling into [1, 2)
  if (m >= 1.41421354f) {
    m *= 0.5f;
    e += 1;
  }
  float f = add(m, -1.0f);
  float q = LOG_Q[8];
  for (int j = 7; j >= 0; j--) q = add(mul(q, f), LOG_Q[j]);
  float p = add(f, mul(mul(f, f), q));
  float k = (float)(e - 24);
  return add(mul(k, 0.693145751953125f), add(mul(k, 1.42860677e-6f), p));
}

__device__ float sqrtF32(float x) {
  float y = __int_as_float(0x5f3759df - (__float_as_int(x) >> 1));
  float h = mul(0.5f, x);
  for (int i = 0; i < 3; i++) y = mul(y, add(1.5f, -mul(mul(h, y), y)));
  return mul(x, y);
}

__device__ float poly(const float* c, int n, float s) {
  float r = c[n - 1];
  for (int j = n - 2; j >= 0; j--) r = add(mul(r, s), c[j]);
  return r;
}

// cos(2π b / 2^24) for a 24-bit integer b
__device__ float cosTurn(uint32_t b) {
  uint32_t shifted = b + (1u << 21);
  uint32_t quadrant = (shifted >> 22) & 3;
  float t = (float)((int)(shifted & 0x3fffff) - (1 << 21)) * 5.9604644775390625e-8f;  // exact
  float s = mul(t, t);
  switch (quadrant) {
    case 0: return poly(COS_C, 6, s);
    case 1: return -mul(t, poly(SIN_C, 5, s));
    case 2: return -poly(COS_C, 6, s);
    default: return mul(t, poly(SIN_C, 5, s));
  }
}

__device__ float normalFromU32(uint32_t x0, uint32_t x1) {
  uint32_t a = 2 * (x0 >> 9) + 1;
  float r = sqrtF32(mul(-2.0f, logScaled(a)));
  return mul(r, cosTurn(x1 >> 8));
}

// y: (n); element i uses counter offset + i under key (k0, k1)
template <class T>
__global__ void randomKernel(T* y, int64_t n, uint32_t k0, uint32_t k1, uint64_t offset, bool normal, float p0, float p1) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t ctr = offset + (uint64_t)i;
    uint32_t c[4] = {(uint32_t)ctr, (uint32_t)(ctr >> 32), 0, 0};
    philox(c, k0, k1);
    float v;
    if (normal) {
      v = add(mul(p1, normalFromU32(c[0], c[1])), p0);  // std · z + mean
    } else {
      float u = (float)(c[0] >> 8) * 5.9604644775390625e-8f;
      v = add(mul(u, p1), p0);  // u · (high − low) + low
    }
    y[i] = fromF<T>(v);
  }
}

// p: [y]; i: [dtype, n, seedLo, seedHi, offset, normal]; f: [low or mean, (high − low) or std] as f32 values
void random(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t n = a.i.at(1);
  uint32_t k0 = (uint32_t)a.i.at(2), k1 = (uint32_t)a.i.at(3);
  uint64_t offset = (uint64_t)a.i.at(4);
  bool normal = a.i.at(5) != 0;
  float p0 = (float)a.f.at(0), p1 = (float)a.f.at(1);
  if (n == 0) return;
  LTS_DISPATCH_FLOAT(dt, T, randomKernel<T><<<blocksFor(n, 256), 256, 0, c.stream>>>(a.ptr<T>(0), n, k0, k1, offset, normal, p0, p1));
  LTS_CHECK(cudaGetLastError(), "random kernel launch");
}

}  // namespace

void registerRandom(Registry& r) { r["random"] = random; }

}  // namespace lts
