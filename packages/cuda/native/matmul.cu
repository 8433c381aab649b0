// Matmul: y (..., m, n) = op(a) (..., m, k) · op(b) (..., k, n), batch dims broadcast, f32
// accumulation. cuBLAS does the work where the GPU machine has it: the library is loaded at run
// time (dlopen), so building the addon needs no cuBLAS and a machine without it still works,
// through the tiled kernel below (also the reference the cuBLAS path is tested against).
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <tuple>

#include "device.cuh"
#include "gemv.cuh"

namespace lts {
namespace {

constexpr int BM = 64, BN = 64, BK = 16;

// a: (batch, m, k) or (batch, k, m) if transA; b: (batch, k, n) or (batch, n, k) if transB → y: (batch, m, n)
// batch offsets through ix (operand 0 = a, 1 = b), y batches contiguous
template <class T>
__global__ void __launch_bounds__(256) matmulKernel(const T* a, const T* b, T* y, int m, int n, int k, bool ta, bool tb, Index ix, int64_t batches) {
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  for (int64_t batch = blockIdx.z; batch < batches; batch += gridDim.z) {
  const T* A = a + offsetOf(ix, 0, batch);
  const T* B = b + offsetOf(ix, 1, batch);
  T* Y = y + batch * (int64_t)m * n;
  int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
  int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < k; k0 += BK) {
    for (int e = threadIdx.x; e < BM * BK; e += 256) {
      int i = e / BK, kk = e % BK;
      if (ta) i = e % BM, kk = e / BM;  // keep global reads coalesced in either layout
      int gi = row0 + i, gk = k0 + kk;
      As[kk][i] = gi < m && gk < k ? toF(ta ? A[(int64_t)gk * m + gi] : A[(int64_t)gi * k + gk]) : 0.0f;
    }
    for (int e = threadIdx.x; e < BN * BK; e += 256) {
      int j = e % BN, kk = e / BN;
      if (tb) j = e / BK, kk = e % BK;
      int gj = col0 + j, gk = k0 + kk;
      Bs[kk][j] = gj < n && gk < k ? toF(tb ? B[(int64_t)gj * k + gk] : B[(int64_t)gk * n + gj]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; kk++) {
      float av[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; r++) av[r] = As[kk][ty + 16 * r], bv[r] = Bs[kk][tx + 16 * r];
#pragma unroll
      for (int r = 0; r < 4; r++)
#pragma unroll
        for (int s = 0; s < 4; s++) acc[r][s] = fmaf(av[r], bv[s], acc[r][s]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; r++)
#pragma unroll
    for (int s = 0; s < 4; s++) {
      int gi = row0 + ty + 16 * r, gj = col0 + tx + 16 * s;
      if (gi < m && gj < n) Y[(int64_t)gi * n + gj] = fromF<T>(acc[r][s]);
    }
  }
}

// The few cuBLAS entry points used, declared here so that no cuBLAS header is needed to build.
using CreateFn = int (*)(void**);
using SetStreamFn = int (*)(void*, cudaStream_t);
using GemmFn = int (*)(void*, int, int, int, int, int, const void*, const void*, int, int, long long, const void*, int, int, long long,
                       const void*, void*, int, int, long long, int, int, int);
struct Cublas {
  CreateFn create = nullptr;
  GemmFn gemm = nullptr;
  SetStreamFn setStream = nullptr;
  std::string status = "not loaded";
};

Cublas& cublas() {
  static Cublas lib = [] {
    Cublas c;
    if (const char* off = getenv("LIGHTNING_CUDA_NO_CUBLAS"); off && *off == '1') {
      c.status = "disabled by LIGHTNING_CUDA_NO_CUBLAS=1";
      return c;
    }
    std::vector<std::string> names;
    if (const char* p = getenv("LIGHTNING_CUBLAS_PATH")) names.push_back(p);
    names.insert(names.end(), {"libcublas.so.13", "libcublas.so.12", "libcublas.so"});
    void* so = nullptr;
    for (auto& n : names)
      if ((so = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL))) break;
    if (!so) {
      c.status = "libcublas not found (set LIGHTNING_CUBLAS_PATH); using the built-in matmul kernel";
      return c;
    }
    c.create = (CreateFn)dlsym(so, "cublasCreate_v2");
    c.setStream = (SetStreamFn)dlsym(so, "cublasSetStream_v2");
    c.gemm = (GemmFn)dlsym(so, "cublasGemmStridedBatchedEx");
    void* probe = nullptr;  // a handle on the device current now, only to learn that cuBLAS initialises
    if (!c.create || !c.setStream || !c.gemm || c.create(&probe) != 0) {
      c.gemm = nullptr;
      c.status = "libcublas found but could not be initialised; using the built-in matmul kernel";
      return c;
    }
    c.status = "cublas";
    return c;
  }();
  return lib;
}

// A cuBLAS handle works on the device that was current when it was created: one per device.
void* cublasHandle(Cublas& cb) {
  static PerDevice<void*> handles;
  return handles.get([&] {
    void* h = nullptr;
    if (cb.create(&h) != 0) throw std::runtime_error("matmul: cublasCreate failed on this device");
    return h;
  });
}

int cudaType(int dt) { return dt == F32 ? 0 : dt == F16 ? 2 : 14; }  // CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF

// cuBLASLt for the products of a decode step above the small-M kernel's rows (5–256 rows of x·Wᵀ
// in 16 bits; 436M serving at batch 64 is 96 such products a step), so that a split-K candidate may
// only add its partial sums in f32: cublasGemmEx's default choice for some of these shapes adds them
// in bf16 (M 200, N 523, K 1,031 with a transposed: 5× the error bound of an f32 sum, the product
// tests found), an extra rounding of each partial sum that its error bound lacks. Each (dtype, m, n,
// k, layout, alignment) is planned once per process: cuBLASLt's first candidate by its heuristic
// (`LIGHTNING_CUDA_LT=heuristic`, the default), or the fastest of its candidates timed on the stream
// (`tune`: measured no faster on the H200 at the 436M decode shapes, KERNELS.md), where nothing is
// being captured; a recorded graph replays the plan of the eager step before it. `0` keeps
// cublasGemmEx.
namespace lt {

constexpr int kMaxRows = 256;
constexpr size_t kWorkspace = 32u << 20;
constexpr int kCandidates = 16;

struct Algo {
  uint64_t data[8];
};
struct Heuristic {
  Algo algo;
  size_t workspaceSize;
  int state;
  float wavesCount;
  int reserved[4];
};
using CreateFn = int (*)(void**);
using DescCreateFn = int (*)(void**, int, int);
using SetAttrFn = int (*)(void*, int, const void*, size_t);
using LayoutCreateFn = int (*)(void**, int, uint64_t, uint64_t, int64_t);
using LayoutSetFn = int (*)(void*, int, const void*, size_t);
using PrefCreateFn = int (*)(void**);
using HeuristicFn = int (*)(void*, void*, void*, void*, void*, void*, void*, int, Heuristic*, int*);
using MatmulFn = int (*)(void*, void*, const void*, const void*, void*, const void*, void*, const void*, const void*, void*, void*, void*,
                         const Algo*, void*, size_t, cudaStream_t);
// Attribute codes of cublasLt.h.
constexpr int kLayoutBatchCount = 5, kLayoutBatchStride = 6;
constexpr int kDescTransA = 3, kDescTransB = 4, kPrefMaxWorkspace = 1, kPrefReductionMask = 3, kPrefAlignA = 5, kPrefAlignB = 6, kPrefAlignC = 7,
              kPrefAlignD = 8;
// Split-K partial sums may be added only in the compute type (f32): the in-place and output-type
// schemes add them in bf16/f16, one more rounding per split that the product's error bound lacks.
constexpr uint32_t kReduceInComputeType = 2;

enum class Mode { Off, Heuristic, Tune };

struct Api {
  CreateFn create = nullptr;
  DescCreateFn descCreate = nullptr;
  SetAttrFn descSet = nullptr;
  LayoutCreateFn layoutCreate = nullptr;
  LayoutSetFn layoutSet = nullptr;
  PrefCreateFn prefCreate = nullptr;
  SetAttrFn prefSet = nullptr;
  HeuristicFn heuristic = nullptr;
  MatmulFn matmul = nullptr;
  bool loaded = false;
};

Api& api() {
  static Api a = [] {
    Api x;
    const char* noCublas = getenv("LIGHTNING_CUDA_NO_CUBLAS");
    if (noCublas && *noCublas == '1') return x;
    void* so = nullptr;
    for (const char* n : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"})
      if ((so = dlopen(n, RTLD_NOW | RTLD_LOCAL))) break;
    if (!so) return x;
    x.create = (CreateFn)dlsym(so, "cublasLtCreate");
    x.descCreate = (DescCreateFn)dlsym(so, "cublasLtMatmulDescCreate");
    x.descSet = (SetAttrFn)dlsym(so, "cublasLtMatmulDescSetAttribute");
    x.layoutCreate = (LayoutCreateFn)dlsym(so, "cublasLtMatrixLayoutCreate");
    x.layoutSet = (LayoutSetFn)dlsym(so, "cublasLtMatrixLayoutSetAttribute");
    x.prefCreate = (PrefCreateFn)dlsym(so, "cublasLtMatmulPreferenceCreate");
    x.prefSet = (SetAttrFn)dlsym(so, "cublasLtMatmulPreferenceSetAttribute");
    x.heuristic = (HeuristicFn)dlsym(so, "cublasLtMatmulAlgoGetHeuristic");
    x.matmul = (MatmulFn)dlsym(so, "cublasLtMatmul");
    x.loaded = x.create && x.descCreate && x.descSet && x.layoutCreate && x.layoutSet && x.prefCreate && x.prefSet && x.heuristic && x.matmul;
    return x;
  }();
  return a;
}

// Read at each product, so a test can compare the paths in one process.
Mode mode() {
  const char* v = getenv("LIGHTNING_CUDA_LT");
  if (!v || !strcmp(v, "heuristic")) return Mode::Heuristic;
  if (!strcmp(v, "tune")) return Mode::Tune;
  if (!strcmp(v, "0")) return Mode::Off;
  throw std::runtime_error(std::string("LIGHTNING_CUDA_LT: expected heuristic, tune or 0, got '") + v + "'");
}

struct Plan {
  void *desc = nullptr, *la = nullptr, *lb = nullptr, *ly = nullptr;
  Algo algo{};
  size_t workspace = 0;
  bool ok = false;
};

struct Key {
  int dt, m, n, k;
  bool ta, tb;
  Mode mode;
  uint32_t alignA, alignB, alignY;  // bytes each pointer is aligned to (at most 256): a plan may need them
  int batch;                        // matrices of b (a and y as below), 1 for one product
  int64_t strideB;                  // elements from one matrix of b to the next
  bool operator<(const Key& o) const {
    return std::tie(dt, m, n, k, ta, tb, mode, alignA, alignB, alignY, batch, strideB) <
           std::tie(o.dt, o.m, o.n, o.k, o.ta, o.tb, o.mode, o.alignA, o.alignB, o.alignY, o.batch, o.strideB);
  }
};

// The largest power of two ≤ 256 that divides the address: cuBLASLt's heuristic assumes 256 unless told.
uint32_t alignmentOf(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

struct DeviceState {
  void* handle = nullptr;
  std::map<Key, Plan> plans;
};

DeviceState& state() {
  static PerDevice<DeviceState> states;
  return states.get([] {
    DeviceState s;
    if (api().create(&s.handle) != 0) throw std::runtime_error("matmul: cublasLtCreate failed on this device");
    return s;
  });
}

// y = op(a)·op(b), plus `add` (y's shape) where given: it is cuBLASLt's C with β = 1.
int run(DeviceState& s, const Plan& p, const void* a, const void* b, void* y, const void* add, void* ws, cudaStream_t stream) {
  float alpha = 1, beta = add ? 1.0f : 0.0f;
  // Column-major: yᵀ (n × m) = op(b)ᵀ · op(a)ᵀ, as gemmCublas does.
  return api().matmul(s.handle, p.desc, &alpha, b, p.lb, a, p.la, &beta, add ? add : y, p.ly, y, p.ly, &p.algo, ws, p.workspace, stream);
}

// The candidates, fastest first by the stream's clock (a few launches each), or cuBLASLt's own order.
void choose(Context& c, DeviceState& s, Plan& p, const Heuristic* h, int count, const void* a, const void* b, void* y, const void* add, void* ws, bool time) {
  p.algo = h[0].algo, p.workspace = h[0].workspaceSize;
  if (!time || count < 2) return;
  cudaEvent_t e0, e1;
  LTS_CHECK(cudaEventCreate(&e0), "cudaEventCreate");
  LTS_CHECK(cudaEventCreate(&e1), "cudaEventCreate");
  float best = 1e30f;
  for (int i = 0; i < count; i++) {
    Plan trial = p;
    trial.algo = h[i].algo, trial.workspace = h[i].workspaceSize;
    if (run(s, trial, a, b, y, add, ws, c.stream) != 0) continue;  // warm-up; a candidate that fails is skipped
    LTS_CHECK(cudaEventRecord(e0, c.stream), "cudaEventRecord");
    for (int r = 0; r < 5; r++) run(s, trial, a, b, y, add, ws, c.stream);
    LTS_CHECK(cudaEventRecord(e1, c.stream), "cudaEventRecord");
    LTS_CHECK(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float ms = 0;
    LTS_CHECK(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
    if (ms < best) best = ms, p.algo = trial.algo, p.workspace = trial.workspace;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  if (c.verbose) fprintf(stderr, "[lightning-cuda] cublasLt plan: %d candidates, fastest %.2f us\n", count, best * 1000 / 5);
}

// y (m × n) = op(a) · op(b) (+ add, of y's shape, summed in f32 before the one rounding) for one
// matrix: false where this path does not apply (the caller then takes cublasGemmEx, or declines).
// With batch > 1 (and no add), y holds `batch` matrices one after the other, the i-th op(a) ·
// op(b + i·strideB): one a against several b of one shape anywhere past b (strideB ≥ 0, in
// elements), as one launch.
bool gemm(Context& c, int dt, const void* a, const void* b, void* y, int m, int n, int k, bool ta, bool tb, const void* add = nullptr, int batch = 1,
          int64_t strideB = 0) {
  if (dt == F32 || m > kMaxRows || batch < 1 || strideB < 0 || (batch > 1 && add)) return false;
  Mode want = mode();
  Api& x = api();
  if (want == Mode::Off || !x.loaded) return false;
  DeviceState& s = state();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  LTS_CHECK(cudaStreamIsCapturing(c.stream, &capture), "cudaStreamIsCapturing");
  bool capturing = capture != cudaStreamCaptureStatusNone;
  const char* lastB = static_cast<const char*>(b) + (batch - 1) * strideB * (int64_t)dtypeSize(dt);
  Key key{dt, m, n, k, ta, tb, want, alignmentOf(a), std::min(alignmentOf(b), alignmentOf(lastB)), std::min(alignmentOf(y), add ? alignmentOf(add) : 256u), batch,
          batch > 1 ? strideB : 0};
  auto it = s.plans.find(key);
  if (it == s.plans.end()) {
    Plan p;
    int t = cudaType(dt);
    int opA = tb ? 1 : 0, opB = ta ? 1 : 0;  // cuBLASLt's A is our b, its B our a
    bool made = x.descCreate(&p.desc, /*CUBLAS_COMPUTE_32F*/ 68, /*CUDA_R_32F*/ 0) == 0 && x.descSet(p.desc, kDescTransA, &opA, sizeof opA) == 0 &&
                x.descSet(p.desc, kDescTransB, &opB, sizeof opB) == 0 && x.layoutCreate(&p.lb, t, tb ? k : n, tb ? n : k, tb ? k : n) == 0 &&
                x.layoutCreate(&p.la, t, ta ? m : k, ta ? k : m, ta ? m : k) == 0 && x.layoutCreate(&p.ly, t, n, m, n) == 0;
    if (made && batch > 1) {
      // a is the same matrix for every product (stride 0), b's matrices strideB apart, y's packed.
      const int64_t strides[3] = {0, strideB, (int64_t)m * n};
      void* layouts[3] = {p.la, p.lb, p.ly};
      for (int l = 0; l < 3 && made; l++)
        made = x.layoutSet(layouts[l], kLayoutBatchCount, &batch, sizeof batch) == 0 && x.layoutSet(layouts[l], kLayoutBatchStride, &strides[l], sizeof strides[l]) == 0;
    }
    void* pref = nullptr;
    size_t cap = kWorkspace;
    Heuristic h[kCandidates];
    int count = 0;
    made = made && x.prefCreate(&pref) == 0 && x.prefSet(pref, kPrefMaxWorkspace, &cap, sizeof cap) == 0 &&
           x.prefSet(pref, kPrefReductionMask, &kReduceInComputeType, sizeof kReduceInComputeType) == 0 &&
           x.prefSet(pref, kPrefAlignA, &key.alignB, sizeof key.alignB) == 0 && x.prefSet(pref, kPrefAlignB, &key.alignA, sizeof key.alignA) == 0 &&
           x.prefSet(pref, kPrefAlignC, &key.alignY, sizeof key.alignY) == 0 && x.prefSet(pref, kPrefAlignD, &key.alignY, sizeof key.alignY) == 0 &&
           x.heuristic(s.handle, p.desc, p.lb, p.la, p.ly, p.ly, pref, kCandidates, h, &count) == 0 && count > 0;
    if (made) {
      // Timing runs the product into y several times: only where y overlaps neither input.
      auto* yc = static_cast<const char*>(y);
      size_t es = dtypeSize(dt), yb = (size_t)batch * m * n * es, ab = (size_t)m * k * es, bb = ((size_t)(batch - 1) * strideB + (size_t)n * k) * es;
      auto apart = [&](const void* q, size_t qb) { return yc + yb <= static_cast<const char*>(q) || static_cast<const char*>(q) + qb <= yc; };
      bool time = want == Mode::Tune && !capturing && apart(a, ab) && apart(b, bb) && (!add || apart(add, yb));
      void* ws = time ? c.scratch(kWorkspace) : nullptr;  // the candidates' largest workspace, for timing only
      choose(c, s, p, h, count, a, b, y, add, ws, time);
      if (ws) c.release(ws);
      p.ok = true;
    }
    it = s.plans.emplace(key, p).first;
  }
  const Plan& p = it->second;
  if (!p.ok) return false;
  void* ws = p.workspace ? c.scratch(p.workspace) : nullptr;
  int st = run(s, p, a, b, y, add, ws, c.stream);
  if (ws) c.release(ws);
  if (st != 0) throw std::runtime_error("matmul: cublasLtMatmul returned status " + std::to_string(st));
  return true;
}

}  // namespace lt

// Row-major y = op(a)·op(b) is column-major yᵀ = op(b)ᵀ·op(a)ᵀ, so b goes first.
bool gemmCublas(Context& c, int dt, const void* a, const void* b, void* y, int m, int n, int k, bool ta, bool tb, int64_t sa, int64_t sb, int batch) {
  Cublas& cb = cublas();
  if (!cb.gemm) return false;
  void* handle = cublasHandle(cb);
  if (cb.setStream(handle, c.stream) != 0) throw std::runtime_error("matmul: cublasSetStream failed");
  float alpha = 1, beta = 0;
  int t = cudaType(dt);
  int st = cb.gemm(handle, tb ? 1 : 0, ta ? 1 : 0, n, m, k, &alpha, b, t, tb ? k : n, sb, a, t, ta ? m : k, sa, &beta, y, t, n,
                   (int64_t)m * n, batch, /*CUBLAS_COMPUTE_32F*/ 68, /*CUBLAS_GEMM_DEFAULT*/ -1);
  if (st != 0) throw std::runtime_error("matmul: cublasGemmStridedBatchedEx returned status " + std::to_string(st));
  return true;
}

// p: [a, b, y] or [a, b, y, add]; i: [dtype, transA, transB, m, n, k, batchShapeY..., batchStridesA...,
// batchStridesB...]. With `add` (y's shape, contiguous; one matrix), y = op(a)·op(b) + add with one
// rounding, where the skinny kernel (opt-in; x·wᵀ, 16 bits, 5–64 rows) or cuBLASLt (16 bits, 5–256 rows)
// takes it: fusedLinear's residual above the small-M kernel's rows; elsewhere the launch declines
// and src/kernels.ts adds it with its own kernel.
void matmul(Context& c, const Args& args) {
  Reader r{args.i};
  int dt = (int)r.next();
  bool ta = r.next() != 0, tb = r.next() != 0;
  int m = (int)r.next(), n = (int)r.next(), k = (int)r.next();
  auto bshape = r.shape(), bsa = r.shape(), bsb = r.shape();
  int64_t batches = numel(bshape);
  if (batches * m * n == 0) return;
  auto* y = args.ptr<char>(2);
  size_t es = dtypeSize(dt);
  if (args.p.size() > 3 && args.p[3] != 0) {
    const void* add = args.ptr<void>(3);
    // Above the small-M kernel's rows only: at 1–4 rows where that kernel declines, the chain's bits stay.
    if (batches != 1 || k == 0 || m <= GEMV_MAX_M) c.declined = true;
    else if (!ta && tb && skinny(c, dt, args.ptr<void>(0), args.ptr<void>(1), y, m, n, k, add)) return;
    else if (!lt::gemm(c, dt, args.ptr<void>(0), args.ptr<void>(1), y, m, n, k, ta, tb, add)) c.declined = true;
    return;
  }
  if (k == 0) {
    LTS_CHECK(cudaMemsetAsync(y, 0, batches * m * n * es, c.stream), "matmul memset");
    return;
  }
  // x·wᵀ for a few rows of x (the decode step's linear layers): a kernel that streams w at memory
  // speed where cuBLAS's tiles leave most SMs idle (native/gemv.cu).
  if (batches == 1 && !ta && tb && gemv(c, dt, args.ptr<void>(0), args.ptr<void>(1), y, m, n, k)) return;
  // Above its rows, up to 64, where LIGHTNING_CUDA_SKINNY=1: a tensor-core stream of w split over
  // the SMs (native/skinny.cu; slower than cuBLASLt as measured, so off by default).
  if (batches == 1 && !ta && tb && skinny(c, dt, args.ptr<void>(0), args.ptr<void>(1), y, m, n, k, nullptr)) return;
  if (args.p.size() > 3 && args.p[3] != 0) {
    if (batches != 1 || !lt::gemm(c, dt, args.ptr<void>(0), args.ptr<void>(1), y, m, n, k, ta, tb, args.ptr<void>(3))) c.declined = true;
    return;
  }
  if (batches == 1 && lt::gemm(c, dt, args.ptr<void>(0), args.ptr<void>(1), y, m, n, k, ta, tb)) return;
  Index ix = makeIndex(bshape, {bsa, bsb});
  // cuBLAS takes one uniform batch stride per operand: dims that did not merge are looped here.
  if (ix.rank <= 1 || batches <= 64) {
    int inner = ix.rank == 0 ? 1 : (int)ix.shape[ix.rank - 1];
    int64_t sa = ix.rank == 0 ? 0 : ix.stride[0][ix.rank - 1], sb = ix.rank == 0 ? 0 : ix.stride[1][ix.rank - 1];
    Index outer = ix;
    outer.rank = ix.rank == 0 ? 0 : ix.rank - 1;
    bool used = true;
    for (int64_t o = 0; o < batches / inner && used; o++) {
      int64_t oa = 0, ob = 0, rest = o;
      for (int d = outer.rank - 1; d >= 0; d--) {
        int64_t cd = rest % outer.shape[d];
        rest /= outer.shape[d];
        oa += cd * outer.stride[0][d], ob += cd * outer.stride[1][d];
      }
      used = gemmCublas(c, dt, args.ptr<char>(0) + oa * es, args.ptr<char>(1) + ob * es, y + o * inner * (int64_t)m * n * es, m, n, k, ta, tb, sa, sb, inner);
    }
    if (used) return;
  }
  dim3 grid((n + BN - 1) / BN, (m + BM - 1) / BM, (unsigned)std::min<int64_t>(batches, 65535));
  LTS_DISPATCH_FLOAT(dt, T, matmulKernel<T><<<grid, 256, 0, c.stream>>>(args.ptr<T>(0), args.ptr<T>(1), (T*)y, m, n, k, ta, tb, ix, batches));
  LTS_CHECK(cudaGetLastError(), "matmul kernel launch");
}

// p: [x, w, wNext, y]; i: [dtype, m, n, k]. y (2, m, n) = [x·wᵀ, x·wNextᵀ] for x (m, k) and two
// weights (n, k), wNext at a higher address than w: one cuBLASLt launch of a strided batch of two
// (x's stride 0, the weights' their address difference), where a decode layer above the small-M
// kernel's rows would run two products of one input (the GLU's l1 and l2). Declines (nothing
// enqueued) outside 16 bits and 5–256 rows, for weights in the other order, without cuBLASLt, or
// with LIGHTNING_CUDA_PRODUCT_PAIR=0 (read at each call); src/kernels.ts then runs two products.
void productPair(Context& c, const Args& args) {
  int dt = (int)args.i.at(0);
  int m = (int)args.i.at(1), n = (int)args.i.at(2), k = (int)args.i.at(3);
  const bool on = envSwitch("LIGHTNING_CUDA_PRODUCT_PAIR", true);
  auto* w = args.ptr<char>(1);
  auto* wNext = args.ptr<char>(2);
  const int64_t es = (int64_t)dtypeSize(dt), gap = wNext - w;
  const bool fits = m > GEMV_MAX_M && k > 0 && n > 0 && gap >= (int64_t)n * k * es && gap % es == 0;
  if (!on || !fits || !lt::gemm(c, dt, args.ptr<void>(0), w, args.ptr<void>(3), m, n, k, false, true, nullptr, 2, gap / es))
    c.declined = true;
}

}  // namespace

std::string cublasStatus() { return cublas().status; }

void registerMatmul(Registry& r) {
  r["matmul"] = matmul;
  r["productPair"] = productPair;
  r["fusedLinear"] = fusedLinear;
  r["qkvuProjection"] = qkvuProjection;
}

}  // namespace lts
