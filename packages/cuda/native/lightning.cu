// Lightning Attention launchers: forward, backward and the one-token decode step. Forward and
// backward pick the fastest version that supports the call (KERNELS.md has the measurements):
// lightning_v5.cu (tensor cores; bf16 and f16; D ∈ {64, 128, 256}, E a multiple of 64 forward,
// E ∈ {64, 128, 256} backward; any T; version 6, wgmma, for every key width on Hopper), else
// the general lightning_v1.cu (any shape; f32 always). LIGHTNING_CUDA_LA_VERSION=1 forces the
// reference version 1 (5: version 5 where it applies, no wgmma; 6: the default choice).
// LIGHTNING_CUDA_DEBUG=1 prints the kernel chosen, once per (op, dtype, shape), to stderr. The
// decode step runs "vec4" unless LIGHTNING_CUDA_STEP names another of its kernels (see `step`).
// Letters: B batch, H heads, T time, D query/key head dim, E value head dim.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include "gemv_device.cuh"
#include "lightning.cuh"

namespace lts {
namespace {

int forcedVersion() {
  const char* v = getenv("LIGHTNING_CUDA_LA_VERSION");
  return v ? atoi(v) : 0;
}

bool useV5(int dt, LightningDims d, bool backward) {
  int version = forcedVersion();
  if (version != 0 && version != 5 && version != 6) return false;
  return backward ? lightningBackwardV5Supported(dt, d) : lightningForwardV5Supported(dt, d);
}

const char* dtypeName(int dt) { return dt == F32 ? "f32" : dt == F16 ? "f16" : dt == BF16 ? "bf16" : "?"; }

// LIGHTNING_CUDA_DEBUG=1: one line per distinct (op, dtype, shape) on stderr.
void debugNote(Context& c, const char* op, int dt, LightningDims d, bool backward) {
  static const bool on = [] {
    const char* v = getenv("LIGHTNING_CUDA_DEBUG");
    return v && *v && *v != '0';
  }();
  if (!on) return;
  static std::mutex mu;
  static std::set<std::string> seen;
  char key[160];
  snprintf(key, sizeof key, "%s %s B=%d H=%d T=%d D=%d E=%d", op, dtypeName(dt), d.B, d.H, d.T, d.D, d.E);
  std::lock_guard<std::mutex> lock(mu);
  if (!seen.insert(key).second) return;
  fprintf(stderr, "[lightning-cuda] %s -> %s\n", key, lightningKernelName(c, dt, d, backward).c_str());
}

// q, k: (B, H, D); v: (B, H, E); slopes: f32 (H); state: f32 (B, H, D, E) → o: (B, H, E), newState: f32 (B, H, D, E)
// One block per (b·h, 32 columns of E); 8 row groups split D and meet in shared memory. The state
// is read and written once, 128 bytes per warp access: this kernel is bound by the state's bytes.
template <class T>
__global__ void stepKernel(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn, int D, int E, int H) {
  __shared__ float part[8][33];
  int bh = blockIdx.x, e = blockIdx.y * 32 + threadIdx.x;
  float lambda = expf(-slopes[bh % H]);
  float acc = 0;
  if (e < E) {
    float ve = toF(v[(int64_t)bh * E + e]);
    const float* Sb = S + (int64_t)bh * D * E;
    float* Snb = Sn + (int64_t)bh * D * E;
    for (int d = threadIdx.y; d < D; d += 8) {
      float s = lambda * Sb[(int64_t)d * E + e] + toF(k[(int64_t)bh * D + d]) * ve;
      Snb[(int64_t)d * E + e] = s;
      acc += toF(q[(int64_t)bh * D + d]) * s;
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && e < E) {
    float sum = 0;
    for (int r = 0; r < 8; r++) sum += part[r][threadIdx.x];
    o[(int64_t)bh * E + e] = fromF<T>(sum);
  }
}

// The same with 16-byte state accesses (E a multiple of 4): 4 columns per lane, LANES lanes per
// state row (32 for E ≥ 128; 16 for E = 64, so that a warp covers two rows and no lane idles).
template <class T, int LANES>
__global__ void stepKernelVec4(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn, int D, int E, int H) {
  constexpr int ROWS = 32 / LANES;  // state rows per warp and step
  __shared__ float4 part[8][32];
  int bh = blockIdx.x, sub = threadIdx.x / LANES, e = (blockIdx.y * LANES + threadIdx.x % LANES) * 4;
  float lambda = expf(-slopes[bh % H]);
  float4 acc = make_float4(0, 0, 0, 0);
  if (e < E) {
    const T* vr = v + (int64_t)bh * E + e;
    float4 ve = make_float4(toF(vr[0]), toF(vr[1]), toF(vr[2]), toF(vr[3]));
    const float4* Sb = reinterpret_cast<const float4*>(S + (int64_t)bh * D * E + e);
    float4* Snb = reinterpret_cast<float4*>(Sn + (int64_t)bh * D * E + e);
    int stride = E / 4;
#pragma unroll 4
    for (int d = threadIdx.y * ROWS + sub; d < D; d += 8 * ROWS) {
      float4 s = Sb[(int64_t)d * stride];
      float kd = toF(k[(int64_t)bh * D + d]), qd = toF(q[(int64_t)bh * D + d]);
      s.x = lambda * s.x + kd * ve.x, s.y = lambda * s.y + kd * ve.y, s.z = lambda * s.z + kd * ve.z, s.w = lambda * s.w + kd * ve.w;
      Snb[(int64_t)d * stride] = s;
      acc.x += qd * s.x, acc.y += qd * s.y, acc.z += qd * s.z, acc.w += qd * s.w;
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && threadIdx.x < LANES && e < E) {
    float4 sum = make_float4(0, 0, 0, 0);
    for (int r = 0; r < 8; r++)
      for (int u = 0; u < ROWS; u++) {
        float4 x = part[r][u * LANES + threadIdx.x];
        sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
      }
    T* orow = o + (int64_t)bh * E + e;
    orow[0] = fromF<T>(sum.x), orow[1] = fromF<T>(sum.y), orow[2] = fromF<T>(sum.z), orow[3] = fromF<T>(sum.w);
  }
}

// Candidates for the decode step (LIGHTNING_CUDA_STEP, KERNELS.md "Decode step candidates"), one
// template: each thread owns one float4 column slice of LANES·4 columns and the rows g, g + G,
// g + 2G, ... of it (G row groups per head), walked in batches of R rows whose state loads are all
// issued before the batch's first store. PIPELINED issues batch j + 1's loads before batch j's
// stores, so a thread always has loads in flight. Without __restrict__ (the new state may be the old
// one) the compiler may not move a load above a store; the order written here is the order run, and
// every state element is read and written by the same thread, read first. STREAMING marks the state
// evict-first in L1 and L2 (ld/st.global.cs): it is touched once per step. HEADS (b·h) share a
// block; q and k of those heads are staged as f32 in shared memory, so a row costs one 16-byte load.
// Launched with programmatic dependent launch (launchPdl): q, k, v and the slopes are read after
// waitForPrevious(); with `early` (the caller knows that the kernel just before does not write the
// state: a decode layer's projection or split) the first batch of state rows is loaded before it,
// while that kernel finishes. The kernel after may start once every block is past its rows.
template <bool STREAMING>
__device__ __forceinline__ float4 loadState(const float4* p) {
  if constexpr (STREAMING) return __ldcs(p);
  else return *p;
}
template <bool STREAMING>
__device__ __forceinline__ void storeState(float4* p, float4 x) {
  if constexpr (STREAMING) __stcs(p, x);
  else *p = x;
}

// Rows d0, d0 + G, ..., d0 + (R − 1)·G of the thread's column slice; rows past D read as zero.
template <int R, int G, bool STREAMING>
__device__ __forceinline__ void loadRows(float4 (&s)[R], const float4* Sb, int64_t stride, int d0, int D) {
#pragma unroll
  for (int u = 0; u < R; u++) {
    int d = d0 + G * u;
    s[u] = d < D ? loadState<STREAMING>(Sb + d * stride) : make_float4(0, 0, 0, 0);
  }
}

template <class T, int LANES, int THREADS, int HEADS, int R, bool PIPELINED, bool STREAMING>
__global__ void __launch_bounds__(THREADS) stepKernelRows(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn,
                                                          int BH, int D, int E, int H, bool early) {
  constexpr int G = THREADS / (LANES * HEADS);  // row groups per head
  static_assert(G * LANES * HEADS == THREADS, "THREADS must split into LANES × G × HEADS");
  extern __shared__ float qk[];  // [q, k][HEADS][D] as f32
  __shared__ float4 part[HEADS][G][LANES];
  const int lane = threadIdx.x, g = threadIdx.y, hh = threadIdx.z;
  const int bh0 = blockIdx.x * HEADS, bh = bh0 + hh, e = (blockIdx.y * LANES + lane) * 4;
  const bool active = bh < BH && e < E;
  const int64_t stride = E / 4;
  const float4* Sb = reinterpret_cast<const float4*>(S + (active ? (int64_t)bh * D * E + e : 0));
  float4* Snb = reinterpret_cast<float4*>(Sn + (active ? (int64_t)bh * D * E + e : 0));
  // The first batch, v and the decay are in flight while q and k are staged.
  float4 cur[R], ve = make_float4(0, 0, 0, 0);
  float lambda = 0;
  if (active && early) loadRows<R, G, STREAMING>(cur, Sb, stride, g, D);
  waitForPrevious();
  if (active) {
    if (!early) loadRows<R, G, STREAMING>(cur, Sb, stride, g, D);
    const T* vr = v + (int64_t)bh * E + e;
    ve = make_float4(toF(vr[0]), toF(vr[1]), toF(vr[2]), toF(vr[3]));
    lambda = expf(-slopes[bh % H]);
  }
  for (int i = (hh * G + g) * LANES + lane; i < HEADS * D; i += THREADS) {
    bool in = bh0 + i / D < BH;
    qk[i] = in ? toF(q[(int64_t)bh0 * D + i]) : 0.0f;
    qk[HEADS * D + i] = in ? toF(k[(int64_t)bh0 * D + i]) : 0.0f;
  }
  __syncthreads();
  float4 acc = make_float4(0, 0, 0, 0);
  if (active) {
    const float* qs = qk + hh * D;
    const float* ks = qk + (HEADS + hh) * D;
    for (int d0 = g; d0 < D; d0 += G * R) {
      float4 next[R];
      if constexpr (PIPELINED) loadRows<R, G, STREAMING>(next, Sb, stride, d0 + G * R, D);
#pragma unroll
      for (int u = 0; u < R; u++) {
        int d = d0 + G * u;
        if (d < D) {
          float kd = ks[d], qd = qs[d];
          float4 s = cur[u];
          s.x = lambda * s.x + kd * ve.x, s.y = lambda * s.y + kd * ve.y, s.z = lambda * s.z + kd * ve.z, s.w = lambda * s.w + kd * ve.w;
          storeState<STREAMING>(Snb + d * stride, s);
          acc.x += qd * s.x, acc.y += qd * s.y, acc.z += qd * s.z, acc.w += qd * s.w;
        }
      }
      if constexpr (PIPELINED) {
#pragma unroll
        for (int u = 0; u < R; u++) cur[u] = next[u];
      } else {
        loadRows<R, G, STREAMING>(cur, Sb, stride, d0 + G * R, D);
      }
    }
  }
  startNext();
  part[hh][g][lane] = acc;
  __syncthreads();
  if (g == 0 && active) {
    float4 sum = make_float4(0, 0, 0, 0);
#pragma unroll
    for (int r = 0; r < G; r++) {
      float4 x = part[hh][r][lane];
      sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
    }
    T* orow = o + (int64_t)bh * E + e;
    orow[0] = fromF<T>(sum.x), orow[1] = fromF<T>(sum.y), orow[2] = fromF<T>(sum.z), orow[3] = fromF<T>(sum.w);
  }
}

LightningDims dimsOf(Reader& r) {
  LightningDims d;
  d.B = (int)r.next(), d.H = (int)r.next(), d.T = (int)r.next(), d.D = (int)r.next(), d.E = (int)r.next();
  return d;
}

// p: [q, k, v, slopes, S0 or 0, o, finalState]; i: [dtype, B, H, T, D, E]
void forward(Context& c, const Args& a) {
  Reader r{a.i};
  int dt = (int)r.next();
  LightningDims d = dimsOf(r);
  auto S0 = a.p.at(4) ? a.ptr<const float>(4) : nullptr;
  if (d.BH() == 0 || d.D == 0 || d.E == 0) return;
  if (d.T == 0) {
    size_t bytes = (size_t)d.BH() * d.D * d.E * 4;
    if (S0) LTS_CHECK(cudaMemcpyAsync(a.ptr<float>(6), S0, bytes, cudaMemcpyDeviceToDevice, c.stream), "lightningAttention state copy");
    else LTS_CHECK(cudaMemsetAsync(a.ptr<float>(6), 0, bytes, c.stream), "lightningAttention state memset");
    return;
  }
  debugNote(c, "lightningAttention", dt, d, false);
  if (useV5(dt, d, false))
    lightningForwardV5(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), S0, a.ptr<void>(5), a.ptr<float>(6));
  else
    lightningForwardV1(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), S0, a.ptr<void>(5), a.ptr<float>(6));
}

// p: [q, k, v, slopes, dO, dSfinal, S0 or 0, dq, dk, dv, dS0]; i: [dtype, B, H, T, D, E]
void backward(Context& c, const Args& a) {
  Reader r{a.i};
  int dt = (int)r.next();
  LightningDims d = dimsOf(r);
  if (d.BH() == 0 || d.D == 0 || d.E == 0) return;
  auto S0 = a.p.at(6) ? a.ptr<const float>(6) : nullptr;
  if (d.T == 0) {
    LTS_CHECK(cudaMemcpyAsync(a.ptr<float>(10), a.ptr<float>(5), (size_t)d.BH() * d.D * d.E * 4, cudaMemcpyDeviceToDevice, c.stream),
              "lightningAttentionBackward state copy");
    return;
  }
  debugNote(c, "lightningAttentionBackward", dt, d, true);
  if (useV5(dt, d, true)) {
    lightningBackwardV5(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), a.ptr<void>(4), a.ptr<float>(5), S0,
                        a.ptr<void>(7), a.ptr<void>(8), a.ptr<void>(9), a.ptr<float>(10));
    return;
  }
  lightningBackwardV1(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), a.ptr<void>(4), a.ptr<float>(5), S0,
                      a.ptr<void>(7), a.ptr<void>(8), a.ptr<void>(9), a.ptr<float>(10));
}

// The decode step kernels by name (LIGHTNING_CUDA_STEP; KERNELS.md has their measurements).
// "scalar" is the plain twin (any shape); "vec4" needs E % 4 == 0 and 16-byte aligned
// states; the stepKernelRows candidates need that too and D ≤ 2,048 (q and k of up to two heads
// in shared memory beside the partial sums: at most 32 KB + 8 KB, under the 48 KB of a plain launch).
// A call a kernel does not support runs the next plainer one: candidate → vec4 → scalar.
enum class StepKind { Scalar, Vec4, Rows, Stream, Block, Pair, Narrow };
struct StepName {
  const char* name;
  StepKind kind;
};
constexpr StepName STEP_KERNELS[] = {{"scalar", StepKind::Scalar}, {"vec4", StepKind::Vec4},   {"rows", StepKind::Rows},
                                     {"stream", StepKind::Stream}, {"block", StepKind::Block}, {"pair", StepKind::Pair},
                                     {"narrow", StepKind::Narrow}};

// Batch·heads up to which "narrow" is the default (KERNELS.md, "Decode step at a small batch").
constexpr int NARROW_MAX_BH = 64;

// The default, measured on the H200 (KERNELS.md, "Decode step candidates"): "block" (every load
// of a thread before its arithmetic, 512 threads) is the fastest at every batch for E ≥ 128
// (B = 64, D = E = 128: 81% of copy against vec4's 73%); at E = 64 it idles lanes and "stream" wins.
// Both run one block per (b·h) and column slice of 128 (or 64), so a small batch leaves most SMs
// idle — batch 1 of an 8-head model is 8 blocks, each thread waiting out the round trips of its
// rows — and there "narrow" (16 columns per block, every row of a thread loaded at once) spreads
// the same step over E/16 times as many blocks.
StepKind defaultStep(int BH, int E) {
  if (BH <= NARROW_MAX_BH) return StepKind::Narrow;
  return E >= 128 ? StepKind::Block : StepKind::Stream;
}

StepKind requestedStep(int BH, int E) {
  const char* v = getenv("LIGHTNING_CUDA_STEP");
  if (!v || !*v) return defaultStep(BH, E);
  std::string names;
  for (const StepName& s : STEP_KERNELS) {
    if (strcmp(v, s.name) == 0) return s.kind;
    names += names.empty() ? s.name : std::string(", ") + s.name;
  }
  throw std::runtime_error(std::string("LIGHTNING_CUDA_STEP: expected one of ") + names + ", got '" + v + "'");
}

// The kernel that runs: the requested one where it supports the call, else the next plainer one.
// aligned: both states start on a 16-byte boundary.
StepKind stepKind(int BH, int D, int E, bool aligned) {
  StepKind want = requestedStep(BH, E);
  if (want == StepKind::Scalar || E % 4 != 0 || !aligned) return StepKind::Scalar;
  if (want == StepKind::Vec4 || D > 2048) return StepKind::Vec4;
  return want;
}

const char* stepKindName(StepKind k) {
  for (const StepName& s : STEP_KERNELS)
    if (s.kind == k) return s.name;
  return "?";
}

// One configuration of stepKernelRows: LANES float4 columns per row (32 for E ≥ 128; 16 below, so
// that E = 64 fills the warp), THREADS per block, HEADS (b·h) per block.
template <class T, int LANES, int THREADS, int HEADS, int R, bool PIPELINED, bool STREAMING>
void launchRows(Context& c, const Args& a, int BH, int D, int E, int H, bool early) {
  constexpr int G = THREADS / (LANES * HEADS);
  dim3 grid((BH + HEADS - 1) / HEADS, (E + 4 * LANES - 1) / (4 * LANES)), block(LANES, G, HEADS);
  size_t shared = (size_t)2 * HEADS * D * sizeof(float);
  launchPdl(c, stepKernelRows<T, LANES, THREADS, HEADS, R, PIPELINED, STREAMING>, grid, block, shared, "lightningStep kernel launch", a.ptr<T>(0), a.ptr<T>(1),
            a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4), a.ptr<T>(5), a.ptr<float>(6), BH, D, E, H, early);
}

template <class T, int LANES>
void launchCandidate(Context& c, const Args& a, StepKind kind, int BH, int D, int E, int H, bool early) {
  switch (kind) {
    case StepKind::Rows: launchRows<T, LANES, 128, 1, 4, true, false>(c, a, BH, D, E, H, early); break;
    case StepKind::Stream: launchRows<T, LANES, 128, 1, 4, true, true>(c, a, BH, D, E, H, early); break;
    case StepKind::Block: launchRows<T, LANES, 512, 1, 8, false, true>(c, a, BH, D, E, H, early); break;
    case StepKind::Pair: launchRows<T, LANES, 256, 2, 4, true, true>(c, a, BH, D, E, H, early); break;
    // 4 lanes (16 columns) × 32 row groups: at D = 128 every row of a thread is one batch of loads.
    case StepKind::Narrow: launchRows<T, 4, 128, 1, 4, false, true>(c, a, BH, D, E, H, early); break;
    default: break;
  }
}

// p: [q, k, v, slopes, state, o, newState]; i: [dtype, B, H, D, E[, early]]. newState may be state
// itself. early = 1: the kernel enqueued just before this one does not write the state, so the
// stepKernelRows candidates may load it before that kernel has finished (see there).
void step(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int B = (int)a.i.at(1), H = (int)a.i.at(2), D = (int)a.i.at(3), E = (int)a.i.at(4);
  const bool early = a.i.size() > 5 && a.i.at(5) != 0;
  if (B * H == 0 || E == 0) return;
  StepKind kind = stepKind(B * H, D, E, alignedTo(a.ptr<float>(4), 16) && alignedTo(a.ptr<float>(6), 16));
  dim3 block(32, 8);
  if (kind == StepKind::Scalar) {
    dim3 grid(B * H, (E + 31) / 32);
    LTS_DISPATCH_FLOAT(dt, T, stepKernel<T><<<grid, block, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4),
                                                                            a.ptr<T>(5), a.ptr<float>(6), D, E, H));
  } else if (kind == StepKind::Vec4 && E < 128) {
    dim3 grid(B * H, (E + 63) / 64);
    LTS_DISPATCH_FLOAT(dt, T, stepKernelVec4<T, 16><<<grid, block, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4),
                                                                                    a.ptr<T>(5), a.ptr<float>(6), D, E, H));
  } else if (kind == StepKind::Vec4) {
    dim3 grid(B * H, (E + 127) / 128);
    LTS_DISPATCH_FLOAT(dt, T, stepKernelVec4<T, 32><<<grid, block, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4),
                                                                                    a.ptr<T>(5), a.ptr<float>(6), D, E, H));
  } else if (E < 128) {
    LTS_DISPATCH_FLOAT(dt, T, (launchCandidate<T, 16>(c, a, kind, B * H, D, E, H, early)));
  } else {
    LTS_DISPATCH_FLOAT(dt, T, (launchCandidate<T, 32>(c, a, kind, B * H, D, E, H, early)));
  }
  LTS_CHECK(cudaGetLastError(), "lightningStep kernel launch");
}

}  // namespace

std::string lightningKernelName(Context& c, int dt, LightningDims d, bool backward) {
  if (d.BH() == 0 || d.D == 0 || d.E == 0 || d.T == 0) return "none (empty: state copy only)";
  if (useV5(dt, d, backward)) return lightningV5Describe(c, dt, d, backward);
  return std::string("v1 CUDA cores (") + dtypeName(dt) + (dt == F32 ? ", double accumulation)" : ", f32 accumulation)");
}

// The decode step kernel that runs for these sizes under LIGHTNING_CUDA_STEP (16-byte aligned states
// assumed), in words, for the harness: "stream (128 threads, 32 lanes per row, ...)".
std::string lightningStepKernelName(int BH, int D, int E) {
  StepKind k = stepKind(BH, D, E, true);
  int lanes = k == StepKind::Narrow ? 4 : E < 128 ? 16 : 32;
  std::string name = stepKindName(k), lanesText = std::to_string(k == StepKind::Scalar ? 32 : lanes) + " lanes per row";
  switch (k) {
    case StepKind::Scalar: return name + " (256 threads, " + lanesText + ", one f32 per lane)";
    case StepKind::Vec4: return name + " (256 threads, " + lanesText + ", one float4 row at a time)";
    case StepKind::Rows: return name + " (128 threads, " + lanesText + ", 4-row batches pipelined)";
    case StepKind::Stream: return name + " (128 threads, " + lanesText + ", 4-row batches pipelined, .cs hints)";
    case StepKind::Block: return name + " (512 threads, " + lanesText + ", 8-row batches, .cs hints)";
    case StepKind::Pair: return name + " (256 threads, 2 heads per block, " + lanesText + ", 4-row batches pipelined, .cs hints)";
    case StepKind::Narrow: return name + " (128 threads, " + lanesText + ", 16 columns per block, 4-row batches, .cs hints)";
  }
  return name;
}

void registerLightning(Registry& r) {
  r["lightningAttention"] = forward;
  r["lightningAttentionBackward"] = backward;
  r["lightningStep"] = step;
}

}  // namespace lts
