// Lightning Attention, version 5: version 4 (bench/legacy/lightning_v4.cu) made general — templated
// on the key width D ∈ {64, 128, 256} and the 16-bit dtype (bf16 or f16); E is any multiple of 64
// (one CTA per 64-wide slice of E, as before); T is any length (the last chunk is masked).
//
// One CTA per (b·h, 64-wide slice of E, segment of T) walks its chunks (C = 64) with the D×64 state
// in f32 registers:
//   O = λ^{i+1} (Q S) + ((Q Kᵀ) ⊙ M) V,   S ← λ^m S + (w ⊙ K)ᵀ V,  w_j = λ^{m−1−j}
// mma.sync m16n8k16 (16-bit operands, f32 accumulators), ldmatrix from padded shared memory,
// cp.async double buffering of Q, K, V, a 16-bit copy of the state in shared memory for Q S, and
// O written 16 B per thread through shared memory.
//
// Warp layout. Four row groups of 16 query rows each. D ≤ 128: 4 warps, one per row group, each
// computes its rows' scores P = Q Kᵀ (16×64) in registers and reuses them as A fragments for P V.
// D = 256: 8 warps; the two warps of a row group split the 64 output columns (32 each) and the
// score columns (32 each); they swap their halves of P through shared memory behind a 64-thread
// named barrier, so Q Kᵀ is computed once per CTA, not twice. The state's D rows are split evenly
// over all warps (16 or 32 rows each), so every size holds at most 64 f32 of state per thread.
//
// A CTA fits: D = 64: 64 KB of shared memory, 3 per SM; D = 128: 104 KB, 2 per SM; D = 256:
// 195 KB, 1 per SM of 8 warps. When the (b·h, E-slice) pairs fill less than 3/4 of one wave, T is
// split into segments: phase A computes each segment's own state, a scan gives each its entering
// state, phase C runs the loop from there (as in version 2).
//
// Backward: three passes of the same kernel (docs/ALGORITHM.md B.2), with the widths swapped where the
// roles of q/k and v swap, so any D, E ∈ {64, 128, 256} is covered.
// Letters: B batch, H heads, T time, D query/key head dim, E value head dim, C chunk size.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lightning.cuh"
#include "mma.cuh"

namespace lts {
namespace {

constexpr int C = 64, ET = 64;

template <int D>
struct Cfg {
  static constexpr int CS = D > 128 ? 2 : 1;          // warps sharing one row group (column split)
  static constexpr int WARPS = 4 * CS, THREADS = 32 * WARPS;
  static constexpr int OC = ET / CS, NTO = OC / 8;    // output columns and n-tiles per warp
  static constexpr int PC = C / CS, NTP = PC / 8;     // score columns and n-tiles per warp
  static constexpr int SR = D / WARPS, MT = SR / 16;  // state rows and m-tiles per warp
  static constexpr int QS = D + 8, VS = ET + 8;       // padded row strides (elements) against ldmatrix bank conflicts
  static constexpr int STAGE = 2 * C * QS + C * VS;   // Q, K, V of one chunk
  static constexpr int PXS = CS > 1 ? C * VS : 0;     // the exchanged scores (D = 256)
  static constexpr size_t SMEM = (size_t)(2 * STAGE + D * VS + PXS) * 2 + (C + 1) * sizeof(float);
  static constexpr int MIN_BLOCKS = D == 64 ? 3 : D == 128 ? 2 : 1;
  static_assert(MT >= 1 && SR % 16 == 0, "state rows per warp");
};

template <class X>
struct Params {
  const X *q, *k, *v;
  const float* slopes;
  const float* Sin;  // (BH, nseg, D, E) entering state per segment, or (BH, D, E) when nseg = 1, or null
  X* o;
  float* Sout;  // phase C: final state (BH, D, E), written by the last segment; phase A: (BH, nseg, D, E)
  int T, E, H, nseg, chunksPerSeg;
  bool reverse;  // walk time backwards (t ↦ T−1−t in every load and store): the backward's anti-causal passes
};

__device__ __forceinline__ void pairBarrier(int id) { asm volatile("bar.sync %0, 64;\n" ::"r"(id)); }

// q, k: (BH, T, D), v: (BH, T, E) → o: (BH, T, E) and state f32; grid (E/64, BH, nseg)
template <int D, class X, bool STATE_ONLY>
__global__ void __launch_bounds__(Cfg<D>::THREADS, Cfg<D>::MIN_BLOCKS) forwardKernel(Params<X> p) {
  using K = Cfg<D>;
  constexpr int QS = K::QS, VS = K::VS, STAGE = K::STAGE, THREADS = K::THREADS, SR = K::SR, MT = K::MT;
  constexpr int CS = K::CS, OC = K::OC, NTO = K::NTO, PC = K::PC, NTP = K::NTP;
  extern __shared__ __align__(16) unsigned char smem[];
  auto* stages = reinterpret_cast<X*>(smem);
  X* Sb = stages + 2 * STAGE;  // (D, ET) 16-bit copy of the state
  X* Px = Sb + D * VS;         // (C, ET) scores, D = 256 only
  float* pw = reinterpret_cast<float*>(Px + K::PXS);  // λ^n, n = 0..C
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const int rg = warp & 3, half = warp >> 2;  // row group, and which half of the columns (D = 256)
  const int e0 = blockIdx.x * ET, bh = blockIdx.y, seg = blockIdx.z;
  const int T = p.T, E = p.E;
  const float slope = p.slopes[bh % p.H];
  if (threadIdx.x <= C) pw[threadIdx.x] = expf(-slope * (float)threadIdx.x);
  const int c0 = seg * p.chunksPerSeg;
  const int nChunks = min(p.chunksPerSeg, (T + C - 1) / C - c0);
  const X* qb = p.q + (size_t)bh * T * D;
  const X* kb = p.k + (size_t)bh * T * D;
  const X* vb = p.v + (size_t)bh * T * E + e0;

  // The state: warp w owns rows SR·w .. SR·w + SR − 1 of D as MT m-tiles × 8 n-tiles of C fragments.
  float S[MT][8][4];
  const float* sin = (!STATE_ONLY && p.Sin) ? p.Sin + ((size_t)bh * p.nseg + seg) * D * E : nullptr;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        int d = warp * SR + mt * 16 + g + (r >> 1) * 8, e = e0 + nt * 8 + 2 * t4 + (r & 1);
        S[mt][nt][r] = sin ? sin[(size_t)d * E + e] : 0.0f;
      }

  auto load = [&](int chunk, int stage) {
    X* Qs = stages + stage * STAGE;
    X* Ks = Qs + C * QS;
    X* Vs = Ks + C * QS;
    int t0 = chunk * C;
    for (int x = threadIdx.x; x < C * (D / 8); x += THREADS) {
      int row = x / (D / 8), col = (x % (D / 8)) * 8;
      bool in = t0 + row < T;
      size_t off = (size_t)(in ? (p.reverse ? T - 1 - t0 - row : t0 + row) : 0) * D + col;
      if (!STATE_ONLY) cpAsync16(Qs + row * QS + col, qb + off, in ? 16 : 0);
      cpAsync16(Ks + row * QS + col, kb + off, in ? 16 : 0);
    }
    for (int x = threadIdx.x; x < C * (ET / 8); x += THREADS) {
      int row = x / (ET / 8), col = (x % (ET / 8)) * 8;
      bool in = t0 + row < T;
      cpAsync16(Vs + row * VS + col, vb + (size_t)(in ? (p.reverse ? T - 1 - t0 - row : t0 + row) : 0) * E + col, in ? 16 : 0);
    }
    cpAsyncCommit();
  };

  auto storeState = [&]() {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int d = warp * SR + mt * 16 + g + h * 8, e = nt * 8 + 2 * t4;
          *reinterpret_cast<uint32_t*>(Sb + d * VS + e) = pack2<X>(S[mt][nt][2 * h], S[mt][nt][2 * h + 1]);
        }
  };

  if (nChunks > 0) load(c0, 0);
  if (!STATE_ONLY) storeState();
  for (int ci = 0; ci < nChunks; ci++) {
    const int chunk = c0 + ci, stage = ci & 1, t0 = chunk * C, m = min(C, T - t0);
    if (ci + 1 < nChunks) {
      load(chunk + 1, stage ^ 1);
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    X* Qs = stages + stage * STAGE;
    X* Ks = Qs + C * QS;
    X* Vs = Ks + C * QS;

    if (!STATE_ONLY) {
      const int i0 = rg * 16;      // this warp's query rows
      const int oc0 = half * OC;   // its output columns (within the E-slice)
      const int pc0 = half * PC;   // its score columns (key rows of the chunk)
      float O[NTO][4] = {}, P[NTP][4] = {};
      // O = Q S and P = Q Kᵀ share the A fragments of Q.
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a[4];
        ldsm4(a, Qs + (i0 + (lane & 15)) * QS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < NTO / 2; np++) {
          uint32_t b[4];
          ldsm4t(b, Sb + (kk * 16 + (lane & 15)) * VS + oc0 + np * 16 + (lane >> 4) * 8);
          mma<X>(O[2 * np], a, b[0], b[1]);
          mma<X>(O[2 * np + 1], a, b[2], b[3]);
        }
#pragma unroll
        for (int np = 0; np < NTP / 2; np++) {
          uint32_t kf[4];
          ldsm4(kf, Ks + (pc0 + np * 16 + (lane & 7) + ((lane >> 4) << 3)) * QS + kk * 16 + ((lane >> 3) & 1) * 8);
          mma<X>(P[2 * np], a, kf[0], kf[1]);
          mma<X>(P[2 * np + 1], a, kf[2], kf[3]);
        }
      }
      // Decay: O rows by λ^{i+1}; P by the causal decay mask.
#pragma unroll
      for (int nt = 0; nt < NTO; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) O[nt][r] *= pw[i0 + g + (r >> 1) * 8 + 1];
#pragma unroll
      for (int nt = 0; nt < NTP; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
          int i = i0 + g + (r >> 1) * 8, j = pc0 + nt * 8 + 2 * t4 + (r & 1);
          P[nt][r] = j <= i ? P[nt][r] * pw[i - j] : 0.0f;
        }
      if constexpr (CS > 1) {
        // Swap score halves with the other warp of this row group, then O += P V with A from shared memory.
#pragma unroll
        for (int nt = 0; nt < NTP; nt++)
#pragma unroll
          for (int h = 0; h < 2; h++)
            *reinterpret_cast<uint32_t*>(Px + (i0 + g + h * 8) * VS + pc0 + nt * 8 + 2 * t4) = pack2<X>(P[nt][2 * h], P[nt][2 * h + 1]);
        pairBarrier(1 + rg);  // also orders both warps' reads of these Q rows before O is staged there
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++) {
          uint32_t a[4];
          ldsm4(a, Px + (i0 + (lane & 15)) * VS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
          for (int np = 0; np < NTO / 2; np++) {
            uint32_t b[4];
            ldsm4t(b, Vs + (kk * 16 + (lane & 15)) * VS + oc0 + np * 16 + (lane >> 4) * 8);
            mma<X>(O[2 * np], a, b[0], b[1]);
            mma<X>(O[2 * np + 1], a, b[2], b[3]);
          }
        }
      } else {
        // O += P V, with P's C fragments reused as A fragments (two n-tiles make one k-step).
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++) {
          uint32_t a[4] = {pack2<X>(P[2 * kk][0], P[2 * kk][1]), pack2<X>(P[2 * kk][2], P[2 * kk][3]), pack2<X>(P[2 * kk + 1][0], P[2 * kk + 1][1]),
                           pack2<X>(P[2 * kk + 1][2], P[2 * kk + 1][3])};
#pragma unroll
          for (int np = 0; np < NTO / 2; np++) {
            uint32_t b[4];
            ldsm4t(b, Vs + (kk * 16 + (lane & 15)) * VS + oc0 + np * 16 + (lane >> 4) * 8);
            mma<X>(O[2 * np], a, b[0], b[1]);
            mma<X>(O[2 * np + 1], a, b[2], b[3]);
          }
        }
      }
      // Stage O in this chunk's Q buffer (only this row group read those rows, and all of its warps
      // are past their reads), then write 16 B per thread.
      __syncwarp();
      X* Os = Qs;
#pragma unroll
      for (int nt = 0; nt < NTO; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
          *reinterpret_cast<uint32_t*>(Os + (i0 + g + h * 8) * QS + oc0 + nt * 8 + 2 * t4) = pack2<X>(O[nt][2 * h], O[nt][2 * h + 1]);
      __syncwarp();
      for (int x = lane; x < 16 * (OC / 8); x += 32) {
        int row = i0 + x / (OC / 8), col = oc0 + (x % (OC / 8)) * 8;
        int t = p.reverse ? T - 1 - t0 - row : t0 + row;
        if (row < m) *reinterpret_cast<uint4*>(p.o + ((size_t)bh * T + t) * E + e0 + col) = *reinterpret_cast<uint4*>(Os + row * QS + col);
      }
    }
    // S = λ^m S + (w ⊙ K)ᵀ V: A = Kᵀ through ldmatrix.trans, each element scaled by w_j in f32 and
    // rounded once to 16 bits. Fragment registers a0, a1 hold k = j = 2t, 2t+1; a2, a3 hold j + 8.
    float decay = pw[m];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) S[mt][nt][r] *= decay;
#pragma unroll
    for (int kk = 0; kk < C / 16; kk++) {
      const int j0 = kk * 16 + 2 * t4;
      float w[4];
#pragma unroll
      for (int x = 0; x < 4; x++) {
        int j = j0 + (x >> 1) * 8 + (x & 1);
        w[x] = j < m ? pw[m - 1 - j] : 0.0f;
      }
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        ldsm4t(a[mt], Ks + (kk * 16 + (lane & 7) + ((lane >> 4) << 3)) * QS + warp * SR + mt * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int r = 0; r < 4; r++) {
          float2 f = unpack2<X>(a[mt][r]);
          a[mt][r] = pack2<X>(f.x * w[(r >> 1) * 2], f.y * w[(r >> 1) * 2 + 1]);
        }
      }
#pragma unroll
      for (int np = 0; np < 4; np++) {
        uint32_t b[4];
        ldsm4t(b, Vs + (kk * 16 + (lane & 15)) * VS + np * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma<X>(S[mt][2 * np], a[mt], b[0], b[1]);
          mma<X>(S[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // all reads of Sb, Px and this stage are done before they are rewritten
    if (!STATE_ONLY) storeState();
  }

  float* out = nullptr;
  if (STATE_ONLY) out = p.Sout + ((size_t)bh * p.nseg + seg) * D * E;
  else if (seg == p.nseg - 1) out = p.Sout + (size_t)bh * D * E;
  if (out) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int d = warp * SR + mt * 16 + g + h * 8, e = e0 + nt * 8 + 2 * t4;
          *reinterpret_cast<float2*>(out + (size_t)d * E + e) = make_float2(S[mt][nt][2 * h], S[mt][nt][2 * h + 1]);
        }
  }
}

// L: (BH, nseg, D·E) segment-local states, in place → the state entering each segment (from S0).
__global__ void segmentScanKernel(float* L, const float* S0, int nseg, int segTokens, int T, int DE, int H, const float* slopes) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y;
  if (idx >= DE) return;
  float slope = slopes[bh % H];
  float S = S0 ? S0[(size_t)bh * DE + idx] : 0.0f;
  for (int s = 0; s < nseg; s++) {
    float* at = L + ((size_t)bh * nseg + s) * DE + idx;
    float local = *at;
    *at = S;
    int len = min(segTokens, T - s * segTokens);
    S = expf(-slope * (float)len) * S + local;
  }
}

// dst (BH, X, Y) = scale_h · src (BH, Y, X) transposed, or untransposed (BH, Y, X); zeros when src is null.
// scale_h = λ_h^power (power −1: the backward's final-state gradient enters one step "early").
__global__ void prepareStateKernel(const float* src, float* dst, int Y, int X, bool transpose, int power, int H, const float* slopes) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y;
  if (idx >= X * Y) return;
  float scale = expf(slopes[bh % H] * (float)-power);
  int y = transpose ? idx % Y : idx / X, x = transpose ? idx / Y : idx % X;
  dst[(size_t)bh * X * Y + idx] = src ? scale * src[(size_t)bh * X * Y + (size_t)y * X + x] : 0.0f;
}

int optinSmem() {
  static const int bytes = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) v = 0;
    return v;
  }();
  return bytes;
}

size_t smemFor(int D) { return D == 64 ? Cfg<64>::SMEM : D == 128 ? Cfg<128>::SMEM : D == 256 ? Cfg<256>::SMEM : 0; }
bool widthOk(int D) { return (D == 64 || D == 128 || D == 256) && smemFor(D) <= (size_t)optinSmem(); }

// Sets the shared-memory limit of both kernels of one instantiation once; returns CTAs per SM.
template <int D, class X>
int configure() {
  static const int perSm = [] {
    size_t s = Cfg<D>::SMEM;
    LTS_CHECK(cudaFuncSetAttribute(forwardKernel<D, X, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s), "lightning v5 smem attribute");
    LTS_CHECK(cudaFuncSetAttribute(forwardKernel<D, X, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s), "lightning v5 smem attribute");
    int n = 0;
    LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, forwardKernel<D, X, false>, Cfg<D>::THREADS, s), "lightning v5 occupancy");
    return std::max(1, n);
  }();
  return perSm;
}

struct Plan {
  int nseg, chunksPerSeg, ctasPerSm;
};

// Split only when the (b·h, E-slice) pairs fill less than 3/4 of one wave, and then into as many
// segments as fit in one wave: a partial second wave would cost a whole CTA's time. D = 64 runs near
// copy bandwidth, where phase A's second read of k and v costs more than a thin wave: split only
// below half a CTA per SM (KERNELS.md, v5: 128 pairs on 132 SMs, 1 segment 0.215 ms, 3 segments 0.266).
Plan plan(Context& c, LightningDims d, int ctasPerSm) {
  int NC = (d.T + C - 1) / C;
  int pairs = d.BH() * (d.E / ET);
  int slots = ctasPerSm * c.smCount;
  bool split = d.D <= 64 ? 2 * pairs < c.smCount : 4 * pairs < 3 * slots;
  int nseg = !split ? 1 : std::min(NC, std::max(1, slots / pairs));
  // A forced count (LIGHTNING_CUDA_LA_SEGMENTS) for experiments.
  if (const char* f = getenv("LIGHTNING_CUDA_LA_SEGMENTS")) nseg = std::max(1, std::min(NC, atoi(f)));
  int chunksPerSeg = (NC + nseg - 1) / nseg;
  nseg = (NC + chunksPerSeg - 1) / chunksPerSeg;
  return {nseg, chunksPerSeg, ctasPerSm};
}

// One causal pass over (q, k, v) of widths (d.D, d.D, d.E) from state S0 (BH, D, E) or zero: the
// three launches (segment states, scan, full loop) where the batch is too small, else one.
template <int D, class X>
void passT(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o, float* Sfinal,
           bool reverse) {
  using K = Cfg<D>;
  Plan pl = plan(c, d, configure<D, X>());
  Params<X> p{(const X*)q, (const X*)k, (const X*)v, slopes, S0, (X*)o, Sfinal, d.T, d.E, d.H, pl.nseg, pl.chunksPerSeg, reverse};
  dim3 grid(d.E / ET, d.BH(), pl.nseg);
  float* L = nullptr;
  if (pl.nseg > 1) {
    L = (float*)c.scratch((size_t)d.BH() * pl.nseg * D * d.E * sizeof(float));
    Params<X> a = p;
    a.Sin = nullptr;
    a.Sout = L;
    forwardKernel<D, X, true><<<grid, K::THREADS, K::SMEM, c.stream>>>(a);
    LTS_CHECK(cudaGetLastError(), "lightning v5 segment states launch");
    segmentScanKernel<<<dim3((D * d.E + 255) / 256, d.BH()), 256, 0, c.stream>>>(L, S0, pl.nseg, pl.chunksPerSeg * C, d.T, D * d.E, d.H, slopes);
    LTS_CHECK(cudaGetLastError(), "lightning v5 segment scan launch");
    p.Sin = L;
  }
  forwardKernel<D, X, false><<<grid, K::THREADS, K::SMEM, c.stream>>>(p);
  LTS_CHECK(cudaGetLastError(), "lightning v5 forward launch");
  if (L) c.release(L);
}

template <class X>
void passX(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o, float* Sfinal,
           bool reverse) {
  switch (d.D) {
    case 64: passT<64, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse); break;
    case 128: passT<128, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse); break;
    case 256: passT<256, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse); break;
    default: throw std::runtime_error("lightning v5: unsupported key width " + std::to_string(d.D));
  }
}

void pass(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o,
          float* Sfinal, bool reverse) {
  if (dt == F16) passX<__half>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse);
  else passX<__nv_bfloat16>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse);
}

int ctasPerSm(int dt, int D) {
  if (dt == F16) return D == 64 ? configure<64, __half>() : D == 128 ? configure<128, __half>() : configure<256, __half>();
  return D == 64 ? configure<64, __nv_bfloat16>() : D == 128 ? configure<128, __nv_bfloat16>() : configure<256, __nv_bfloat16>();
}

// dst (BH, X, Y) from src (BH, Y, X): see prepareStateKernel.
void prepare(Context& c, LightningDims d, const float* src, float* dst, int Y, int X, bool transpose, int power, const float* slopes) {
  prepareStateKernel<<<dim3((X * Y + 255) / 256, d.BH()), 256, 0, c.stream>>>(src, dst, Y, X, transpose, power, d.H, slopes);
  LTS_CHECK(cudaGetLastError(), "lightning v5 state preparation launch");
}

std::string passPlan(Context& c, int dt, LightningDims d) {
  Plan pl = plan(c, d, ctasPerSm(dt, d.D));
  char buf[160];
  snprintf(buf, sizeof buf, "D=%d E=%d: %d E-slice%s x %d segment%s, %d warps, %d CTA%s/SM", d.D, d.E, d.E / ET, d.E / ET > 1 ? "s" : "", pl.nseg,
           pl.nseg > 1 ? "s" : "", d.D > 128 ? 8 : 4, pl.ctasPerSm, pl.ctasPerSm > 1 ? "s" : "");
  return buf;
}

}  // namespace

bool lightningForwardV5Supported(int dt, LightningDims d) { return (dt == BF16 || dt == F16) && d.T > 0 && widthOk(d.D) && d.E > 0 && d.E % ET == 0; }
bool lightningBackwardV5Supported(int dt, LightningDims d) { return (dt == BF16 || dt == F16) && d.T > 0 && widthOk(d.D) && widthOk(d.E); }

std::string lightningV5Describe(Context& c, int dt, LightningDims d, bool backward) {
  std::string s = std::string("v5 tensor cores (") + (dt == F16 ? "f16" : "bf16") + ", ";
  if (!backward) return s + passPlan(c, dt, d) + ")";
  LightningDims sw{d.B, d.H, d.T, d.E, d.D};
  return s + "dq pass " + passPlan(c, dt, sw) + "; dv pass " + passPlan(c, dt, d) + "; dk pass " + passPlan(c, dt, sw) + ")";
}

void lightningForwardV5(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal) {
  pass(c, dt, d, q, k, v, slopes, S0, o, Sfinal, false);
}

// The backward as three forward passes, from the token relations of docs/ALGORITHM.md B.2:
//   dq_t = dO_t S_tᵀ:  forward over (dO, v, k) (widths E, E, D) from S0ᵀ; its state is Sᵀ = Σ vᵀ k.
//   dv_t = k_t G_t, dk_t = v_t G_tᵀ with G_t = Σ_{s≥t} λ^{s−t} q_sᵀ dO_s + λ^{T−1−t} dS_final: in reversed
//   time these are forwards over (k, q, dO) (widths D, D, E) and (v, dO, q) (widths E, E, D) from
//   λ^{−1} dS_final (transposed for dk).
//   dS0 = λ G_0 = λ · (the dv pass's final state).
void lightningBackwardV5(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0) {
  const int D = d.D, E = d.E;
  LightningDims sw{d.B, d.H, d.T, E, D};  // the passes whose keys are E wide
  size_t bytes = (size_t)d.BH() * D * E * sizeof(float);
  float *junk = (float*)c.scratch(bytes), *s0t = (float*)c.scratch(bytes), *g = (float*)c.scratch(bytes), *gt = (float*)c.scratch(bytes),
        *gfin = (float*)c.scratch(bytes);
  if (S0) prepare(c, d, S0, s0t, D, E, true, 0, slopes);  // (E, D)
  pass(c, dt, sw, dO, v, k, slopes, S0 ? s0t : nullptr, dq, junk, false);
  prepare(c, d, dSf, g, D, E, false, -1, slopes);  // (D, E)
  prepare(c, d, dSf, gt, D, E, true, -1, slopes);  // (E, D)
  pass(c, dt, d, k, q, dO, slopes, g, dv, gfin, true);
  pass(c, dt, sw, v, dO, q, slopes, gt, dk, junk, true);
  prepare(c, d, gfin, dS0, D, E, false, 1, slopes);
  for (float* x : {junk, s0t, g, gt, gfin}) c.release(x);
}

}  // namespace lts
