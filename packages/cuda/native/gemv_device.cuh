// Device helpers of the small-M matrix-vector kernel (native/gemv.cu) that the persistent decode
// layer (native/decode_layer.cu) shares: streaming loads and L2 prefetches of weights, the floats
// of a 16-byte pack, the halving warp sum, programmatic dependent launch, and the SRMSNorm of rows
// staged in shared memory in the order of nn.cu's rmsNorm kernel.
#pragma once
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "device.cuh"

namespace lts {

constexpr int pow2ceil(int v) { return v <= 1 ? 1 : 2 * pow2ceil((v + 1) / 2); }

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

// Programmatic dependent launch: wait for the kernel before (its writes visible), and let the
// kernel after start its own prologue. Both are no-ops where the launch did not ask for it.
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

// SRMSNorm (times the gate where GATE) of the M rows of x staged in shared memory, in place, by a
// block of NT threads, with the bits of the chain rmsNorm (→ mul): nn.cu's warp-per-row order for
// k ≤ 4,096 (k is a multiple of 8 here: lane l sums packs l, l + 32, … in f32 each, the packs in
// double; f32 factor), else its block-per-row order of 256 threads (thread t < 256 sums t, t + 256,
// … in double; double factor: the threads past 256 add exact zeros, which leave the tree of the
// block sum as it is). The gate is read through L2 (ld.global.cg): in a persistent kernel it may
// have been written by another block since the kernel began.
template <class T, int M, bool GATE, int NT>
__device__ void normStagedRows(T* xs, const T* __restrict__ gate, int k, float eps) {
  static_assert(NT % 256 == 0 && NT <= 1024, "the block order is nn.cu's rmsNormKernel of 256 threads");
  static_assert(M <= NT / 32, "one warp per row");
  __shared__ float rinv[M];
  __shared__ double sd[32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  auto gated = [&](T v, int i) { return GATE ? fromF<T>(__fmul_rn(toF(v), toF(__ldcg(gate + i)))) : v; };
  if (k <= 4096) {
    if (warp < M) {
      const T* row = xs + warp * k;
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
      if (lane == 0) rinv[warp] = (float)(1.0 / sqrt(ss / (double)k + eps));
    }
    __syncthreads();
    for (int i = threadIdx.x; i < M * k; i += NT) xs[i] = gated(fromF<T>(__fmul_rn(toF(xs[i]), rinv[i / k])), i);
  } else {
#pragma unroll 1
    for (int m = 0; m < M; m++) {
      T* row = xs + m * k;
      double ss = 0;
      if (threadIdx.x < 256)
        for (int j = threadIdx.x; j < k; j += 256) {
          const double v = toF(row[j]);
          ss += v * v;
        }
      const double r = 1.0 / sqrt(blockSum(ss, sd) / (double)k + eps);
      for (int j = threadIdx.x; j < k; j += NT) row[j] = gated(fromF<T>((float)(toF(row[j]) * r)), m * k + j);
    }
  }
}

// LIGHTNING_CUDA_PDL: unset, empty or "1" launches with programmatic dependent launch on sm_90+,
// "0" launches plainly (read at each call, so a bench can compare the two).
inline bool pdlEnabled() {
  return envSwitch("LIGHTNING_CUDA_PDL", true);
}

// Launches `kernel` with programmatic dependent launch where pdlEnabled() and the device has it
// (sm_90+), plainly elsewhere. The kernel must call waitForPrevious() before it reads anything the
// kernel before may write, and startNext() only after that wait, so that when a kernel starts,
// every kernel before the one just before it has finished.
template <class... Params, class... Args>
void launchPdl(Context& c, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, const char* what, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = c.stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdlEnabled() && c.ccMajor >= 9 ? 1 : 0;
  LTS_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), what);
}

}  // namespace lts
