// Lightning Attention launchers: forward, backward and the one-token decode step. Each picks the
// fastest version that supports the call (KERNELS.md has the measurements): lightning_v4.cu (bf16,
// D = 128, E a multiple of 64 forward, E = 128 backward), else the general lightning_v1.cu.
// LIGHTNING_CUDA_LA_VERSION=1|2|3|4 asks for one version (used where it supports the call); the
// earlier tensor-core versions 2 and 3 run only when asked for.
// Letters: B batch, H heads, T time, D query/key head dim, E value head dim.
#include <cstdlib>

#include "lightning.cuh"

namespace lts {
namespace {

int forcedVersion() {
  const char* v = getenv("LIGHTNING_CUDA_LA_VERSION");
  return v ? atoi(v) : 0;
}

// q, k: (B, H, D); v: (B, H, E); slopes: f32 (H); state: f32 (B, H, D, E) → o: (B, H, E), newState: f32 (B, H, D, E)
// One block per (b·h, 32 columns of E); 8 row groups split D and meet in shared memory. The state
// is read and written once, 128 bytes per warp access: this kernel is bound by the state's bytes.
template <class T>
__global__ void stepKernel(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn, int D, int E, int H) {
  __shared__ float part[8][33];
  int bh = blockIdx.x, e = blockIdx.y * 32 + threadIdx.x;
  float lambda = expf(-slopes[bh % H]);
  float acc = 0;
  if (e < E) {
    float ve = toF(v[(int64_t)bh * E + e]);
    const float* Sb = S + (int64_t)bh * D * E;
    float* Snb = Sn + (int64_t)bh * D * E;
    for (int d = threadIdx.y; d < D; d += 8) {
      float s = lambda * Sb[(int64_t)d * E + e] + toF(k[(int64_t)bh * D + d]) * ve;
      Snb[(int64_t)d * E + e] = s;
      acc += toF(q[(int64_t)bh * D + d]) * s;
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && e < E) {
    float sum = 0;
    for (int r = 0; r < 8; r++) sum += part[r][threadIdx.x];
    o[(int64_t)bh * E + e] = fromF<T>(sum);
  }
}

// The same with 16-byte state accesses (E a multiple of 4): 4 columns per thread, 128 per block row.
template <class T>
__global__ void stepKernelVec4(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn, int D, int E, int H) {
  __shared__ float4 part[8][32];
  int bh = blockIdx.x, e = (blockIdx.y * 32 + threadIdx.x) * 4;
  float lambda = expf(-slopes[bh % H]);
  float4 acc = make_float4(0, 0, 0, 0);
  if (e < E) {
    const T* vr = v + (int64_t)bh * E + e;
    float4 ve = make_float4(toF(vr[0]), toF(vr[1]), toF(vr[2]), toF(vr[3]));
    const float4* Sb = reinterpret_cast<const float4*>(S + (int64_t)bh * D * E + e);
    float4* Snb = reinterpret_cast<float4*>(Sn + (int64_t)bh * D * E + e);
    int stride = E / 4;
#pragma unroll 4
    for (int d = threadIdx.y; d < D; d += 8) {
      float4 s = Sb[(int64_t)d * stride];
      float kd = toF(k[(int64_t)bh * D + d]), qd = toF(q[(int64_t)bh * D + d]);
      s.x = lambda * s.x + kd * ve.x, s.y = lambda * s.y + kd * ve.y, s.z = lambda * s.z + kd * ve.z, s.w = lambda * s.w + kd * ve.w;
      Snb[(int64_t)d * stride] = s;
      acc.x += qd * s.x, acc.y += qd * s.y, acc.z += qd * s.z, acc.w += qd * s.w;
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && e < E) {
    float4 sum = make_float4(0, 0, 0, 0);
    for (int r = 0; r < 8; r++) sum.x += part[r][threadIdx.x].x, sum.y += part[r][threadIdx.x].y, sum.z += part[r][threadIdx.x].z, sum.w += part[r][threadIdx.x].w;
    T* orow = o + (int64_t)bh * E + e;
    orow[0] = fromF<T>(sum.x), orow[1] = fromF<T>(sum.y), orow[2] = fromF<T>(sum.z), orow[3] = fromF<T>(sum.w);
  }
}

LightningDims dimsOf(Reader& r) {
  LightningDims d;
  d.B = (int)r.next(), d.H = (int)r.next(), d.T = (int)r.next(), d.D = (int)r.next(), d.E = (int)r.next();
  return d;
}

// p: [q, k, v, slopes, S0 or 0, o, finalState]; i: [dtype, B, H, T, D, E]
void forward(Context& c, const Args& a) {
  Reader r{a.i};
  int dt = (int)r.next();
  LightningDims d = dimsOf(r);
  auto S0 = a.p.at(4) ? a.ptr<const float>(4) : nullptr;
  if (d.BH() == 0 || d.D == 0 || d.E == 0) return;
  if (d.T == 0) {
    size_t bytes = (size_t)d.BH() * d.D * d.E * 4;
    if (S0) LTS_CHECK(cudaMemcpyAsync(a.ptr<float>(6), S0, bytes, cudaMemcpyDeviceToDevice, c.stream), "lightningAttention state copy");
    else LTS_CHECK(cudaMemsetAsync(a.ptr<float>(6), 0, bytes, c.stream), "lightningAttention state memset");
    return;
  }
  int version = forcedVersion();
  if ((version == 0 || version == 4) && lightningForwardV2Supported(dt, d))
    lightningForwardV4(c, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), S0, a.ptr<void>(5), a.ptr<float>(6));
  else if (version == 3 && lightningV3Supported(dt, d))
    lightningForwardV3(c, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), S0, a.ptr<void>(5), a.ptr<float>(6));
  else if (version == 2 && lightningForwardV2Supported(dt, d))
    lightningForwardV2(c, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), S0, a.ptr<void>(5), a.ptr<float>(6));
  else
    lightningForwardV1(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), S0, a.ptr<void>(5), a.ptr<float>(6));
}

// p: [q, k, v, slopes, dO, dSfinal, S0 or 0, dq, dk, dv, dS0]; i: [dtype, B, H, T, D, E]
void backward(Context& c, const Args& a) {
  Reader r{a.i};
  int dt = (int)r.next();
  LightningDims d = dimsOf(r);
  if (d.BH() == 0 || d.D == 0 || d.E == 0) return;
  auto S0 = a.p.at(6) ? a.ptr<const float>(6) : nullptr;
  if (d.T == 0) {
    LTS_CHECK(cudaMemcpyAsync(a.ptr<float>(10), a.ptr<float>(5), (size_t)d.BH() * d.D * d.E * 4, cudaMemcpyDeviceToDevice, c.stream),
              "lightningAttentionBackward state copy");
    return;
  }
  int version = forcedVersion();
  if (version == 3 && lightningV3Supported(dt, d)) {
    lightningBackwardV3(c, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), a.ptr<void>(4), a.ptr<float>(5), S0,
                        a.ptr<void>(7), a.ptr<void>(8), a.ptr<void>(9), a.ptr<float>(10));
    return;
  }
  if ((version == 0 || version == 4) && lightningBackwardV2Supported(dt, d)) {
    lightningBackwardV4(c, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), a.ptr<void>(4), a.ptr<float>(5), S0,
                        a.ptr<void>(7), a.ptr<void>(8), a.ptr<void>(9), a.ptr<float>(10));
    return;
  }
  if (version == 2 && lightningBackwardV2Supported(dt, d)) {
    lightningBackwardV2(c, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), a.ptr<void>(4), a.ptr<float>(5), S0,
                        a.ptr<void>(7), a.ptr<void>(8), a.ptr<void>(9), a.ptr<float>(10));
    return;
  }
  lightningBackwardV1(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), a.ptr<void>(4), a.ptr<float>(5), S0,
                      a.ptr<void>(7), a.ptr<void>(8), a.ptr<void>(9), a.ptr<float>(10));
}

// p: [q, k, v, slopes, state, o, newState]; i: [dtype, B, H, D, E]
void step(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int B = (int)a.i.at(1), H = (int)a.i.at(2), D = (int)a.i.at(3), E = (int)a.i.at(4);
  if (B * H == 0 || E == 0) return;
  dim3 block(32, 8);
  if (E % 4 == 0) {
    dim3 grid(B * H, (E + 127) / 128);
    LTS_DISPATCH_FLOAT(dt, T, stepKernelVec4<T><<<grid, block, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4),
                                                                                a.ptr<T>(5), a.ptr<float>(6), D, E, H));
  } else {
    dim3 grid(B * H, (E + 31) / 32);
    LTS_DISPATCH_FLOAT(dt, T, stepKernel<T><<<grid, block, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4),
                                                                            a.ptr<T>(5), a.ptr<float>(6), D, E, H));
  }
  LTS_CHECK(cudaGetLastError(), "lightningStep kernel launch");
}

}  // namespace

void registerLightning(Registry& r) {
  r["lightningAttention"] = forward;
  r["lightningAttentionBackward"] = backward;
  r["lightningStep"] = step;
}

}  // namespace lts
