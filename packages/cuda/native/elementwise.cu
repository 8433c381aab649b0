// Elementwise kernels: unary float ops, broadcasting binary and comparison ops, where, fill, cast.
// Float math runs in f32 (f16/bf16 are storage only); i32 arithmetic wraps as in C and JavaScript.
// Op codes follow UNARY_OPS / BINARY_OPS / COMPARE_OPS of packages/tensor/src/ops/attrs.ts.
#include "device.cuh"

namespace lts {
namespace {

enum Unary { NEG, ABS, EXP, LOG, SQRT, RSQRT, SQUARE, RECIPROCAL, RELU, SILU, SIGMOID, TANH, COS, SIN, SIGN };
enum Binary { ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM };
enum Compare { EQ, NE, LT, LE, GT, GE };

__device__ __forceinline__ float unaryOp(int op, float x) {
  switch (op) {
    case NEG: return -x;
    case ABS: return fabsf(x);
    case EXP: return expf(x);
    case LOG: return logf(x);
    case SQRT: return sqrtf(x);
    case RSQRT: return 1.0f / sqrtf(x);
    case SQUARE: return x * x;
    case RECIPROCAL: return 1.0f / x;
    case RELU: return x > 0.0f ? x : 0.0f;
    case SILU: return x / (1.0f + expf(-x));
    case SIGMOID: return 1.0f / (1.0f + expf(-x));
    case TANH: return tanhf(x);
    case COS: return cosf(x);
    case SIN: return sinf(x);
    default: return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x;  // SIGN keeps ±0 and NaN
  }
}

__device__ __forceinline__ float binaryF(int op, float a, float b) {
  switch (op) {
    case ADD: return a + b;
    case SUB: return a - b;
    case MUL: return a * b;
    case DIV: return a / b;
    case POW: return powf(a, b);
    case MAXIMUM: return isnan(a) || isnan(b) ? NAN : fmaxf(a, b);
    default: return isnan(a) || isnan(b) ? NAN : fminf(a, b);
  }
}

__device__ __forceinline__ int binaryI(int op, int a, int b) {
  unsigned ua = (unsigned)a, ub = (unsigned)b;
  switch (op) {
    case ADD: return (int)(ua + ub);
    case SUB: return (int)(ua - ub);
    case MUL: return (int)(ua * ub);
    case DIV:
      if (b == 0) return 0;
      if (a == INT_MIN && b == -1) return INT_MIN;  // 2^31 wraps, as `| 0` does
      return a / b;
    case POW: return toInt32(pow((double)a, (double)b));
    case MAXIMUM: return a > b ? a : b;
    default: return a < b ? a : b;
  }
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
    bool r = op == EQ ? u == v : op == NE ? u != v : op == LT ? u < v : op == LE ? u <= v : op == GT ? u > v : u >= v;
    y[offsetOf(ix, 2, i)] = r ? 1 : 0;
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
