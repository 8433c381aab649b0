// Lightning Attention launchers: forward, backward and the one-token decode step. Forward and
// backward pick the fastest version that supports the call (KERNELS.md has the measurements):
// lightning_v5.cu (tensor cores; bf16 and f16; D ∈ {64, 128, 256}, E a multiple of 64 forward,
// E ∈ {64, 128, 256} backward; any T; version 6, wgmma, for every key width on Hopper), else
// the general lightning_v1.cu (any shape; f32 always). LIGHTNING_CUDA_LA_VERSION=1 forces the
// reference version 1 (5: version 5 where it applies, no wgmma; 6: the default choice).
// LIGHTNING_CUDA_DEBUG=1 prints the kernel chosen, once per (op, dtype, shape), to stderr. The
// decode step runs "vec4" unless LIGHTNING_CUDA_STEP names another of its kernels (see `step`).
// Letters: B batch, H heads, T time, D query/key head dim, E value head dim.
#include <algorithm>
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

// Prompt segments (lightningStep's `segments`, i32 [B + 1], with q, k, v and o of N ≥ B token rows):
// state row b steps through the token rows B + seg[b] … B + seg[b + 1] − 1, then row b, as that many
// one-token steps would. The offsets are read on the device and clamped into [0, N − B], so a bad
// table reads no row out of bounds (the tensor core's CPU kernel checks them and refuses). Without
// a table every row steps its own token once.
struct Tokens {
  int first;  // token row of the first earlier token
  int count;  // tokens stepped, the row's own included
  __device__ __forceinline__ int row(int j, int b) const { return j < count - 1 ? first + j : b; }
};
// A table that is not 0 ≤ seg[0] ≤ seg[1] ≤ … ≤ seg[B] ≤ N − B is reported (the device error flag,
// as an index out of range; `report`: one thread of the row's first head) and clamped.
__device__ __forceinline__ Tokens tokensOf(const int* seg, int b, int B, int N, DeviceError* err, int code, bool report) {
  if (!seg) return {b, 1};
  int extra = N - B, s0 = seg[b], s1 = seg[b + 1];
  if (report && err && (s0 < 0 || s0 > extra || s1 < s0 || s1 > extra)) {
    bool first = s0 < 0 || s0 > extra;
    reportError(err, code, first ? b : b + 1, first ? s0 : s1, extra + 1);
  }
  int lo = min(max(s0, 0), extra), hi = min(max(s1, lo), extra);
  return {B + lo, hi - lo + 1};
}
// The token rows no segment names (after the last one): their output is zero. Written by the
// blocks of the last state row.
__device__ __forceinline__ int unusedFrom(const int* seg, int B, int N) {
  return seg ? B + min(max(seg[B], 0), N - B) : N;
}
// Zeroes head h's four output columns from e of those rows (o: (N, H, E)).
template <class T>
__device__ __forceinline__ void zeroUnused(T* o, const int* seg, int B, int N, int H, int h, int E, int e) {
  for (int64_t r = unusedFrom(seg, B, N); r < N; r++) {
    T* orow = o + (r * H + h) * E + e;
    orow[0] = orow[1] = orow[2] = orow[3] = fromF<T>(0.0f);
  }
}

// q, k: (N, H, D); v: (N, H, E); slopes: f32 (H); state: f32 (B, H, D, E) → o: (N, H, E), newState: f32 (B, H, D, E)
// One block per (b·h, 32 columns of E); 8 row groups split D and meet in shared memory. The state
// is read and written once per token, 128 bytes per warp access: this kernel is bound by the state's bytes.
template <class T>
__global__ void stepKernel(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn, int D, int E, int H,
                           const int* seg, int B, int N, DeviceError* err, int code) {
  __shared__ float part[8][33];
  int bh = blockIdx.x, e = blockIdx.y * 32 + threadIdx.x;
  const int b = bh / H, h = bh % H;
  const Tokens tok = tokensOf(seg, b, B, N, err, code, h == 0 && blockIdx.y == 0 && threadIdx.x == 0 && threadIdx.y == 0);
  float lambda = expf(-slopes[h]);
  for (int j = 0; j < tok.count; j++) {
    const int64_t t = (int64_t)tok.row(j, b) * H + h;
    float acc = 0;
    if (e < E) {
      float ve = toF(v[t * E + e]);
      // Each element is read and written by the same thread, so later tokens read the new state.
      const float* Sb = (j == 0 ? S : Sn) + (int64_t)bh * D * E;
      float* Snb = Sn + (int64_t)bh * D * E;
      for (int d = threadIdx.y; d < D; d += 8) {
        float s = lambda * Sb[(int64_t)d * E + e] + toF(k[t * D + d]) * ve;
        Snb[(int64_t)d * E + e] = s;
        acc += toF(q[t * D + d]) * s;
      }
    }
    if (j > 0) __syncthreads();
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && e < E) {
      float sum = 0;
      for (int r = 0; r < 8; r++) sum += part[r][threadIdx.x];
      o[t * E + e] = fromF<T>(sum);
    }
  }
  if (b == B - 1 && threadIdx.y == 0 && e < E)
    for (int64_t r = unusedFrom(seg, B, N); r < N; r++) o[(r * H + h) * E + e] = fromF<T>(0.0f);
}

// The same with 16-byte state accesses (E a multiple of 4): 4 columns per lane, LANES lanes per
// state row (32 for E ≥ 128; 16 for E = 64, so that a warp covers two rows and no lane idles).
template <class T, int LANES>
__global__ void stepKernelVec4(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn, int D, int E, int H,
                               const int* seg, int B, int N, DeviceError* err, int code) {
  constexpr int ROWS = 32 / LANES;  // state rows per warp and step
  __shared__ float4 part[8][32];
  int bh = blockIdx.x, sub = threadIdx.x / LANES, e = (blockIdx.y * LANES + threadIdx.x % LANES) * 4;
  const int b = bh / H, h = bh % H;
  const Tokens tok = tokensOf(seg, b, B, N, err, code, h == 0 && blockIdx.y == 0 && threadIdx.x == 0 && threadIdx.y == 0);
  float lambda = expf(-slopes[h]);
  for (int j = 0; j < tok.count; j++) {
    const int64_t t = (int64_t)tok.row(j, b) * H + h;
    float4 acc = make_float4(0, 0, 0, 0);
    if (e < E) {
      const T* vr = v + t * E + e;
      float4 ve = make_float4(toF(vr[0]), toF(vr[1]), toF(vr[2]), toF(vr[3]));
      const float4* Sb = reinterpret_cast<const float4*>((j == 0 ? S : Sn) + (int64_t)bh * D * E + e);
      float4* Snb = reinterpret_cast<float4*>(Sn + (int64_t)bh * D * E + e);
      int stride = E / 4;
#pragma unroll 4
      for (int d = threadIdx.y * ROWS + sub; d < D; d += 8 * ROWS) {
        float4 s = Sb[(int64_t)d * stride];
        float kd = toF(k[t * D + d]), qd = toF(q[t * D + d]);
        s.x = lambda * s.x + kd * ve.x, s.y = lambda * s.y + kd * ve.y, s.z = lambda * s.z + kd * ve.z, s.w = lambda * s.w + kd * ve.w;
        Snb[(int64_t)d * stride] = s;
        acc.x += qd * s.x, acc.y += qd * s.y, acc.z += qd * s.z, acc.w += qd * s.w;
      }
    }
    if (j > 0) __syncthreads();
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && threadIdx.x < LANES && e < E) {
      float4 sum = make_float4(0, 0, 0, 0);
      for (int r = 0; r < 8; r++)
        for (int u = 0; u < ROWS; u++) {
          float4 x = part[r][u * LANES + threadIdx.x];
          sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
        }
      T* orow = o + t * E + e;
      orow[0] = fromF<T>(sum.x), orow[1] = fromF<T>(sum.y), orow[2] = fromF<T>(sum.z), orow[3] = fromF<T>(sum.w);
    }
  }
  if (b == B - 1 && threadIdx.y == 0 && threadIdx.x < LANES && e < E) zeroUnused(o, seg, B, N, H, h, E, e);
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

// One token's state update of a thread's rows, and its share of o = q·S'.
__device__ __forceinline__ float4 decayAdd(float4 s, float lambda, float kd, float4 ve) {
  s.x = lambda * s.x + kd * ve.x, s.y = lambda * s.y + kd * ve.y, s.z = lambda * s.z + kd * ve.z, s.w = lambda * s.w + kd * ve.w;
  return s;
}
__device__ __forceinline__ void accumulate(float4& acc, float qd, float4 s) { acc.x += qd * s.x, acc.y += qd * s.y, acc.z += qd * s.z, acc.w += qd * s.w; }

// The G row groups' partial sums of one head's o, added in group order by group 0 and stored.
template <class T, int HEADS, int G, int LANES>
__device__ __forceinline__ void storeOutput(float4 (&part)[HEADS][G][LANES], int hh, int lane, T* orow) {
  float4 sum = make_float4(0, 0, 0, 0);
#pragma unroll
  for (int r = 0; r < G; r++) {
    float4 x = part[hh][r][lane];
    sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
  }
  orow[0] = fromF<T>(sum.x), orow[1] = fromF<T>(sum.y), orow[2] = fromF<T>(sum.z), orow[3] = fromF<T>(sum.w);
}

// The body of stepKernelRows, for the block's (b·h) group bh0.
template <class T, int LANES, int THREADS, int HEADS, int R, bool PIPELINED, bool STREAMING>
__device__ __forceinline__ void stepRows(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn, int BH, int D,
                                         int E, int H, bool early, int bh0) {
  constexpr int G = THREADS / (LANES * HEADS);  // row groups per head
  static_assert(G * LANES * HEADS == THREADS, "THREADS must split into LANES × G × HEADS");
  extern __shared__ float qk[];  // [q, k][HEADS][D] as f32
  __shared__ float4 part[HEADS][G][LANES];
  const int lane = threadIdx.x, g = threadIdx.y, hh = threadIdx.z;
  const int bh = bh0 + hh, e = (blockIdx.y * LANES + lane) * 4;
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
          float4 s = decayAdd(cur[u], lambda, ks[d], ve);
          storeState<STREAMING>(Snb + d * stride, s);
          accumulate(acc, qs[d], s);
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
  if (g == 0 && active) storeOutput<T, HEADS, G, LANES>(part, hh, lane, o + (int64_t)bh * E + e);
}

template <class T, int LANES, int THREADS, int HEADS, int R, bool PIPELINED, bool STREAMING>
__global__ void __launch_bounds__(THREADS) stepKernelRows(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn,
                                                          int BH, int D, int E, int H, bool early) {
  stepRows<T, LANES, THREADS, HEADS, R, PIPELINED, STREAMING>(q, k, v, slopes, S, o, Sn, BH, D, E, H, early, blockIdx.x * HEADS);
}

// Where v starts in a segment kernel's staged tokens: after q and k, on a 16-byte boundary.
__host__ __device__ __forceinline__ size_t stagedVOffset(int CH, int D) { return ((size_t)2 * CH * D + 3) / 4 * 4; }

// Tokens whose partial outputs a segment kernel reduces together: one output float a thread
// (4·LANES floats a token), in at most 32 KB of partial sums.
template <int LANES, int THREADS>
constexpr int segmentGroup() {
  constexpr int G = THREADS / LANES;
  constexpr int byThreads = THREADS / (4 * LANES) > 0 ? THREADS / (4 * LANES) : 1;
  constexpr int byBytes = 32768 / (G * LANES * 16) > 0 ? 32768 / (G * LANES * 16) : 1;
  return byThreads < byBytes ? byThreads : byBytes;
}

// stepKernelRows with prompt segments (one head a block: every thread of a block steps the same
// tokens). The arithmetic of each token is the one-token kernel's, in the same order, and so is the
// sum of the row groups' partial outputs, so a segment gives the bits of as many one-token steps of
// the same kind. What a token costs is its critical path, since a long prompt segment is the step's
// slowest block: the tokens' q, k and v come into shared memory up to CH at a time with all their
// loads in flight, and the partial outputs of K tokens are summed at once, one output float a
// thread, between two barriers (instead of one warp summing each token's G partials while the
// others wait). Where a thread's rows of the head fit in one batch (D ≤ G·R: "block" and "narrow"
// at D = 128) the state stays in registers across the tokens and is stored once; otherwise each
// token reads back the rows the thread stored for the token before.
template <class T, int LANES, int THREADS, int R, bool STREAMING>
__device__ __forceinline__ void stepSegments(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn, int BH, int D,
                                             int E, int H, bool early, const int* seg, int N, int CH, DeviceError* err, int code, int bh) {
  constexpr int G = THREADS / LANES;
  constexpr int K = segmentGroup<LANES, THREADS>();
  extern __shared__ float staged[];  // CH tokens: q [CH][D], k [CH][D], v [CH][E] as f32
  __shared__ float4 part[K][G][LANES];
  float* qs = staged;
  float* ks = staged + (size_t)CH * D;
  float* vs = staged + stagedVOffset(CH, D);
  const int lane = threadIdx.x, g = threadIdx.y, flat = g * LANES + lane;
  const int e = (blockIdx.y * LANES + lane) * 4;
  const int B = BH / H, b = bh / H, h = bh % H;
  const bool active = e < E;
  const bool resident = D <= G * R;
  const int64_t stride = E / 4;
  const float4* Sb = reinterpret_cast<const float4*>(S + (active ? (int64_t)bh * D * E + e : 0));
  float4* Snb = reinterpret_cast<float4*>(Sn + (active ? (int64_t)bh * D * E + e : 0));
  float4 cur[R];
  if (active && early) loadRows<R, G, STREAMING>(cur, Sb, stride, g, D);
  // With `early` the kernel before (a decode layer's projection or split) writes neither the state
  // nor the offsets: they are read while it finishes, so the token rows' loads below wait on no
  // round trip of their own.
  const bool reports = h == 0 && blockIdx.y == 0 && flat == 0;
  Tokens tok = early ? tokensOf(seg, b, B, N, err, code, reports) : Tokens{b, 1};
  waitForPrevious();
  if (!early) tok = tokensOf(seg, b, B, N, err, code, reports);
  if (active && !early) loadRows<R, G, STREAMING>(cur, Sb, stride, g, D);
  const float lambda = expf(-slopes[h]);
  for (int j0 = 0; j0 < tok.count; j0 += CH) {
    // The tokens before are done with `staged`: each group read it before its first barrier.
    const int n = min(CH, tok.count - j0);
    for (int i = flat; i < n * D; i += THREADS) {
      const int64_t t = (int64_t)tok.row(j0 + i / D, b) * H + h;
      qs[i] = toF(q[t * D + i % D]);
      ks[i] = toF(k[t * D + i % D]);
    }
    for (int i = flat; i < n * E; i += THREADS) vs[i] = toF(v[((int64_t)tok.row(j0 + i / E, b) * H + h) * E + i % E]);
    __syncthreads();
    for (int k0 = 0; k0 < n; k0 += K) {
      const int m = min(K, n - k0);
      for (int u = 0; u < m; u++) {
        const int jj = k0 + u, j = j0 + jj;
        const bool last = j == tok.count - 1;
        const float* qj = qs + jj * D;
        const float* kj = ks + jj * D;
        float4 acc = make_float4(0, 0, 0, 0);
        if (active) {
          const float4 ve = *reinterpret_cast<const float4*>(vs + jj * E + e);
          if (resident) {
#pragma unroll
            for (int r = 0; r < R; r++) {
              int d = g + G * r;
              if (d < D) {
                cur[r] = decayAdd(cur[r], lambda, kj[d], ve);
                if (last) storeState<STREAMING>(Snb + d * stride, cur[r]);
                accumulate(acc, qj[d], cur[r]);
              }
            }
          } else {
            // Rows in batches of R; the first batch of the first token is in `cur` already.
            if (j > 0) loadRows<R, G, STREAMING>(cur, Snb, stride, g, D);
            for (int d0 = g; d0 < D; d0 += G * R) {
#pragma unroll
              for (int r = 0; r < R; r++) {
                int d = d0 + G * r;
                if (d < D) {
                  float4 s = decayAdd(cur[r], lambda, kj[d], ve);
                  storeState<STREAMING>(Snb + d * stride, s);
                  accumulate(acc, qj[d], s);
                }
              }
              loadRows<R, G, STREAMING>(cur, j == 0 ? Sb : Snb, stride, d0 + G * R, D);
            }
          }
        }
        if (last) startNext();
        part[u][g][lane] = acc;
      }
      __syncthreads();
      // Output float f of token u: the G partials in group order, as storeOutput adds them.
      for (int i = flat; i < m * 4 * LANES; i += THREADS) {
        const int u = i / (4 * LANES), f = i % (4 * LANES), col = blockIdx.y * 4 * LANES + f;
        float sum = 0;
#pragma unroll
        for (int r = 0; r < G; r++) sum += reinterpret_cast<const float*>(&part[u][r][0])[f];
        if (col < E) o[((int64_t)tok.row(j0 + k0 + u, b) * H + h) * E + col] = fromF<T>(sum);
      }
      __syncthreads();  // part is free for the next group
    }
  }
  if (b == B - 1 && g == 0 && active) zeroUnused(o, seg, B, N, H, h, E, e);
}

template <class T, int LANES, int THREADS, int R, bool STREAMING>
__global__ void __launch_bounds__(THREADS) stepKernelSegments(const T* q, const T* k, const T* v, const float* slopes, const float* S, T* o, float* Sn,
                                                              int BH, int D, int E, int H, bool early, const int* seg, int N, int CH,
                                                              DeviceError* err, int code) {
  stepSegments<T, LANES, THREADS, R, STREAMING>(q, k, v, slopes, S, o, Sn, BH, D, E, H, early, seg, N, CH, err, code, blockIdx.x);
}

LightningDims dimsOf(Reader& r) {
  LightningDims d;
  d.B = (int)r.next(), d.H = (int)r.next(), d.T = (int)r.next(), d.D = (int)r.next(), d.E = (int)r.next();
  return d;
}

// p: [q, k, v, slopes, S0 or 0, o, finalState[, segment states]]; i: [dtype, B, H, T, D, E[, segment tokens]]. Segment states
// (the states entering every segment-tokens tokens, lightning.cuh) come from version 5/6 only.
void forward(Context& c, const Args& a) {
  Reader r{a.i};
  int dt = (int)r.next();
  LightningDims d = dimsOf(r);
  auto S0 = a.p.at(4) ? a.ptr<const float>(4) : nullptr;
  float* seg = a.p.size() > 7 && a.p[7] ? a.ptr<float>(7) : nullptr;
  const int segTokens = seg ? (int)a.i.at(6) : 0;
  if (d.BH() == 0 || d.D == 0 || d.E == 0) return;
  if (d.T == 0) {
    size_t bytes = (size_t)d.BH() * d.D * d.E * 4;
    if (S0) LTS_CHECK(cudaMemcpyAsync(a.ptr<float>(6), S0, bytes, cudaMemcpyDeviceToDevice, c.stream), "lightningAttention state copy");
    else LTS_CHECK(cudaMemsetAsync(a.ptr<float>(6), 0, bytes, c.stream), "lightningAttention state memset");
    return;
  }
  debugNote(c, "lightningAttention", dt, d, false);
  if (useV5(dt, d, false)) {
    lightningForwardV5(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), S0, a.ptr<void>(5), a.ptr<float>(6), seg, segTokens);
    return;
  }
  if (seg)
    throw std::runtime_error(std::string("segment states are kept by the tensor-core kernels only (bf16/f16, D of 64, 128 or 256, E a multiple of 64); "
                                         "this call runs ") + lightningKernelName(c, dt, d, false));
  lightningForwardV1(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), S0, a.ptr<void>(5), a.ptr<float>(6));
}

// p: [q, k, v, slopes, dO, dSfinal, S0 or 0, dq, dk, dv, dS0[, segment states]]; i: [dtype, B, H, T, D, E[, segment tokens]].
// The forward's segment states are the dq pass's (transposed) where version 5/6 splits alike; v1 makes its own.
void backward(Context& c, const Args& a) {
  Reader r{a.i};
  int dt = (int)r.next();
  LightningDims d = dimsOf(r);
  if (d.BH() == 0 || d.D == 0 || d.E == 0) return;
  auto S0 = a.p.at(6) ? a.ptr<const float>(6) : nullptr;
  const float* seg = a.p.size() > 11 && a.p[11] ? a.ptr<const float>(11) : nullptr;
  const int segTokens = seg ? (int)a.i.at(6) : 0;
  if (d.T == 0) {
    LTS_CHECK(cudaMemcpyAsync(a.ptr<float>(10), a.ptr<float>(5), (size_t)d.BH() * d.D * d.E * 4, cudaMemcpyDeviceToDevice, c.stream),
              "lightningAttentionBackward state copy");
    return;
  }
  debugNote(c, "lightningAttentionBackward", dt, d, true);
  if (useV5(dt, d, true)) {
    lightningBackwardV5(c, dt, d, a.ptr<void>(0), a.ptr<void>(1), a.ptr<void>(2), a.ptr<float>(3), a.ptr<void>(4), a.ptr<float>(5), S0,
                        a.ptr<void>(7), a.ptr<void>(8), a.ptr<void>(9), a.ptr<float>(10), seg, segTokens);
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

// Tokens a segment launch stages at once (up to 16, in the shared memory the partial sums leave of
// the 48 KB of a plain launch; at least one) and its dynamic shared memory.
template <int LANES, int THREADS>
std::pair<int, size_t> segmentStaging(int D, int E) {
  constexpr int G = THREADS / LANES;
  constexpr size_t partBytes = (size_t)segmentGroup<LANES, THREADS>() * G * LANES * 16;
  const size_t perToken = (size_t)(2 * D + E) * sizeof(float) + 16;
  const int CH = (int)std::max<size_t>(1, std::min<size_t>(16, (49152 - partBytes) / perToken));
  return {CH, (stagedVOffset(CH, D) + (size_t)CH * E) * sizeof(float)};
}

// stepKernelSegments with a kind's LANES, THREADS, R and cache hints.
template <class T, int LANES, int THREADS, int R, bool STREAMING>
void launchSegments(Context& c, const Args& a, int BH, int D, int E, int H, bool early, const int* seg, int N, int code) {
  constexpr int G = THREADS / LANES;
  auto [CH, shared] = segmentStaging<LANES, THREADS>(D, E);
  dim3 grid(BH, (E + 4 * LANES - 1) / (4 * LANES)), block(LANES, G, 1);
  launchPdl(c, stepKernelSegments<T, LANES, THREADS, R, STREAMING>, grid, block, shared, "lightningStep kernel launch", a.ptr<T>(0),
            a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4), a.ptr<T>(5), a.ptr<float>(6), BH, D, E, H, early, seg, N, CH, c.error, code);
}

// With prompt segments every kind runs as stepKernelSegments with its own configuration ("pair",
// two heads a block, runs as "stream": a block steps one head's tokens).
template <class T, int LANES>
void launchCandidate(Context& c, const Args& a, StepKind kind, int BH, int D, int E, int H, bool early, const int* seg, int N, int code) {
  if (seg) {
    switch (kind) {
      case StepKind::Rows: launchSegments<T, LANES, 128, 4, false>(c, a, BH, D, E, H, early, seg, N, code); break;
      case StepKind::Stream:
      case StepKind::Pair: launchSegments<T, LANES, 128, 4, true>(c, a, BH, D, E, H, early, seg, N, code); break;
      case StepKind::Block: launchSegments<T, LANES, 512, 8, true>(c, a, BH, D, E, H, early, seg, N, code); break;
      case StepKind::Narrow: launchSegments<T, 4, 128, 4, true>(c, a, BH, D, E, H, early, seg, N, code); break;
      default: break;
    }
    return;
  }
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

// p: [q, k, v, slopes, state, o, newState[, segments]]; i: [dtype, B, H, D, E[, early[, N, errorCode]]]. B is
// the state's rows; with segments (i32 [B + 1]) q, k, v and o have N ≥ B token rows (see Tokens).
// newState may be state itself. early = 1: the kernel enqueued just before this one does not write
// the state, so the stepKernelRows candidates may load it before that kernel has finished (see there).
void step(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int B = (int)a.i.at(1), H = (int)a.i.at(2), D = (int)a.i.at(3), E = (int)a.i.at(4);
  const bool early = a.i.size() > 5 && a.i.at(5) != 0;
  const int* seg = a.p.size() > 7 ? a.ptr<int>(7) : nullptr;
  const int N = seg ? (int)a.i.at(6) : B;
  const int code = seg ? (int)a.i.at(7) : 0;
  if (B * H == 0 || E == 0) return;
  StepKind kind = stepKind(B * H, D, E, alignedTo(a.ptr<float>(4), 16) && alignedTo(a.ptr<float>(6), 16));
  dim3 block(32, 8);
  if (kind == StepKind::Scalar) {
    dim3 grid(B * H, (E + 31) / 32);
    LTS_DISPATCH_FLOAT(dt, T, stepKernel<T><<<grid, block, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4),
                                                                            a.ptr<T>(5), a.ptr<float>(6), D, E, H, seg, B, N, c.error, code));
  } else if (kind == StepKind::Vec4 && E < 128) {
    dim3 grid(B * H, (E + 63) / 64);
    LTS_DISPATCH_FLOAT(dt, T, stepKernelVec4<T, 16><<<grid, block, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4),
                                                                                    a.ptr<T>(5), a.ptr<float>(6), D, E, H, seg, B, N, c.error, code));
  } else if (kind == StepKind::Vec4) {
    dim3 grid(B * H, (E + 127) / 128);
    LTS_DISPATCH_FLOAT(dt, T, stepKernelVec4<T, 32><<<grid, block, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), a.ptr<float>(3), a.ptr<float>(4),
                                                                                    a.ptr<T>(5), a.ptr<float>(6), D, E, H, seg, B, N, c.error, code));
  } else if (E < 128) {
    LTS_DISPATCH_FLOAT(dt, T, (launchCandidate<T, 16>(c, a, kind, B * H, D, E, H, early, seg, N, code)));
  } else {
    LTS_DISPATCH_FLOAT(dt, T, (launchCandidate<T, 32>(c, a, kind, B * H, D, E, H, early, seg, N, code)));
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

int lightningSegmentTokens(Context& c, int dt, LightningDims d) {
  if (d.BH() == 0 || d.D == 0 || d.E == 0 || d.T == 0 || !useV5(dt, d, false) || !useV5(dt, d, true)) return 0;
  return lightningSegmentTokensV5(c, dt, d);
}

int lightningSegmentTokensOf(Context& c, int dtype, int B, int H, int T, int D, int E) { return lightningSegmentTokens(c, dtype, {B, H, T, D, E}); }

void registerLightning(Registry& r) {
  r["lightningAttention"] = forward;
  r["lightningAttentionBackward"] = backward;
  r["lightningStep"] = step;
}

}  // namespace lts
