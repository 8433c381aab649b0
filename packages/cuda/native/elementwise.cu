// Elementwise kernels: unary float ops, broadcasting binary and comparison ops, where, fill, cast.
// Float math runs in f32 (f16/bf16 are storage only); i32 arithmetic wraps as in C and JavaScript.
// Each op family is one struct with a function per op, named as in UNARY_OPS / BINARY_OPS /
// COMPARE_OPS of packages/tensor/src/ops/attrs.ts: the switches below expand LTS_*_OPS
// (op_codes.gen.h), so an op added there fails to compile here until it has its function.
#include "device.cuh"

namespace lts {
namespace {

struct Unary {
  static __device__ float neg(float x) { return -x; }
  static __device__ float abs(float x) { return fabsf(x); }
  static __device__ float exp(float x) { return expf(x); }
  static __device__ float log(float x) { return logf(x); }
  static __device__ float sqrt(float x) { return sqrtf(x); }
  static __device__ float rsqrt(float x) { return 1.0f / sqrtf(x); }
  static __device__ float square(float x) { return x * x; }
  static __device__ float reciprocal(float x) { return 1.0f / x; }
  static __device__ float relu(float x) { return x > 0.0f ? x : 0.0f; }
  static __device__ float silu(float x) { return x / (1.0f + expf(-x)); }
  static __device__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
  static __device__ float tanh(float x) { return tanhf(x); }
  static __device__ float cos(float x) { return cosf(x); }
  static __device__ float sin(float x) { return sinf(x); }
  static __device__ float sign(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x; }  // keeps ±0 and NaN
};

struct BinaryF {
  static __device__ float add(float a, float b) { return a + b; }
  static __device__ float sub(float a, float b) { return a - b; }
  static __device__ float mul(float a, float b) { return a * b; }
  static __device__ float div(float a, float b) { return a / b; }
  static __device__ float pow(float a, float b) { return powf(a, b); }
  static __device__ float maximum(float a, float b) { return isnan(a) || isnan(b) ? NAN : fmaxf(a, b); }
  static __device__ float minimum(float a, float b) { return isnan(a) || isnan(b) ? NAN : fminf(a, b); }
};

struct BinaryI {
  static __device__ int add(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
  static __device__ int sub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
  static __device__ int mul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
  static __device__ int div(int a, int b) {
    if (b == 0) return 0;
    if (a == INT_MIN && b == -1) return INT_MIN;  // 2^31 wraps, as `| 0` does
    return a / b;
  }
  static __device__ int pow(int a, int b) { return toInt32(::pow((double)a, (double)b)); }
  static __device__ int maximum(int a, int b) { return a > b ? a : b; }
  static __device__ int minimum(int a, int b) { return a < b ? a : b; }
};

struct Compare {
  static __device__ bool equal(double a, double b) { return a == b; }
  static __device__ bool notEqual(double a, double b) { return a != b; }
  static __device__ bool less(double a, double b) { return a < b; }
  static __device__ bool lessEqual(double a, double b) { return a <= b; }
  static __device__ bool greater(double a, double b) { return a > b; }
  static __device__ bool greaterEqual(double a, double b) { return a >= b; }
};

__device__ __forceinline__ float unaryOp(int op, float x) {
  switch (static_cast<UnaryOp>(op)) { LTS_UNARY_OPS(LTS_OP_CASE, UnaryOp, Unary, x) }
  return NAN;
}

__device__ __forceinline__ float binaryF(int op, float a, float b) {
  switch (static_cast<BinaryOp>(op)) { LTS_BINARY_OPS(LTS_OP_CASE, BinaryOp, BinaryF, a, b) }
  return NAN;
}

__device__ __forceinline__ int binaryI(int op, int a, int b) {
  switch (static_cast<BinaryOp>(op)) { LTS_BINARY_OPS(LTS_OP_CASE, BinaryOp, BinaryI, a, b) }
  return 0;
}

__device__ __forceinline__ bool compareOp(int op, double a, double b) {
  switch (static_cast<CompareOp>(op)) { LTS_COMPARE_OPS(LTS_OP_CASE, CompareOp, Compare, a, b) }
  return false;
}

// x: (n) → y: (n), contiguous
template <class T>
__global__ void unaryKernel(int op, const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = fromF<T>(unaryOp(op, toF(x[i])));
}

// a, b: broadcast to y's shape through ix (operands 0 = a, 1 = b, 2 = y)
template <class T>
__global__ void binaryKernel(int op, const T* a, const T* b, T* y, Index ix, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[offsetOf(ix, 2, i)] = fromF<T>(binaryF(op, toF(a[offsetOf(ix, 0, i)]), toF(b[offsetOf(ix, 1, i)])));
}

__global__ void binaryIntKernel(int op, const int* a, const int* b, int* y, Index ix, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[offsetOf(ix, 2, i)] = binaryI(op, a[offsetOf(ix, 0, i)], b[offsetOf(ix, 1, i)]);
}

__global__ void compareKernel(int op, const void* a, const void* b, int dt, uint8_t* y, Index ix, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    double u = loadAny(a, dt, offsetOf(ix, 0, i)), v = loadAny(b, dt, offsetOf(ix, 1, i));
    y[offsetOf(ix, 2, i)] = compareOp(op, u, v) ? 1 : 0;
  }
}

// cond: u8, a, b: raw elements of one size, all broadcast to y (operands 0..3 = cond, a, b, y)
template <class W>
__global__ void whereKernel(const uint8_t* c, const W* a, const W* b, W* y, Index ix, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[offsetOf(ix, 3, i)] = c[offsetOf(ix, 0, i)] ? a[offsetOf(ix, 1, i)] : b[offsetOf(ix, 2, i)];
}

template <class W>
__global__ void fillKernel(W* y, W value, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = value;
}

__global__ void castKernel(const void* x, int from, void* y, int to, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    storeAny(y, to, i, loadAny(x, from, i));
}

constexpr int THREADS = 256;

Index broadcastIndex(const std::vector<std::vector<int64_t>>& ins, const std::vector<int64_t>& out) {
  std::vector<std::vector<int64_t>> st;
  for (auto& s : ins) st.push_back(broadcastStrides(s, out));
  st.push_back(broadcastStrides(out, out));
  return makeIndex(out, st);
}

// p: [x, y]; i: [op, dtype, n]
void unary(Context& c, const Args& a) {
  int op = (int)a.i.at(0), dt = (int)a.i.at(1);
  int64_t n = a.i.at(2);
  if (n == 0) return;
  LTS_DISPATCH_FLOAT(dt, T, unaryKernel<T><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, a.ptr<T>(0), a.ptr<T>(1), n));
  LTS_CHECK(cudaGetLastError(), "unary kernel launch");
}

// p: [a, b, y]; i: [op, dtype, shapeA..., shapeB..., shapeY...]
void binary(Context& c, const Args& a) {
  Reader r{a.i};
  int op = (int)r.next(), dt = (int)r.next();
  auto sa = r.shape(), sb = r.shape(), sy = r.shape();
  int64_t n = numel(sy);
  if (n == 0) return;
  Index ix = broadcastIndex({sa, sb}, sy);
  if (dt == I32) {
    binaryIntKernel<<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, a.ptr<int>(0), a.ptr<int>(1), a.ptr<int>(2), ix, n);
  } else {
    LTS_DISPATCH_FLOAT(dt, T, binaryKernel<T><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), ix, n));
  }
  LTS_CHECK(cudaGetLastError(), "binary kernel launch");
}

// p: [a, b, y]; i: [op, dtype, shapeA..., shapeB..., shapeY...]
void compare(Context& c, const Args& a) {
  Reader r{a.i};
  int op = (int)r.next(), dt = (int)r.next();
  auto sa = r.shape(), sb = r.shape(), sy = r.shape();
  int64_t n = numel(sy);
  if (n == 0) return;
  Index ix = broadcastIndex({sa, sb}, sy);
  compareKernel<<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, a.ptr<void>(0), a.ptr<void>(1), dt, a.ptr<uint8_t>(2), ix, n);
  LTS_CHECK(cudaGetLastError(), "compare kernel launch");
}

// p: [cond, a, b, y]; i: [elementBytes, shapeC..., shapeA..., shapeB..., shapeY...]
void where(Context& c, const Args& a) {
  Reader r{a.i};
  int bytes = (int)r.next();
  auto sc = r.shape(), sa = r.shape(), sb = r.shape(), sy = r.shape();
  int64_t n = numel(sy);
  if (n == 0) return;
  Index ix = broadcastIndex({sc, sa, sb}, sy);
  auto g = blocksFor(n, THREADS);
  auto cond = a.ptr<uint8_t>(0);
  if (bytes == 4) whereKernel<uint32_t><<<g, THREADS, 0, c.stream>>>(cond, a.ptr<uint32_t>(1), a.ptr<uint32_t>(2), a.ptr<uint32_t>(3), ix, n);
  else if (bytes == 2) whereKernel<uint16_t><<<g, THREADS, 0, c.stream>>>(cond, a.ptr<uint16_t>(1), a.ptr<uint16_t>(2), a.ptr<uint16_t>(3), ix, n);
  else whereKernel<uint8_t><<<g, THREADS, 0, c.stream>>>(cond, a.ptr<uint8_t>(1), a.ptr<uint8_t>(2), a.ptr<uint8_t>(3), ix, n);
  LTS_CHECK(cudaGetLastError(), "where kernel launch");
}

// p: [y]; i: [elementBytes, n, bit pattern of one element]
void fill(Context& c, const Args& a) {
  int bytes = (int)a.i.at(0);
  int64_t n = a.i.at(1);
  uint32_t bits = (uint32_t)a.i.at(2);
  if (n == 0) return;
  auto g = blocksFor(n, THREADS);
  if (bytes == 4) fillKernel<uint32_t><<<g, THREADS, 0, c.stream>>>(a.ptr<uint32_t>(0), bits, n);
  else if (bytes == 2) fillKernel<uint16_t><<<g, THREADS, 0, c.stream>>>(a.ptr<uint16_t>(0), (uint16_t)bits, n);
  else fillKernel<uint8_t><<<g, THREADS, 0, c.stream>>>(a.ptr<uint8_t>(0), (uint8_t)bits, n);
  LTS_CHECK(cudaGetLastError(), "fill kernel launch");
}

// p: [x, y]; i: [fromDtype, toDtype, n]. Float → int truncates toward zero; NaN becomes 0.
void cast(Context& c, const Args& a) {
  int from = (int)a.i.at(0), to = (int)a.i.at(1);
  int64_t n = a.i.at(2);
  if (n == 0) return;
  if (from == to) {
    LTS_CHECK(cudaMemcpyAsync(a.ptr<void>(1), a.ptr<void>(0), n * dtypeSize(from), cudaMemcpyDeviceToDevice, c.stream), "cast copy");
    return;
  }
  castKernel<<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(a.ptr<void>(0), from, a.ptr<void>(1), to, n);
  LTS_CHECK(cudaGetLastError(), "cast kernel launch");
}

// p: [x, y]; i: [bytes]
void copy(Context& c, const Args& a) {
  int64_t bytes = a.i.at(0);
  if (bytes == 0) return;
  LTS_CHECK(cudaMemcpyAsync(a.ptr<void>(1), a.ptr<void>(0), bytes, cudaMemcpyDeviceToDevice, c.stream), "copy");
}

// p: [y]; i: [bytes]
void zero(Context& c, const Args& a) {
  int64_t bytes = a.i.at(0);
  if (bytes == 0) return;
  LTS_CHECK(cudaMemsetAsync(a.ptr<void>(0), 0, bytes, c.stream), "memset");
}

}  // namespace

void registerElementwise(Registry& r) {
  r["unary"] = unary;
  r["binary"] = binary;
  r["compare"] = compare;
  r["where"] = where;
  r["fill"] = fill;
  r["cast"] = cast;
  r["copy"] = copy;
  r["zero"] = zero;
}

}  // namespace lts
