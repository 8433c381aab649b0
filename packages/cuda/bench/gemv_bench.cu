// Validate-then-benchmark harness for the small-M matrix-vector kernel (native/gemv.cu) against
// cuBLAS, both through the addon's `matmul` launcher as the Node addon calls it, switched by
// LIGHTNING_CUDA_GEMV.
//
// Rows: for each weight shape [N, K] of the 436M TNL's decode step (and the vocabulary head), each
// dtype and each M it draws x (M, K) and w (N, K), poisons y (NaN bits) so that unwritten elements
// fail, checks every element of y = x·wᵀ from both paths against a float64 product on the host
// (bound: u·|y| + γ_depth·Σ|x·w|, u the dtype's unit roundoff, depth K/32 + 24 for the kernel and K
// for cuBLAS), then times each path with CUDA events, one launch at a time with L2 flushed before
// it (a decode step streams every layer's weights from memory), median of the repeats.
//
// Build (packages/cuda, after the addon's build made build/cuda-obj/libltscuda.a):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I native bench/gemv_bench.cu build/cuda-obj/libltscuda.a -ldl -o build/gemv_bench
// Run: build/gemv_bench [--dtypes bf16,f16,f32] [--M 1,2,3,4,5,6,7,8] [--reps 50]
//        [--shapes 4096x1024,2816x1024,1024x2816,1024x1024,50272x1024]   (NxK)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_context.cuh"
#include "runtime.h"

using namespace lts;

#define CK(x) LTS_CHECK(x, #x)

struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Buf(size_t n) : bytes(n) { CK(cudaMalloc(&p, std::max<size_t>(n, 16))); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

static int dtypeOf(const std::string& s) {
  if (s == "bf16") return BF16;
  if (s == "f16") return F16;
  if (s == "f32") return F32;
  fprintf(stderr, "--dtypes: expected bf16, f16 or f32, got '%s'\n", s.c_str());
  exit(2);
}
static const char* dtName(int dt) { return dt == BF16 ? "bf16" : dt == F16 ? "f16" : "f32"; }
static double unitRoundoff(int dt) { return dt == BF16 ? std::ldexp(1.0, -8) : dt == F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -24); }

// Host values rounded to dt, and their storage bytes.
static void draw(size_t n, int dt, uint32_t seed, std::vector<double>& values, std::vector<uint8_t>& bytes) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  size_t es = dtypeSize(dt);
  values.resize(n);
  bytes.resize(n * es);
  for (size_t i = 0; i < n; i++) {
    float f = nd(gen);
    if (f == 0.0f) f = 0.5f;  // never zero
    if (dt == F32) {
      memcpy(&bytes[i * 4], &f, 4);
      values[i] = f;
    } else if (dt == F16) {
      __half h = __float2half_rn(f);
      memcpy(&bytes[i * 2], &h, 2);
      values[i] = __half2float(h);
    } else {
      __nv_bfloat16 h = __float2bfloat16_rn(f);
      memcpy(&bytes[i * 2], &h, 2);
      values[i] = __bfloat162float(h);
    }
  }
}

static double loadHost(const uint8_t* p, int dt, size_t i) {
  if (dt == F32) {
    float f;
    memcpy(&f, p + i * 4, 4);
    return f;
  }
  if (dt == F16) {
    __half h;
    memcpy(&h, p + i * 2, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  memcpy(&h, p + i * 2, 2);
  return __bfloat162float(h);
}

static std::vector<int> ints(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) v.push_back(atoi(t.c_str()));
  return v;
}
static std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) v.push_back(t);
  return v;
}

int main(int argc, char** argv) {
  std::vector<std::string> dtypes = {"bf16"};
  std::vector<int> Ms = {1, 2, 4, 8};
  std::vector<std::string> shapes = {"4096x1024", "2816x1024", "1024x2816", "1024x1024", "50272x1024"};
  int reps = 50;
  for (int a = 1; a < argc; a++) {
    std::string k = argv[a];
    if (a + 1 >= argc) {
      fprintf(stderr, "%s: expected a value\n", k.c_str());
      return 2;
    }
    std::string v = argv[++a];
    if (k == "--dtypes") dtypes = words(v);
    else if (k == "--M") Ms = ints(v);
    else if (k == "--shapes") shapes = words(v);
    else if (k == "--reps") reps = std::max(1, atoi(v.c_str()));
    else {
      fprintf(stderr, "unknown option %s (expected --dtypes, --M, --shapes, --reps)\n", k.c_str());
      return 2;
    }
  }

  Registry reg;
  registerMatmul(reg);
  BenchContext ctx;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  ctx.smCount = prop.multiProcessorCount;
  ctx.ccMajor = prop.major;
  CK(cudaStreamCreate(&ctx.stream));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  Buf flush(256u << 20);  // past the 50 MB of L2
  printf("%s, %d SMs, cuBLAS: %s\n", prop.name, prop.multiProcessorCount, cublasStatus().c_str());
  printf("%-6s %-12s %2s  %10s %10s  %8s %8s  %7s  %s\n", "dtype", "N x K", "M", "gemv us", "cublas us", "gemv TB/s", "cub TB/s", "speedup", "check");
  int failures = 0;

  for (const std::string& dn : dtypes) {
    int dt = dtypeOf(dn);
    size_t es = dtypeSize(dt);
    for (const std::string& sh : shapes) {
      int N = 0, K = 0;
      if (sscanf(sh.c_str(), "%dx%d", &N, &K) != 2 || N < 1 || K < 1) {
        fprintf(stderr, "--shapes: expected NxK, got '%s'\n", sh.c_str());
        return 2;
      }
      std::vector<double> wv, xv;
      std::vector<uint8_t> wb, xb;
      draw((size_t)N * K, dt, 7u + N + 31u * K, wv, wb);
      Buf w(wb.size());
      CK(cudaMemcpy(w.p, wb.data(), wb.size(), cudaMemcpyHostToDevice));
      for (int M : Ms) {
        draw((size_t)M * K, dt, 1000u + M, xv, xb);
        Buf x(xb.size()), y((size_t)M * N * es);
        CK(cudaMemcpy(x.p, xb.data(), xb.size(), cudaMemcpyHostToDevice));
        Args args;
        args.p = {(uint64_t)(uintptr_t)x.p, (uint64_t)(uintptr_t)w.p, (uint64_t)(uintptr_t)y.p};
        args.i = {dt, 0, 1, M, N, K, 0, 0, 0};  // x·wᵀ, no batch dims

        // y and Σ|x·w| in float64.
        std::vector<double> want((size_t)M * N), scale((size_t)M * N);
        for (int m = 0; m < M; m++)
          for (int n = 0; n < N; n++) {
            double s = 0, a = 0;
            const double* xr = &xv[(size_t)m * K];
            const double* wr = &wv[(size_t)n * K];
            for (int k = 0; k < K; k++) s += xr[k] * wr[k], a += std::fabs(xr[k] * wr[k]);
            want[(size_t)m * N + n] = s, scale[(size_t)m * N + n] = a;
          }

        double times[2] = {0, 0};
        std::string check;
        for (int path = 0; path < 2; path++) {  // 0: the kernel, 1: cuBLAS
          setenv("LIGHTNING_CUDA_GEMV", path == 0 ? "1" : "0", 1);
          CK(cudaMemset(y.p, 0xff, y.bytes));
          reg["matmul"](ctx, args);
          CK(cudaStreamSynchronize(ctx.stream));
          std::vector<uint8_t> got(y.bytes);
          CK(cudaMemcpy(got.data(), y.p, y.bytes, cudaMemcpyDeviceToHost));
          double u = unitRoundoff(dt), depth = path == 0 ? std::ceil(K / 32.0) + 24 : K;
          double gamma = depth * std::ldexp(1.0, -24) / (1 - depth * std::ldexp(1.0, -24));
          size_t bad = 0, worst = 0;
          double worstRatio = 0;
          for (size_t i = 0; i < want.size(); i++) {
            double err = std::fabs(loadHost(got.data(), dt, i) - want[i]);
            double bound = u * std::fabs(want[i]) + (1 + u) * gamma * scale[i];
            if (!(err <= bound)) {
              double r = std::isnan(err) ? INFINITY : err / bound;
              if (bad++ == 0 || r > worstRatio) worst = i, worstRatio = r;
            }
          }
          if (bad) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s%s: %zu bad, worst [%zu, %zu] %.2fx the bound", check.empty() ? "" : "; ", path == 0 ? "gemv" : "cublas", bad,
                     worst / N, worst % N, worstRatio);
            check += msg;
            failures++;
          }
          std::vector<double> t;
          for (int r = 0; r < reps; r++) {
            CK(cudaMemsetAsync(flush.p, r & 0xff, flush.bytes, ctx.stream));  // also covers the host's launch time
            CK(cudaEventRecord(e0, ctx.stream));
            reg["matmul"](ctx, args);
            CK(cudaEventRecord(e1, ctx.stream));
            CK(cudaEventSynchronize(e1));
            float ms = 0;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            t.push_back(ms * 1e3);
          }
          std::sort(t.begin(), t.end());
          times[path] = t[t.size() / 2];
        }
        unsetenv("LIGHTNING_CUDA_GEMV");
        double bytes = (double)N * K * es;
        printf("%-6s %-12s %2d  %10.2f %10.2f  %8.2f %8.2f  %6.2fx  %s\n", dtName(dt), sh.c_str(), M, times[0], times[1], bytes / times[0] / 1e6,
               bytes / times[1] / 1e6, times[1] / times[0], check.empty() ? "ok" : check.c_str());
        fflush(stdout);
      }
    }
  }
  if (failures) printf("%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
