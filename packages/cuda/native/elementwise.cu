// Elementwise kernels: unary float ops, broadcasting binary and comparison ops, where, fill, cast.
// Float math runs in f32 (f16/bf16 are storage only); i32 arithmetic wraps as in C and JavaScript.
// Each op family is one struct with a function per op, named as in UNARY_OPS / BINARY_OPS /
// COMPARE_OPS of packages/tensor/src/ops/attrs.ts: the switches below expand LTS_*_OPS
// (op_codes.gen.h), so an op added there fails to compile here until it has its function.
// Memory-bound: each thread moves 16-byte packs where the operands allow (see "How the kernels walk
// their positions" below) and indexes with 32-bit offsets where they fit.
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

// ---- How the kernels walk their positions ----
// Each thread takes a pack of V consecutive positions of y per step, so that a 16-byte load or
// store moves V elements (V = 8 bf16/f16, 4 f32). Positions past the last whole pack form a scalar
// tail. The broadcast kernels take V > 1 only when packWidth allows it (the innermost dim of every
// operand contiguous or broadcast, packs aligned) and the index fits in 32 bits; their reference
// form is V = 1 with int64 offsets, which handles every shape.

__device__ __forceinline__ int64_t firstThread() { return blockIdx.x * (int64_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t allThreads() { return (int64_t)gridDim.x * blockDim.x; }

// Stride of operand j along the innermost dim (0 for a rank-0 index: one position).
__device__ __forceinline__ int64_t innerStride(const Index& ix, int j) { return ix.rank > 0 ? ix.stride[j][ix.rank - 1] : 0; }

// V elements of an operand from p: one vector load where its innermost stride is 1, one element
// repeated where it is 0 (broadcast along the innermost dim).
template <int V, class T>
__device__ __forceinline__ Pack<T, V> loadOrRepeat(const T* p, bool contiguous) {
  if (V == 1 || contiguous) return loadPack<V>(p);
  Pack<T, V> r;
  T x = *p;
#pragma unroll
  for (int k = 0; k < V; k++) r.v[k] = x;
  return r;
}

// The op of a storage type: float math for the float types, wrapping int math for i32.
template <class T>
__device__ __forceinline__ T binaryOf(int op, T a, T b) { return fromF<T>(binaryF(op, toF(a), toF(b))); }
template <>
__device__ __forceinline__ int binaryOf<int>(int op, int a, int b) { return binaryI(op, a, b); }

// Compared as double (exact for every dtype here; toF would round large i32).
__device__ __forceinline__ double toD(float x) { return x; }
__device__ __forceinline__ double toD(__half x) { return __half2float(x); }
__device__ __forceinline__ double toD(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ double toD(int x) { return x; }
__device__ __forceinline__ double toD(uint8_t x) { return x; }

// x: (n) → y: (n), contiguous
template <class T, int V>
__global__ void unaryKernel(int op, const T* x, T* y, int64_t n) {
  int64_t packs = n / V;
  for (int64_t p = firstThread(); p < packs; p += allThreads()) {
    Pack<T, V> v = loadPack<V>(x + p * V);
#pragma unroll
    for (int k = 0; k < V; k++) v.v[k] = fromF<T>(unaryOp(op, toF(v.v[k])));
    storePack<V>(y + p * V, v);
  }
  for (int64_t i = packs * V + firstThread(); i < n; i += allThreads()) y[i] = fromF<T>(unaryOp(op, toF(x[i])));
}

// x, dy: (n) → dx: (n) = dy·σ(x)·(1 + x·(1 − σ(x))), contiguous; f32 math in the decomposition's order
template <class T, int V>
__global__ void siluBackwardKernel(const T* x, const T* dy, T* dx, int64_t n) {
  auto grad = [](float xv, float g) {
    float s = 1.0f / (expf(-xv) + 1.0f);
    return g * (s * (xv * (1.0f - s) + 1.0f));
  };
  int64_t packs = n / V;
  for (int64_t p = firstThread(); p < packs; p += allThreads()) {
    Pack<T, V> vx = loadPack<V>(x + p * V), vg = loadPack<V>(dy + p * V);
#pragma unroll
    for (int k = 0; k < V; k++) vx.v[k] = fromF<T>(grad(toF(vx.v[k]), toF(vg.v[k])));
    storePack<V>(dx + p * V, vx);
  }
  for (int64_t i = packs * V + firstThread(); i < n; i += allThreads()) dx[i] = fromF<T>(grad(toF(x[i]), toF(dy[i])));
}

// One pack of binaryKernel at position `at`.
template <int V, class T, class I>
__device__ __forceinline__ void binaryAt(int op, const T* a, const T* b, T* y, const Index& ix, I at, bool aRow, bool bRow) {
  I off[3];
  offsetsOf<3>(ix, at, off);
  Pack<T, V> va = loadOrRepeat<V>(a + off[0], aRow), vb = loadOrRepeat<V>(b + off[1], bRow), vy;
#pragma unroll
  for (int k = 0; k < V; k++) vy.v[k] = binaryOf(op, va.v[k], vb.v[k]);
  storePack<V>(y + off[2], vy);
}

// a, b: broadcast to y's shape through ix (operands 0 = a, 1 = b, 2 = y); T is any float type or int
template <class T, int V, class I>
__global__ void binaryKernel(int op, const T* a, const T* b, T* y, Index ix, int64_t n) {
  bool aRow = innerStride(ix, 0) != 0, bRow = innerStride(ix, 1) != 0;
  int64_t packs = n / V;
  for (int64_t p = firstThread(); p < packs; p += allThreads()) binaryAt<V>(op, a, b, y, ix, (I)(p * V), aRow, bRow);
  for (int64_t i = packs * V + firstThread(); i < n; i += allThreads()) binaryAt<1>(op, a, b, y, ix, (I)i, aRow, bRow);
}

template <int V, class T, class I>
__device__ __forceinline__ void compareAt(int op, const T* a, const T* b, uint8_t* y, const Index& ix, I at, bool aRow, bool bRow) {
  I off[3];
  offsetsOf<3>(ix, at, off);
  Pack<T, V> va = loadOrRepeat<V>(a + off[0], aRow), vb = loadOrRepeat<V>(b + off[1], bRow);
  Pack<uint8_t, V> vy;
#pragma unroll
  for (int k = 0; k < V; k++) vy.v[k] = compareOp(op, toD(va.v[k]), toD(vb.v[k])) ? 1 : 0;
  storePack<V>(y + off[2], vy);
}

// a, b: T broadcast to y: u8 (operands as binaryKernel)
template <class T, int V, class I>
__global__ void compareKernel(int op, const T* a, const T* b, uint8_t* y, Index ix, int64_t n) {
  bool aRow = innerStride(ix, 0) != 0, bRow = innerStride(ix, 1) != 0;
  int64_t packs = n / V;
  for (int64_t p = firstThread(); p < packs; p += allThreads()) compareAt<V>(op, a, b, y, ix, (I)(p * V), aRow, bRow);
  for (int64_t i = packs * V + firstThread(); i < n; i += allThreads()) compareAt<1>(op, a, b, y, ix, (I)i, aRow, bRow);
}

template <int V, class W, class I>
__device__ __forceinline__ void whereAt(const uint8_t* c, const W* a, const W* b, W* y, const Index& ix, I at, bool cRow, bool aRow, bool bRow) {
  I off[4];
  offsetsOf<4>(ix, at, off);
  Pack<uint8_t, V> vc = loadOrRepeat<V>(c + off[0], cRow);
  Pack<W, V> va = loadOrRepeat<V>(a + off[1], aRow), vb = loadOrRepeat<V>(b + off[2], bRow), vy;
#pragma unroll
  for (int k = 0; k < V; k++) vy.v[k] = vc.v[k] ? va.v[k] : vb.v[k];
  storePack<V>(y + off[3], vy);
}

// cond: u8, a, b: raw elements of one size, all broadcast to y (operands 0..3 = cond, a, b, y)
template <class W, int V, class I>
__global__ void whereKernel(const uint8_t* c, const W* a, const W* b, W* y, Index ix, int64_t n) {
  bool cRow = innerStride(ix, 0) != 0, aRow = innerStride(ix, 1) != 0, bRow = innerStride(ix, 2) != 0;
  int64_t packs = n / V;
  for (int64_t p = firstThread(); p < packs; p += allThreads()) whereAt<V>(c, a, b, y, ix, (I)(p * V), cRow, aRow, bRow);
  for (int64_t i = packs * V + firstThread(); i < n; i += allThreads()) whereAt<1>(c, a, b, y, ix, (I)i, cRow, aRow, bRow);
}

template <class W>
__global__ void fillKernel(W* y, W value, int64_t n) {
  for (int64_t i = firstThread(); i < n; i += allThreads()) y[i] = value;
}

// Between float types: through f32 (exact from any of them), rounded to nearest even by fromF, as
// storeAny does: the results are those of castAnyKernel, bit for bit.
template <class From, class To, int V>
__global__ void castFloatKernel(const From* x, To* y, int64_t n) {
  int64_t packs = n / V;
  for (int64_t p = firstThread(); p < packs; p += allThreads()) {
    Pack<From, V> v = loadPack<V>(x + p * V);
    Pack<To, V> r;
#pragma unroll
    for (int k = 0; k < V; k++) r.v[k] = fromF<To>(toF(v.v[k]));
    storePack<V>(y + p * V, r);
  }
  for (int64_t i = packs * V + firstThread(); i < n; i += allThreads()) y[i] = fromF<To>(toF(x[i]));
}

// Any pair with i32 or u8 on either side: through double, with JavaScript's integer conversions.
__global__ void castAnyKernel(const void* x, int from, void* y, int to, int64_t n) {
  for (int64_t i = firstThread(); i < n; i += allThreads()) storeAny(y, to, i, loadAny(x, from, i));
}

constexpr int THREADS = 256;

Index broadcastIndex(const std::vector<std::vector<int64_t>>& ins, const std::vector<int64_t>& out) {
  std::vector<std::vector<int64_t>> st;
  for (auto& s : ins) st.push_back(broadcastStrides(s, out));
  st.push_back(broadcastStrides(out, out));
  return makeIndex(out, st);
}

// Whether packs of V positions work for ix (operands 0..k-1): every operand's innermost stride is 1
// (loaded as vectors) or 0 (one element repeated), and a pack never straddles two rows, nor starts
// off a V-element boundary in a vector-loaded operand. Rank ≤ 1 leaves a scalar tail instead.
bool packsFit(const Index& ix, int operands, int V) {
  if (ix.rank == 0) return false;
  int in = ix.rank - 1;
  if (ix.rank > 1 && ix.shape[in] % V != 0) return false;
  for (int j = 0; j < operands; j++) {
    int64_t s = ix.stride[j][in];
    if (s != 0 && s != 1) return false;
    for (int d = 0; s == 1 && d < in; d++)
      if (ix.stride[j][d] % V != 0) return false;
  }
  return true;
}

// Threads for a walk of n positions in packs of V: one per pack, at least one.
unsigned blocksForPacks(int64_t n, int V) { return blocksFor((n + V - 1) / V, THREADS); }

// p: [x, y]; i: [op, dtype, n]
template <class T>
void launchUnary(Context& c, int op, const T* x, T* y, int64_t n) {
  constexpr int V = 16 / sizeof(T);
  if (alignedTo(x, 16) && alignedTo(y, 16)) unaryKernel<T, V><<<blocksForPacks(n, V), THREADS, 0, c.stream>>>(op, x, y, n);
  else unaryKernel<T, 1><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, x, y, n);
}

void unary(Context& c, const Args& a) {
  int op = (int)a.i.at(0), dt = (int)a.i.at(1);
  int64_t n = a.i.at(2);
  if (n == 0) return;
  LTS_DISPATCH_FLOAT(dt, T, launchUnary<T>(c, op, a.ptr<T>(0), a.ptr<T>(1), n));
  LTS_CHECK(cudaGetLastError(), "unary kernel launch");
}

// p: [x, dy, dx]; i: [dtype, n]
void siluBackward(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t n = a.i.at(1);
  if (n == 0) return;
  LTS_DISPATCH_FLOAT(dt, T, {
    constexpr int V = 16 / sizeof(T);
    const T *x = a.ptr<T>(0), *dy = a.ptr<T>(1);
    T* dx = a.ptr<T>(2);
    if (alignedTo(x, 16) && alignedTo(dy, 16) && alignedTo(dx, 16)) siluBackwardKernel<T, V><<<blocksForPacks(n, V), THREADS, 0, c.stream>>>(x, dy, dx, n);
    else siluBackwardKernel<T, 1><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(x, dy, dx, n);
  });
  LTS_CHECK(cudaGetLastError(), "siluBackward kernel launch");
}

template <class T>
void launchBinary(Context& c, int op, const Args& a, const Index& ix, int64_t n) {
  constexpr int V = 16 / sizeof(T);
  const T *x = a.ptr<T>(0), *w = a.ptr<T>(1);
  T* y = a.ptr<T>(2);
  bool small = fitsInt32(ix, 3, n);
  if (small && packsFit(ix, 3, V) && alignedTo(x, 16) && alignedTo(w, 16) && alignedTo(y, 16))
    binaryKernel<T, V, uint32_t><<<blocksForPacks(n, V), THREADS, 0, c.stream>>>(op, x, w, y, ix, n);
  else if (small) binaryKernel<T, 1, uint32_t><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, x, w, y, ix, n);
  else binaryKernel<T, 1, int64_t><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, x, w, y, ix, n);
}

// p: [a, b, y]; i: [op, dtype, shapeA..., shapeB..., shapeY...]
void binary(Context& c, const Args& a) {
  Reader r{a.i};
  int op = (int)r.next(), dt = (int)r.next();
  auto sa = r.shape(), sb = r.shape(), sy = r.shape();
  int64_t n = numel(sy);
  if (n == 0) return;
  Index ix = broadcastIndex({sa, sb}, sy);
  if (dt == I32) launchBinary<int>(c, op, a, ix, n);
  else LTS_DISPATCH_FLOAT(dt, T, launchBinary<T>(c, op, a, ix, n));
  LTS_CHECK(cudaGetLastError(), "binary kernel launch");
}

template <class T>
void launchCompare(Context& c, int op, const Args& a, const Index& ix, int64_t n) {
  constexpr int V = 16 / sizeof(T);
  const T *x = a.ptr<T>(0), *w = a.ptr<T>(1);
  uint8_t* y = a.ptr<uint8_t>(2);
  bool small = fitsInt32(ix, 3, n);
  if (small && packsFit(ix, 3, V) && alignedTo(x, 16) && alignedTo(w, 16) && alignedTo(y, V))
    compareKernel<T, V, uint32_t><<<blocksForPacks(n, V), THREADS, 0, c.stream>>>(op, x, w, y, ix, n);
  else if (small) compareKernel<T, 1, uint32_t><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, x, w, y, ix, n);
  else compareKernel<T, 1, int64_t><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(op, x, w, y, ix, n);
}

// p: [a, b, y]; i: [op, dtype, shapeA..., shapeB..., shapeY...]
void compare(Context& c, const Args& a) {
  Reader r{a.i};
  int op = (int)r.next(), dt = (int)r.next();
  auto sa = r.shape(), sb = r.shape(), sy = r.shape();
  int64_t n = numel(sy);
  if (n == 0) return;
  Index ix = broadcastIndex({sa, sb}, sy);
  switch (dt) {
    case I32: launchCompare<int>(c, op, a, ix, n); break;
    case U8: launchCompare<uint8_t>(c, op, a, ix, n); break;
    default: LTS_DISPATCH_FLOAT(dt, T, launchCompare<T>(c, op, a, ix, n));
  }
  LTS_CHECK(cudaGetLastError(), "compare kernel launch");
}

template <class W>
void launchWhere(Context& c, const Args& a, const Index& ix, int64_t n) {
  constexpr int V = 16 / sizeof(W);
  const uint8_t* cond = a.ptr<uint8_t>(0);
  const W *x = a.ptr<W>(1), *w = a.ptr<W>(2);
  W* y = a.ptr<W>(3);
  bool small = fitsInt32(ix, 4, n);
  if (small && packsFit(ix, 4, V) && alignedTo(cond, V) && alignedTo(x, 16) && alignedTo(w, 16) && alignedTo(y, 16))
    whereKernel<W, V, uint32_t><<<blocksForPacks(n, V), THREADS, 0, c.stream>>>(cond, x, w, y, ix, n);
  else if (small) whereKernel<W, 1, uint32_t><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(cond, x, w, y, ix, n);
  else whereKernel<W, 1, int64_t><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(cond, x, w, y, ix, n);
}

// p: [cond, a, b, y]; i: [elementBytes, shapeC..., shapeA..., shapeB..., shapeY...]
void where(Context& c, const Args& a) {
  Reader r{a.i};
  int bytes = (int)r.next();
  auto sc = r.shape(), sa = r.shape(), sb = r.shape(), sy = r.shape();
  int64_t n = numel(sy);
  if (n == 0) return;
  Index ix = broadcastIndex({sc, sa, sb}, sy);
  if (bytes == 4) launchWhere<uint32_t>(c, a, ix, n);
  else if (bytes == 2) launchWhere<uint16_t>(c, a, ix, n);
  else launchWhere<uint8_t>(c, a, ix, n);
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

template <class From, class To>
void launchCastFloat(Context& c, const From* x, To* y, int64_t n) {
  constexpr int V = 16 / (sizeof(From) > sizeof(To) ? sizeof(From) : sizeof(To));
  if (alignedTo(x, V * sizeof(From)) && alignedTo(y, V * sizeof(To)))
    castFloatKernel<From, To, V><<<blocksForPacks(n, V), THREADS, 0, c.stream>>>(x, y, n);
  else castFloatKernel<From, To, 1><<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(x, y, n);
}

bool isFloat(int dt) { return dt == F32 || dt == F16 || dt == BF16; }

// p: [x, y]; i: [fromDtype, toDtype, n]. Float → int truncates toward zero; NaN becomes 0.
void cast(Context& c, const Args& a) {
  int from = (int)a.i.at(0), to = (int)a.i.at(1);
  int64_t n = a.i.at(2);
  if (n == 0) return;
  if (from == to) {
    LTS_CHECK(cudaMemcpyAsync(a.ptr<void>(1), a.ptr<void>(0), n * dtypeSize(from), cudaMemcpyDeviceToDevice, c.stream), "cast copy");
    return;
  }
  if (isFloat(from) && isFloat(to)) {
    LTS_DISPATCH_FLOAT(from, X, LTS_DISPATCH_FLOAT(to, Y, launchCastFloat<X, Y>(c, a.ptr<X>(0), a.ptr<Y>(1), n)));
  } else {
    castAnyKernel<<<blocksFor(n, THREADS), THREADS, 0, c.stream>>>(a.ptr<void>(0), from, a.ptr<void>(1), to, n);
  }
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
  r["siluBackward"] = siluBackward;
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
