// Device helpers shared by the kernel families: loads and stores of every storage dtype through
// float (or double), strided offsets (64- or 32-bit), aligned packs for 16-byte access, the error
// flag and block reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "runtime.h"

namespace lts {

__device__ __forceinline__ float toF(float x) { return x; }
__device__ __forceinline__ float toF(__half x) { return __half2float(x); }
__device__ __forceinline__ float toF(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float toF(int x) { return (float)x; }
__device__ __forceinline__ float toF(uint8_t x) { return (float)x; }

template <class T>
__device__ __forceinline__ T fromF(float x);
template <>
__device__ __forceinline__ float fromF<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half fromF<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Loads any storage dtype as double (exact for every dtype here).
__device__ __forceinline__ double loadAny(const void* p, int dt, int64_t i) {
  switch (dt) {
    case F32: return ((const float*)p)[i];
    case F16: return __half2float(((const __half*)p)[i]);
    case BF16: return __bfloat162float(((const __nv_bfloat16*)p)[i]);
    case I32: return ((const int*)p)[i];
    default: return ((const uint8_t*)p)[i];
  }
}

// JavaScript's ToInt32 of a truncated value: what Int32Array (and, masked, Uint8Array) stores.
__device__ __forceinline__ int toInt32(double x) {
  if (!isfinite(x)) return 0;
  double t = trunc(x);
  double m = fmod(t, 4294967296.0);
  if (m < 0) m += 4294967296.0;
  return (int)(unsigned)(unsigned long long)m;
}

__device__ __forceinline__ void storeAny(void* p, int dt, int64_t i, double x) {
  switch (dt) {
    case F32: ((float*)p)[i] = (float)x; break;
    case F16: ((__half*)p)[i] = __float2half_rn((float)x); break;
    case BF16: ((__nv_bfloat16*)p)[i] = __float2bfloat16_rn((float)x); break;
    case I32: ((int*)p)[i] = toInt32(x); break;
    default: ((uint8_t*)p)[i] = (uint8_t)(toInt32(x) & 0xff); break;
  }
}

// Element offset of operand j at flat position `linear` of ix.shape (row-major). The outermost dim
// needs no division: what is left of `linear` there is its coordinate. I is int64_t, or uint32_t
// where fitsInt32 said every offset fits (32-bit division is a few instructions, 64-bit a call).
template <class I>
__device__ __forceinline__ I offsetOf(const Index& ix, int j, I linear) {
  I off = 0;
  for (int d = ix.rank - 1; d > 0; d--) {
    I s = (I)ix.shape[d];
    off += (linear % s) * (I)ix.stride[j][d];
    linear /= s;
  }
  return ix.rank > 0 ? off + linear * (I)ix.stride[j][0] : off;
}

// The offsets of the first K operands at once: one division per dim, shared by all of them.
template <int K, class I>
__device__ __forceinline__ void offsetsOf(const Index& ix, I linear, I (&off)[K]) {
  for (int j = 0; j < K; j++) off[j] = 0;
  for (int d = ix.rank - 1; d > 0; d--) {
    I s = (I)ix.shape[d], c = linear % s;
    linear /= s;
    for (int j = 0; j < K; j++) off[j] += c * (I)ix.stride[j][d];
  }
  if (ix.rank > 0)
    for (int j = 0; j < K; j++) off[j] += linear * (I)ix.stride[j][0];
}

// Whether n positions and every offset of the first `operands` operands fit in int32, so that
// kernels may index with uint32_t. Negative strides count by magnitude; unsigned wrap-around then
// still gives the right offset, which lies in [0, 2^31).
inline bool fitsInt32(const Index& ix, int operands, int64_t n) {
  const int64_t lim = INT32_MAX;
  if (n > lim) return false;
  for (int j = 0; j < operands; j++) {
    int64_t reach = 0;
    for (int d = 0; d < ix.rank; d++) reach += (ix.shape[d] - 1) * (ix.stride[j][d] < 0 ? -ix.stride[j][d] : ix.stride[j][d]);
    if (reach > lim) return false;
  }
  return true;
}

// V elements of T as one aligned load or store (V · sizeof(T) ∈ {1, 2, 4, 8, 16} bytes): the
// compiler emits one vector instruction for it. p must be aligned to sizeof(Pack).
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
template <int V, class T>
__device__ __forceinline__ Pack<T, V> loadPack(const T* p) { return *reinterpret_cast<const Pack<T, V>*>(p); }
template <int V, class T>
__device__ __forceinline__ void storePack(T* p, const Pack<T, V>& x) { *reinterpret_cast<Pack<T, V>*>(p) = x; }

inline bool alignedTo(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

__device__ __forceinline__ void reportError(DeviceError* e, int code, int position, long long value, long long bound) {
  if (atomicCAS(&e->code, 0, code) == 0) {
    e->position = position;
    e->value = value;
    e->bound = bound;
    __threadfence_system();
  }
}

template <class T>
__device__ __forceinline__ T warpSum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets it.
template <class T>
__device__ T blockSum(T v, T* shared32) {
  v = warpSum(v);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  int nw = blockDim.x >> 5;
  v = lane < nw ? shared32[lane] : T(0);
  return warpSum(v);
}
__device__ __forceinline__ float blockMax(float v, float* shared32) {
  v = warpMax(v);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  int nw = blockDim.x >> 5;
  v = lane < nw ? shared32[lane] : -INFINITY;
  return warpMax(v);
}

#define LTS_DISPATCH_FLOAT(dt, T, ...)                             \
  switch (dt) {                                                    \
    case ::lts::F32: { using T = float; __VA_ARGS__; break; }       \
    case ::lts::F16: { using T = __half; __VA_ARGS__; break; }      \
    case ::lts::BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; } \
    default: throw std::runtime_error("unsupported dtype code " + std::to_string(dt)); \
  }

}  // namespace lts
