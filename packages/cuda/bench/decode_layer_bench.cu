// Timing harness for the persistent decode layer (native/decode_layer.cu): a decode step of L
// layers of the 436M TNL shape (d = 1,024, 8 heads of 128, GLU 2,816; every layer without LRPE)
// at 1–4 rows, random bf16 weights of its own for each layer, recorded as one CUDA graph and
// replayed. It prints µs a layer for each mode of LIGHTNING_CUDA_DECODE_LAYER given, beside a plain
// read of the same weights by five kernels a layer, and, from stamps the kernel takes when compiled with
// -DLTS_DECODE_LAYER_TRACE (the addon is not), where a layer's time goes: each stage's work and
// each grid barrier's wait, per block, and how far consecutive layers overlap.
//
// Correctness is the GPU tests' (test/decode-layer.test.ts: against the chain and float64); this
// only times.
//
// Build (packages/cuda, after the addon's build made build/cuda-obj/libltscuda.a):
//   nvcc -O3 -std=c++17 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -DLTS_DECODE_LAYER_TRACE -I native \
//     bench/decode_layer_bench.cu build/cuda-obj/libltscuda.a -ldl -o build/decode_layer_bench
// (without -DLTS_DECODE_LAYER_TRACE: the timings alone, the kernel as the addon has it)
// Run: build/decode_layer_bench [--rows 1] [--layers 24] [--reps 200] [--modes resident,stream]
//   (a mode is a value of LIGHTNING_CUDA_DECODE_LAYER; the kernel's other switches are read from
//   the environment as the addon reads them)
#include "../native/decode_layer.cu"
#include "bench_context.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace lts;

#define CK(x) LTS_CHECK(x, #x)

namespace bench {

void* deviceAlloc(size_t bytes) {
  void* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  return p;
}

// n bf16 values uniform in ±scale.
void* randomBf16(size_t n, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<__nv_bfloat16> h(n);
  for (auto& x : h) x = __float2bfloat16(u(rng));
  void* d = deviceAlloc(n * 2);
  CK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
  return d;
}
void* randomF32(size_t n, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> h(n);
  for (auto& x : h) x = u(rng);
  void* d = deviceAlloc(n * 4);
  CK(cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
  return d;
}

__global__ void readAll(const uint4* p, int64_t n, unsigned* sink) {
  unsigned acc = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

std::vector<std::string> stringList(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ',')) v.push_back(t);
  return v;
}

#ifdef LTS_DECODE_LAYER_TRACE
const char* POINT_NAMES[TRACE_POINTS] = {"entry", "waited", "s1 normed", "s1 weights", "s1 done", "barrier 1", "s2 done", "barrier 2", "s3 normed", "s3 weights",
                                         "s3 done", "barrier 3", "s4 normed", "s4 weights", "s4 done", "barrier 4", "s5 weights", "end", "", ""};

// Per interval between consecutive clock points: mean over (launch, block) of its length, and the
// mean over launches of its least and largest block; from the global timer, how long a layer's
// grid lives and how far it overlaps the next.
void reportTrace(int blocks, int launches) {
  std::vector<long long> st((size_t)TRACE_LAUNCHES * TRACE_BLOCKS * TRACE_POINTS);
  CK(cudaMemcpyFromSymbol(st.data(), traceStamps, st.size() * sizeof(long long)));
  auto at = [&](int l, int b, int p) { return st[((size_t)l * TRACE_BLOCKS + b) * TRACE_POINTS + p]; };
  const int n = std::min(launches, TRACE_LAUNCHES);
  // SM clocks per ns, from each block's whole life on both timers.
  double cyc = 0, ns = 0;
  for (int l = 0; l < n; l++)
    for (int b = 0; b < blocks; b++) cyc += (double)(at(l, b, TP_END) - at(l, b, TP_ENTRY)), ns += (double)(at(l, b, TP_GT_END) - at(l, b, TP_GT_ENTRY));
  const double ghz = cyc / ns;
  printf("  trace: %d launches x %d blocks, SM clock %.2f GHz (clock64 against the global timer)\n", n, blocks, ghz);
  printf("  %-24s %9s %9s %9s\n", "interval (us)", "mean", "min blk", "max blk");
  double total = 0;
  for (int p = TP_WAITED; p <= TP_END; p++) {
    double sum = 0, lo = 0, hi = 0;
    for (int l = 0; l < n; l++) {
      double mn = 1e30, mx = -1e30;
      for (int b = 0; b < blocks; b++) {
        const double d = (double)(at(l, b, p) - at(l, b, p - 1)) / ghz / 1000.0;
        sum += d, mn = std::min(mn, d), mx = std::max(mx, d);
      }
      lo += mn, hi += mx;
    }
    const double mean = sum / n / blocks;
    total += mean;
    printf("  %-24s %9.3f %9.3f %9.3f\n", (std::string(POINT_NAMES[p - 1]) + " -> " + POINT_NAMES[p]).c_str(), mean, lo / n, hi / n);
  }
  printf("  %-24s %9.3f\n", "entry -> end (sum)", total);
  double life = 0, period = 0, overlap = 0, arrive = 0;
  for (int l = 0; l < n; l++) {
    long long first = LLONG_MAX, last = LLONG_MIN, firstEnd = LLONG_MAX, lastEntry = LLONG_MIN;
    for (int b = 0; b < blocks; b++) {
      first = std::min(first, at(l, b, TP_GT_ENTRY)), last = std::max(last, at(l, b, TP_GT_END));
      firstEnd = std::min(firstEnd, at(l, b, TP_GT_END)), lastEntry = std::max(lastEntry, at(l, b, TP_GT_ENTRY));
    }
    life += (double)(last - first), arrive += (double)(lastEntry - first);
    if (l + 1 < n) {
      long long nextFirst = LLONG_MAX;
      for (int b = 0; b < blocks; b++) nextFirst = std::min(nextFirst, at(l + 1, b, TP_GT_ENTRY));
      period += (double)(nextFirst - first), overlap += (double)(last - nextFirst);
    }
  }
  printf("  global timer (us): grid life %.3f, last block arrives %.3f after the first, next grid's first block %.3f after this one's (%.3f before this one's last exit)\n",
         life / n / 1000, arrive / n / 1000, period / (n - 1) / 1000, overlap / (n - 1) / 1000);
}
#endif

}  // namespace bench

using namespace bench;

int main(int argc, char** argv) {
  int rows = 1, layers = 24, reps = 200;
  std::vector<std::string> modes = {"resident"};
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s needs a value\n", a.c_str());
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--rows") rows = std::stoi(next());
    else if (a == "--layers") layers = std::stoi(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--modes") modes = stringList(next());
    else {
      fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  const int M = 1024, H = 8, hd = 128, G = 2816, hid = H * hd, D = hd, E = hd;
  BenchContext ctx;
  CK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  ctx.smCount = prop.multiProcessorCount;
  ctx.ccMajor = prop.major;
  printf("%s, %d SMs; %d layers of d=%d, %d heads of %d, GLU %d; %d row(s)\n", prop.name, ctx.smCount, layers, M, H, hd, G, rows);

  std::mt19937 rng(20261203);
  struct Layer {
    void *wq, *wo, *w1, *w2, *w3, *state;
  };
  std::vector<Layer> ls(layers);
  for (auto& l : ls) {
    l.wq = randomBf16((size_t)4 * hid * M, 1.0f / 32, rng);
    l.wo = randomBf16((size_t)M * hid, 1.0f / 32, rng);
    l.w1 = randomBf16((size_t)G * M, 1.0f / 32, rng);
    l.w2 = randomBf16((size_t)G * M, 1.0f / 32, rng);
    l.w3 = randomBf16((size_t)M * G, 1.0f / 53, rng);
    l.state = randomF32((size_t)rows * H * D * E, 0.01f, rng);
  }
  void* slopes = randomF32(H, 0.5f, rng);
  void* h[2] = {randomBf16((size_t)rows * M, 1.0f, rng), randomBf16((size_t)rows * M, 1.0f, rng)};
  auto packed = [](int64_t n) { return (n + 7) / 8 * 8; };
  const int64_t scratchBytes = (2 * packed((int64_t)rows * H * D) + 3 * packed((int64_t)rows * hid) + packed((int64_t)rows * M) + packed((int64_t)rows * G)) * 2;
  void* scratch = deviceAlloc(scratchBytes);
  const double layerBytes = 2.0 * ((double)4 * hid * M + (double)M * hid + 3.0 * G * M) + 2.0 * 4.0 * rows * H * D * E;

  auto enqueueLayers = [&]() {
    for (int l = 0; l < layers; l++) {
      Args a;
      a.p = {(uint64_t)h[l % 2], (uint64_t)ls[l].wq, (uint64_t)ls[l].wo, (uint64_t)ls[l].w1, (uint64_t)ls[l].w2, (uint64_t)ls[l].w3, (uint64_t)ls[l].state, (uint64_t)slopes, 0, 0, (uint64_t)h[(l + 1) % 2],
             (uint64_t)ls[l].state, (uint64_t)scratch};
      a.i = {BF16, rows, M, H, hd, G, (int)QkvActivation::silu, -1, scratchBytes};
      a.f = {1e-6};
      ctx.declined = false;
      decodeLayer(ctx, a);
      if (ctx.declined) {
        fprintf(stderr, "decodeLayer declined the shape (LIGHTNING_CUDA_DEBUG=1 says why)\n");
        exit(1);
      }
    }
  };
  auto enqueueStep = [&](const std::string& mode) {
    setenv("LIGHTNING_CUDA_DECODE_LAYER", mode.c_str(), 1);
    enqueueLayers();
  };

  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));

  // For comparison: a plain read of every layer's weights, one kernel per weight matrix.
  {
    unsigned* sink = (unsigned*)deviceAlloc(4);
    auto readStep = [&]() {
      for (int l = 0; l < layers; l++)
        for (void* w : {ls[l].wq, ls[l].wo, ls[l].w1, ls[l].w2, ls[l].w3}) {
          const int64_t bytes = w == ls[l].wq ? (int64_t)4 * hid * M * 2 : w == ls[l].wo ? (int64_t)M * hid * 2 : (int64_t)G * M * 2;
          readAll<<<ctx.smCount * 4, 512, 0, ctx.stream>>>((const uint4*)w, bytes / 16, sink);
        }
    };
    for (int i = 0; i < 20; i++) readStep();
    CK(cudaEventRecord(e0, ctx.stream));
    for (int i = 0; i < 50; i++) readStep();
    CK(cudaEventRecord(e1, ctx.stream));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    const double weightBytes = layerBytes - 2.0 * 4.0 * rows * H * D * E;
    printf("weights read by 5 plain kernels a layer: %.2f us a layer, %.0f GB/s\n", ms * 1000 / 50 / layers, weightBytes * layers * 50 / (ms * 1e6));
  }

  for (const auto& mode : modes) {
    for (int i = 0; i < 3; i++) enqueueStep(mode);  // eager, also the first launches
    CK(cudaStreamSynchronize(ctx.stream));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeThreadLocal));
    enqueueStep(mode);
    CK(cudaStreamEndCapture(ctx.stream, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < 50; i++) CK(cudaGraphLaunch(exec, ctx.stream));
#ifdef LTS_DECODE_LAYER_TRACE
    CK(cudaStreamSynchronize(ctx.stream));
    {
      std::vector<unsigned> zero(TRACE_BLOCKS, 0);
      CK(cudaMemcpyToSymbol(traceLaunches, zero.data(), zero.size() * sizeof(unsigned)));
      const int from = layers * (reps / 2);  // stamp launches from the middle of the timed replays
      CK(cudaMemcpyToSymbol(traceFrom, &from, sizeof from));
    }
#endif
    CK(cudaEventRecord(e0, ctx.stream));
    for (int i = 0; i < reps; i++) CK(cudaGraphLaunch(exec, ctx.stream));
    CK(cudaEventRecord(e1, ctx.stream));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    const double us = ms * 1000 / reps / layers;
    printf("%s: %.2f us a layer (%.3f ms for %d layers), %.0f GB/s of weights and state\n", ("LIGHTNING_CUDA_DECODE_LAYER=" + mode).c_str(), us, us * layers / 1000, layers, layerBytes / (us * 1e3));
#ifdef LTS_DECODE_LAYER_TRACE
    reportTrace(std::min(ctx.smCount, TRACE_BLOCKS), layers * 4);
#endif
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
  }
  return 0;
}
