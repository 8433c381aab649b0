// Validate-then-benchmark harness for the Lightning Attention kernel versions (llm.c dev/cuda
// style). For each version and each T of the PERFORMANCE.md shape (bf16, H = 16, D = E = 128,
// B·T = 65,536; T = 131,072 runs at B = 1), it draws random inputs, checks the output, final state and gradients of two
// heads (the strongest and the weakest decay) against a float64 recurrence on the host, and
// only then times the launcher with CUDA events (median of repeats, L2 flushed between them).
// It calls the same launchers as the Node addon, through the same registry.
//
// Build (packages/cuda): nvcc -O3 -std=c++17 -arch=sm_90a -I native bench/lightning_bench.cu \
//   build/cuda-obj/libltscuda.a -ldl -o build/lightning_bench
// Run: build/lightning_bench [--json FILE] [--T 1024,8192,65536] [--versions 1,2,3,4] [--reps 20]
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime.h"

using namespace lts;

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
};

struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Buf(size_t n) : bytes(n) { CK(cudaMalloc(&p, n)); }
  ~Buf() { cudaFree(p); }
  uint64_t ptr() const { return (uint64_t)(uintptr_t)p; }
};

static float bf(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint16_t tobf(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

struct Shape {
  int B, H, T, D, E;
  size_t qk() const { return (size_t)B * H * T * D; }
  size_t vo() const { return (size_t)B * H * T * E; }
  size_t st() const { return (size_t)B * H * D * E; }
};

// Float64 recurrence for one (b, h): o, final state, and (with dO, dS) dq, dk, dv.
struct HeadRef {
  std::vector<double> o, S, dq, dk, dv;
};
static HeadRef reference(const Shape& s, int bh, double slope, const std::vector<uint16_t>& q, const std::vector<uint16_t>& k,
                         const std::vector<uint16_t>& v, const std::vector<uint16_t>& dO, const std::vector<float>& dS) {
  int T = s.T, D = s.D, E = s.E;
  double lam = std::exp(-slope);
  HeadRef r;
  r.o.assign((size_t)T * E, 0), r.dq.assign((size_t)T * D, 0), r.dk.assign((size_t)T * D, 0), r.dv.assign((size_t)T * E, 0);
  std::vector<double> S((size_t)D * E, 0);
  auto Q = [&](int t, int d) { return (double)bf(q[((size_t)bh * T + t) * D + d]); };
  auto K = [&](int t, int d) { return (double)bf(k[((size_t)bh * T + t) * D + d]); };
  auto V = [&](int t, int e) { return (double)bf(v[((size_t)bh * T + t) * E + e]); };
  auto G = [&](int t, int e) { return (double)bf(dO[((size_t)bh * T + t) * E + e]); };
  for (int t = 0; t < T; t++) {
    for (int d = 0; d < D; d++) {
      double kd = K(t, d), qd = Q(t, d);
      double* row = &S[(size_t)d * E];
      double dqd = 0;
      for (int e = 0; e < E; e++) {
        row[e] = lam * row[e] + kd * V(t, e);
        r.o[(size_t)t * E + e] += qd * row[e];
        dqd += row[e] * G(t, e);
      }
      r.dq[(size_t)t * D + d] = dqd;
    }
  }
  r.S = S;
  std::vector<double> H((size_t)D * E);
  for (size_t i = 0; i < H.size(); i++) H[i] = dS[(size_t)bh * D * E + i];
  for (int t = T - 1; t >= 0; t--) {
    for (int d = 0; d < D; d++) {
      double qd = Q(t, d), kd = K(t, d);
      double* row = &H[(size_t)d * E];
      double dkd = 0;
      for (int e = 0; e < E; e++) {
        row[e] += qd * G(t, e);
        dkd += row[e] * V(t, e);
        r.dv[(size_t)t * E + e] += kd * row[e];
      }
      r.dk[(size_t)t * D + d] = dkd;
    }
    for (auto& x : H) x *= lam;
  }
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

int main(int argc, char** argv) {
  std::vector<int> Ts = {1024, 8192, 65536};
  std::vector<int> versions = {1, 2, 3, 4};
  int reps = 20;
  const char* json = nullptr;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto list = [&](std::vector<int>& out) {
      out.clear();
      for (char* p = strtok(argv[++i], ","); p; p = strtok(nullptr, ",")) out.push_back(atoi(p));
    };
    if (a == "--T") list(Ts);
    else if (a == "--versions") list(versions);
    else if (a == "--reps") reps = atoi(argv[++i]);
    else if (a == "--json") json = argv[++i];
  }
  Registry reg;
  registerLightning(reg);
  BenchContext ctx;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  CK(cudaStreamCreate(&ctx.stream));
  ctx.smCount = prop.multiProcessorCount;
  ctx.ccMajor = prop.major;
  DeviceError* err;
  CK(cudaHostAlloc((void**)&err, sizeof(DeviceError), cudaHostAllocMapped));
  CK(cudaHostGetDevicePointer((void**)&ctx.error, err, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));

  // Copy bandwidth (bytes read + written), the ceiling for pct_copy.
  double copyGBs;
  {
    Buf a(1ull << 30), b(1ull << 30);
    CK(cudaMemsetAsync(a.p, 1, a.bytes, ctx.stream));
    std::vector<double> t;
    for (int r = 0; r < 10; r++) {
      CK(cudaEventRecord(e0, ctx.stream));
      CK(cudaMemcpyAsync(b.p, a.p, a.bytes, cudaMemcpyDeviceToDevice, ctx.stream));
      CK(cudaEventRecord(e1, ctx.stream));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      t.push_back(ms);
    }
    copyGBs = 2.0 * a.bytes / (median(t) * 1e-3) / 1e9;
  }
  printf("device %s, %d SMs; copy bandwidth %.0f GB/s\n", prop.name, prop.multiProcessorCount, copyGBs);
  Buf flush(256ull << 20);

  FILE* out = json ? fopen(json, "w") : nullptr;
  if (out) fprintf(out, "[\n");
  bool firstRow = true;
  const int H = 16, D = 128, E = 128, tokens = 65536;
  std::vector<float> slopes(H);
  for (int h = 0; h < H; h++) slopes[h] = std::pow(2.0f, -8.0f * (h + 1) / H);
  Buf slopesBuf(H * 4);
  CK(cudaMemcpy(slopesBuf.p, slopes.data(), H * 4, cudaMemcpyHostToDevice));

  printf("%-8s %-4s %6s %5s %9s %9s %9s %8s %9s %9s\n", "version", "B", "T", "ok", "fwd_ms", "fwdbwd_ms", "rel_err", "GB/s", "%copy", "Mtok/s");
  for (int T : Ts) {
    Shape s{std::max(1, tokens / T), H, T, D, E};
    std::mt19937 gen(1234 + T);
    std::normal_distribution<float> nd(0.0f, 0.3f);
    auto draw = [&](size_t n) {
      std::vector<uint16_t> x(n);
      for (auto& y : x) y = tobf(nd(gen));
      return x;
    };
    auto q = draw(s.qk()), k = draw(s.qk()), v = draw(s.vo()), dO = draw(s.vo());
    std::vector<float> dS(s.st());
    for (auto& y : dS) y = nd(gen);
    Buf bq(s.qk() * 2), bk(s.qk() * 2), bv(s.vo() * 2), bo(s.vo() * 2), bdO(s.vo() * 2), bS(s.st() * 4), bdS(s.st() * 4);
    Buf bdq(s.qk() * 2), bdk(s.qk() * 2), bdv(s.vo() * 2), bdS0(s.st() * 4);
    CK(cudaMemcpy(bq.p, q.data(), bq.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bk.p, k.data(), bk.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bv.p, v.data(), bv.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bdO.p, dO.data(), bdO.bytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bdS.p, dS.data(), bdS.bytes, cudaMemcpyHostToDevice));
    // Reference heads: the last sequence's strongest and weakest decay.
    std::vector<int> heads = {(s.B - 1) * H + 0, (s.B - 1) * H + H - 1};
    std::vector<HeadRef> refs(heads.size());
    {
      std::vector<std::thread> th;
      for (size_t i = 0; i < heads.size(); i++)
        th.emplace_back([&, i] { refs[i] = reference(s, heads[i], slopes[heads[i] % H], q, k, v, dO, dS); });
      for (auto& t : th) t.join();
    }
    Args fwd, bwd;
    fwd.p = {bq.ptr(), bk.ptr(), bv.ptr(), slopesBuf.ptr(), 0, bo.ptr(), bS.ptr()};
    fwd.i = {BF16, s.B, s.H, s.T, s.D, s.E};
    bwd.p = {bq.ptr(), bk.ptr(), bv.ptr(), slopesBuf.ptr(), bdO.ptr(), bdS.ptr(), 0, bdq.ptr(), bdk.ptr(), bdv.ptr(), bdS0.ptr()};
    bwd.i = fwd.i;
    for (int ver : versions) {
      setenv("LIGHTNING_CUDA_LA_VERSION", std::to_string(ver).c_str(), 1);
      // Poison the outputs so an unwritten element fails the check.
      for (auto* b : {&bo, &bdq, &bdk, &bdv}) CK(cudaMemset(b->p, 0xff, b->bytes));
      CK(cudaMemset(bS.p, 0xff, bS.bytes));
      reg["lightningAttention"](ctx, fwd);
      reg["lightningAttentionBackward"](ctx, bwd);
      CK(cudaStreamSynchronize(ctx.stream));
      CK(cudaGetLastError());
      std::vector<uint16_t> o(s.vo()), dq(s.qk()), dk(s.qk()), dv(s.vo());
      std::vector<float> Sf(s.st());
      CK(cudaMemcpy(o.data(), bo.p, bo.bytes, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(Sf.data(), bS.p, bS.bytes, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(dq.data(), bdq.p, bdq.bytes, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(dk.data(), bdk.p, bdk.bytes, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(dv.data(), bdv.p, bdv.bytes, cudaMemcpyDeviceToHost));
      Err eo, es, eg;
      for (size_t i = 0; i < heads.size(); i++) {
        size_t bh = heads[i];
        const HeadRef& r = refs[i];
        for (size_t j = 0; j < (size_t)T * E; j++) eo.add(bf(o[bh * T * E + j]), r.o[j]);
        for (size_t j = 0; j < (size_t)D * E; j++) es.add(Sf[bh * D * E + j], r.S[j]);
        for (size_t j = 0; j < (size_t)T * D; j++) eg.add(bf(dq[bh * T * D + j]), r.dq[j]), eg.add(bf(dk[bh * T * D + j]), r.dk[j]);
        for (size_t j = 0; j < (size_t)T * E; j++) eg.add(bf(dv[bh * T * E + j]), r.dv[j]);
      }
      // Poisoned (NaN) elements anywhere, not only in the checked heads, fail too.
      bool allWritten = true;
      for (auto x : o) allWritten = allWritten && !std::isnan(bf(x));
      double rel = std::max(eo.rel(), es.rel());
      bool ok = allWritten && rel <= 5e-3;
      bool bwdOk = eg.rel() <= 5e-3;
      double fwdMs = NAN, fbMs = NAN;
      auto timeIt = [&](bool withBackward) {
        std::vector<double> t;
        for (int r = -3; r < reps; r++) {
          CK(cudaMemsetAsync(flush.p, r & 0xff, flush.bytes, ctx.stream));
          CK(cudaEventRecord(e0, ctx.stream));
          reg["lightningAttention"](ctx, fwd);
          if (withBackward) reg["lightningAttentionBackward"](ctx, bwd);
          CK(cudaEventRecord(e1, ctx.stream));
          CK(cudaEventSynchronize(e1));
          float ms;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          if (r >= 0) t.push_back(ms);
        }
        return median(t);
      };
      if (ok) fwdMs = timeIt(false);
      if (ok && bwdOk) fbMs = timeIt(true);
      double bytes = 4.0 * s.qk() * 2;  // q, k, v, o at D = E
      double gbps = ok ? bytes / (fwdMs * 1e-3) / 1e9 : NAN;
      printf("v%-7d %-4d %6d %5s %9.3f %9.3f %9.2e %8.0f %8.1f%% %9.1f   (bwd rel %.2e)\n", ver, s.B, T, ok ? "yes" : "NO", fwdMs, fbMs, rel, gbps,
             100 * gbps / copyGBs, ok ? (double)s.B * T / (fwdMs * 1e-3) / 1e6 : NAN, eg.rel());
      if (out) {
        auto num = [](double x) { return std::isnan(x) ? std::string("null") : std::to_string(x); };
        fprintf(out,
                "%s  {\"suite\": \"attention\", \"impl\": \"chunked-v%d\", \"backend\": \"cuda\", \"device\": \"%s\", \"B\": %d, \"T\": %d, \"H\": %d, "
                "\"D\": %d, \"E\": %d, \"dtype\": \"bf16\", \"fwd_ms\": %s, \"fwdbwd_ms\": %s, \"tokens_per_s\": %s, \"gbps\": %s, "
                "\"pct_copy\": %s, \"rel_err\": %.3e, \"rel_err_bwd\": %.3e, \"ok\": %s, \"copy_gbps\": %.0f}",
                firstRow ? "" : ",\n", ver, prop.name, s.B, T, H, D, E, num(fwdMs).c_str(), num(fbMs).c_str(),
                num(ok ? (double)s.B * T / (fwdMs * 1e-3) : NAN).c_str(), num(gbps).c_str(), num(100 * gbps / copyGBs).c_str(), rel, eg.rel(),
                ok && bwdOk ? "true" : "false", copyGBs);
        firstRow = false;
      }
    }
  }

  // Decode step: batch 64, state H·D·E f32 per sequence, read once and written once.
  {
    int B = 64;
    size_t st = (size_t)B * H * D * E;
    Buf bq((size_t)B * H * D * 2), bk((size_t)B * H * D * 2), bv((size_t)B * H * E * 2), bo((size_t)B * H * E * 2), s0(st * 4), s1(st * 4);
    CK(cudaMemset(bq.p, 0x3c, bq.bytes));
    CK(cudaMemset(bk.p, 0x3c, bk.bytes));
    CK(cudaMemset(bv.p, 0x3c, bv.bytes));
    CK(cudaMemset(s0.p, 0x3c, s0.bytes));
    Args a;
    a.i = {BF16, B, H, D, E};
    std::vector<double> t;
    for (int r = -3; r < reps * 5; r++) {
      a.p = {bq.ptr(), bk.ptr(), bv.ptr(), slopesBuf.ptr(), (r & 1) ? s1.ptr() : s0.ptr(), bo.ptr(), (r & 1) ? s0.ptr() : s1.ptr()};
      CK(cudaEventRecord(e0, ctx.stream));
      reg["lightningStep"](ctx, a);
      CK(cudaEventRecord(e1, ctx.stream));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (r >= 0) t.push_back(ms);
    }
    double ms = median(t), gbps = 2.0 * st * 4 / (ms * 1e-3) / 1e9;
    printf("decode step B=64: %.4f ms, %.0f GB/s on the state (%.1f%% of copy)\n", ms, gbps, 100 * gbps / copyGBs);
    if (out)
      fprintf(out,
              ",\n  {\"suite\": \"decode\", \"impl\": \"step\", \"backend\": \"cuda\", \"device\": \"%s\", \"B\": 64, \"T\": 1, \"H\": %d, \"D\": %d, "
              "\"E\": %d, \"dtype\": \"bf16\", \"fwd_ms\": %f, \"fwdbwd_ms\": null, \"tokens_per_s\": %f, \"gbps\": %f, \"pct_copy\": %f, "
              "\"rel_err\": null, \"ok\": true}",
              prop.name, H, D, E, ms, 64 / (ms * 1e-3), gbps, 100 * gbps / copyGBs);
  }
  if (out) fprintf(out, "\n]\n"), fclose(out);
  return 0;
}
