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
//
// Version 6 (below, wgKernel): the same loop on Hopper's warpgroup MMA (wgmma, sm_90a) for D ∈ {64,
// 128, 256}. Where the GPU runs this file's sm_90a code, every pass takes it (LIGHTNING_CUDA_LA_V6_64=0
// keeps the D = 64 passes on version 5); LIGHTNING_CUDA_LA_VERSION=5 keeps version 5 everywhere.
// Letters: B batch, H heads, T time, D query/key head dim, E value head dim, C chunk size.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <cuda.h>

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
  float* Sout;  // phase C: final state (BH, D, E), written by the last segment, or null; phase A: (BH, nseg, D, E)
  int T, E, H, nseg, chunksPerSeg;
  bool reverse;  // walk time backwards (t ↦ T−1−t in every load and store): the backward's anti-causal passes
  // How a state given by the caller is read and the final state written, so that the backward's
  // passes start from dS_final and end in dS0 without a pass of their own over the states: the
  // entering state (nseg = 1) is λ^sinPower · Sin, read transposed ((BH, E, D) storage) with sinT;
  // the final state is stored times λ^soutPower. Each is the one f32 product the separate pass made.
  bool sinT;
  int sinPower, soutPower;
  // A pair launch (wgKernel<…, PAIR>): the CTAs with blockIdx.x ≥ pairSlices run a second pass of the
  // same shape (D = E) over q2, k2, v2 into o2, whose entering state is the first pass's transposed
  // (sinT2) and which stores no final state. 0: one pass.
  const X *q2, *k2, *v2;
  X* o2;
  bool sinT2;
  int pairSlices;
};

// The host side of Params' sinT, sinPower and soutPower.
struct StateIo {
  bool inT = false;
  int inPower = 0, outPower = 0;
};

// The op's segment states (lightning.cuh): `out` stores the states entering every `tokens` tokens,
// the pass running its split on exactly those segments; `inT` holds them from the forward, read
// transposed by a pass whose keys are the forward's values (the backward's dq pass) in place of
// phase A and the scan, where its own split has the same segments.
struct Segments {
  float* out = nullptr;
  const float* inT = nullptr;
  int tokens = 0;
};

// λ_h^power as the state passes scale by it (power 0: exactly 1).
__device__ __forceinline__ float statePower(float slope, int power) { return power ? expf(slope * (float)-power) : 1.0f; }

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
  const float sinScale = statePower(slope, p.sinPower);
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        int d = warp * SR + mt * 16 + g + (r >> 1) * 8, e = e0 + nt * 8 + 2 * t4 + (r & 1);
        S[mt][nt][r] = sin ? sinScale * sin[p.sinT ? (size_t)e * D + d : (size_t)d * E + e] : 0.0f;
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
  else if (seg == p.nseg - 1 && p.Sout) out = p.Sout + (size_t)bh * D * E;
  if (out) {
    const float sc = STATE_ONLY ? 1.0f : statePower(slope, p.soutPower);
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int d = warp * SR + mt * 16 + g + h * 8, e = e0 + nt * 8 + 2 * t4;
          *reinterpret_cast<float2*>(out + (size_t)d * E + e) = make_float2(sc * S[mt][nt][2 * h], sc * S[mt][nt][2 * h + 1]);
        }
  }
}

// L: (BH, nseg, D·E) the local states of nseg (sub-)segments → out: (BH, (nseg − 1)/sub + 1, D·E) the
// state entering every sub-th of them (every segment where phase A ran on sub of its sub-segments),
// from S0 read as Params' sinT and sinPower say; out may be L when sub = 1 (in place). A thread owns
// four consecutive elements of D·E (D·E is a multiple of 4) and walks the segments in order; the local
// states of SCAN_BATCH segments are loaded before any of their updates, since the walk is bound by the
// bytes it has in flight, not by its arithmetic (one 4-byte load at a time took ~5 µs a segment on the
// H200, 0.3–0.6 ms for 57 sub-segments; eight 4-byte loads, 24 µs for 13 segments at D = 256, 38 µs
// for 25: KERNELS.md "Phase A on sub-segments"). Each element's sums are the one-element walk's.
constexpr int SCAN_BATCH = 16, SCAN_THREADS = 256;
__global__ void segmentScanKernel(const float* L, float* out, const float* S0, bool s0T, int s0Power, int nseg, int sub, int segTokens, int T, int DE,
                                  int E, int H, const float* slopes) {
  const int idx = 4 * (blockIdx.x * blockDim.x + threadIdx.x), bh = blockIdx.y;
  if (idx >= DE) return;
  const float slope = slopes[bh % H];
  const int D = DE / E;
  float S[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (S0) {
    const float scale = statePower(slope, s0Power);
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int x = idx + u;
      S[u] = scale * S0[(size_t)bh * DE + (s0T ? (size_t)(x % E) * D + x / E : x)];
    }
  }
  const size_t step = DE / 4;
  const float4* at = reinterpret_cast<const float4*>(L + (size_t)bh * nseg * DE + idx);
  float4* to = reinterpret_cast<float4*>(out + (size_t)bh * ((nseg - 1) / sub + 1) * DE + idx);
  for (int s0 = 0; s0 < nseg; s0 += SCAN_BATCH) {
    float4 local[SCAN_BATCH];
#pragma unroll
    for (int j = 0; j < SCAN_BATCH; j++)  // the last segment's own state is never needed (version 6 does not compute it)
      local[j] = s0 + j + 1 < nseg ? at[(s0 + j) * step] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int j = 0; j < SCAN_BATCH; j++) {
      const int s = s0 + j;
      if (s < nseg && s % sub == 0) to[(s / sub) * step] = make_float4(S[0], S[1], S[2], S[3]);
      if (s + 1 < nseg) {
        const float a = expf(-slope * (float)min(segTokens, T - s * segTokens));
        S[0] = a * S[0] + local[j].x, S[1] = a * S[1] + local[j].y, S[2] = a * S[2] + local[j].z, S[3] = a * S[3] + local[j].w;
      }
    }
  }
}

// The scan's grid: a thread per four elements of D·E, a row of blocks per b·h.
dim3 scanGrid(int DE, int BH) { return dim3((DE / 4 + SCAN_THREADS - 1) / SCAN_THREADS, BH); }

// dst (BH, X, Y) = scale_h · src (BH, Y, X) transposed, or untransposed (BH, Y, X); zeros when src is null.
// scale_h = λ_h^power (power −1: the backward's final-state gradient enters one step "early").
__global__ void prepareStateKernel(const float* src, float* dst, int Y, int X, bool transpose, int power, int H, const float* slopes) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y;
  if (idx >= X * Y) return;
  float scale = expf(slopes[bh % H] * (float)-power);
  int y = transpose ? idx % Y : idx / X, x = transpose ? idx / Y : idx % X;
  dst[(size_t)bh * X * Y + idx] = src ? scale * src[(size_t)bh * X * Y + (size_t)y * X + x] : 0.0f;
}

// ---------------------------------------------------------------------------------------------------
// Version 6: the same chunk loop on Hopper's warpgroup MMA (wgmma, sm_90a), for D ∈ {64, 128, 256}.
//
// mma.sync makes every warp load its own copy of the B operand from shared memory (ldmatrix): in v5
// each of the four row groups re-reads all of S and K for Q S and Q Kᵀ, which is most of the shared-
// memory traffic. wgmma lets one warpgroup (4 warps, the whole 64-row chunk) read Q, S and K straight
// from swizzled shared memory once. The tiles are stored with the 128-byte swizzle (mma.cuh): Q and K
// K-major ((D/64) blocks of 64 rows × 128 B), V and the 16-bit state copy MN-major (rows of 64 values).
// Per chunk:
//   P = Q Kᵀ and O = Q S (A and B from shared memory, 64×64 f32 accumulators);
//   P ⊙ decay mask, O rows · λ^{i+1}; O += P V (A = P from registers, B = V);
//   S ← λ^m S + (w ⊙ K)ᵀ V (A = w ⊙ Kᵀ from ldmatrix.trans, scaled in registers; B = V): the state
//   lives in wgmma accumulators, 64-row tiles spread over the warpgroups.
// NWG = 1 (D = 128): one warpgroup does it all; 2 CTAs per SM. NWG = 2: warpgroup 0 computes Q S and
// P V and writes O, warpgroup 1 computes Q Kᵀ, masks it and hands P over in shared memory behind a
// named barrier; both update their half of the state rows. NSB = 2 double-buffers the 16-bit state
// copy, so one CTA-wide barrier per chunk remains (D = 256: 1 CTA of 8 warps per SM, 218 KB).
//
// D = 64: one warpgroup, one 64-row state tile, the 16-bit state
// copy double-buffered (one barrier per chunk), and NS stages of Q, K, V instead of two. This shape
// moves 32 KB per chunk for 0.26 M MAC, so each SM is bound by the bytes it keeps in flight: NS is
// chosen so that CTAs per SM × (NS − 1) chunks ahead is about 3 (stages64 below).
template <int D, int NWG, int NSB, int NS = 2>
struct WCfg {
  static constexpr int THREADS = 128 * NWG;
  static constexpr int MT = D / (64 * NWG);  // 64-row state tiles per warpgroup
  static constexpr int QB = D * 128;         // bytes of a swizzled Q or K tile
  static constexpr int VB = C * 128;         // V tile: 64 rows × 64 values
  static constexpr int STAGE = 2 * QB + VB;
  static constexpr int SB = D * 128;         // 16-bit state copy (D, 64)
  static constexpr int XS = ET + 8;          // padded row stride (elements) of the P exchange / O staging tile
  static constexpr int XB = C * XS * 2;
  static constexpr size_t SMEM = 1024 + NS * STAGE + NSB * SB + XB + (C + 1) * sizeof(float);  // + 1 KB to align the base
  // Loads by the copy engine (wgKernel's TMA): one 8-byte barrier per stage after λ^n.
  static constexpr int BAR = NS * STAGE + NSB * SB + XB + (C + 2) * sizeof(float);
  static constexpr size_t SMEM_TMA = 1024 + BAR + NS * 8;
  // D = 64: as many CTAs as the 228 KB of an sm_90 SM hold (1 KB of each reserved), at most 3 (the
  // register file then allows 168 a thread).
  static constexpr int MIN_BLOCKS = D == 64 ? (int)std::min<size_t>(3, (228 * 1024) / (SMEM + 1024)) : NWG == 1 ? 2 : 1;
  static_assert(MT >= 1 && D % 64 == 0 && NS >= 2, "state tiles, stages");
};

#if defined(LTS_WGMMA)
#endif

// The tensor maps of a pass's q, k and v (and of a pair launch's second pass) for loads by the copy
// engine (wgKernel's TMA): (BH, T, width) in boxes of 64 columns × 64 rows with the 128-byte
// swizzle, the layout the wgmma tiles use.
struct TileMaps {
  CUtensorMap q, k, v, q2, k2, v2;
};

// 1 in the sm_90a image of this file, 0 in the others (the addon also carries sm_80–sm_90 code).
__global__ void wgmmaProbeKernel(int* out) {
#if defined(LTS_WGMMA)
  *out = 1;
#else
  *out = 0;
#endif
}

// q, k: (BH, T, D), v: (BH, T, E) → o: (BH, T, E) and state f32; grid (E/64, BH, nseg)
// PAIR: a pair launch (Params::pairSlices; not with STATE_ONLY).
// TMA: a chunk's tiles come by the copy engine (thread 0 asks for D/64 + D/64 + 1 boxes, the stage's
// barrier counts their bytes) instead of 16-byte cp.async copies by every thread, whose address
// arithmetic was a quarter of the loop's instructions (KERNELS.md "v6 loads by the copy engine").
// tm: the maps of q, k, v (and q2, k2, v2 in a pair launch); not with STATE_ONLY.
// REV (with TMA, in a pass in reversed time): the box of a chunk is its 64 rows in forward order (rows
// before the sequence land as zeros), so row r of every tile is the chunk's token C − 1 − r; the
// mask, the decays, the state's weights and the output rows go by that index, and rows of the box
// outside the chunk are masked out or weigh 0.
template <int D, int NWG, int NSB, int NS, class X, bool STATE_ONLY, bool PAIR = false, bool TMA = false, bool REV = false>
__global__ void __launch_bounds__(WCfg<D, NWG, NSB, NS>::THREADS, WCfg<D, NWG, NSB, NS>::MIN_BLOCKS) wgKernel(Params<X> p, const __grid_constant__ TileMaps tm) {
#if defined(LTS_WGMMA)
  using W = WCfg<D, NWG, NSB, NS>;
  constexpr int QB = W::QB, STAGE = W::STAGE, SB = W::SB, XS = W::XS, MT = W::MT, THREADS = W::THREADS;
  constexpr int KS = D / 16;  // k-steps of Q S and Q Kᵀ
  extern __shared__ __align__(1024) unsigned char wsmem[];
  unsigned char* sm = wsmem + ((1024u - (smemAddr(wsmem) & 1023u)) & 1023u);  // the swizzle needs 1,024-aligned tiles
  const uint32_t sbase = smemAddr(sm);
  X* xs = reinterpret_cast<X*>(sm + NS * STAGE + NSB * SB);  // (C, XS): P handed between warpgroups, O staged for the stores
  float* pw = reinterpret_cast<float*>(sm + NS * STAGE + NSB * SB + W::XB);  // λ^n, n = 0..C
  const int tid = threadIdx.x, lane = tid & 31, wq = (tid >> 5) & 3, g = lane >> 2, t4 = lane & 3;
  // The warpgroup through a shuffle, so that the compiler knows it uniform: wgmma in a branch it
  // cannot prove uniform over the warpgroup is serialized.
  const int wg = __shfl_sync(0xffffffffu, tid >> 7, 0);
  // In a pair launch the upper blockIdx.x run the second pass (Params::pairSlices).
  const bool second = PAIR && (int)blockIdx.x >= p.pairSlices;
  const int e0 = (second ? blockIdx.x - p.pairSlices : blockIdx.x) * ET, bh = blockIdx.y, seg = blockIdx.z;
  const int T = p.T, E = p.E;
  const float slope = p.slopes[bh % p.H];
  if (tid <= C) pw[tid] = expf(-slope * (float)tid);
  const int c0 = seg * p.chunksPerSeg;
  const int nChunks = min(p.chunksPerSeg, (T + C - 1) / C - c0);
  const X* qb = (second ? p.q2 : p.q) + (size_t)bh * T * D;
  const X* kb = (second ? p.k2 : p.k) + (size_t)bh * T * D;
  const X* vb = (second ? p.v2 : p.v) + (size_t)bh * T * E + e0;
  X* const ob = second ? p.o2 : p.o;
  const int row0 = wg * (D / NWG) + 16 * wq;  // this warp's state rows: row0 + 64·mt + g (+ 8)
  const int i0 = 16 * wq;                     // this warp's query rows of a chunk (wgmma M = 64)

  // The state: MT tiles of 64 rows × 64 columns in wgmma accumulator order.
  float S[MT][32];
  const float* sin = (!STATE_ONLY && p.Sin) ? p.Sin + ((size_t)bh * p.nseg + seg) * D * E : nullptr;
  const float sinScale = statePower(slope, p.sinPower);
  const bool sinT = second ? p.sinT2 : p.sinT;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int i = 0; i < 32; i++) {
      int d = row0 + 64 * mt + g + ((i >> 1) & 1) * 8, e = e0 + (i >> 2) * 8 + 2 * t4 + (i & 1);
      S[mt][i] = sin ? sinScale * sin[sinT ? (size_t)e * D + d : (size_t)d * E + e] : 0.0f;
    }

  // Chunk loads: each thread copies one fixed 16-byte column piece of every RSTEP-th row (RSTEP a
  // multiple of 8, so the swizzle phase of its rows never changes). No commit: the caller commits
  // one cp.async group per chunk.
  static_assert((!TMA || !STATE_ONLY) && (TMA || !REV), "TMA loads: the full loop");
  const uint32_t bar0 = sbase + W::BAR;  // TMA: the barrier of stage st at bar0 + 8·st
  if constexpr (TMA) {
    if (tid == 0) {
      for (int i = 0; i < NS; i++) mbarInit(bar0 + 8 * i, 1);
      fenceMbarInit();
    }
    __syncthreads();
  }
  auto load = [&](int chunk, int st) {
    if constexpr (TMA) {
      // The stage's last readers (wgmma and prepState's ldmatrix of chunk − NS) are past the barrier
      // that precedes this call.
      if (tid == 0) {
        const uint32_t dst = sbase + st * STAGE, bar = bar0 + 8 * st;
        const int row = REV ? T - chunk * C - C : chunk * C;
        const CUtensorMap *mq = second ? &tm.q2 : &tm.q, *mk = second ? &tm.k2 : &tm.k, *mv = second ? &tm.v2 : &tm.v;
        mbarExpectTx(bar, STAGE);
#pragma unroll
        for (int b = 0; b < D / 64; b++) {
          tmaLoad3(dst + b * (C * 128), mq, bar, 64 * b, row, bh);
          tmaLoad3(dst + QB + b * (C * 128), mk, bar, 64 * b, row, bh);
        }
        tmaLoad3(dst + 2 * QB, mv, bar, e0, row, bh);
      }
      return;
    }
    unsigned char* base = sm + st * STAGE;
    const int t0 = chunk * C, mm = T - t0;
    const long dir = p.reverse ? -1 : 1;
    {
      constexpr int CPR = D / 8, RSTEP = THREADS / CPR;
      static_assert(THREADS % CPR == 0 && RSTEP % 8 == 0, "q/k load mapping");
      const int c = tid % CPR, r0 = tid / CPR;
      const uint32_t so = (c >> 3) * (C * 128) + swz128(r0, (c & 7) * 8);
      const size_t go = (size_t)(p.reverse ? max(T - 1 - t0 - r0, 0) : t0 + r0) * D + c * 8;
#pragma unroll 1
      for (int i = 0; i < C / RSTEP; i++) {
        const bool in = r0 + i * RSTEP < mm;
        const size_t off = in ? go + dir * (long)(i * RSTEP * D) : 0;
        if (!STATE_ONLY) cpAsync16(base + so + i * RSTEP * 128, qb + off, in ? 16 : 0);
        cpAsync16(base + QB + so + i * RSTEP * 128, kb + off, in ? 16 : 0);
      }
    }
    {
      constexpr int CPR = ET / 8, RSTEP = THREADS / CPR;
      static_assert(RSTEP % 8 == 0, "v load mapping");
      const int c = tid % CPR, r0 = tid / CPR;
      const uint32_t so = swz128(r0, c * 8);
      const size_t go = (size_t)(p.reverse ? max(T - 1 - t0 - r0, 0) : t0 + r0) * E + c * 8;
#pragma unroll 1
      for (int i = 0; i < C / RSTEP; i++) {
        const bool in = r0 + i * RSTEP < mm;
        const size_t off = in ? go + dir * (long)i * RSTEP * E : 0;
        cpAsync16(base + 2 * QB + so + i * RSTEP * 128, vb + off, in ? 16 : 0);
      }
    }
  };

  auto storeState = [&](int buf) {
    unsigned char* sb = sm + NS * STAGE + buf * SB;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int d = row0 + 64 * mt + g + 8 * h;
          *reinterpret_cast<uint32_t*>(sb + swz128(d, nt * 8 + 2 * t4)) = pack2<X>(S[mt][nt * 4 + 2 * h], S[mt][nt * 4 + 2 * h + 1]);
        }
  };
  // Descriptors of k-step kk: K-major tiles (Q, K: 64-column blocks of 8 KB, 32 bytes per step) and
  // MN-major tiles (the state copy, V: 16 rows of 128 bytes per step).
  // (The start address is the low field: a step adds its byte offset / 16 to the descriptor.)
  auto kDesc = [](uint64_t d0, int kk) { return d0 + (uint64_t)(((kk >> 2) * (C * 128) + (kk & 3) * 32) >> 4); };
  auto mnDesc = [](uint64_t d0, int kk) { return d0 + (uint64_t)((kk * 2048) >> 4); };

  // S = λ^m S + (w ⊙ K)ᵀ V with A = Kᵀ through ldmatrix.trans, scaled by w_j = λ^{m−1−j} in f32
  // and rounded once. The fragments and the decayed state are made before any wgmma of the step is
  // issued (no instruction may touch an accumulator while a wgmma is in flight).
  auto prepState = [&](uint32_t (&sa)[4][MT][4], const unsigned char* kT, int m) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      const int j0 = kk * 16 + 2 * t4;
      float w[4];
#pragma unroll
      for (int x = 0; x < 4; x++) {
        int j = j0 + (x >> 1) * 8 + (x & 1);
        if (REV) j = C - 1 - j;  // the tile's row j is the chunk's token C − 1 − j
        w[x] = j < m ? pw[m - 1 - j] : 0.0f;
      }
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        int r = kk * 16 + (lane & 7) + ((lane >> 4) << 3), d = row0 + 64 * mt + ((lane >> 3) & 1) * 8;
        ldsm4t(sa[kk][mt], kT + (d >> 6) * (C * 128) + swz128(r, d & 63));
#pragma unroll
        for (int r2 = 0; r2 < 4; r2++) {
          float2 f = unpack2<X>(sa[kk][mt][r2]);
          sa[kk][mt][r2] = pack2<X>(f.x * w[(r2 >> 1) * 2], f.y * w[(r2 >> 1) * 2 + 1]);
        }
      }
    }
    const float decay = pw[m];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int i = 0; i < 32; i++) S[mt][i] *= decay;
  };
  auto issueState = [&](const uint32_t (&sa)[4][MT][4], uint64_t vA) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
      for (int mt = 0; mt < MT; mt++) wgmmaRS<X, 1>(S[mt], sa[kk][mt], mnDesc(vA, kk));
    wgmmaCommit();
  };
  // P_ij · λ^{i−j} for j ≤ i, else 0; O rows · λ^{i+1} (REV: tile rows r, c are tokens C − 1 − r, C − 1 − c).
  auto maskP = [&](float (&P)[32]) {
#pragma unroll
    for (int i = 0; i < 32; i++) {
      int r = i0 + g + ((i >> 1) & 1) * 8, j = (i >> 2) * 8 + 2 * t4 + (i & 1);
      if constexpr (REV) P[i] = j >= r ? P[i] * pw[j - r] : 0.0f;
      else P[i] = j <= r ? P[i] * pw[r - j] : 0.0f;
    }
  };
  // P (16-bit) into this warp's 16 rows of the exchange tile.
  auto stageP = [&](const float (&P)[32]) {
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int h = 0; h < 2; h++)
        *reinterpret_cast<uint32_t*>(xs + (i0 + g + 8 * h) * XS + nt * 8 + 2 * t4) = pack2<X>(P[nt * 4 + 2 * h], P[nt * 4 + 2 * h + 1]);
  };
  auto scaleO = [&](float (&O)[32]) {
#pragma unroll
    for (int i = 0; i < 32; i++) {
      const int r = i0 + g + ((i >> 1) & 1) * 8;
      O[i] *= pw[REV ? C - r : r + 1];
    }
  };
  // O through this warp's 16 rows of the exchange tile (only this warp reads them), 16 B per thread.
  auto storeO = [&](const float (&O)[32], int t0, int m) {
    __syncwarp();
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int h = 0; h < 2; h++)
        *reinterpret_cast<uint32_t*>(xs + (i0 + g + 8 * h) * XS + nt * 8 + 2 * t4) = pack2<X>(O[nt * 4 + 2 * h], O[nt * 4 + 2 * h + 1]);
    __syncwarp();
#pragma unroll
    for (int x = lane; x < 16 * (ET / 8); x += 32) {
      int row = i0 + x / (ET / 8), col = (x % (ET / 8)) * 8;
      int lr = REV ? C - 1 - row : row;  // the chunk's token
      int t = p.reverse ? T - 1 - t0 - lr : t0 + lr;
      if (lr < m) *reinterpret_cast<uint4*>(ob + ((size_t)bh * T + t) * E + e0 + col) = *reinterpret_cast<uint4*>(xs + row * XS + col);
    }
  };

  // Chunks 0 .. NS − 2 in flight before the loop, one cp.async group each (empty past the end).
#pragma unroll
  for (int i = 0; i < NS - 1; i++) {
    if (i < nChunks) load(c0 + i, i);
    cpAsyncCommit();
  }
  if (!STATE_ONLY) storeState(0);
  for (int ci = 0; ci < nChunks; ci++) {
    const int chunk = c0 + ci, st = ci % NS, sbuf = NSB == 2 ? (ci & 1) : 0, t0 = chunk * C, m = min(C, T - t0);
    if constexpr (TMA) mbarWait(bar0 + 8 * st, (ci / NS) & 1);  // this chunk's boxes have landed
    else cpAsyncWait<NS - 2>();  // this chunk's group is complete (the NS − 2 younger ones may still be in flight)
    fenceProxyAsync();  // this chunk's tiles and the state copy, written by the generic proxy, are read by wgmma
    __syncthreads();
    // The stage of chunk ci + NS − 1 is chunk ci − 1's, whose last readers are all past the barrier.
    if (ci + NS - 1 < nChunks) load(chunk + NS - 1, (ci + NS - 1) % NS);
    cpAsyncCommit();
    const unsigned char* kT = sm + st * STAGE + QB;
    const uint32_t qAddr = sbase + st * STAGE;
    const uint64_t qA = wgmmaDesc(qAddr, 16, 1024), kA = wgmmaDesc(qAddr + QB, 16, 1024), vA = wgmmaDesc(qAddr + 2 * QB, 8192, 1024),
                   sA = wgmmaDesc(sbase + NS * STAGE + sbuf * SB, 8192, 1024);
    uint32_t sa[4][MT][4];

    if constexpr (STATE_ONLY) {
      prepState(sa, kT, m);
      wgmmaFence();
      issueState(sa, vA);
      wgmmaWait<0>();
    } else if constexpr (NWG == 1) {
      // One warpgroup: P = Q Kᵀ and O = Q S, then O += P V (A = P from registers) and the state update.
      float O[32], P[32];
      uint32_t pa[4][4];
#pragma unroll
      for (int i = 0; i < 32; i++) O[i] = 0.0f, P[i] = 0.0f;
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < KS; kk++) wgmmaSS<X, 0>(P, kDesc(qA, kk), kDesc(kA, kk));
      wgmmaCommit();
#pragma unroll
      for (int kk = 0; kk < KS; kk++) wgmmaSS<X, 1>(O, kDesc(qA, kk), mnDesc(sA, kk));
      wgmmaCommit();
      wgmmaWait<1>();  // P = Q Kᵀ is done, Q S runs on
      fenceRegs(P);
      maskP(P);
      // P through this warp's own rows of the exchange tile: the A fragments are loaded back just
      // before P V, which keeps them out of the registers while the state fragments are made.
      stageP(P);
      prepState(sa, kT, m);
      wgmmaWait<0>();
      fenceRegs(O);
      scaleO(O);
      __syncwarp();
#pragma unroll
      for (int kk = 0; kk < 4; kk++) ldsm4(pa[kk], xs + (i0 + (lane & 15)) * XS + kk * 16 + (lane >> 4) * 8);
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < 4; kk++) wgmmaRS<X, 1>(O, pa[kk], mnDesc(vA, kk));
      wgmmaCommit();
      issueState(sa, vA);
      wgmmaWait<1>();  // P V is done; the state update may still run
      fenceRegs(O);
      storeO(O, t0, m);
      wgmmaWait<0>();
    } else if (wg == 0) {
      // Warpgroup 0: O = Q S, then O += P V with P from warpgroup 1, the state update of its rows.
      float O[32];
      uint32_t pa[4][4];
#pragma unroll
      for (int i = 0; i < 32; i++) O[i] = 0.0f;
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < KS; kk++) wgmmaSS<X, 1>(O, kDesc(qA, kk), mnDesc(sA, kk));
      wgmmaCommit();
      wgmmaWait<0>();
      fenceRegs(O);
      scaleO(O);
      // P is in the exchange tile. A block barrier, met by warpgroup 1 after it staged P: with a
      // named-barrier pair (bar.arrive there, bar.sync here) compute-sanitizer's racecheck reports
      // the next chunk's cp.async refill against prepState's ldmatrix, and with this it reports
      // nothing (KERNELS.md, v6 racecheck).
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < 4; kk++) ldsm4(pa[kk], xs + (i0 + (lane & 15)) * XS + kk * 16 + (lane >> 4) * 8);
      prepState(sa, kT, m);
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < 4; kk++) wgmmaRS<X, 1>(O, pa[kk], mnDesc(vA, kk));
      wgmmaCommit();
      issueState(sa, vA);
      wgmmaWait<1>();
      fenceRegs(O);
      storeO(O, t0, m);
      wgmmaWait<0>();
    } else {
      // Warpgroup 1: P = Q Kᵀ, masked, handed to warpgroup 0; the state update of its rows.
      float P[32];
#pragma unroll
      for (int i = 0; i < 32; i++) P[i] = 0.0f;
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < KS; kk++) wgmmaSS<X, 0>(P, kDesc(qA, kk), kDesc(kA, kk));
      wgmmaCommit();
      wgmmaWait<0>();
      fenceRegs(P);
      maskP(P);
      stageP(P);
      __syncthreads();  // P is staged (warpgroup 0 waits for it at its barrier)
      prepState(sa, kT, m);
      wgmmaFence();
      issueState(sa, vA);
      wgmmaWait<0>();
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) fenceRegs(S[mt]);
    if (!STATE_ONLY) {
      if constexpr (NSB == 2) {
        storeState(sbuf ^ 1);  // the other copy: its last reader (chunk ci − 1) finished before this chunk's barrier
      } else {
        __syncthreads();  // every warpgroup's reads of the copy are done
        storeState(0);
      }
    }
  }
  cpAsyncWait<0>();  // (only empty groups can remain)

  float* out = nullptr;
  if (STATE_ONLY) out = p.Sout + ((size_t)bh * p.nseg + seg) * D * E;
  else if (seg == p.nseg - 1 && p.Sout && !second) out = p.Sout + (size_t)bh * D * E;
  if (out) {
    const float sc = STATE_ONLY ? 1.0f : statePower(slope, p.soutPower);
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int d = row0 + 64 * mt + g + 8 * h, e = e0 + nt * 8 + 2 * t4;
          *reinterpret_cast<float2*>(out + (size_t)d * E + e) = make_float2(sc * S[mt][nt * 4 + 2 * h], sc * S[mt][nt * 4 + 2 * h + 1]);
        }
  }
#endif
}

// Phase A of the sequence split on wgmma: the state-only loop with its own shared-memory layout.
// The full loop's kernel keeps a stage of Q, K, V and the 16-bit state copy that this pass never
// reads; here a stage is K and V only, and WS_STAGES of them are in flight (three chunks ahead
// instead of one), because this pass is bound by how many bytes each SM has in flight, not by its
// MMAs. The grid skips the last segment, whose own state nobody needs. The default since the full
// loop's warpgroups meet at a block barrier (racecheck clean with segments of many chunks, KERNELS.md v6b).
// EW: the 64-wide E-slices a CTA covers (grid E/(64·EW)). With EW = 2 a CTA loads each K tile once
// for both slices and scales it once (wideState).
constexpr int WS_STAGES = 4;
template <int D, int NWG, int NSB, int EW = 1>
struct WSCfg {
  using W = WCfg<D, NWG, NSB>;
  static constexpr int KVB = W::QB + EW * W::VB;  // one stage: K tile, then EW V tiles (all 1,024-aligned)
  static constexpr size_t SMEM = 1024 + WS_STAGES * KVB + (C + 1) * sizeof(float);
  // Loads by the copy engine: one 8-byte barrier per stage after λ^n.
  static constexpr int BAR = WS_STAGES * KVB + (C + 2) * sizeof(float);
  static constexpr size_t SMEM_TMA = 1024 + BAR + WS_STAGES * 8;
};

// TMA: a chunk's K and V boxes come by the copy engine (tm.k, tm.v), as in wgKernel; in reversed
// time the box is the chunk's 64 rows in forward order (rows before the sequence land as zeros), so
// the weights go by the reversed row index, and rows of the box outside the chunk weigh 0.
template <int D, int NWG, int NSB, class X, int EW = 1, bool TMA = false>
__global__ void __launch_bounds__(WCfg<D, NWG, NSB>::THREADS, WCfg<D, NWG, NSB>::MIN_BLOCKS) wgStateKernel(Params<X> p, const __grid_constant__ TileMaps tm) {
#if defined(LTS_WGMMA)
  using W = WCfg<D, NWG, NSB>;
  constexpr int QB = W::QB, VB = W::VB, KVB = WSCfg<D, NWG, NSB, EW>::KVB, NST = WS_STAGES, MT = W::MT, THREADS = W::THREADS;
  extern __shared__ __align__(1024) unsigned char wsmem[];
  unsigned char* sm = wsmem + ((1024u - (smemAddr(wsmem) & 1023u)) & 1023u);
  const uint32_t sbase = smemAddr(sm);
  float* pw = reinterpret_cast<float*>(sm + NST * KVB);
  const int tid = threadIdx.x, lane = tid & 31, wq = (tid >> 5) & 3, g = lane >> 2, t4 = lane & 3;
  const int wg = __shfl_sync(0xffffffffu, tid >> 7, 0);
  const int e0 = blockIdx.x * ET * EW, bh = blockIdx.y, seg = blockIdx.z;
  const int T = p.T, E = p.E;
  const float slope = p.slopes[bh % p.H];
  if (tid <= C) pw[tid] = expf(-slope * (float)tid);
  const int c0 = seg * p.chunksPerSeg;
  const int nChunks = min(p.chunksPerSeg, (T + C - 1) / C - c0);
  const X* kb = p.k + (size_t)bh * T * D;
  const X* vb = p.v + (size_t)bh * T * E + e0;
  const int row0 = wg * (D / NWG) + 16 * wq;
  float S[MT][EW][32];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int es = 0; es < EW; es++)
#pragma unroll
      for (int i = 0; i < 32; i++) S[mt][es][i] = 0.0f;

  const uint32_t bar0 = sbase + WSCfg<D, NWG, NSB, EW>::BAR;  // TMA: the barrier of stage st at bar0 + 8·st
  if constexpr (TMA) {
    if (tid == 0) {
      for (int i = 0; i < NST; i++) mbarInit(bar0 + 8 * i, 1);
      fenceMbarInit();
    }
    __syncthreads();
  }
  // As wgKernel's load, K and V only, no commit (the caller commits one group per chunk).
  auto load = [&](int chunk, int st) {
    if constexpr (TMA) {
      if (tid == 0) {
        const uint32_t dst = sbase + st * KVB, bar = bar0 + 8 * st;
        const int row = p.reverse ? T - chunk * C - C : chunk * C;
        mbarExpectTx(bar, KVB);
#pragma unroll
        for (int b = 0; b < D / 64; b++) tmaLoad3(dst + b * (C * 128), &tm.k, bar, 64 * b, row, bh);
#pragma unroll
        for (int es = 0; es < EW; es++) tmaLoad3(dst + QB + es * VB, &tm.v, bar, e0 + es * ET, row, bh);
      }
      return;
    }
    unsigned char* base = sm + st * KVB;
    const int t0 = chunk * C, mm = T - t0;
    const long dir = p.reverse ? -1 : 1;
    {
      constexpr int CPR = D / 8, RSTEP = THREADS / CPR;
      static_assert(THREADS % CPR == 0 && RSTEP % 8 == 0, "k load mapping");
      const int c = tid % CPR, r0 = tid / CPR;
      const uint32_t so = (c >> 3) * (C * 128) + swz128(r0, (c & 7) * 8);
      const size_t go = (size_t)(p.reverse ? max(T - 1 - t0 - r0, 0) : t0 + r0) * D + c * 8;
#pragma unroll
      for (int i = 0; i < C / RSTEP; i++) {
        const bool in = r0 + i * RSTEP < mm;
        const size_t off = in ? go + dir * (long)(i * RSTEP * D) : 0;
        cpAsync16(base + so + i * RSTEP * 128, kb + off, in ? 16 : 0);
      }
    }
    {
      constexpr int CPR = ET / 8, RSTEP = THREADS / CPR;
      static_assert(RSTEP % 8 == 0, "v load mapping");
      const int c = tid % CPR, r0 = tid / CPR;
      const uint32_t so = swz128(r0, c * 8);
      const size_t go = (size_t)(p.reverse ? max(T - 1 - t0 - r0, 0) : t0 + r0) * E + c * 8;
#pragma unroll
      for (int es = 0; es < EW; es++)
#pragma unroll
        for (int i = 0; i < C / RSTEP; i++) {
          const bool in = r0 + i * RSTEP < mm;
          const size_t off = in ? go + dir * (long)i * RSTEP * E + es * ET : 0;
          cpAsync16(base + QB + es * VB + so + i * RSTEP * 128, vb + off, in ? 16 : 0);
        }
    }
  };

#pragma unroll
  for (int i = 0; i < NST - 1; i++) {
    if (i < nChunks) load(c0 + i, i);
    cpAsyncCommit();
  }
#pragma unroll 1
  for (int ci = 0; ci < nChunks; ci++) {
    const int st = ci % NST, m = min(C, T - (c0 + ci) * C);
    if constexpr (TMA) mbarWait(bar0 + 8 * st, (ci / NST) & 1);  // this chunk's boxes have landed
    else cpAsyncWait<NST - 2>();  // this chunk's group is complete (one group is committed per chunk, empty past the end)
    fenceProxyAsync();
    __syncthreads();  // every thread's part of the stage is in; chunk ci − 1's readers of stage (ci − 1) % NST are done
    if (ci + NST - 1 < nChunks) load(c0 + ci + NST - 1, (ci + NST - 1) % NST);
    cpAsyncCommit();
    const unsigned char* kT = sm + st * KVB;
    const uint64_t vA = wgmmaDesc(sbase + st * KVB + QB, 8192, 1024);
    // S = λ^m S + (w ⊙ K)ᵀ V, as wgKernel's prepState and issueState.
    uint32_t sa[4][MT][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      const int j0 = kk * 16 + 2 * t4;
      float w[4];
#pragma unroll
      for (int x = 0; x < 4; x++) {
        int j = j0 + (x >> 1) * 8 + (x & 1);
        if (TMA && p.reverse) j = C - 1 - j;  // the box's row j is the chunk's token C − 1 − j
        w[x] = j < m ? pw[m - 1 - j] : 0.0f;
      }
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        int r = kk * 16 + (lane & 7) + ((lane >> 4) << 3), d = row0 + 64 * mt + ((lane >> 3) & 1) * 8;
        ldsm4t(sa[kk][mt], kT + (d >> 6) * (C * 128) + swz128(r, d & 63));
#pragma unroll
        for (int r2 = 0; r2 < 4; r2++) {
          float2 f = unpack2<X>(sa[kk][mt][r2]);
          sa[kk][mt][r2] = pack2<X>(f.x * w[(r2 >> 1) * 2], f.y * w[(r2 >> 1) * 2 + 1]);
        }
      }
    }
    const float decay = pw[m];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int es = 0; es < EW; es++)
#pragma unroll
        for (int i = 0; i < 32; i++) S[mt][es][i] *= decay;
    wgmmaFence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int es = 0; es < EW; es++) wgmmaRS<X, 1>(S[mt][es], sa[kk][mt], vA + (uint64_t)((es * VB + kk * 2048) >> 4));
    wgmmaCommit();
    wgmmaWait<0>();
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int es = 0; es < EW; es++) fenceRegs(S[mt][es]);
  }
  cpAsyncWait<0>();  // (only empty groups can remain)

  float* out = p.Sout + ((size_t)bh * p.nseg + seg) * D * E;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int es = 0; es < EW; es++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int d = row0 + 64 * mt + g + 8 * h, e = e0 + es * ET + nt * 8 + 2 * t4;
          *reinterpret_cast<float2*>(out + (size_t)d * E + e) = make_float2(S[mt][es][nt * 4 + 2 * h], S[mt][es][nt * 4 + 2 * h + 1]);
        }
#endif
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

// Sets the shared-memory limit of both kernels of one instantiation once per device; returns CTAs per SM.
template <int D, class X>
int configure() {
  static PerDevice<int> perSm;
  return perSm.get([] {
    size_t s = Cfg<D>::SMEM;
    LTS_CHECK(cudaFuncSetAttribute(forwardKernel<D, X, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s), "lightning v5 smem attribute");
    LTS_CHECK(cudaFuncSetAttribute(forwardKernel<D, X, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s), "lightning v5 smem attribute");
    int n = 0;
    LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, forwardKernel<D, X, false>, Cfg<D>::THREADS, s), "lightning v5 occupancy");
    return std::max(1, n);
  });
}

template <int D, int NWG, int NSB, int NS, class X>
int configureW() {
  static PerDevice<int> perSm;
  return perSm.get([] {
    using W = WCfg<D, NWG, NSB, NS>;
    LTS_CHECK(cudaFuncSetAttribute(wgKernel<D, NWG, NSB, NS, X, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)W::SMEM), "lightning v6 smem attribute");
    LTS_CHECK(cudaFuncSetAttribute(wgKernel<D, NWG, NSB, NS, X, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)W::SMEM), "lightning v6 smem attribute");
    LTS_CHECK(cudaFuncSetAttribute(wgKernel<D, NWG, NSB, NS, X, false, false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)W::SMEM_TMA),
              "lightning v6 smem attribute");
    LTS_CHECK(cudaFuncSetAttribute(wgKernel<D, NWG, NSB, NS, X, false, false, true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)W::SMEM_TMA),
              "lightning v6 smem attribute");
    if constexpr (D <= 128)
      LTS_CHECK(cudaFuncSetAttribute(wgKernel<D, NWG, NSB, NS, X, false, true, true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)W::SMEM_TMA),
                "lightning v6 smem attribute");
    if constexpr (D <= 128)  // the dv/dk pair (pairW) runs at D = E of 64 and 128 only
      LTS_CHECK(cudaFuncSetAttribute(wgKernel<D, NWG, NSB, NS, X, false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)W::SMEM),
                "lightning v6 smem attribute");
    LTS_CHECK(cudaFuncSetAttribute(wgStateKernel<D, NWG, NSB, X>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)WSCfg<D, NWG, NSB>::SMEM),
              "lightning v6 smem attribute");
    int n = 0;
    LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, wgKernel<D, NWG, NSB, NS, X, false>, W::THREADS, W::SMEM), "lightning v6 occupancy");
    return std::max(1, n);
  });
}

// True where the GPU runs this file's sm_90a code (Hopper); the sm_80–sm_90 images carry no wgmma.
bool wgmmaLoaded() {
  static const bool ok = [] {
    int* flag = nullptr;
    int h = 0;
    if (cudaMalloc(&flag, sizeof(int)) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    wgmmaProbeKernel<<<1, 1>>>(flag);
    bool r = cudaMemcpy(&h, flag, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess && h == 1;
    cudaFree(flag);
    return r;
  }();
  return ok;
}

int versionAsked() {
  const char* v = getenv("LIGHTNING_CUDA_LA_VERSION");
  return v ? atoi(v) : 0;
}

// D = 128 runs one warpgroup per CTA; LIGHTNING_CUDA_LA_WG128=2 runs two (warpgroup roles as at D = 256), for experiments.
int wg128() {
  const char* v = getenv("LIGHTNING_CUDA_LA_WG128");
  return v && atoi(v) == 2 ? 2 : 1;
}

// Version 6's phase A runs on wgStateKernel (four stages of K and V, the last segment skipped: 5–10%
// faster at B = 1, KERNELS.md v6b); LIGHTNING_CUDA_LA_STATEPASS=1 runs the full loop's kernel in
// state-only mode instead (two stages, every segment), the earlier path, for comparison.
bool newStatePass() {
  static const bool on = [] {
    const char* v = getenv("LIGHTNING_CUDA_LA_STATEPASS");
    return !(v && atoi(v) == 1);
  }();
  return on;
}

// D = 64 on version 6: measured 8–16% faster forward than version 5 at every T (KERNELS.md, "v6 at
// D = E = 64"); LIGHTNING_CUDA_LA_V6_64=0 (read once) keeps version 5 there, for comparison.
bool v6At64() {
  static const bool on = [] {
    const char* v = getenv("LIGHTNING_CUDA_LA_V6_64");
    return !(v && atoi(v) == 0);
  }();
  return on;
}

// The stages of Q, K, V of a D = 64 CTA that LIGHTNING_CUDA_LA_V6_64_STAGES forces (2, 3, 4 or 6;
// read once), else 0: stages64 chooses.
int forcedStages64() {
  static const int n = [] {
    const char* v = getenv("LIGHTNING_CUDA_LA_V6_64_STAGES");
    int k = v ? atoi(v) : 0;
    return k == 2 || k == 3 || k == 4 || k == 6 ? k : 0;
  }();
  return n;
}

// Version 6 (wgmma) where it applies: D ∈ {64, 128, 256} on Hopper (D = 64 unless
// LIGHTNING_CUDA_LA_V6_64=0), unless LIGHTNING_CUDA_LA_VERSION=5.
bool useV6(int D) {
  if (versionAsked() == 5) return false;
  size_t s = 0;
  if (D == 256) s = WCfg<256, 2, 2>::SMEM;
  else if (D == 128) s = std::max(WCfg<128, 1, 1>::SMEM, WCfg<128, 2, 2>::SMEM);
  else if (D == 64 && v6At64()) s = WCfg<64, 1, 2, 6>::SMEM;
  else return false;
  return s <= (size_t)optinSmem() && wgmmaLoaded();
}

struct Plan {
  int nseg, chunksPerSeg, ctasPerSm;
};
Plan plan(Context& c, LightningDims d, int ctasPerSm, int passes = 1);

// D = 64 on version 6: the stages per CTA. The grid is planned as for 2 stages (3 CTAs per SM); where
// it fits in one CTA per SM (T = 8,192 at B·T = 65,536: 128 (b·h) pairs, one segment), each CTA keeps
// 3 chunks ahead (4 stages, 1 CTA per SM); in two per SM, 2 ahead each (3 stages); else 1 ahead in
// each of 3 CTAs. Each SM then has about 3 chunks (72 KB) of loads in flight. The grid's segment count
// is the same under the chosen stage count (a grid of one wave stays one wave at fewer CTAs per SM).
template <class X>
int stages64(Context& c, LightningDims d, int passes = 1) {
  if (int n = forcedStages64()) return n;
  long ctas = (long)passes * d.BH() * (d.E / ET) * plan(c, d, configureW<64, 1, 2, 2, X>(), passes).nseg;
  return ctas <= c.smCount ? 4 : ctas <= 2L * c.smCount ? 3 : 2;
}

struct Choice {
  int version, warps, ctasPerSm, stages;
};

template <class X>
Choice choiceX(Context& c, LightningDims d) {
  const int D = d.D;
  if (useV6(D)) {
    if (D == 256) return {6, 8, configureW<256, 2, 2, 2, X>(), 2};
    if (D == 64) {
      switch (stages64<X>(c, d)) {
        case 3: return {6, 4, configureW<64, 1, 2, 3, X>(), 3};
        case 4: return {6, 4, configureW<64, 1, 2, 4, X>(), 4};
        case 6: return {6, 4, configureW<64, 1, 2, 6, X>(), 6};
        default: return {6, 4, configureW<64, 1, 2, 2, X>(), 2};
      }
    }
    if (wg128() == 2) return {6, 8, configureW<128, 2, 2, 2, X>(), 2};
    return {6, 4, configureW<128, 1, 1, 2, X>(), 2};
  }
  return {5, D > 128 ? 8 : 4, D == 64 ? configure<64, X>() : D == 128 ? configure<128, X>() : configure<256, X>(), 2};
}

Choice choice(Context& c, int dt, LightningDims d) { return dt == F16 ? choiceX<__half>(c, d) : choiceX<__nv_bfloat16>(c, d); }

// Split only when the (b·h, E-slice) pairs fill less than 3/4 of one wave, and then into as many
// segments as fit in one wave: a partial second wave would cost a whole CTA's time. D = 64 runs near
// copy bandwidth, where phase A's second read of k and v costs more than a thin wave: split only
// below half a CTA per SM (KERNELS.md, v5: 128 pairs on 132 SMs, 1 segment 0.215 ms, 3 segments 0.266).
// A pair launch (`passes` = 2, pairW) counts both passes' CTAs.
Plan plan(Context& c, LightningDims d, int ctasPerSm, int passes) {
  int NC = (d.T + C - 1) / C;
  int pairs = passes * d.BH() * (d.E / ET);
  int slots = ctasPerSm * c.smCount;
  bool split = d.D <= 64 ? 2 * pairs < c.smCount : 4 * pairs < 3 * slots;
  int nseg = !split ? 1 : std::min(NC, std::max(1, slots / pairs));
  // A forced count (LIGHTNING_CUDA_LA_SEGMENTS) for experiments.
  if (const char* f = getenv("LIGHTNING_CUDA_LA_SEGMENTS")) nseg = std::max(1, std::min(NC, atoi(f)));
  int chunksPerSeg = (NC + nseg - 1) / nseg;
  nseg = (NC + chunksPerSeg - 1) / chunksPerSeg;
  return {nseg, chunksPerSeg, ctasPerSm};
}

// The plan of a pass that stores segment states: segments of exactly seg.tokens tokens.
Plan segmentPlan(LightningDims d, Plan pl, const Segments& seg) {
  if (!seg.out) return pl;
  const int NC = (d.T + C - 1) / C, cps = seg.tokens / C;
  return {(NC + cps - 1) / cps, cps, pl.ctasPerSm};
}

// Whether a pass reads the forward's segment states in place of its own phase A and scan.
bool readsSegments(const Plan& pl, const Segments& seg) { return seg.inT && pl.nseg > 1 && pl.chunksPerSeg * C == seg.tokens; }

// CTAs of wgStateKernel an SM holds (it sets the kernel's shared-memory limit once per device).
template <int D, int NWG, int NSB, class X, int EW = 1>
int stateCtasPerSm() {
  static PerDevice<int> perSm;
  return perSm.get([] {
    const size_t s = WSCfg<D, NWG, NSB, EW>::SMEM;
    LTS_CHECK(cudaFuncSetAttribute(wgStateKernel<D, NWG, NSB, X, EW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s),
              "lightning v6 smem attribute");
    LTS_CHECK(cudaFuncSetAttribute(wgStateKernel<D, NWG, NSB, X, EW, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)WSCfg<D, NWG, NSB, EW>::SMEM_TMA),
              "lightning v6 smem attribute");
    int n = 0;
    LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, wgStateKernel<D, NWG, NSB, X, EW>, WCfg<D, NWG, NSB>::THREADS, s),
              "lightning v6 occupancy");
    return std::max(1, n);
  });
}

// Phase A at D = 256 or 128 with E a multiple of 128: one CTA of D/64 warpgroups covers two 64-wide
// E-slices (wgStateKernel<D, D/64, ·, ·, 2>, a 64-row state tile a warpgroup), so each chunk's K tile
// (four or two times a V slice) is loaded and scaled once for both, not by two CTAs.
// LIGHTNING_CUDA_LA_WIDE_STATE=0 (read at each call) runs one CTA a slice, as the full loop does.
bool wideState(int D, int E) {
  if ((D != 256 && D != 128) || E % (2 * ET)) return false;
  const char* f = getenv("LIGHTNING_CUDA_LA_WIDE_STATE");
  return !(f && f[0] == '0');
}

// The instantiation of wgStateKernel that a pass of key width D runs (passT's choice).
template <class X>
int stateCtasPerSmX(int D, int E) {
  if (D == 256) return wideState(D, E) ? stateCtasPerSm<256, 4, 2, X, 2>() : stateCtasPerSm<256, 2, 2, X>();
  if (D == 128) {
    if (wideState(D, E)) return wg128() == 2 ? stateCtasPerSm<128, 2, 2, X, 2>() : stateCtasPerSm<128, 2, 1, X, 2>();
    return wg128() == 2 ? stateCtasPerSm<128, 2, 2, X>() : stateCtasPerSm<128, 1, 1, X>();
  }
  return stateCtasPerSm<64, 1, 2, X>();
}

// Phase A is a sum over chunks with no order between them, so its grid need not be phase C's: each
// segment's own state may be made as the sum of k sub-segments' (the scan adds them, decayed, as it
// adds segments, and keeps the state entering every k-th), and phase A's CTAs then fill their waves
// where phase C's segments leave SMs idle (D = 256, B = 1: 96 CTAs of 256 chunks on 132 SMs; 384 of
// 64 chunks fill three waves). LIGHTNING_CUDA_LA_SUBSEG (read at each call): unset or "auto" (the
// default), k divides a segment's chunks, leaves sub-segments of at least MIN_SUB_CHUNKS, and is the
// smallest that fills phase A's waves best, taken only where it fills them at least 20% better
// (measured on the H200: 73% → 97% at D = 256, B = 1 gave −3.5%; 85% → 97% at D = 128, T = 131,072,
// 57 sub-segments to scan, +6%); n ≥ 1, the largest divisor of a segment's chunks up to n (1: off).
// `stateSlices` is the E-slices a CTA of phase A covers (wideState).
constexpr int MIN_SUB_CHUNKS = 32;
int subSegments(Context& c, LightningDims d, const Plan& pl, int stateCtasPerSm, int stateSlices) {
  const int cps = pl.chunksPerSeg;
  const char* f = getenv("LIGHTNING_CUDA_LA_SUBSEG");
  if (pl.nseg < 2 || !newStatePass()) return 1;
  if (f && *f && strcmp(f, "auto") != 0) {
    const int n = std::max(1, atoi(f));
    int k = 1;
    for (int i = 1; i <= std::min(n, cps); i++)
      if (cps % i == 0) k = i;
    return k;
  }
  const long slots = (long)stateCtasPerSm * c.smCount, segs = (long)d.BH() * (d.E / (ET * stateSlices)) * (pl.nseg - 1);
  int best = 1;
  double bestFill = 0;
  for (int k = 1; k <= cps && (k == 1 || cps / k >= MIN_SUB_CHUNKS); k++) {
    if (cps % k) continue;
    const long ctas = segs * k, waves = (ctas + slots - 1) / slots;
    const double fill = (double)ctas / (double)(waves * slots);
    if (fill > 1.2 * bestFill) best = k, bestFill = fill;
  }
  return best;
}

// The driver's tensor-map encoder, through the runtime (the addon links no libcuda); null where the
// driver has none.
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiled encodeTiled() {
  static const EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess || q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return (EncodeTiled) nullptr;
    }
    return (EncodeTiled)f;
  }();
  return fn;
}

// Version 6's passes load their tiles by the copy engine (wgKernel's and wgStateKernel's TMA);
// LIGHTNING_CUDA_LA_TMA=0 (read at each call) keeps the cp.async loads, for comparison.
bool tmaOn() {
  const char* v = getenv("LIGHTNING_CUDA_LA_TMA");
  return !(v && atoi(v) == 0) && encodeTiled() != nullptr;
}

// x as a (BH, T, width) tensor of X in 64 × 64 boxes with the 128-byte swizzle; false where TMA is
// off or x cannot be described (an address not 16-byte aligned).
template <class X>
bool tileMap(CUtensorMap& m, const void* x, int width, LightningDims d) {
  if (!tmaOn() || (reinterpret_cast<uintptr_t>(x) & 15)) return false;
  const cuuint64_t dims[3] = {(cuuint64_t)width, (cuuint64_t)d.T, (cuuint64_t)d.BH()};
  const cuuint64_t strides[2] = {(cuuint64_t)width * sizeof(X), (cuuint64_t)width * d.T * sizeof(X)};
  const cuuint32_t box[3] = {64, (cuuint32_t)C, 1}, step[3] = {1, 1, 1};
  const CUtensorMapDataType type = std::is_same_v<X, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  return encodeTiled()(&m, type, 3, const_cast<void*>(x), dims, strides, box, step, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                       CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <class X>
bool tileMaps(TileMaps& tm, LightningDims d, const void* q, const void* k, const void* v) {
  return tileMap<X>(tm.q, q, d.D, d) && tileMap<X>(tm.k, k, d.D, d) && tileMap<X>(tm.v, v, d.E, d);
}

// Phase A of the sequence split and its scan on the wgmma kernels: the state entering each of
// p's segments into `out` (the op's segment states) or a scratch array (BH, nseg, D, E), from S0
// read as `io` says; p then reads it plainly. Phase A may run on sub-segments (subSegments): their
// states go to a scratch array of their own, released once the scan has read it. Returns the
// scratch array of entering states for the caller to release after the main pass, or null (`out`).
template <int D, int NWG, int NSB, int NS, class X>
float* segmentStatesW(Context& c, LightningDims d, Params<X>& p, const float* S0, StateIo io, float* out) {
  using W = WCfg<D, NWG, NSB, NS>;
  // The instance launched below sets its own shared-memory limit (stateCtasPerSm) before its launch.
  bool wide = false;
  int perSm = 0;
  constexpr int WNWG = D / 64;  // the wide phase A's warpgroups: one 64-row state tile each
  if constexpr (D >= 128) wide = wideState(D, d.E);
  if constexpr (D >= 128) perSm = wide ? stateCtasPerSm<D, WNWG, NSB, X, 2>() : stateCtasPerSm<D, NWG, NSB, X>();
  else perSm = stateCtasPerSm<D, NWG, NSB, X>();
  const int sub = subSegments(c, d, Plan{p.nseg, p.chunksPerSeg, 0}, perSm, wide ? 2 : 1);
  const int n = (p.nseg - 1) * sub + 1;  // the sub-segments before the last segment, and the last segment
  const size_t stateBytes = (size_t)D * d.E * sizeof(float);
  float* L = (float*)c.scratch((size_t)d.BH() * n * stateBytes);
  float* entering = out ? out : sub > 1 ? (float*)c.scratch((size_t)d.BH() * p.nseg * stateBytes) : L;
  Params<X> a = p;
  a.Sin = nullptr;
  a.Sout = L;
  a.nseg = n;
  a.chunksPerSeg = p.chunksPerSeg / sub;
  TileMaps tm{};
  const bool tma = newStatePass() && tileMap<X>(tm.k, a.k, D, d) && tileMap<X>(tm.v, a.v, d.E, d);
  if (!newStatePass()) {
    wgKernel<D, NWG, NSB, NS, X, true><<<dim3(d.E / ET, d.BH(), p.nseg), W::THREADS, W::SMEM, c.stream>>>(a, tm);
  } else if (wide) {
    if constexpr (D >= 128) {
      using WS = WSCfg<D, WNWG, NSB, 2>;
      const dim3 grid(d.E / (2 * ET), d.BH(), n - 1);
      if (tma) wgStateKernel<D, WNWG, NSB, X, 2, true><<<grid, WCfg<D, WNWG, NSB>::THREADS, WS::SMEM_TMA, c.stream>>>(a, tm);
      else wgStateKernel<D, WNWG, NSB, X, 2><<<grid, WCfg<D, WNWG, NSB>::THREADS, WS::SMEM, c.stream>>>(a, tm);
    }
  } else {
    using WS = WSCfg<D, NWG, NSB>;
    const dim3 grid(d.E / ET, d.BH(), n - 1);
    if (tma) wgStateKernel<D, NWG, NSB, X, 1, true><<<grid, W::THREADS, WS::SMEM_TMA, c.stream>>>(a, tm);
    else wgStateKernel<D, NWG, NSB, X><<<grid, W::THREADS, WS::SMEM, c.stream>>>(a, tm);
  }
  LTS_CHECK(cudaGetLastError(), "lightning v6 segment states launch");
  segmentScanKernel<<<scanGrid(D * d.E, d.BH()), SCAN_THREADS, 0, c.stream>>>(L, entering, S0, io.inT, io.inPower, n, sub, a.chunksPerSeg * C, d.T,
                                                                          D * d.E, d.E, d.H, p.slopes);
  LTS_CHECK(cudaGetLastError(), "lightning v6 segment scan launch");
  if (entering != L) c.release(L);  // later work on the stream reuses it only after the scan
  p.Sin = entering;
  p.sinT = false, p.sinPower = 0;
  return entering == out ? nullptr : entering;
}

// dst (BH, X, Y) from src (BH, Y, X): see prepareStateKernel.
void prepare(Context& c, LightningDims d, const float* src, float* dst, int Y, int X, bool transpose, int power, const float* slopes) {
  prepareStateKernel<<<dim3((X * Y + 255) / 256, d.BH()), 256, 0, c.stream>>>(src, dst, Y, X, transpose, power, d.H, slopes);
  LTS_CHECK(cudaGetLastError(), "lightning v5 state preparation launch");
}

// One causal pass on the wgmma loop (see passT).
template <int D, int NWG, int NSB, int NS, class X>
void passW(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o, float* Sfinal,
           bool reverse, StateIo io, Segments seg) {
  using W = WCfg<D, NWG, NSB, NS>;
  Plan pl = segmentPlan(d, plan(c, d, configureW<D, NWG, NSB, NS, X>()), seg);
  Params<X> p{(const X*)q, (const X*)k, (const X*)v, slopes, S0, (X*)o, Sfinal, d.T, d.E, d.H, pl.nseg, pl.chunksPerSeg, reverse,
              io.inT, io.inPower, io.outPower};
  float* L = nullptr;
  if (readsSegments(pl, seg)) {
    p.Sin = seg.inT;
    p.sinT = true, p.sinPower = 0;
  } else if (pl.nseg > 1) {
    L = segmentStatesW<D, NWG, NSB, NS, X>(c, d, p, S0, io, seg.out);
  } else if (seg.out) {
    prepare(c, d, S0, seg.out, D, d.E, false, 0, slopes);  // unsplit: the one state, entering token 0 (S0 or zeros)
  }
  TileMaps tm{};
  const dim3 grid(d.E / ET, d.BH(), pl.nseg);
  if (!tileMaps<X>(tm, d, q, k, v)) wgKernel<D, NWG, NSB, NS, X, false><<<grid, W::THREADS, W::SMEM, c.stream>>>(p, tm);
  else if (reverse) wgKernel<D, NWG, NSB, NS, X, false, false, true, true><<<grid, W::THREADS, W::SMEM_TMA, c.stream>>>(p, tm);
  else wgKernel<D, NWG, NSB, NS, X, false, false, true><<<grid, W::THREADS, W::SMEM_TMA, c.stream>>>(p, tm);
  LTS_CHECK(cudaGetLastError(), "lightning v6 forward launch");
  if (L) c.release(L);
}

// The backward's dv and dk passes (D = E) in one launch. Both run in reversed time, the dv pass over
// (k, q, dO) and the dk pass over (v, dO, q): the dk pass's state is the transpose of the dv pass's at
// every step (Σ dOᵀ q against Σ qᵀ dO, from λ⁻¹ dS_final and its transpose), so the sequence split's
// segment states are made once, by the dv pass, and the dk CTAs read them transposed. The grid is
// (2·E/64, BH, nseg): the dv and dk CTAs of one (b·h, segment) are neighbours, start together and
// read the same chunks of q and dO at about the same time, so one of the two reads comes from L2.
template <int D, int NWG, int NSB, int NS, class X>
void pairW(Context& c, LightningDims d, const void* q, const void* k, const void* v, const void* dO, const float* slopes, const float* dSf,
           void* dk, void* dv, float* dS0) {
  using W = WCfg<D, NWG, NSB, NS>;
  Plan pl = plan(c, d, configureW<D, NWG, NSB, NS, X>(), 2);
  const int slices = d.E / ET;
  const StateIo io{false, -1, 1};  // the dv pass's: from λ⁻¹ dS_final, dS0 = λ G_0
  Params<X> p{(const X*)k, (const X*)q, (const X*)dO, slopes, dSf, (X*)dv, dS0, d.T, d.E, d.H, pl.nseg, pl.chunksPerSeg, true,
              io.inT, io.inPower, io.outPower};
  float* L = pl.nseg > 1 ? segmentStatesW<D, NWG, NSB, NS, X>(c, d, p, dSf, io, nullptr) : nullptr;
  p.q2 = (const X*)v, p.k2 = (const X*)dO, p.v2 = (const X*)q, p.o2 = (X*)dk;
  p.sinT2 = true;
  p.pairSlices = slices;
  TileMaps tm{};
  const dim3 grid(2 * slices, d.BH(), pl.nseg);
  if (tileMaps<X>(tm, d, p.q, p.k, p.v) && tileMap<X>(tm.q2, p.q2, d.D, d) && tileMap<X>(tm.k2, p.k2, d.D, d) && tileMap<X>(tm.v2, p.v2, d.E, d))
    wgKernel<D, NWG, NSB, NS, X, false, true, true, true><<<grid, W::THREADS, W::SMEM_TMA, c.stream>>>(p, tm);
  else
    wgKernel<D, NWG, NSB, NS, X, false, true><<<grid, W::THREADS, W::SMEM, c.stream>>>(p, tm);
  LTS_CHECK(cudaGetLastError(), "lightning v6 dv/dk pair launch");
  if (L) c.release(L);
}

// One causal pass over (q, k, v) of widths (d.D, d.D, d.E) from state S0 (BH, D, E) or zero: the
// three launches (segment states, scan, full loop) where the batch is too small, else one.
template <int D, class X>
void passT(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o, float* Sfinal,
           bool reverse, StateIo io, Segments seg) {
  if (useV6(D)) {
    if constexpr (D == 256) {
      passW<256, 2, 2, 2, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg);
    } else if constexpr (D == 128) {
      if (wg128() == 2) passW<128, 2, 2, 2, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg);
      else passW<128, 1, 1, 2, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg);
    } else {
      switch (stages64<X>(c, d)) {
        case 3: passW<64, 1, 2, 3, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg); break;
        case 4: passW<64, 1, 2, 4, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg); break;
        case 6: passW<64, 1, 2, 6, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg); break;
        default: passW<64, 1, 2, 2, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg); break;
      }
    }
    return;
  }
  using K = Cfg<D>;
  Plan pl = segmentPlan(d, plan(c, d, configure<D, X>()), seg);
  Params<X> p{(const X*)q, (const X*)k, (const X*)v, slopes, S0, (X*)o, Sfinal, d.T, d.E, d.H, pl.nseg, pl.chunksPerSeg, reverse,
              io.inT, io.inPower, io.outPower};
  dim3 grid(d.E / ET, d.BH(), pl.nseg);
  float* L = nullptr;
  if (readsSegments(pl, seg)) {
    p.Sin = seg.inT;
    p.sinT = true, p.sinPower = 0;
  } else if (pl.nseg > 1) {
    L = (float*)c.scratch((size_t)d.BH() * pl.nseg * D * d.E * sizeof(float));
    Params<X> a = p;
    a.Sin = nullptr;
    a.Sout = L;
    forwardKernel<D, X, true><<<grid, K::THREADS, K::SMEM, c.stream>>>(a);
    LTS_CHECK(cudaGetLastError(), "lightning v5 segment states launch");
    float* entering = seg.out ? seg.out : L;
    segmentScanKernel<<<scanGrid(D * d.E, d.BH()), SCAN_THREADS, 0, c.stream>>>(L, entering, S0, io.inT, io.inPower, pl.nseg, 1, pl.chunksPerSeg * C,
                                                                            d.T, D * d.E, d.E, d.H, slopes);
    LTS_CHECK(cudaGetLastError(), "lightning v5 segment scan launch");
    if (seg.out) c.release(L), L = nullptr;  // later work on the stream reuses it only after the scan
    p.Sin = entering;
    p.sinT = false, p.sinPower = 0;
  } else if (seg.out) {
    prepare(c, d, S0, seg.out, D, d.E, false, 0, slopes);  // unsplit: the one state, entering token 0 (S0 or zeros)
  }
  forwardKernel<D, X, false><<<grid, K::THREADS, K::SMEM, c.stream>>>(p);
  LTS_CHECK(cudaGetLastError(), "lightning v5 forward launch");
  if (L) c.release(L);
}

template <class X>
void passX(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o, float* Sfinal,
           bool reverse, StateIo io, Segments seg) {
  switch (d.D) {
    case 64: passT<64, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg); break;
    case 128: passT<128, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg); break;
    case 256: passT<256, X>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg); break;
    default: throw std::runtime_error("lightning v5: unsupported key width " + std::to_string(d.D));
  }
}

void pass(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o,
          float* Sfinal, bool reverse, StateIo io = {}, Segments seg = {}) {
  if (dt == F16) passX<__half>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg);
  else passX<__nv_bfloat16>(c, d, q, k, v, slopes, S0, o, Sfinal, reverse, io, seg);
}

// The dv and dk passes in one launch (pairW) where D = E ∈ {64, 128} on version 6;
// LIGHTNING_CUDA_LA_PAIR=0 (read once) runs them as two launches, for comparison.
bool pairOn() {
  static const bool on = [] {
    const char* v = getenv("LIGHTNING_CUDA_LA_PAIR");
    return !(v && atoi(v) == 0);
  }();
  return on;
}

// D = E = 256 (no TNL shape) keeps two launches: the pair there has not been run on a GPU.
bool pairApplies(LightningDims d) { return d.D == d.E && d.D <= 128 && useV6(d.D) && pairOn(); }

template <class X>
void pairX(Context& c, LightningDims d, const void* q, const void* k, const void* v, const void* dO, const float* slopes, const float* dSf, void* dk,
           void* dv, float* dS0) {
  switch (d.D) {
    case 128:
      if (wg128() == 2) pairW<128, 2, 2, 2, X>(c, d, q, k, v, dO, slopes, dSf, dk, dv, dS0);
      else pairW<128, 1, 1, 2, X>(c, d, q, k, v, dO, slopes, dSf, dk, dv, dS0);
      break;
    default:
      switch (stages64<X>(c, d, 2)) {
        case 3: pairW<64, 1, 2, 3, X>(c, d, q, k, v, dO, slopes, dSf, dk, dv, dS0); break;
        case 4: pairW<64, 1, 2, 4, X>(c, d, q, k, v, dO, slopes, dSf, dk, dv, dS0); break;
        case 6: pairW<64, 1, 2, 6, X>(c, d, q, k, v, dO, slopes, dSf, dk, dv, dS0); break;
        default: pairW<64, 1, 2, 2, X>(c, d, q, k, v, dO, slopes, dSf, dk, dv, dS0); break;
      }
  }
}


std::string passPlan(Context& c, int dt, LightningDims d, int passes = 1) {
  Choice ch = choice(c, dt, d);
  Plan pl = plan(c, d, ch.ctasPerSm, passes);
  char sub[80] = "";
  if (ch.version == 6 && pl.nseg > 1) {
    const bool wide = wideState(d.D, d.E) && newStatePass();
    const int k = subSegments(c, d, pl, dt == F16 ? stateCtasPerSmX<__half>(d.D, d.E) : stateCtasPerSmX<__nv_bfloat16>(d.D, d.E), wide ? 2 : 1);
    if (k > 1 || wide)
      snprintf(sub, sizeof sub, " (phase A: %d sub-segment%s of %d chunks%s)", (pl.nseg - 1) * k, (pl.nseg - 1) * k > 1 ? "s" : "", pl.chunksPerSeg / k,
               wide ? ", 2 E-slices a CTA" : "");
  }
  char buf[300];
  snprintf(buf, sizeof buf, "%s D=%d E=%d: %d E-slice%s x %d segment%s%s, %d warps, %d CTA%s/SM, %d stages%s", ch.version == 6 ? "v6 wgmma" : "v5 mma.sync",
           d.D, d.E, d.E / ET, d.E / ET > 1 ? "s" : "", pl.nseg, pl.nseg > 1 ? "s" : "", sub, ch.warps, pl.ctasPerSm, pl.ctasPerSm > 1 ? "s" : "",
           ch.stages, ch.version == 6 && tmaOn() ? ", TMA loads" : "");
  return buf;
}

}  // namespace

bool lightningForwardV5Supported(int dt, LightningDims d) { return (dt == BF16 || dt == F16) && d.T > 0 && widthOk(d.D) && d.E > 0 && d.E % ET == 0; }
bool lightningBackwardV5Supported(int dt, LightningDims d) { return (dt == BF16 || dt == F16) && d.T > 0 && widthOk(d.D) && widthOk(d.E); }

std::string lightningV5Describe(Context& c, int dt, LightningDims d, bool backward) {
  std::string s = std::string("tensor cores (") + (dt == F16 ? "f16" : "bf16") + ", ";
  if (!backward) return s + passPlan(c, dt, d) + ")";
  LightningDims sw{d.B, d.H, d.T, d.E, d.D};
  const int L = lightningSegmentTokensV5(c, dt, d);
  const std::string dq = "dq pass " + passPlan(c, dt, sw) + (L ? ", its phase A and scan skipped when given the forward's segment states (" + std::to_string(L) + " tokens)" : "");
  if (pairApplies(d)) return s + dq + "; dv and dk passes in one launch " + passPlan(c, dt, d, 2) + ")";
  return s + dq + "; dv pass " + passPlan(c, dt, d) + "; dk pass " + passPlan(c, dt, sw) + ")";
}

void lightningForwardV5(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal, float* segStates, int segTokens) {
  if (segStates && (segTokens <= 0 || segTokens % C))
    throw std::runtime_error("lightning v5: segment states every " + std::to_string(segTokens) + " tokens (expected a positive multiple of 64)");
  pass(c, dt, d, q, k, v, slopes, S0, o, Sfinal, false, {}, Segments{segStates, nullptr, segStates ? segTokens : 0});
}

int lightningSegmentTokensV5(Context& c, int dt, LightningDims d) {
  if (!lightningForwardV5Supported(dt, d) || !lightningBackwardV5Supported(dt, d)) return 0;
  LightningDims sw{d.B, d.H, d.T, d.E, d.D};  // the dq pass: keys E wide
  const Plan fwd = plan(c, d, choice(c, dt, d).ctasPerSm), dq = plan(c, sw, choice(c, dt, sw).ctasPerSm);
  if (fwd.nseg < 2 || dq.nseg != fwd.nseg || dq.chunksPerSeg != fwd.chunksPerSeg) return 0;
  return fwd.chunksPerSeg * C;
}

// The backward as three forward passes, from the token relations of docs/ALGORITHM.md B.2:
//   dq_t = dO_t S_tᵀ:  forward over (dO, v, k) (widths E, E, D) from S0ᵀ; its state is Sᵀ = Σ vᵀ k.
//   dv_t = k_t G_t, dk_t = v_t G_tᵀ with G_t = Σ_{s≥t} λ^{s−t} q_sᵀ dO_s + λ^{T−1−t} dS_final: in reversed
//   time these are forwards over (k, q, dO) (widths D, D, E) and (v, dO, q) (widths E, E, D) from
//   λ^{−1} dS_final (transposed for dk).
//   dS0 = λ G_0 = λ · (the dv pass's final state).
// The passes read S0 and dS_final as they are stored (transposed and scaled as they load them) and the
// dv pass stores λ G_0 as dS0; the dq and dk passes store no final state. At B·H = 1,024 (T = 1,024 of
// the benchmark shape) each state array is 64 MB, so a separate pass over the states would cost
// ~0.12 ms of a ~1.45 ms backward. LIGHTNING_CUDA_LA_PREPARE=1 (read once) runs those separate passes
// instead, the arrangement these replaced, for comparison. Where D = E on version 6 the dv and dk
// passes run as one launch (pairW). The forward's segment states (segStates, every segTokens tokens)
// are the dq pass's, transposed: it reads them where its split has the same segments.
void lightningBackwardV5(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0, const float* segStates, int segTokens) {
  const int D = d.D, E = d.E;
  LightningDims sw{d.B, d.H, d.T, E, D};  // the passes whose keys are E wide
  static const bool separate = [] {
    const char* f = getenv("LIGHTNING_CUDA_LA_PREPARE");
    return f && f[0] == '1';
  }();
  if (!separate) {
    pass(c, dt, sw, dO, v, k, slopes, S0, dq, nullptr, false, {true, 0, 0}, Segments{nullptr, segStates, segStates ? segTokens : 0});
    if (pairApplies(d)) {
      if (dt == F16) pairX<__half>(c, d, q, k, v, dO, slopes, dSf, dk, dv, dS0);
      else pairX<__nv_bfloat16>(c, d, q, k, v, dO, slopes, dSf, dk, dv, dS0);
      return;
    }
    pass(c, dt, d, k, q, dO, slopes, dSf, dv, dS0, true, {false, -1, 1});
    pass(c, dt, sw, v, dO, q, slopes, dSf, dk, nullptr, true, {true, -1, 0});
    return;
  }
  size_t bytes = (size_t)d.BH() * D * E * sizeof(float);
  float *s0t = (float*)c.scratch(bytes), *g = (float*)c.scratch(bytes), *gt = (float*)c.scratch(bytes), *gfin = (float*)c.scratch(bytes);
  if (S0) prepare(c, d, S0, s0t, D, E, true, 0, slopes);  // (E, D)
  pass(c, dt, sw, dO, v, k, slopes, S0 ? s0t : nullptr, dq, nullptr, false);
  prepare(c, d, dSf, g, D, E, false, -1, slopes);  // (D, E)
  prepare(c, d, dSf, gt, D, E, true, -1, slopes);  // (E, D)
  pass(c, dt, d, k, q, dO, slopes, g, dv, gfin, true);
  pass(c, dt, sw, v, dO, q, slopes, gt, dk, nullptr, true);
  prepare(c, d, gfin, dS0, D, E, false, 1, slopes);
  for (float* x : {s0t, g, gt, gfin}) c.release(x);
}

}  // namespace lts
