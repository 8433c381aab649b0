// Validate-then-benchmark harness for the Lightning Attention kernels (llm.c dev/cuda style).
//
// Bench rows: for each head shape (D×E), dtype, version and T (H = 16, B·T = 65,536; T = 131,072
// runs at B = 1) it draws random inputs, checks the output, final state and gradients of two heads
// (the strongest and the weakest decay of the last sequence) against a float64 recurrence on the
// host, poisons outputs first so unwritten elements fail, and only then times the launcher with
// CUDA events (median of repeats, L2 flushed between them). Decode rows check every decode step
// kernel (LIGHTNING_CUDA_STEP: scalar, vec4, rows, stream, block, pair, narrow) on odd sizes, in place and
// misaligned, in bf16, f16 and f32, then time each at B = 1, 8, 64, 256 for each head shape
// (benchDecode says how: L2-cold state, host launch latency excluded, and the first rows' clock).
// --check: odd lengths (T = 1, 63, 65, 513, a long B = 1 sequence that takes the sequence split, and
// batches of 80, 160 and 280 heads that do not split) with an initial state, every head and every
// output (o, S_T, dq, dk, dv, dS_0) against the float64 recurrence, bf16 and f16, for each head shape;
// --small keeps a few of them (for compute-sanitizer).
// Versions 1, 5 and 6 run through the addon's registry (LIGHTNING_CUDA_LA_VERSION; 0: the addon's own
// choice), the way the Node addon calls them; 2, 3, 4 (bf16, D = E = 128) are the legacy files in bench/legacy, called directly.
//
// Build (packages/cuda, after the addon's build made build/cuda-obj/libltscuda.a):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I native -I bench/legacy \
//     bench/lightning_bench.cu bench/legacy/lightning_v2.cu bench/legacy/lightning_v3.cu \
//     bench/legacy/lightning_v4.cu build/cuda-obj/libltscuda.a -ldl -o build/lightning_bench
// Run: build/lightning_bench [--shapes 128x128,256x128,64x64] [--T 1024,8192,65536] [--dtypes bf16,f16]
//        [--versions 6,5,4] [--reps 20] [--json FILE] [--check [--small] [--check-dtypes bf16,f16] [--check-versions 6,5]] [--no-bench]
//        [--no-decode] [--time-anyway] [--steps scalar,vec4,rows,stream,block,pair,narrow] [--decode-B 1,8,64,256] [--no-decode-timing]
//        [--no-segment-states]
//   Decode only: build/lightning_bench --no-bench --shapes 128x128,256x128,64x64 --dtypes bf16 --json decode.json
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "lightning.cuh"
#include "lightning_legacy.cuh"
#include "runtime.h"

using namespace lts;

namespace lts {
// In lightning.cu: the decode step kernel that LIGHTNING_CUDA_STEP picks for D×E (16-byte aligned states), in words.
std::string lightningStepKernelName(int BH, int D, int E);
}  // namespace lts

#define CK(x) LTS_CHECK(x, #x)

// A caching scratch allocator, so that timed launches do not pay for cudaMalloc/cudaFree.
struct BenchContext : Context {
  std::multimap<size_t, void*> freeList;
  std::map<void*, size_t> sizes;
  void* scratch(size_t bytes) override {
    auto it = freeList.lower_bound(bytes);
    if (it != freeList.end() && it->first < bytes * 2) {
      void* p = it->second;
      freeList.erase(it);
      return p;
    }
    void* p;
    CK(cudaMalloc(&p, bytes));
    sizes[p] = bytes;
    return p;
  }
  void release(void* p) override { freeList.emplace(sizes.at(p), p); }
  void trim() {
    for (auto& [n, p] : freeList) cudaFree(p), sizes.erase(p);
    freeList.clear();
  }
};

struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Buf(size_t n) : bytes(n) { CK(cudaMalloc(&p, std::max<size_t>(n, 16))); }
  ~Buf() { cudaFree(p); }
  uint64_t ptr() const { return (uint64_t)(uintptr_t)p; }
};

// 16-bit storage on the host: bf16 or f16 bits.
static float toFloat(uint16_t h, int dt) {
  if (dt == F16) {
    __half x;
    memcpy(&x, &h, 2);
    return __half2float(x);
  }
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint16_t fromFloat(float f, int dt) {
  uint16_t h;
  if (dt == F16) {
    __half x = __float2half_rn(f);
    memcpy(&h, &x, 2);
  } else {
    __nv_bfloat16 x = __float2bfloat16_rn(f);
    memcpy(&h, &x, 2);
  }
  return h;
}
static const char* dtName(int dt) { return dt == F16 ? "f16" : "bf16"; }

struct Shape {
  int B, H, T, D, E;
  size_t qk() const { return (size_t)B * H * T * D; }
  size_t vo() const { return (size_t)B * H * T * E; }
  size_t st() const { return (size_t)B * H * D * E; }
};

// N(0, std²) draws, in parallel blocks with their own seeds (the same numbers for a seed on any machine).
static std::vector<uint16_t> draw16(size_t n, uint32_t seed, int dt, float std) {
  std::vector<uint16_t> x(n);
  const size_t block = 1 << 20;
  size_t nb = (n + block - 1) / block;
  unsigned nt = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> th;
  for (unsigned w = 0; w < nt; w++)
    th.emplace_back([&, w] {
      for (size_t b = w; b < nb; b += nt) {
        std::mt19937 gen(seed * 1000003u + (uint32_t)b);
        std::normal_distribution<float> nd(0.0f, std);
        for (size_t i = b * block; i < std::min(n, (b + 1) * block); i++) x[i] = fromFloat(nd(gen), dt);
      }
    });
  for (auto& t : th) t.join();
  return x;
}
static std::vector<float> drawF(size_t n, uint32_t seed, float std) {
  std::vector<float> x(n);
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, std);
  for (auto& y : x) y = nd(gen);
  return x;
}

struct Inputs {
  std::vector<uint16_t> q, k, v, dO;
  std::vector<float> dS, S0;  // S0 empty: none
};

// Float64 recurrence for one (b, h): o, final state, and dq, dk, dv, dS0.
struct HeadRef {
  std::vector<double> o, S, dq, dk, dv, dS0;
};
static HeadRef reference(const Shape& s, int dt, int bh, double slope, const Inputs& in) {
  int T = s.T, D = s.D, E = s.E;
  double lam = std::exp(-slope);
  HeadRef r;
  r.o.assign((size_t)T * E, 0), r.dq.assign((size_t)T * D, 0), r.dk.assign((size_t)T * D, 0), r.dv.assign((size_t)T * E, 0);
  std::vector<double> S((size_t)D * E, 0), vt(E), gt(E);
  if (!in.S0.empty())
    for (size_t i = 0; i < S.size(); i++) S[i] = in.S0[(size_t)bh * D * E + i];
  auto Q = [&](int t, int d) { return (double)toFloat(in.q[((size_t)bh * T + t) * D + d], dt); };
  auto K = [&](int t, int d) { return (double)toFloat(in.k[((size_t)bh * T + t) * D + d], dt); };
  for (int t = 0; t < T; t++) {
    for (int e = 0; e < E; e++)
      vt[e] = toFloat(in.v[((size_t)bh * T + t) * E + e], dt), gt[e] = toFloat(in.dO[((size_t)bh * T + t) * E + e], dt);
    double* o = &r.o[(size_t)t * E];
    for (int d = 0; d < D; d++) {
      double kd = K(t, d), qd = Q(t, d);
      double* row = &S[(size_t)d * E];
      double dqd = 0;
      for (int e = 0; e < E; e++) {
        row[e] = lam * row[e] + kd * vt[e];
        o[e] += qd * row[e];
        dqd += row[e] * gt[e];
      }
      r.dq[(size_t)t * D + d] = dqd;
    }
  }
  r.S = S;
  std::vector<double> G((size_t)D * E);
  for (size_t i = 0; i < G.size(); i++) G[i] = in.dS[(size_t)bh * D * E + i];
  for (int t = T - 1; t >= 0; t--) {
    for (int e = 0; e < E; e++)
      vt[e] = toFloat(in.v[((size_t)bh * T + t) * E + e], dt), gt[e] = toFloat(in.dO[((size_t)bh * T + t) * E + e], dt);
    double* dv = &r.dv[(size_t)t * E];
    for (int d = 0; d < D; d++) {
      double qd = Q(t, d), kd = K(t, d);
      double* row = &G[(size_t)d * E];
      double dkd = 0;
      for (int e = 0; e < E; e++) {
        row[e] += qd * gt[e];  // G_t = Σ_{s≥t} λ^{s−t} q_sᵀ dO_s + λ^{T−1−t} dS_T
        dkd += row[e] * vt[e];
        dv[e] += kd * row[e];
      }
      r.dk[(size_t)t * D + d] = dkd;
    }
    for (auto& x : G) x *= lam;
  }
  r.dS0 = G;  // λ G_0
  return r;
}

struct Err {
  double num = 0, den = 0;
  bool nan = false;
  void add(double got, double want) {
    if (std::isnan(got)) nan = true;
    num += (got - want) * (got - want), den += want * want;
  }
  double rel() const { return nan ? INFINITY : std::sqrt(num / std::max(den, 1e-300)); }
};

static double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

struct Harness {
  Registry reg;
  BenchContext ctx;
  cudaDeviceProp prop;
  cudaEvent_t e0, e1;
  double copyGBs = 0;
  Buf* flush = nullptr;
  int reps = 20;
  FILE* json = nullptr;
  bool firstRow = true;
  int failures = 0;
  bool timeAnyway = false;  // --time-anyway: time rows that failed their check too (diagnosis only; marked ok = false)
  bool segments = true;     // --no-segment-states: the backward remakes the forward's segment states

  void row(const std::string& obj) {
    if (!json) return;
    fprintf(json, "%s  %s", firstRow ? "" : ",\n", obj.c_str());
    fflush(json);
    firstRow = false;
  }
};

// Device buffers of one problem, and the calls of one version on them.
struct Problem {
  Shape s;
  int dt;
  Buf q, k, v, o, dO, Sf, dS, S0, dq, dk, dv, dS0, slopes;
  bool withS0;
  Problem(const Shape& s_, int dt_, const Inputs& in, const std::vector<float>& sl)
      : s(s_), dt(dt_), q(s_.qk() * 2), k(s_.qk() * 2), v(s_.vo() * 2), o(s_.vo() * 2), dO(s_.vo() * 2), Sf(s_.st() * 4), dS(s_.st() * 4),
        S0(s_.st() * 4), dq(s_.qk() * 2), dk(s_.qk() * 2), dv(s_.vo() * 2), dS0(s_.st() * 4), slopes(sl.size() * 4), withS0(!in.S0.empty()) {
    CK(cudaMemcpy(q.p, in.q.data(), q.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(k.p, in.k.data(), k.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(v.p, in.v.data(), v.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dO.p, in.dO.data(), dO.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dS.p, in.dS.data(), dS.bytes, cudaMemcpyHostToDevice));
    if (withS0) CK(cudaMemcpy(S0.p, in.S0.data(), S0.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(slopes.p, sl.data(), slopes.bytes, cudaMemcpyHostToDevice));
  }
  // The forward's segment states for the backward, as the addon's caller keeps them
  // (lightningSegmentTokens; --no-segment-states: none, each pass makes its own).
  std::unique_ptr<Buf> seg;
  int segTokens = 0;
  void planSegments(Context& c, bool on) {
    segTokens = on ? lightningSegmentTokens(c, dt, dims()) : 0;
    const size_t bytes = segTokens ? (size_t)s.B * s.H * ((s.T + segTokens - 1) / segTokens) * s.D * s.E * 4 : 0;
    if (bytes && (!seg || seg->bytes != bytes)) seg = std::make_unique<Buf>(bytes);
  }
  Args fwdArgs() const {
    Args a;
    a.p = {q.ptr(), k.ptr(), v.ptr(), slopes.ptr(), withS0 ? S0.ptr() : 0, o.ptr(), Sf.ptr()};
    a.i = {dt, s.B, s.H, s.T, s.D, s.E};
    if (segTokens) a.p.push_back(seg->ptr()), a.i.push_back(segTokens);
    return a;
  }
  Args bwdArgs() const {
    Args a;
    a.p = {q.ptr(), k.ptr(), v.ptr(), slopes.ptr(), dO.ptr(), dS.ptr(), withS0 ? S0.ptr() : 0, dq.ptr(), dk.ptr(), dv.ptr(), dS0.ptr()};
    a.i = {dt, s.B, s.H, s.T, s.D, s.E};
    if (segTokens) a.p.push_back(seg->ptr()), a.i.push_back(segTokens);
    return a;
  }
  LightningDims dims() const { return {s.B, s.H, s.T, s.D, s.E}; }
  void poison() {
    for (Buf* b : {&o, &dq, &dk, &dv, &Sf, &dS0}) CK(cudaMemset(b->p, 0xff, b->bytes));
  }
};

static bool legacyApplies(int ver, int dt, const Shape& s) { return ver >= 2 && ver <= 4 && dt == BF16 && s.D == 128 && s.E == 128; }

static void runVersion(Harness& h, Problem& P, int ver, bool forward) {
  BenchContext& c = h.ctx;
  LightningDims d = P.dims();
  const void *q = P.q.p, *k = P.k.p, *v = P.v.p;
  const float* sl = (const float*)P.slopes.p;
  const float* S0 = P.withS0 ? (const float*)P.S0.p : nullptr;
  if (ver == 2) {
    if (forward) lightningForwardV2(c, d, q, k, v, sl, S0, P.o.p, (float*)P.Sf.p);
    else lightningBackwardV2(c, d, q, k, v, sl, P.dO.p, (const float*)P.dS.p, S0, P.dq.p, P.dk.p, P.dv.p, (float*)P.dS0.p);
  } else if (ver == 3) {
    if (forward) lightningForwardV3(c, d, q, k, v, sl, S0, P.o.p, (float*)P.Sf.p);
    else lightningBackwardV3(c, d, q, k, v, sl, P.dO.p, (const float*)P.dS.p, S0, P.dq.p, P.dk.p, P.dv.p, (float*)P.dS0.p);
  } else if (ver == 4) {
    if (forward) lightningForwardV4(c, d, q, k, v, sl, S0, P.o.p, (float*)P.Sf.p);
    else lightningBackwardV4(c, d, q, k, v, sl, P.dO.p, (const float*)P.dS.p, S0, P.dq.p, P.dk.p, P.dv.p, (float*)P.dS0.p);
  } else {
    setenv("LIGHTNING_CUDA_LA_VERSION", std::to_string(ver).c_str(), 1);
    if (forward) P.planSegments(c, h.segments);
    if (forward) h.reg["lightningAttention"](c, P.fwdArgs());
    else h.reg["lightningAttentionBackward"](c, P.bwdArgs());
  }
}

static std::string kernelName(Harness& h, const Problem& P, int ver, bool backward) {
  if (ver >= 2 && ver <= 4) return "v" + std::to_string(ver) + " legacy (bf16, D = 128)";
  setenv("LIGHTNING_CUDA_LA_VERSION", std::to_string(ver).c_str(), 1);
  return lightningKernelName(h.ctx, P.dt, P.dims(), backward);
}

struct Got {
  std::vector<uint16_t> o, dq, dk, dv;
  std::vector<float> Sf, dS0;
};
static Got fetch(const Problem& P) {
  Got g;
  g.o.resize(P.s.vo()), g.dq.resize(P.s.qk()), g.dk.resize(P.s.qk()), g.dv.resize(P.s.vo()), g.Sf.resize(P.s.st()), g.dS0.resize(P.s.st());
  CK(cudaMemcpy(g.o.data(), P.o.p, P.o.bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(g.dq.data(), P.dq.p, P.dq.bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(g.dk.data(), P.dk.p, P.dk.bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(g.dv.data(), P.dv.p, P.dv.bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(g.Sf.data(), P.Sf.p, P.Sf.bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(g.dS0.data(), P.dS0.p, P.dS0.bytes, cudaMemcpyDeviceToHost));
  return g;
}

static bool allFinite(const std::vector<uint16_t>& x, int dt) {
  for (auto y : x)
    if (!std::isfinite(toFloat(y, dt))) return false;
  return true;
}
static bool allFinite(const std::vector<float>& x) {
  for (auto y : x)
    if (!std::isfinite(y)) return false;
  return true;
}

// Errors of the heads `heads` (with their references): forward (o, S_T) and backward (dq, dk, dv, and dS_0).
struct Errors {
  Err o, S, dq, dk, dv, dS0;
  double fwd() const { return std::max(o.rel(), S.rel()); }
  double bwd() const { return std::max({dq.rel(), dk.rel(), dv.rel(), dS0.rel()}); }
};
static Errors compare(const Problem& P, const Got& g, const std::vector<int>& heads, const std::vector<HeadRef>& refs) {
  const Shape& s = P.s;
  Errors r;
  size_t T = s.T, D = s.D, E = s.E;
  for (size_t i = 0; i < heads.size(); i++) {
    size_t bh = heads[i];
    const HeadRef& f = refs[i];
    for (size_t j = 0; j < T * E; j++) r.o.add(toFloat(g.o[bh * T * E + j], P.dt), f.o[j]), r.dv.add(toFloat(g.dv[bh * T * E + j], P.dt), f.dv[j]);
    for (size_t j = 0; j < T * D; j++) r.dq.add(toFloat(g.dq[bh * T * D + j], P.dt), f.dq[j]), r.dk.add(toFloat(g.dk[bh * T * D + j], P.dt), f.dk[j]);
    for (size_t j = 0; j < D * E; j++) r.S.add(g.Sf[bh * D * E + j], f.S[j]), r.dS0.add(g.dS0[bh * D * E + j], f.dS0[j]);
  }
  return r;
}

static std::vector<HeadRef> references(const Shape& s, int dt, const std::vector<int>& heads, const std::vector<float>& slopes, const Inputs& in) {
  std::vector<HeadRef> refs(heads.size());
  std::vector<std::thread> th;
  for (size_t i = 0; i < heads.size(); i++) th.emplace_back([&, i] { refs[i] = reference(s, dt, heads[i], slopes[heads[i] % s.H], in); });
  for (auto& t : th) t.join();
  return refs;
}

static std::vector<float> tnlSlopes(int H) {
  std::vector<float> s(H);
  for (int h = 0; h < H; h++) s[h] = std::pow(2.0f, -8.0f * (h + 1) / H);
  return s;
}

static double bound(int dt) { return dt == F16 ? 2e-3 : 5e-3; }

// Odd lengths and state in/out: every head, every output, against the float64 recurrence.
static void checkSuite(Harness& h, const std::vector<std::pair<int, int>>& shapes, const std::vector<int>& dtypes, const std::vector<int>& versions,
                       bool small) {
  struct Case {
    Shape s;
    int dt;
  };
  std::vector<Case> cases;
  for (int dt : dtypes)
    for (auto [D, E] : shapes) {
      std::vector<int> Ts = small ? std::vector<int>{63, 200} : std::vector<int>{1, 63, 65, 513};
      for (int T : Ts) cases.push_back({{2, 2, T, D, E}, dt});
      cases.push_back({{1, 2, small ? 1100 : 4099, D, E}, dt});  // B = 1: the sequence split
      // Batches that fill about 1, 2 and 3 CTAs per SM of 132 without a split at D = 64 (the cases
      // above split into one-chunk segments there): each CTA walks several chunks, and version 6
      // runs its 4-, 3- and 2-stage loads.
      if (!small)
        for (auto [B, T] : {std::pair{4, 321}, std::pair{8, 200}, std::pair{14, 130}}) cases.push_back({{B, 20, T, D, E}, dt});
    }
  printf("\n== check: initial state, odd T, all heads; bound %.0e (bf16) / %.0e (f16) relative RMS\n", 5e-3, 2e-3);
  printf("%-5s %3s %3s %5s %4s %4s  %9s %9s %9s %9s %9s %9s  %s\n", "dtype", "B", "H", "T", "D", "E", "o", "S_T", "dq", "dk", "dv", "dS0", "ok / kernel");
  int n = 0;
  for (auto& cs : cases) {
    const Shape& s = cs.s;
    uint32_t seed = 17 + 31 * n++;
    Inputs in{draw16(s.qk(), seed, cs.dt, 0.3f), draw16(s.qk(), seed + 1, cs.dt, 0.3f), draw16(s.vo(), seed + 2, cs.dt, 0.3f),
              draw16(s.vo(), seed + 3, cs.dt, 0.3f), drawF(s.st(), seed + 4, 0.3f), drawF(s.st(), seed + 5, 0.3f)};
    std::vector<float> slopes = tnlSlopes(s.H);
    slopes[0] = 0.9f;  // a strong decay beside a weak one
    Problem P(s, cs.dt, in, slopes);
    std::vector<int> heads;
    for (int i = 0; i < s.B * s.H; i++) heads.push_back(i);
    auto refs = references(s, cs.dt, heads, slopes, in);
    for (int ver : versions) {
      P.poison();
      runVersion(h, P, ver, true);
      runVersion(h, P, ver, false);
      CK(cudaStreamSynchronize(h.ctx.stream));
      CK(cudaGetLastError());
      Got g = fetch(P);
      Errors e = compare(P, g, heads, refs);
      bool ok = e.fwd() <= bound(cs.dt) && e.bwd() <= bound(cs.dt);
      if (!ok) h.failures++;
      printf("%-5s %3d %3d %5d %4d %4d  %9.2e %9.2e %9.2e %9.2e %9.2e %9.2e  %s / %s\n", dtName(cs.dt), s.B, s.H, s.T, s.D, s.E, e.o.rel(), e.S.rel(),
             e.dq.rel(), e.dk.rel(), e.dv.rel(), e.dS0.rel(), ok ? "yes" : "NO", kernelName(h, P, ver, false).c_str());
      fflush(stdout);
      char buf[512];
      snprintf(buf, sizeof buf,
               "{\"suite\": \"attention-check\", \"impl\": \"chunked-v%d\", \"backend\": \"cuda\", \"device\": \"%s\", \"B\": %d, \"T\": %d, \"H\": %d, "
               "\"D\": %d, \"E\": %d, \"dtype\": \"%s\", \"initial_state\": true, \"rel_err\": %.3e, \"rel_err_bwd\": %.3e, \"ok\": %s}",
               ver, h.prop.name, s.B, s.T, s.H, s.D, s.E, dtName(cs.dt), e.fwd(), e.bwd(), ok ? "true" : "false");
      h.row(buf);
    }
    unsetenv("LIGHTNING_CUDA_LA_VERSION");
  }
  h.ctx.trim();
}

static void benchShape(Harness& h, int D, int E, int T, int dt, const std::vector<int>& versions) {
  const int H = 16, tokens = 65536;
  Shape s{std::max(1, tokens / T), H, T, D, E};
  uint32_t seed = 1234 + T + 7 * D + 3 * E + 100 * dt;
  Inputs in{draw16(s.qk(), seed, dt, 0.3f), draw16(s.qk(), seed + 1, dt, 0.3f), draw16(s.vo(), seed + 2, dt, 0.3f), draw16(s.vo(), seed + 3, dt, 0.3f),
            drawF(s.st(), seed + 4, 0.3f), {}};
  std::vector<float> slopes = tnlSlopes(H);
  Problem P(s, dt, in, slopes);
  // Reference heads: the last sequence's strongest and weakest decay.
  std::vector<int> heads = {(s.B - 1) * H + 0, (s.B - 1) * H + H - 1};
  auto refs = references(s, dt, heads, slopes, in);
  Args fwd = P.fwdArgs(), bwd = P.bwdArgs();
  for (int ver : versions) {
    if (ver >= 2 && ver <= 4 && !legacyApplies(ver, dt, s)) continue;
    if (ver == 1 && T > 8192) continue;  // the CUDA-core reference: constant in T, tens of ms
    P.poison();
    runVersion(h, P, ver, true);
    runVersion(h, P, ver, false);
    CK(cudaStreamSynchronize(h.ctx.stream));
    CK(cudaGetLastError());
    Got g = fetch(P);
    Errors e = compare(P, g, heads, refs);
    // Poisoned (NaN) elements anywhere, not only in the checked heads, fail too.
    bool fwdOk = allFinite(g.o, dt) && allFinite(g.Sf) && e.fwd() <= bound(dt);
    bool bwdOk = allFinite(g.dq, dt) && allFinite(g.dk, dt) && allFinite(g.dv, dt) && allFinite(g.dS0) && e.bwd() <= bound(dt);
    if (!fwdOk || !bwdOk) h.failures++;
    auto timeIt = [&](bool withBackward) {
      std::vector<double> t;
      for (int r = -3; r < h.reps; r++) {
        CK(cudaMemsetAsync(h.flush->p, r & 0xff, h.flush->bytes, h.ctx.stream));
        CK(cudaEventRecord(h.e0, h.ctx.stream));
        runVersion(h, P, ver, true);
        if (withBackward) runVersion(h, P, ver, false);
        CK(cudaEventRecord(h.e1, h.ctx.stream));
        CK(cudaEventSynchronize(h.e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, h.e0, h.e1));
        if (r >= 0) t.push_back(ms);
      }
      return median(t);
    };
    double fwdMs = fwdOk || h.timeAnyway ? timeIt(false) : NAN;
    double fbMs = (fwdOk && bwdOk) || h.timeAnyway ? timeIt(true) : NAN;
    double bytes = 2.0 * (2 * s.qk() + 2 * s.vo());  // q, k, v read, o written once
    double gbps = bytes / (fwdMs * 1e-3) / 1e9;
    double tps = (double)s.B * T / (fwdMs * 1e-3);
    std::string kf = kernelName(h, P, ver, false), kb = kernelName(h, P, ver, true);
    printf("v%-3d %-4s %4dx%-4d %3d %6d %4s %8.3f %9.3f %9.2e %9.2e %7.0f %6.1f%% %7.1f  %s\n", ver, dtName(dt), D, E, s.B, T, fwdOk && bwdOk ? "yes" : "NO",
           fwdMs, fbMs, e.fwd(), e.bwd(), gbps, 100 * gbps / h.copyGBs, tps / 1e6, kf.c_str());
    fflush(stdout);
    auto num = [](double x) { return std::isnan(x) ? std::string("null") : std::to_string(x); };
    char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"suite\": \"attention\", \"impl\": \"chunked-v%d\", \"backend\": \"cuda\", \"device\": \"%s\", \"B\": %d, \"T\": %d, \"H\": %d, "
             "\"D\": %d, \"E\": %d, \"dtype\": \"%s\", \"fwd_ms\": %s, \"fwdbwd_ms\": %s, \"tokens_per_s\": %s, \"gbps\": %s, \"pct_copy\": %s, "
             "\"rel_err\": %.3e, \"rel_err_bwd\": %.3e, \"ok\": %s, \"copy_gbps\": %.0f, \"kernel\": \"%s\", \"kernel_bwd\": \"%s\", "
             "\"segment_tokens\": %d}",
             ver, h.prop.name, s.B, T, H, D, E, dtName(dt), num(fwdMs).c_str(), num(fbMs).c_str(), num(tps).c_str(), num(gbps).c_str(),
             num(100 * gbps / h.copyGBs).c_str(), e.fwd(), e.bwd(), fwdOk && bwdOk ? "true" : "false", h.copyGBs, kf.c_str(), kb.c_str(), P.segTokens);
    h.row(buf);
  }
  unsetenv("LIGHTNING_CUDA_LA_VERSION");
  h.ctx.trim();
}

// ---- Decode step (`lightningStep`): every kernel of LIGHTNING_CUDA_STEP, checked, then timed ----

// Holds GPU time until the host has queued what follows, so that the events around one launch time
// the kernel and not the host's launch latency (a few µs, a tenth of a batch-64 step).
__global__ void spinKernel(long long ns) {
  long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  while (t - t0 < ns);
}

// N(0, std²) floats in parallel blocks with their own seeds, rounded to dt's precision (f32: as drawn).
static std::vector<float> drawRounded(size_t n, uint32_t seed, int dt, float std) {
  std::vector<float> x(n);
  const size_t block = 1 << 20;
  size_t nb = (n + block - 1) / block;
  unsigned nt = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> th;
  for (unsigned w = 0; w < nt; w++)
    th.emplace_back([&, w] {
      for (size_t b = w; b < nb; b += nt) {
        std::mt19937 gen(seed * 1000003u + (uint32_t)b);
        std::normal_distribution<float> nd(0.0f, std);
        for (size_t i = b * block; i < std::min(n, (b + 1) * block); i++) x[i] = dt == F32 ? nd(gen) : toFloat(fromFloat(nd(gen), dt), dt);
      }
    });
  for (auto& t : th) t.join();
  return x;
}
static size_t dtBytes(int dt) { return dt == F32 ? 4 : 2; }
static const char* dtNameAny(int dt) { return dt == F32 ? "f32" : dtName(dt); }
static void upload(const Buf& b, const std::vector<float>& x, int dt) {
  if (dt == F32) {
    CK(cudaMemcpy(b.p, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    return;
  }
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); i++) h[i] = fromFloat(x[i], dt);
  CK(cudaMemcpy(b.p, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
}
static std::vector<float> downloadAny(const void* p, size_t n, int dt) {
  std::vector<float> x(n);
  if (dt == F32) {
    CK(cudaMemcpy(x.data(), p, n * 4, cudaMemcpyDeviceToHost));
    return x;
  }
  std::vector<uint16_t> h(n);
  CK(cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; i++) x[i] = toFloat(h[i], dt);
  return x;
}

// One decode problem on the host (inputs already rounded to dt) and on the device.
struct StepProblem {
  int dt, B, H, D, E;
  std::vector<float> q, k, v, S, slopes;
  Buf bq, bk, bv, bo, bS, bSn, bsl;
  size_t st() const { return (size_t)B * H * D * E; }
  StepProblem(int dt_, int B_, int H_, int D_, int E_, uint32_t seed)
      : dt(dt_), B(B_), H(H_), D(D_), E(E_), bq((size_t)B_ * H_ * D_ * dtBytes(dt_)), bk((size_t)B_ * H_ * D_ * dtBytes(dt_)),
        bv((size_t)B_ * H_ * E_ * dtBytes(dt_)), bo((size_t)B_ * H_ * E_ * dtBytes(dt_)), bS((size_t)B_ * H_ * D_ * E_ * 4 + 16),
        bSn((size_t)B_ * H_ * D_ * E_ * 4 + 16), bsl((size_t)H_ * 4) {
    q = drawRounded((size_t)B * H * D, seed, dt, 0.3f), k = drawRounded((size_t)B * H * D, seed + 1, dt, 0.3f);
    v = drawRounded((size_t)B * H * E, seed + 2, dt, 0.3f), S = drawRounded(st(), seed + 3, F32, 0.3f);
    slopes = tnlSlopes(H);
    slopes[0] = 0.9f;  // a strong decay beside weak ones
    upload(bq, q, dt), upload(bk, k, dt), upload(bv, v, dt), upload(bsl, slopes, F32);
  }
  size_t ioBytes() const { return ((size_t)B * H * (2 * D + 2 * E)) * dtBytes(dt) + (size_t)H * 4; }  // q, k, v read, o written
  Args args(const float* S0, float* S1) const {
    Args a;
    a.i = {dt, B, H, D, E};
    a.p = {bq.ptr(), bk.ptr(), bv.ptr(), bsl.ptr(), (uint64_t)(uintptr_t)S0, bo.ptr(), (uint64_t)(uintptr_t)S1};
    return a;
  }
};

struct StepErr {
  Err o, S;
};
// One step of `kind` against the float64 recurrence, every head and element. inPlace: the new state
// overwrites the old; offset: both states start `offset` floats past a 16-byte boundary (1: the
// launcher must fall back to the scalar kernel). Outputs are poisoned (NaN) first.
static StepErr checkStep(Harness& h, StepProblem& P, bool inPlace, int offset) {
  size_t st = P.st();
  float* S0 = (float*)P.bS.p + offset;
  float* S1 = inPlace ? S0 : (float*)P.bSn.p + offset;
  CK(cudaMemcpy(S0, P.S.data(), st * 4, cudaMemcpyHostToDevice));
  if (!inPlace) CK(cudaMemset(S1, 0xff, st * 4));
  CK(cudaMemset(P.bo.p, 0xff, P.bo.bytes));
  h.reg["lightningStep"](h.ctx, P.args(S0, S1));
  CK(cudaStreamSynchronize(h.ctx.stream));
  CK(cudaGetLastError());
  std::vector<float> o = downloadAny(P.bo.p, (size_t)P.B * P.H * P.E, P.dt), Sn(st);
  CK(cudaMemcpy(Sn.data(), S1, st * 4, cudaMemcpyDeviceToHost));
  int BH = P.B * P.H, D = P.D, E = P.E;
  unsigned nt = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<StepErr> parts(nt);
  std::vector<std::thread> th;
  for (unsigned w = 0; w < nt; w++)
    th.emplace_back([&, w] {
      std::vector<double> acc(E);
      for (int bh = w; bh < BH; bh += nt) {
        double lam = std::exp(-(double)P.slopes[bh % P.H]);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int d = 0; d < D; d++) {
          double kd = P.k[(size_t)bh * D + d], qd = P.q[(size_t)bh * D + d];
          for (int e = 0; e < E; e++) {
            size_t i = ((size_t)bh * D + d) * E + e;
            double s = lam * P.S[i] + kd * P.v[(size_t)bh * E + e];
            parts[w].S.add(Sn[i], s);
            acc[e] += qd * s;
          }
        }
        for (int e = 0; e < E; e++) parts[w].o.add(o[(size_t)bh * E + e], acc[e]);
      }
    });
  for (auto& t : th) t.join();
  StepErr r;
  for (auto& p : parts) {
    r.o.num += p.o.num, r.o.den += p.o.den, r.o.nan |= p.o.nan;
    r.S.num += p.S.num, r.S.den += p.S.den, r.S.nan |= p.S.nan;
  }
  return r;
}
// The state is f32 and one multiply-add from the old one; o is rounded to dt.
static bool stepOk(const StepErr& e, int dt) { return e.S.rel() <= 1e-5 && e.o.rel() <= (dt == F32 ? 1e-5 : bound(dt)); }

static void useStep(const std::string& name) { setenv("LIGHTNING_CUDA_STEP", name.c_str(), 1); }

// Odd sizes (rows that do not fill a batch, E not a multiple of 128 or of 4, several column slices,
// D past the candidates' 2,048), the new state in place of the old, misaligned states, every dtype:
// every head and element.
static void checkDecode(Harness& h, const std::vector<std::string>& steps) {
  struct Case {
    int B, H, D, E;
    bool inPlace;
    int offset;
  };
  const std::vector<Case> cases = {{3, 5, 128, 128, false, 0}, {3, 5, 128, 128, true, 0}, {2, 3, 256, 128, true, 0}, {3, 5, 64, 64, false, 0},
                                   {2, 3, 65, 36, false, 0},   {2, 3, 65, 36, true, 0},   {1, 3, 33, 132, false, 0}, {1, 2, 200, 96, true, 0},
                                   {2, 2, 17, 5, false, 0},    {1, 3, 128, 256, false, 0}, {1, 3, 7, 4, true, 0},    {2, 3, 64, 64, false, 1},
                                   {1, 2, 2100, 8, true, 0}};
  printf("\n== decode check: one step against the float64 recurrence, every head; state bound 1e-5, o bound %.0e (bf16) / %.0e (f16) / 1e-5 (f32)\n",
         5e-3, 2e-3);
  printf("%-7s %-5s %3s %3s %4s %4s %-9s  %9s %9s  %s\n", "step", "dtype", "B", "H", "D", "E", "state", "o", "S_new", "ok / kernel");
  int n = 0;
  for (int dt : {BF16, F16, F32})
    for (const Case& c : cases) {
      StepProblem P(dt, c.B, c.H, c.D, c.E, 900 + 7 * n++);
      for (const std::string& name : steps) {
        useStep(name);
        StepErr e = checkStep(h, P, c.inPlace, c.offset);
        bool ok = stepOk(e, dt);
        if (!ok) h.failures++;
        std::string kernel = c.offset % 4 ? "scalar (states not 16-byte aligned)" : lightningStepKernelName(c.B * c.H, c.D, c.E);
        printf("%-7s %-5s %3d %3d %4d %4d %-9s  %9.2e %9.2e  %s / %s\n", name.c_str(), dtNameAny(dt), c.B, c.H, c.D, c.E,
               c.inPlace ? "in place" : c.offset ? "offset 1" : "separate", e.o.rel(), e.S.rel(), ok ? "yes" : "NO", kernel.c_str());
        char buf[512];
        snprintf(buf, sizeof buf,
                 "{\"suite\": \"decode-check\", \"impl\": \"step-%s\", \"backend\": \"cuda\", \"device\": \"%s\", \"B\": %d, \"H\": %d, \"D\": %d, \"E\": %d, "
                 "\"dtype\": \"%s\", \"in_place\": %s, \"offset\": %d, \"rel_err\": %.3e, \"rel_err_state\": %.3e, \"ok\": %s}",
                 name.c_str(), h.prop.name, c.B, c.H, c.D, c.E, dtNameAny(dt), c.inPlace ? "true" : "false", c.offset, e.o.rel(), e.S.rel(),
                 ok ? "true" : "false");
        h.row(buf);
      }
      fflush(stdout);
    }
  unsetenv("LIGHTNING_CUDA_STEP");
}

// Times one step of every kernel at batch B, H = 16, after checking it there. Three clocks:
// - ms (the headline): one launch behind a spin kernel (no host latency inside the events), reading a
//   state last touched ≥ 2 L2-fulls of traffic ago, as in a model where every layer's step runs in
//   between: states rotate over 2·half buffers, step r reads buffer r and writes buffer r + half.
// - ms_b2b: 20 such steps back to back between two events, per step (what a decode loop sees).
// - ms_legacy: the clock of the first decode rows: events around one launch, two buffers in turn
//   (the state read is the one the previous step just wrote, partly still in L2).
static void benchDecode(Harness& h, int B, int D, int E, int dt, const std::vector<std::string>& steps) {
  const int H = 16;
  StepProblem P(dt, B, H, D, E, 5 + B + D + E);
  size_t stBytes = P.st() * 4, pitch = (stBytes + 255) / 256 * 256;
  int half = 1 + (int)((2.0 * h.prop.l2CacheSize + stBytes - 1) / stBytes), nbuf = 2 * half;
  Buf ring(pitch * nbuf);
  for (int i = 0; i < nbuf; i++) CK(cudaMemcpy((char*)ring.p + pitch * i, P.S.data(), stBytes, cudaMemcpyHostToDevice));
  auto slot = [&](int i) { return (float*)((char*)ring.p + pitch * (((i % nbuf) + nbuf) % nbuf)); };
  const long long spinNs = 50000;
  for (const std::string& name : steps) {
    useStep(name);
    StepErr e = checkStep(h, P, false, 0);
    bool ok = stepOk(e, dt);
    if (!ok) h.failures++;
    auto launch = [&](const float* S0, float* S1) { h.reg["lightningStep"](h.ctx, P.args(S0, S1)); };
    auto elapsed = [&] {
      CK(cudaEventSynchronize(h.e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, h.e0, h.e1));
      return (double)ms;
    };
    std::vector<double> cold, b2b, legacy;
    int r = 0;
    for (int rep = -3; rep < h.reps * 5; rep++, r++) {
      spinKernel<<<1, 1, 0, h.ctx.stream>>>(spinNs);
      CK(cudaEventRecord(h.e0, h.ctx.stream));
      launch(slot(r), slot(r + half));
      CK(cudaEventRecord(h.e1, h.ctx.stream));
      double ms = elapsed();
      if (rep >= 0) cold.push_back(ms);
    }
    const int run = 20;
    for (int rep = -1; rep < h.reps; rep++) {
      spinKernel<<<1, 1, 0, h.ctx.stream>>>(4 * spinNs);
      CK(cudaEventRecord(h.e0, h.ctx.stream));
      for (int j = 0; j < run; j++, r++) launch(slot(r), slot(r + half));
      CK(cudaEventRecord(h.e1, h.ctx.stream));
      double ms = elapsed() / run;
      if (rep >= 0) b2b.push_back(ms);
    }
    for (int rep = -3; rep < h.reps * 5; rep++) {
      CK(cudaEventRecord(h.e0, h.ctx.stream));
      launch(slot(rep & 1), slot((rep + 1) & 1));
      CK(cudaEventRecord(h.e1, h.ctx.stream));
      double ms = elapsed();
      if (rep >= 0) legacy.push_back(ms);
    }
    CK(cudaGetLastError());
    double ms = median(cold), msB2b = median(b2b), msLegacy = median(legacy);
    auto gbps = [](double bytes, double t) { return bytes / (t * 1e-3) / 1e9; };
    double stateGBs = gbps(2.0 * stBytes, ms), allGBs = gbps(2.0 * stBytes + P.ioBytes(), ms), legacyGBs = gbps(2.0 * stBytes, msLegacy);
    std::string kernel = lightningStepKernelName(B * H, D, E);
    printf("%-7s %-5s %4d %4d %4d %-3s %8.4f %6.0f %6.1f%% %6.0f %6.1f%% %8.4f %8.4f %6.1f%%  %9.2e %9.2e  %s\n", name.c_str(), dtNameAny(dt), B, D, E,
           ok ? "yes" : "NO", ms, stateGBs, 100 * stateGBs / h.copyGBs, allGBs, 100 * allGBs / h.copyGBs, msB2b, msLegacy, 100 * legacyGBs / h.copyGBs,
           e.o.rel(), e.S.rel(), kernel.c_str());
    fflush(stdout);
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"suite\": \"decode\", \"impl\": \"step-%s\", \"backend\": \"cuda\", \"device\": \"%s\", \"B\": %d, \"T\": 1, \"H\": %d, \"D\": %d, "
             "\"E\": %d, \"dtype\": \"%s\", \"fwd_ms\": %f, \"fwdbwd_ms\": null, \"tokens_per_s\": %f, \"gbps\": %f, \"pct_copy\": %f, "
             "\"gbps_all\": %f, \"pct_copy_all\": %f, \"ms_b2b\": %f, \"ms_legacy\": %f, \"pct_copy_legacy\": %f, \"copy_gbps\": %.0f, "
             "\"state_buffers\": %d, \"rel_err\": %.3e, \"rel_err_state\": %.3e, \"ok\": %s, \"kernel\": \"%s\"}",
             name.c_str(), h.prop.name, B, H, D, E, dtNameAny(dt), ms, B / (ms * 1e-3), stateGBs, 100 * stateGBs / h.copyGBs, allGBs,
             100 * allGBs / h.copyGBs, msB2b, msLegacy, 100 * legacyGBs / h.copyGBs, h.copyGBs, nbuf, e.o.rel(), e.S.rel(), ok ? "true" : "false",
             kernel.c_str());
    h.row(buf);
  }
  unsetenv("LIGHTNING_CUDA_STEP");
}

int main(int argc, char** argv) {
  std::vector<int> Ts = {1024, 8192, 65536};
  std::vector<int> versions = {5};
  std::vector<int> dtypes = {BF16}, checkDtypes = {BF16, F16}, checkVersions = {5};
  std::vector<std::pair<int, int>> shapes = {{128, 128}, {256, 128}, {64, 64}};
  std::vector<std::string> steps = {"scalar", "vec4", "rows", "stream", "block", "pair", "narrow"};
  std::vector<int> decodeBatches = {1, 8, 64, 256};
  bool check = false, small = false, bench = true, decode = true, decodeTiming = true;
  const char* jsonPath = nullptr;
  Harness h;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto items = [&]() {
      std::vector<std::string> out;
      for (char* p = strtok(argv[++i], ","); p; p = strtok(nullptr, ",")) out.push_back(p);
      return out;
    };
    if (a == "--T") {
      Ts.clear();
      for (auto& x : items()) Ts.push_back(atoi(x.c_str()));
    } else if (a == "--versions") {
      versions.clear();
      for (auto& x : items()) versions.push_back(atoi(x.c_str()));
    } else if (a == "--dtypes") {
      dtypes.clear();
      for (auto& x : items()) dtypes.push_back(x == "f16" ? F16 : BF16);
    } else if (a == "--check-versions") {
      checkVersions.clear();
      for (auto& x : items()) checkVersions.push_back(atoi(x.c_str()));
    } else if (a == "--check-dtypes") {
      checkDtypes.clear();
      for (auto& x : items()) checkDtypes.push_back(x == "f16" ? F16 : BF16);
    } else if (a == "--shapes") {
      shapes.clear();
      for (auto& x : items()) shapes.push_back({atoi(x.c_str()), atoi(x.c_str() + x.find('x') + 1)});
    } else if (a == "--steps") {
      steps = items();
    } else if (a == "--decode-B") {
      decodeBatches.clear();
      for (auto& x : items()) decodeBatches.push_back(atoi(x.c_str()));
    } else if (a == "--reps") h.reps = atoi(argv[++i]);
    else if (a == "--json") jsonPath = argv[++i];
    else if (a == "--check") check = true;
    else if (a == "--small") small = true;
    else if (a == "--no-bench") bench = false;
    else if (a == "--no-decode") decode = false;
    else if (a == "--no-decode-timing") decodeTiming = false;
    else if (a == "--time-anyway") h.timeAnyway = true;
    else if (a == "--no-segment-states") h.segments = false;
  }
  registerLightning(h.reg);
  CK(cudaGetDeviceProperties(&h.prop, 0));
  CK(cudaStreamCreate(&h.ctx.stream));
  h.ctx.smCount = h.prop.multiProcessorCount;
  h.ctx.ccMajor = h.prop.major;
  DeviceError* err;
  CK(cudaHostAlloc((void**)&err, sizeof(DeviceError), cudaHostAllocMapped));
  CK(cudaHostGetDevicePointer((void**)&h.ctx.error, err, 0));
  CK(cudaEventCreate(&h.e0));
  CK(cudaEventCreate(&h.e1));
  if (jsonPath) h.json = fopen(jsonPath, "w");
  if (h.json) fprintf(h.json, "[\n");

  // Copy bandwidth (bytes read + written), the ceiling for pct_copy.
  if (bench || decode) {
    Buf a(1ull << 30), b(1ull << 30);
    CK(cudaMemsetAsync(a.p, 1, a.bytes, h.ctx.stream));
    std::vector<double> t;
    for (int r = 0; r < 10; r++) {
      CK(cudaEventRecord(h.e0, h.ctx.stream));
      CK(cudaMemcpyAsync(b.p, a.p, a.bytes, cudaMemcpyDeviceToDevice, h.ctx.stream));
      CK(cudaEventRecord(h.e1, h.ctx.stream));
      CK(cudaEventSynchronize(h.e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, h.e0, h.e1));
      t.push_back(ms);
    }
    h.copyGBs = 2.0 * a.bytes / (median(t) * 1e-3) / 1e9;
  }
  printf("device %s, %d SMs; copy bandwidth %.0f GB/s\n", h.prop.name, h.prop.multiProcessorCount, h.copyGBs);
  fflush(stdout);

  if (check) checkSuite(h, shapes, checkDtypes, checkVersions, small);
  if (bench) {
    Buf flush(256ull << 20);
    h.flush = &flush;
    printf("\n== bench: H = 16, B·T = 65,536 (T = 131,072: B = 1); GB/s counts q, k, v read and o written once\n");
    printf("%-4s %-4s %9s %3s %6s %4s %8s %9s %9s %9s %7s %7s %7s  %s\n", "ver", "type", "DxE", "B", "T", "ok", "fwd_ms", "fwdbwd_ms", "err_fwd",
           "err_bwd", "GB/s", "%copy", "Mtok/s", "kernel (forward)");
    for (auto [D, E] : shapes)
      for (int dt : dtypes)
        for (int T : Ts) benchShape(h, D, E, T, dt, versions);
    h.flush = nullptr;
  }
  if (decode) checkDecode(h, steps);
  if (decode && decodeTiming) {
    printf("\n== decode: H = 16; ms: one step, L2-cold state, host latency excluded; GB/s of the state (read + written) and of all bytes "
           "(q, k, v, o too); b2b: per step of 20 back to back; legacy: the first decode rows' clock\n");
    printf("%-7s %-5s %4s %4s %4s %-3s %8s %6s %7s %6s %7s %8s %8s %7s  %9s %9s  %s\n", "step", "dtype", "B", "D", "E", "ok", "ms", "GB/s", "%copy",
           "all", "%copy", "b2b_ms", "leg_ms", "%copy", "err_o", "err_S", "kernel");
    for (auto [D, E] : shapes)
      for (int dt : dtypes)
        for (int B : decodeBatches) benchDecode(h, B, D, E, dt, steps);
  }
  if (h.json) fprintf(h.json, "\n]\n"), fclose(h.json);
  printf("\n%s: %d failure%s\n", h.failures ? "FAILED" : "all checks passed", h.failures, h.failures == 1 ? "" : "s");
  return h.failures ? 1 : 0;
}
