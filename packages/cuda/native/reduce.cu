// Reductions over any set of axes (sum and mean accumulate in double, as the CPU does) and argmax
// along one axis. One thread per output when the reduced extent is tiny, one warp when it is small,
// one block when it is large, and several blocks per output when few outputs each reduce a long range.
#include <algorithm>
#include <climits>

#include "device.cuh"

namespace lts {
namespace {

// Per op of REDUCE_OPS (packages/tensor/src/ops/attrs.ts): its start value and how two partial
// results combine (mean is a sum divided by the count at the end). The switches expand
// LTS_REDUCE_OPS (op_codes.gen.h), so a new reduce op fails to compile here until it has both.
struct ReduceInit {
  static __device__ double sum() { return 0.0; }
  static __device__ double mean() { return 0.0; }
  static __device__ double max() { return -INFINITY; }
  static __device__ double min() { return INFINITY; }
};
struct ReduceCombine {
  static __device__ double sum(double a, double v) { return a + v; }
  static __device__ double mean(double a, double v) { return a + v; }
  static __device__ double max(double a, double v) { return isnan(a) || isnan(v) ? NAN : fmax(a, v); }
  static __device__ double min(double a, double v) { return isnan(a) || isnan(v) ? NAN : fmin(a, v); }
};

__device__ __forceinline__ double reduceInit(int op) {
  switch (static_cast<ReduceOp>(op)) { LTS_REDUCE_OPS(LTS_OP_CASE, ReduceOp, ReduceInit, ) }
  return NAN;
}

__device__ __forceinline__ double combine(int op, double a, double v) {
  switch (static_cast<ReduceOp>(op)) { LTS_REDUCE_OPS(LTS_OP_CASE, ReduceOp, ReduceCombine, a, v) }
  return NAN;
}

constexpr int MEAN = static_cast<int>(ReduceOp::mean);

// x: kept dims (ix operand 0) × reduced dims (rx operand 0) → y: (outputs), one group of `group` threads per output
__global__ void reduceKernel(int op, const void* x, int dt, void* y, int ydt, Index kept, int64_t outputs, Index red, int64_t count, int group) {
  __shared__ double partial[1024];
  int lanes = group, lane = threadIdx.x % group;
  int64_t o = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / group;
  double acc = reduceInit(op);
  if (o < outputs) {
    int64_t base = offsetOf(kept, 0, o);
    for (int64_t r = lane; r < count; r += lanes) acc = combine(op, acc, loadAny(x, dt, base + offsetOf(red, 0, r)));
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int s = group / 2; s > 0; s >>= 1) {
    if (lane < s) partial[threadIdx.x] = combine(op, partial[threadIdx.x], partial[threadIdx.x + s]);
    __syncthreads();
  }
  if (lane == 0 && o < outputs) {
    double v = partial[threadIdx.x];
    if (op == MEAN) v /= (double)count;
    if (ydt == I32 && op != MEAN) v = (double)toInt32(v);
    storeAny(y, ydt, o, v);
  }
}

// Few outputs over long ranges (a whole-tensor sum, such as a gradient norm's): each output's range
// is cut into `parts` slices of `slice` elements, one block per slice, so the whole GPU reads.
// x → partial: double (outputs, parts)
__global__ void reducePartsKernel(int op, const void* x, int dt, double* partial, Index kept, Index red, int64_t count, int parts, int64_t slice) {
  __shared__ double sh[256];
  const int64_t o = blockIdx.x / parts;
  const int p = (int)(blockIdx.x % parts);
  const int64_t begin = p * slice, end = min(count, begin + slice);
  const int64_t base = offsetOf(kept, 0, o);
  double acc = reduceInit(op);
  for (int64_t r = begin + threadIdx.x; r < end; r += blockDim.x) acc = combine(op, acc, loadAny(x, dt, base + offsetOf(red, 0, r)));
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] = combine(op, sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[o * parts + p] = sh[0];
}

// partial: double (outputs, parts) → y (outputs), the slices combined in order (deterministic)
__global__ void reduceFinishKernel(int op, const double* partial, int parts, void* y, int ydt, int64_t outputs, int64_t count) {
  const int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (o >= outputs) return;
  double v = reduceInit(op);
  for (int p = 0; p < parts; p++) v = combine(op, v, partial[o * parts + p]);
  if (op == MEAN) v /= (double)count;
  if (ydt == I32 && op != MEAN) v = (double)toInt32(v);
  storeAny(y, ydt, o, v);
}

// x: (outer, n, inner) → y: i32 (outer, inner); first maximum, NaN counts as the maximum
__global__ void argmaxKernel(const void* x, int dt, int* y, int64_t outer, int64_t n, int64_t inner) {
  int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (t >= outer * inner) return;
  int64_t o = t / inner, i = t % inner;
  double best = -INFINITY;
  int at = 0;
  for (int64_t j = 0; j < n; j++) {
    double v = loadAny(x, dt, (o * n + j) * inner + i);
    if (v > best || (isnan(v) && !isnan(best))) {
      best = v;
      at = (int)j;
      if (isnan(v)) break;
    }
  }
  y[t] = at;
}

// (v, j) comes before (best, at) in argmax order: NaN above every number, then larger values,
// then, among equal values (or NaNs), the smaller index.
__device__ __forceinline__ bool argmaxBefore(double v, int j, double best, int at) {
  bool vn = isnan(v), bn = isnan(best);
  if (vn != bn) return vn;
  if (vn || v == best) return j < at;
  return v > best;
}

// The last axis (inner = 1): a row of the vocabulary's logits (the per-token argmax of a decode
// step) is cut into parts of at least kArgmaxPart elements, one block each, so that a batch of one
// row still spreads over many SMs — a single block walking 50,272 logits took tens of µs, a tenth
// of a decode step. Each block leaves its part's (best, index) in scratch; a second kernel, one
// warp per row, picks among the parts. Every part is read coalesced, four loads in flight per
// thread.
constexpr int kArgmaxThreads = 256;
constexpr int64_t kArgmaxPart = 2048;

__device__ __forceinline__ void argmaxKeep(double v, int j, double& best, int& at) {
  if (argmaxBefore(v, j, best, at)) best = v, at = j;
}

__global__ void argmaxPartsKernel(const void* x, int dt, double* bests, int* ats, int64_t n, int parts, int64_t slice) {
  __shared__ double sb[kArgmaxThreads];
  __shared__ int sa[kArgmaxThreads];
  int64_t row = blockIdx.y, lo = blockIdx.x * slice, hi = lo + slice < n ? lo + slice : n;
  double best = -INFINITY;
  int at = INT_MAX;
  int64_t j = lo + threadIdx.x;
  constexpr int U = 4;
  for (; j + (U - 1) * kArgmaxThreads < hi; j += U * kArgmaxThreads) {
    double v[U];
#pragma unroll
    for (int u = 0; u < U; u++) v[u] = loadAny(x, dt, row * n + j + u * kArgmaxThreads);
#pragma unroll
    for (int u = 0; u < U; u++) argmaxKeep(v[u], (int)(j + u * kArgmaxThreads), best, at);
  }
  for (; j < hi; j += kArgmaxThreads) argmaxKeep(loadAny(x, dt, row * n + j), (int)j, best, at);
  sb[threadIdx.x] = best, sa[threadIdx.x] = at;
  __syncthreads();
  for (int half = kArgmaxThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half && argmaxBefore(sb[threadIdx.x + half], sa[threadIdx.x + half], sb[threadIdx.x], sa[threadIdx.x]))
      sb[threadIdx.x] = sb[threadIdx.x + half], sa[threadIdx.x] = sa[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) bests[row * parts + blockIdx.x] = sb[0], ats[row * parts + blockIdx.x] = sa[0];
}

// One warp per row over its parts' (best, index) pairs.
__global__ void argmaxFinishKernel(const double* bests, const int* ats, int* y, int64_t rows, int parts) {
  int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  double best = -INFINITY;
  int at = INT_MAX;
  for (int p = lane; p < parts; p += 32) argmaxKeep(bests[row * parts + p], ats[row * parts + p], best, at);
  for (int off = 16; off > 0; off /= 2) {
    double ob = __shfl_down_sync(0xffffffffu, best, off);
    int oa = __shfl_down_sync(0xffffffffu, at, off);
    argmaxKeep(ob, oa, best, at);
  }
  // Every value −∞: the first index, as the one-thread kernel gives.
  if (lane == 0) y[row] = at == INT_MAX ? 0 : at;
}

// p: [x, y]; i: [op, xDtype, yDtype, shapeX..., axes...(count-prefixed)]
void reduce(Context& c, const Args& a) {
  Reader r{a.i};
  int op = (int)r.next(), dt = (int)r.next(), ydt = (int)r.next();
  auto shape = r.shape();
  auto axes = r.shape();
  std::vector<int64_t> st(shape.size());
  int64_t s = 1;
  for (int d = (int)shape.size() - 1; d >= 0; d--) st[d] = s, s *= shape[d];
  std::vector<int64_t> ks, kst, rs, rst;
  for (size_t d = 0; d < shape.size(); d++) {
    bool reduced = false;
    for (auto ax : axes) reduced = reduced || ax == (int64_t)d;
    (reduced ? rs : ks).push_back(shape[d]);
    (reduced ? rst : kst).push_back(st[d]);
  }
  int64_t outputs = numel(ks), count = numel(rs);
  if (outputs == 0) return;
  Index kept = makeIndex(ks, {kst});
  Index red = makeIndex(rs, {rst});
  // Fewer outputs than would fill the GPU, each over a long range: split the ranges.
  constexpr int64_t SLICE_MIN = 16384;
  if (count >= 4 * SLICE_MIN && outputs < 2 * (int64_t)c.smCount) {
    int64_t want = std::max<int64_t>(1, 4 * (int64_t)c.smCount / outputs);
    int parts = (int)std::min<int64_t>(want, (count + SLICE_MIN - 1) / SLICE_MIN);
    int64_t slice = (count + parts - 1) / parts;
    auto* partial = (double*)c.scratch(outputs * parts * sizeof(double));
    reducePartsKernel<<<(unsigned)(outputs * parts), 256, 0, c.stream>>>(op, a.ptr<void>(0), dt, partial, kept, red, count, parts, slice);
    LTS_CHECK(cudaGetLastError(), "reduce kernel launch");
    reduceFinishKernel<<<(unsigned)((outputs + 255) / 256), 256, 0, c.stream>>>(op, partial, parts, a.ptr<void>(1), ydt, outputs, count);
    LTS_CHECK(cudaGetLastError(), "reduce kernel launch");
    c.release(partial);
    return;
  }
  // A few elements per output (a broadcast's gradient summed over a small batch axis): one thread
  // per output, neighbouring threads reading neighbouring elements.
  int group = count >= 4096 ? 1024 : count >= 256 ? 256 : count >= 32 ? 32 : 1;
  int threads = group >= 256 ? group : 256;
  int64_t total = outputs * group;
  reduceKernel<<<(unsigned)((total + threads - 1) / threads), threads, 0, c.stream>>>(op, a.ptr<void>(0), dt, a.ptr<void>(1), ydt, kept, outputs, red, count, group);
  LTS_CHECK(cudaGetLastError(), "reduce kernel launch");
}

// p: [x, y]; i: [dtype, outer, n, inner]
void argmax(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t outer = a.i.at(1), n = a.i.at(2), inner = a.i.at(3);
  if (outer * inner == 0) return;
  if (inner == 1 && n >= 1024 && outer <= 65535 && n <= INT_MAX) {
    // Parts of at least kArgmaxPart elements, as many as give each row its share of two blocks per SM.
    int64_t want = std::max<int64_t>(1, 2 * (int64_t)c.smCount / outer);
    int parts = (int)std::max<int64_t>(1, std::min<int64_t>(want, n / kArgmaxPart));
    int64_t slice = (n + parts - 1) / parts;
    auto* scratch = (char*)c.scratch((size_t)outer * parts * (sizeof(double) + sizeof(int)));
    auto* bests = (double*)scratch;
    auto* ats = (int*)(scratch + (size_t)outer * parts * sizeof(double));
    argmaxPartsKernel<<<dim3((unsigned)parts, (unsigned)outer), kArgmaxThreads, 0, c.stream>>>(a.ptr<void>(0), dt, bests, ats, n, parts, slice);
    LTS_CHECK(cudaGetLastError(), "argmax kernel launch");
    argmaxFinishKernel<<<(unsigned)((outer + 7) / 8), 256, 0, c.stream>>>(bests, ats, a.ptr<int>(1), outer, parts);
    LTS_CHECK(cudaGetLastError(), "argmax kernel launch");
    c.release(scratch);
    return;
  }
  argmaxKernel<<<blocksFor(outer * inner, 256), 256, 0, c.stream>>>(a.ptr<void>(0), dt, a.ptr<int>(1), outer, n, inner);
  LTS_CHECK(cudaGetLastError(), "argmax kernel launch");
}

}  // namespace

void registerReduce(Registry& r) {
  r["reduce"] = reduce;
  r["argmax"] = argmax;
}

}  // namespace lts
