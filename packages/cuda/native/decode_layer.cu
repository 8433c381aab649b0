// `decodeLayer`: a whole TNL layer of a decode step at 1–4 rows in one persistent kernel.
//
// The chain it replaces is five kernels (qkvuProjection, lightningStep, three fusedLinear; about
// 26 µs a layer at the 436M shape against ~7 µs of weight traffic): each one's launch, ramp-up and
// tail cost 3–4 µs, and programmatic dependent launch hides little of it because each fills the
// SMs. Here one block per SM runs the five stages of the layer, separated by grid-wide barriers:
//
//   1. qkvu = srms(h)·Wqkvuᵀ, split into q, k (φ, LRPE), v, u as splitQkvu writes them;
//   2. the Lightning step: S' = λ·S + kᵀv, o = q·S' (lightning.cu's arithmetic), per (row, head,
//      16 columns of E);
//   3. h1 = h + (srms(o) ⊙ u)·Woutᵀ;
//   4. g = (srms(h1)·W1ᵀ) ⊙ (srms(h1)·W2ᵀ);
//   5. h2 = h1 + g·W3ᵀ.
//
// Weights first: every block owns a contiguous, balanced share of each stage's output rows, and at
// entry, before it waits for the kernel before (weights are never what an earlier kernel writes),
// it starts copies of all its weight rows of the layer into shared memory in stage order: bulk
// copies on sm_90+ (warp 0 issues them, each stage's complete on an mbarrier of its own), cp.async
// before (one commit group per stage). The whole layer streams from memory from the first cycle while the
// stages wait on barriers; a stage waits only for its own group.
//
// Streamed mode (RESIDENT false: where a block's share does not fit its shared memory, or always
// under LIGHTNING_CUDA_DECODE_LAYER=stream): each stage reads its rows from global memory (16-byte
// loads without a place in L1, as gemv.cu's), and the layers overlap instead. A block is small
// (its staged rows in shared memory, 256 threads of at most 128 registers) so that two fit an SM,
// and it releases the next kernel at entry (griddepcontrol.launch_dependents): the next layer's
// blocks land beside this layer's, ask L2 for their whole weight shares in stage order (bulk
// prefetches, before their griddepcontrol.wait: weights are never what an earlier kernel writes),
// then wait for this grid to finish. So a layer's stages read their weights from L2, fetched while
// the layer before computed, and its launch and ramp-up are hidden too. A shape whose staged rows
// (B·max(M, H·hd, G) elements) do not fit either is declined (src/kernels.ts then runs the chain).
//
// Each stage stages its input rows (h, o, h1 or g: B·K elements, written by other blocks, so read
// through L2) in shared memory, norms them there with the bits of the chain's norm (gemv_device.cuh),
// and computes its rows' dot products from shared memory: one warp per row (pair of rows for the
// GLU's product), f32 sums, the epilogue of fusedLinear (residual added in f32, the product of two
// sums in f32, one rounding to T) or of qkvuProjection (gemv_split.cuh). Intermediates are stored
// rounded to T where the chain stores them (q, k, v, u, o, h1, g), so the errors against float64
// are the chain's; the bits differ where sums are taken in another order.
//
// The grid barrier is one word in device memory: a block arrives (after a fence that makes its
// writes visible GPU-wide) with one atomic add, chosen so that the word's top bit flips exactly when
// the last block arrives, and waits for that flip. Its count is back to 0 after each barrier, so
// eager calls and graph replays need no reset. It is a module global, one per device: a layer takes
// every SM, so two never run at once on one device (on two streams they could not be co-resident
// anyway).
//
// Co-residency: grid = SM count, launched only where the occupancy calculator says a block fits an
// SM. A block waits for others only after griddepcontrol.wait (the kernel before has finished, and
// its blocks have left), and the kernel after launches only once every block of this grid has
// executed launch_dependents (or exited), that is, once all of them are resident: whether the
// trigger is at entry or after the last barrier, nothing launched later can take the room a block
// of this grid still needs, and the blocks of kernels before only finish, never wait.
// LIGHTNING_CUDA_DECODE_LAYER_COOP=1 launches with the cooperative attribute as well (the driver
// then checks co-residency), for experiments.
//
// LIGHTNING_CUDA_DECODE_LAYER (read at each call): 1 resident where the shares fit, else streamed;
// =resident declines the shapes that would stream; =stream streams every shape; unset or =0
// declines every call (the chain runs: the default, measured faster on the H200). _TRIGGER=entry|wait|end moves the release of the next
// kernel (default: entry streamed, end resident); _BARRIER=atomic|red picks the grid barrier's
// arrival; _PREFETCH=none|lines|bulk and _PREFETCH_MB=n how much of a streamed layer is asked of L2
// ahead, and how. LIGHTNING_CUDA_DECODE_LAYER_COPY=cp.async (read once) brings resident weights by
// cp.async on sm_90+ too. Both modes give the same bits: their sums are the same in the same order
// (stage 2 lays its work out for 512 threads whatever the block has). A block that waits at a grid
// barrier for ~10 s traps (the call fails) rather than hang the device. LIGHTNING_CUDA_DEBUG=1
// prints which path ran, with its launch, once per (dtype, shape, path), to stderr.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <set>
#include <string>

#include "device.cuh"
#include "gemv_device.cuh"
#include "gemv_split.cuh"

namespace lts {
namespace {

// Stage timing for bench/decode_layer_bench.cu, compiled only there (-DLTS_DECODE_LAYER_TRACE; the
// addon has none of it): thread 0 of each block stamps clock64 at TRACE_POINTS points of the layer
// (TracePoint) and the global timer at entry and exit, for the launches numbered
// [traceFrom, traceFrom + TRACE_LAUNCHES) counting from the first launch of the process.
#ifdef LTS_DECODE_LAYER_TRACE
enum TracePoint : int {
  TP_ENTRY, TP_WAITED,
  TP_S1_NORMED, TP_S1_WEIGHTS, TP_S1_DONE, TP_B1,
  TP_S2_DONE, TP_B2,
  TP_S3_NORMED, TP_S3_WEIGHTS, TP_S3_DONE, TP_B3,
  TP_S4_NORMED, TP_S4_WEIGHTS, TP_S4_DONE, TP_B4,
  TP_S5_WEIGHTS, TP_END, TP_GT_ENTRY, TP_GT_END, TRACE_POINTS
};
constexpr int TRACE_LAUNCHES = 96, TRACE_BLOCKS = 256;
__device__ long long traceStamps[TRACE_LAUNCHES][TRACE_BLOCKS][TRACE_POINTS];
__device__ unsigned traceLaunches[TRACE_BLOCKS];
__device__ int traceFrom;
__device__ __forceinline__ long long globalTimer() {
  long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}
// Each launch of decodeLayerKernel takes the block's next number.
#define TRACE_LAYER                                                               \
  traceSlot = -1;                                                                 \
  if (threadIdx.x == 0 && blockIdx.x < TRACE_BLOCKS) {                            \
    const int n = (int)(traceLaunches[blockIdx.x]++) - traceFrom;                 \
    if (n >= 0 && n < TRACE_LAUNCHES) traceSlot = n;                              \
  }                                                                               \
  TRACE_AT(TP_GT_ENTRY, globalTimer());                                           \
  TRACE_AT(TP_ENTRY, clock64())
#define TRACE_AT(point, value) \
  if (traceSlot >= 0) traceStamps[traceSlot][blockIdx.x][point] = (value)
#define TRACE(point) TRACE_AT(point, clock64())
#define TRACE_DECL int traceSlot = -1
#define TRACE_SLOT traceSlot
#else
#define TRACE_DECL
#define TRACE_SLOT 0
#define TRACE_LAYER
#define TRACE(point)
#define TRACE_AT(point, value)
#endif

// Threads of a block: 512 resident (one block an SM), 256 streaming (two blocks an SM, 128 registers
// a thread each).
template <bool RESIDENT>
constexpr int threadsOf() {
  return RESIDENT ? 512 : 256;
}
// Stage 2 is laid out for 512 threads whatever the block has (a block of fewer plays several of
// them), so that its sums, hence its bits, are the same in both modes.
constexpr int VT = 512, VW = VT / 32;
constexpr int MAX_ROWS = 4;            // rows of h (tokens) the kernel takes
constexpr int EL = 8;                  // elements of T (f16, bf16) in a 16-byte pack
constexpr int CB = 16;                 // columns of E per stage-2 item: 4 lanes of float4
constexpr int ROW_GROUPS = VT / 4;     // stage-2 row groups (threads with the same 4 columns)

// The grid barrier's word: its low 31 bits count arrivals (0 between barriers), its top bit flips
// at each barrier.
__device__ unsigned barrierWord;

__device__ __forceinline__ unsigned loadRelaxed(const unsigned* p) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ unsigned loadAcquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Every block of the grid reaches this point before any leaves it; the writes of each before it
// are visible to all after it. One atomic a block: block 0 adds 2³¹ − (blocks − 1), every other
// block 1, so the word gains exactly 2³¹ once all have arrived (its top bit flips, its count is 0
// again) and never before (short of the last arrival the sum borrows the flip back, or has not
// made it). Thread 0 of each block holds `phase`, the top bit the word had when the block last
// left a barrier (read at entry, once the kernel before has finished: no flip can happen before
// this block's own arrival), and waits for the flip away from it. Two ways to arrive:
//   - ATOMIC: a full fence, then an atomic add; the phase is taken from the old value it returns
//     (two L2 round trips before the polling starts);
//   - RED: a release reduction that returns nothing (the release orders the block's writes, which
//     the __syncthreads before made thread 0's to order), so polling starts at once.
// Either way the polling is acquire loads of the word by thread 0, then a __syncthreads.
enum BarrierKind : int { BARRIER_ATOMIC = 0, BARRIER_RED = 1 };

__device__ __forceinline__ void redRelease(unsigned* p, unsigned v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ void gridBarrier(int kind, unsigned& phase) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
    if (kind == BARRIER_RED) {
      redRelease(&barrierWord, add);
      phase ^= 0x80000000u;
    } else {
      __threadfence();
      phase = (atomicAdd(&barrierWord, add) & 0x80000000u) ^ 0x80000000u;
    }
    // A block that never arrives (a launch whose blocks were not all resident) would hang the
    // device: after ~10 s of waiting the kernel traps instead, which fails the call with an error.
    const long long start = clock64();
    while ((loadAcquire(&barrierWord) & 0x80000000u) != phase)
      if (clock64() - start > (1ll << 34)) __trap();
    if (kind != BARRIER_RED) __threadfence();
  }
  __syncthreads();
}

// On sm_90+ a block's weights come by bulk copies (the TMA engine): warp 0 issues a few dozen
// instructions for the whole layer, each completing its bytes on the mbarrier of its stage, so no
// thread is held issuing copies. Before sm_90, cp.async of 16 bytes a thread, one commit group per
// stage (26 copies a thread at the 436M shape).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define LTS_DECODE_LAYER_BULK 1
#endif
constexpr int STAGES_COPIED = 4;  // commit groups or mbarriers: qkvu; out; l1 and l2; l3

#ifdef LTS_DECODE_LAYER_BULK
constexpr unsigned BULK_PIECE = 16384;  // bytes of one bulk copy

__device__ __forceinline__ unsigned smemAddress(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbarrierInit(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smemAddress(bar)), "r"(count) : "memory");
}
// The initialised mbarriers visible to the async proxy (the bulk copies).
__device__ __forceinline__ void fenceMbarrierInit() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
__device__ __forceinline__ void mbarrierExpect(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smemAddress(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarrierWait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n\t.reg .pred done;\n"
      "WAIT:\n\t"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t"
      "@!done bra WAIT;\n\t}" ::"r"(smemAddress(bar)),
      "r"(parity)
      : "memory");
}
// bytes (a multiple of 16, both ends 16-byte aligned) from global into shared memory, in pieces
// striped over the lanes of the calling warp, completing on bar.
__device__ __forceinline__ void bulkCopy(void* dst, const void* src, int64_t bytes, uint64_t* bar, int lane) {
  for (int64_t off = (int64_t)lane * BULK_PIECE; off < bytes; off += 32 * (int64_t)BULK_PIECE) {
    const unsigned n = bytes - off < BULK_PIECE ? (unsigned)(bytes - off) : BULK_PIECE;
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smemAddress((char*)dst + off)),
                 "l"((const char*)src + off), "r"(n), "r"(smemAddress(bar))
                 : "memory");
  }
}
// bytes (a multiple of 16, 16-byte aligned) of global memory into L2, in pieces striped over the
// lanes of the calling warp.
__device__ __forceinline__ void bulkPrefetchL2(const void* src, int64_t bytes, int lane) {
  for (int64_t off = (int64_t)lane * BULK_PIECE; off < bytes; off += 32 * (int64_t)BULK_PIECE) {
    const unsigned n = bytes - off < BULK_PIECE ? (unsigned)(bytes - off) : BULK_PIECE;
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"((const char*)src + off), "r"(n) : "memory");
  }
}
#endif
// cp.async of 16 bytes, global → shared, through L2 only.
__device__ __forceinline__ void copyAsync16(void* dst, const void* src) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
}
__device__ __forceinline__ void commitGroup() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// n elements of T (a multiple of EL, both ends 16-byte aligned) from global into shared memory.
template <int NT, class T>
__device__ __forceinline__ void copyRowsAsync(T* dst, const T* src, int64_t n) {
  uint4* d = reinterpret_cast<uint4*>(dst);
  const uint4* s = reinterpret_cast<const uint4*>(src);
  for (int64_t i = threadIdx.x; i < n / EL; i += NT) copyAsync16(d + i, s + i);
}

// Every thread: stage S's weights are in shared memory (its mbarrier's first phase, or its commit
// group and those before it), visible to the block after the __syncthreads that follows.
template <int S>
__device__ __forceinline__ void weightsLanded(uint64_t* ready, bool bulk) {
#ifdef LTS_DECODE_LAYER_BULK
  if (bulk) {
    mbarrierWait(&ready[S], 0);
    return;
  }
#endif
  asm volatile("cp.async.wait_group %0;" ::"n"(STAGES_COPIED - 1 - S) : "memory");
}

// The B·K elements of rows written by other blocks (or the kernel before) into shared memory.
template <int NT, class T>
__device__ __forceinline__ void stageRows(T* dst, const T* src, int n) {
  uint4* d = reinterpret_cast<uint4*>(dst);
  const uint4* s = reinterpret_cast<const uint4*>(src);
  for (int i = threadIdx.x; i < n / EL; i += NT) d[i] = __ldcg(s + i);
}

// Rows [first, first + count) of a stage's n rows that block b of `blocks` owns.
struct Share {
  int first, count;
};
__device__ __forceinline__ Share shareOf(int n, int b, int blocks) {
  const int first = (int)((int64_t)n * b / blocks), last = (int)((int64_t)n * (b + 1) / blocks);
  return {first, last - first};
}

template <class T>
struct LayerArgs {
  const T *h, *wq, *wo, *w1, *w2, *w3;  // h (B, M); wq (4·hid, M); wo (M, hid); w1, w2 (G, M); w3 (M, G)
  const float* state;                   // (B, H, D, E)
  const float* slopes;                  // (H)
  T* y;                                 // h2 (B, M)
  float* next;                          // (B, H, D, E), may be state
  SplitArgs<T> split;                   // q, k (B, H, D), v (B, H, E), u (B, hid) in the scratch
  T *o, *h1, *g;                        // (B, hid), (B, M), (B, G) in the scratch
  int M, G, H, D, E;
  // Element offsets in dynamic shared memory: x (the stage's staged rows), then the weight shares
  // (RESIDENT only).
  int offQ, offO, offW1, offW2, offW3;
  // Streaming: bytes of its shares (in stage order) a block asks L2 for before it waits, and how.
  int64_t prefetchBytes;
  int prefetch;  // Prefetch
  int trigger;   // Trigger: where the kernel after is released
  int barrier;   // BarrierKind
  bool bulk;     // resident weights by bulk copies (sm_90+), else by cp.async
  float eps;
};

// Where a block executes griddepcontrol.launch_dependents. The kernel after launches once every
// block of this one has (or has exited), so every block of this grid is resident by then: the grid
// barrier's co-residency holds whichever point is taken, and the kernel after reads what this one
// writes only after its griddepcontrol.wait, which waits for this grid's completion and memory
// flush wherever the trigger was.
//   ENTRY: first thing, so the next layer's blocks take the SMs' free room while this layer runs
//     and ask L2 for their weights before they wait (streamed mode, two blocks fit an SM);
//   WAIT: right after this block's griddepcontrol.wait (at most two layers in flight);
//   END: after the last grid barrier (resident mode: no block of the next fits beside this one).
enum Trigger : int { TRIGGER_ENTRY = 0, TRIGGER_WAIT = 1, TRIGGER_END = 2 };
// How a streaming block asks L2 for its shares before it waits: not at all, 128-byte lines spread
// over the threads (prefetch.global.L2), or bulk prefetches issued by warp 0 (sm_90+, the TMA
// engine; lines before sm_90).
enum Prefetch : int { PREFETCH_NONE = 0, PREFETCH_LINES = 1, PREFETCH_BULK = 2 };

// A 16-byte pack of weights: from shared memory (RESIDENT), or streamed from global memory without
// a place in L1.
template <bool RESIDENT>
__device__ __forceinline__ uint4 weightPack(const uint4* p) {
  if constexpr (RESIDENT) return *p;
  else return loadStreaming(p);
}

// The dot products of `rows` weight rows (w, and w2 for a product; in shared memory where RESIDENT,
// else in global memory) with the B rows of x staged in shared memory, K wide: one warp per row,
// each lane 16-byte packs lane, lane + 32, … (f32 fmaf in that order), then a butterfly over the
// warp. store(b, r, sum, sum2) on lane 0.
//
// Streaming, a warp takes R rows at once (r, r + NW, …: each with sums of its own, in the order
// above), so that its loads of all of them are in flight together: from L2 a block of 8 warps
// needs more bytes in flight than one row a warp gives (a 1,024-wide row is 4 packs a lane). A
// product already reads two rows at once.
template <class T, int B, bool PRODUCT, bool RESIDENT, class Store>
__device__ __forceinline__ void rowDots(const T* w, const T* w2, const T* xs, int rows, int K, Store store) {
  constexpr int NW = threadsOf<RESIDENT>() / 32;
  constexpr int R = RESIDENT || PRODUCT ? 1 : 2;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int kv = K / EL;
  const uint4* xp = reinterpret_cast<const uint4*>(xs);
  for (int r0 = warp; r0 < rows; r0 += NW * R) {
    const uint4* wr[R];
    bool live[R];  // warp-uniform
#pragma unroll
    for (int j = 0; j < R; j++) {
      live[j] = r0 + j * NW < rows;
      wr[j] = reinterpret_cast<const uint4*>(w + (int64_t)(r0 + j * NW) * K);
    }
    const uint4* wr2 = reinterpret_cast<const uint4*>(PRODUCT ? w2 + (int64_t)r0 * K : w);
    float acc[R][B], acc2[B];
#pragma unroll
    for (int b = 0; b < B; b++) {
#pragma unroll
      for (int j = 0; j < R; j++) acc[j][b] = 0.0f;
      acc2[b] = 0.0f;
    }
#pragma unroll 4
    for (int v = lane; v < kv; v += 32) {
      uint4 pk[R], pk2;
#pragma unroll
      for (int j = 0; j < R; j++)
        if (live[j]) pk[j] = weightPack<RESIDENT>(wr[j] + v);
      if constexpr (PRODUCT) pk2 = weightPack<RESIDENT>(wr2 + v);
#pragma unroll
      for (int j = 0; j < R; j++) {
        if (!live[j]) continue;
        float wf[EL], wf2[EL];
        unpack16<T>(pk[j], wf);
        if constexpr (PRODUCT) unpack16<T>(pk2, wf2);
#pragma unroll
        for (int b = 0; b < B; b++) {
          float xf[EL];
          unpack16<T>(xp[b * kv + v], xf);
#pragma unroll
          for (int e = 0; e < EL; e++) {
            acc[j][b] = fmaf(wf[e], xf[e], acc[j][b]);
            if constexpr (PRODUCT) acc2[b] = fmaf(wf2[e], xf[e], acc2[b]);
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < R; j++) {
      if (!live[j]) continue;
#pragma unroll
      for (int b = 0; b < B; b++) {
        acc[j][b] = warpSum(acc[j][b]);
        if constexpr (PRODUCT) acc2[b] = warpSum(acc2[b]);
      }
      if (lane == 0)
#pragma unroll
        for (int b = 0; b < B; b++) store(b, r0 + j * NW, acc[j][b], acc2[b]);
    }
  }
}

// Stage 2 item i: (b·H + h, columns [16·c, 16·c + 16) of E), laid out over VT virtual threads:
// a block of NT threads plays threads t, t + NT, … of them, each with sums of its own, so that every
// sum is taken in the same order whatever NT is.
template <int NT, class T, int B>
__device__ __forceinline__ void stepItem(const LayerArgs<T>& a, int item, float4 (*part)[4]) {
  static_assert(VT % NT == 0, "a block plays whole copies of the stage-2 layout");
  constexpr int COPIES = VT / NT;
  const int blocksE = (a.E + CB - 1) / CB;
  const int bh = item / blocksE, e = (item % blocksE) * CB + (threadIdx.x & 3) * 4;  // NT % 4 == 0
  const int lane = threadIdx.x & 31;
  const int D = a.D, E = a.E;
  float4 acc[COPIES];
#pragma unroll
  for (int c = 0; c < COPIES; c++) acc[c] = make_float4(0, 0, 0, 0);
  if (e < E) {
    const float lambda = expf(-a.slopes[bh % a.H]);
    const T* vr = a.split.v + (int64_t)bh * E + e;
    const float4 ve = make_float4(toF(__ldcg(vr)), toF(__ldcg(vr + 1)), toF(__ldcg(vr + 2)), toF(__ldcg(vr + 3)));
    const T* qr = a.split.q + (int64_t)bh * D;
    const T* kr = a.split.k + (int64_t)bh * D;
    const float4* S = reinterpret_cast<const float4*>(a.state + (int64_t)bh * D * E + e);
    float4* Sn = reinterpret_cast<float4*>(a.next + (int64_t)bh * D * E + e);
    const int stride = E / 4;
#pragma unroll
    for (int c = 0; c < COPIES; c++) {
      const int rg = (threadIdx.x + c * NT) >> 2;
      // Each state element is read, then written, by this (virtual) thread alone: in place is safe.
#pragma unroll 2
      for (int d = rg; d < D; d += ROW_GROUPS) {
        float4 s = __ldcs(S + (int64_t)d * stride);
        const float kd = toF(__ldcg(kr + d)), qd = toF(__ldcg(qr + d));
        s.x = lambda * s.x + kd * ve.x, s.y = lambda * s.y + kd * ve.y, s.z = lambda * s.z + kd * ve.z, s.w = lambda * s.w + kd * ve.w;
        __stcs(Sn + (int64_t)d * stride, s);
        acc[c].x += qd * s.x, acc[c].y += qd * s.y, acc[c].z += qd * s.z, acc[c].w += qd * s.w;
      }
    }
  }
  // The 8 row groups of a virtual warp with the same columns (lanes 4 apart), then the virtual
  // warps in order.
#pragma unroll
  for (int c = 0; c < COPIES; c++) {
#pragma unroll
    for (int off = 4; off < 32; off <<= 1) {
      acc[c].x += __shfl_xor_sync(0xffffffffu, acc[c].x, off);
      acc[c].y += __shfl_xor_sync(0xffffffffu, acc[c].y, off);
      acc[c].z += __shfl_xor_sync(0xffffffffu, acc[c].z, off);
      acc[c].w += __shfl_xor_sync(0xffffffffu, acc[c].w, off);
    }
    if (lane < 4) part[(threadIdx.x + c * NT) >> 5][lane] = acc[c];
  }
  __syncthreads();
  if (threadIdx.x < 4 && e < E) {
    float4 sum = make_float4(0, 0, 0, 0);
    for (int w = 0; w < VW; w++) {
      const float4 x = part[w][threadIdx.x];
      sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
    }
    T* orow = a.o + (int64_t)bh * E + e;
    orow[0] = fromF<T>(sum.x), orow[1] = fromF<T>(sum.y), orow[2] = fromF<T>(sum.z), orow[3] = fromF<T>(sum.w);
  }
  __syncthreads();  // part is written again by the next item
}

// RESIDENT: every block's share of the weights is copied into its shared memory at entry. Else
// (streaming) the stages read their rows from global memory, and at entry a block asks L2 for the
// first prefetchBytes of its shares, in stage order; a streaming block is small (its staged rows
// in shared memory, 256 threads of at most 128 registers) so that two fit an SM: the next layer's
// block beside this one's, prefetching its weights while this layer computes.
template <class T, int B, bool RESIDENT>
__global__ void __launch_bounds__(threadsOf<RESIDENT>(), RESIDENT ? 1 : 2) decodeLayerKernel(const LayerArgs<T> a) {
  constexpr int NT = threadsOf<RESIDENT>();
  TRACE_DECL;
  TRACE_LAYER;
  if (a.trigger == TRIGGER_ENTRY) startNext();
  extern __shared__ uint4 smem[];
  __shared__ float4 part[VW][4];
  T* base = reinterpret_cast<T*>(smem);
  T* xs = base;  // the stage's staged rows; from stage 3 on it may run over stage 1's weights
  const int M = a.M, G = a.G, hid = a.H * a.E;
  const Share shq = shareOf(4 * hid, blockIdx.x, gridDim.x), sho = shareOf(M, blockIdx.x, gridDim.x);
  const Share shg = shareOf(G, blockIdx.x, gridDim.x);
  // This block's rows of each weight in global memory, and where it reads them.
  const T *gq = a.wq + (int64_t)shq.first * M, *go = a.wo + (int64_t)sho.first * hid;
  const T *g1 = a.w1 + (int64_t)shg.first * M, *g2 = a.w2 + (int64_t)shg.first * M, *g3 = a.w3 + (int64_t)sho.first * G;
  const T *sq = gq, *so = go, *s1 = g1, *s2 = g2, *s3 = g3;

  __shared__ alignas(8) uint64_t ready[STAGES_COPIED];  // stage s's weights have landed (sm_90+)
  if constexpr (RESIDENT) {
    // Weights first, in stage order.
    sq = base + a.offQ, so = base + a.offO, s1 = base + a.offW1, s2 = base + a.offW2, s3 = base + a.offW3;
    const int64_t nq = (int64_t)shq.count * M, no = (int64_t)sho.count * hid, n1 = (int64_t)shg.count * M, n3 = (int64_t)sho.count * G;
#ifdef LTS_DECODE_LAYER_BULK
    if (a.bulk) {
      if (threadIdx.x == 0) {
        for (int i = 0; i < STAGES_COPIED; i++) mbarrierInit(&ready[i], 1);
        fenceMbarrierInit();
      }
      __syncthreads();
      if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        const int64_t size = sizeof(T);
        if (lane == 0) {
          mbarrierExpect(&ready[0], (unsigned)(nq * size));
          mbarrierExpect(&ready[1], (unsigned)(no * size));
          mbarrierExpect(&ready[2], (unsigned)(2 * n1 * size));
          mbarrierExpect(&ready[3], (unsigned)(n3 * size));
        }
        bulkCopy(base + a.offQ, gq, nq * size, &ready[0], lane);
        bulkCopy(base + a.offO, go, no * size, &ready[1], lane);
        bulkCopy(base + a.offW1, g1, n1 * size, &ready[2], lane);
        bulkCopy(base + a.offW2, g2, n1 * size, &ready[2], lane);
        bulkCopy(base + a.offW3, g3, n3 * size, &ready[3], lane);
      }
    } else
#endif
    {
      // One commit group per stage.
      copyRowsAsync<NT>(base + a.offQ, gq, nq);
      commitGroup();
      copyRowsAsync<NT>(base + a.offO, go, no);
      commitGroup();
      copyRowsAsync<NT>(base + a.offW1, g1, n1);
      copyRowsAsync<NT>(base + a.offW2, g2, n1);
      commitGroup();
      copyRowsAsync<NT>(base + a.offW3, g3, n3);
      commitGroup();
    }
  } else if (a.prefetch != PREFETCH_NONE) {
    int64_t left = a.prefetchBytes;
    auto prefetch = [&](const T* p, int64_t n) {
      // Whole 16-byte packs: every share starts on a 16-byte boundary (rows of whole packs).
      const int64_t bytes = std::min<int64_t>(left, n * (int64_t)sizeof(T)) & ~(int64_t)15;
      const char* c = reinterpret_cast<const char*>(p);
#ifdef LTS_DECODE_LAYER_BULK
      if (a.prefetch == PREFETCH_BULK) {
        if (threadIdx.x < 32) bulkPrefetchL2(c, bytes, threadIdx.x);
      } else
#endif
        for (int64_t off = (int64_t)threadIdx.x * 128; off < bytes; off += (int64_t)NT * 128) prefetchL2(c + off);
      left -= bytes;
    };
    prefetch(gq, (int64_t)shq.count * M);
    prefetch(go, (int64_t)sho.count * hid);
    prefetch(g1, (int64_t)shg.count * M);
    prefetch(g2, (int64_t)shg.count * M);
    prefetch(g3, (int64_t)sho.count * G);
  }

  waitForPrevious();  // h and the state may be what the kernel before wrote
  TRACE(TP_WAITED);
  if (a.trigger == TRIGGER_WAIT) startNext();
  // The barrier word's top bit as this grid finds it (RED; ATOMIC takes it from its atomics): the
  // kernel before has finished and its writes are visible, and no barrier of this grid can
  // complete before this block arrives. A relaxed load: the thread stalls for it only where the
  // first barrier uses it, not before stage 1.
  unsigned phase = 0;
  if (threadIdx.x == 0 && a.barrier == BARRIER_RED) phase = loadRelaxed(&barrierWord) & 0x80000000u;
  // This block's stage-2 state rows start towards L2 while stage 1 runs.
  const int blocksE = (a.E + CB - 1) / CB, items = B * a.H * blocksE;
  for (int item = blockIdx.x; item < items; item += gridDim.x) {
    const int bh = item / blocksE, e = (item % blocksE) * CB;
    for (int d = threadIdx.x; d < a.D; d += NT) prefetchL2(a.state + ((int64_t)bh * a.D + d) * a.E + e);
  }

  // Stage 1: q, k, v, u.
  stageRows<NT>(xs, a.h, B * M);
  __syncthreads();
  normStagedRows<T, B, false, NT>(xs, nullptr, M, a.eps);
  TRACE(TP_S1_NORMED);
  if constexpr (RESIDENT) weightsLanded<0>(ready, a.bulk);
  __syncthreads();
  TRACE(TP_S1_WEIGHTS);
  rowDots<T, B, false, RESIDENT>(sq, nullptr, xs, shq.count, M, [&](int b, int r, float s, float) { storeSplit(a.split, b, shq.first + r, s); });
  TRACE(TP_S1_DONE);
  gridBarrier(a.barrier, phase);
  TRACE(TP_B1);

  // Stage 2: the Lightning step.
  for (int item = blockIdx.x; item < items; item += gridDim.x) stepItem<NT, T, B>(a, item, part);
  TRACE(TP_S2_DONE);
  gridBarrier(a.barrier, phase);
  TRACE(TP_B2);

  // Stage 3: h1 = h + (srms(o) ⊙ u)·Woutᵀ.
  stageRows<NT>(xs, a.o, B * hid);
  __syncthreads();
  normStagedRows<T, B, true, NT>(xs, a.split.u, hid, a.eps);
  TRACE(TP_S3_NORMED);
  if constexpr (RESIDENT) weightsLanded<1>(ready, a.bulk);
  __syncthreads();
  TRACE(TP_S3_WEIGHTS);
  rowDots<T, B, false, RESIDENT>(so, nullptr, xs, sho.count, hid, [&](int b, int r, float s, float) {
    const int64_t at = (int64_t)b * M + sho.first + r;
    // h is the kernel before's output, and this block may have started (PDL) before that kernel
    // finished: through L2, as every row another block or kernel writes, never through L1.
    a.h1[at] = fromF<T>(__fadd_rn(s, toF(__ldcg(a.h + at))));
  });
  TRACE(TP_S3_DONE);
  gridBarrier(a.barrier, phase);
  TRACE(TP_B3);

  // Stage 4: g = (srms(h1)·W1ᵀ) ⊙ (srms(h1)·W2ᵀ).
  stageRows<NT>(xs, a.h1, B * M);
  __syncthreads();
  normStagedRows<T, B, false, NT>(xs, nullptr, M, a.eps);
  TRACE(TP_S4_NORMED);
  if constexpr (RESIDENT) weightsLanded<2>(ready, a.bulk);
  __syncthreads();
  TRACE(TP_S4_WEIGHTS);
  rowDots<T, B, true, RESIDENT>(s1, s2, xs, shg.count, M, [&](int b, int r, float s, float s2v) {
    a.g[(int64_t)b * G + shg.first + r] = fromF<T>(__fmul_rn(s, s2v));
  });
  TRACE(TP_S4_DONE);
  gridBarrier(a.barrier, phase);
  TRACE(TP_B4);
  // Every block is past its last wait: the next kernel may take the SMs as blocks exit.
  if (a.trigger == TRIGGER_END) startNext();

  // Stage 5: h2 = h1 + g·W3ᵀ.
  stageRows<NT>(xs, a.g, B * G);
  if constexpr (RESIDENT) weightsLanded<3>(ready, a.bulk);
  __syncthreads();
  TRACE(TP_S5_WEIGHTS);
  rowDots<T, B, false, RESIDENT>(s3, nullptr, xs, sho.count, G, [&](int b, int r, float s, float) {
    const int64_t at = (int64_t)b * M + sho.first + r;
    a.y[at] = fromF<T>(__fadd_rn(s, toF(__ldcg(a.h1 + at))));
  });
  TRACE(TP_END);
  TRACE_AT(TP_GT_END, globalTimer());
}

const char* dtypeName(int dt) { return dt == F16 ? "f16" : dt == BF16 ? "bf16" : dt == F32 ? "f32" : "?"; }

// The switches below are read at every call (a getenv each), so that one process can compare
// them, as the tests do; a graph keeps what was read when it was recorded.
//
// LIGHTNING_CUDA_DECODE_LAYER: "1" runs the kernel, its weights resident in shared memory where
// they fit and streamed otherwise; "resident" declines the shapes that would stream; "stream"
// streams every shape (two blocks an SM, the next layer prefetching beside this one); unset, empty
// or "0" declines every call, so the chain of five kernels runs: on the H200 the kernel measured
// slower than the chain in every mode (KERNELS.md, decodeLayer, "Measured").
enum class Mode { On, Resident, Stream, Off };
Mode modeOf() {
  const char* v = getenv("LIGHTNING_CUDA_DECODE_LAYER");
  if (!v || !*v) return Mode::Off;
  if (strcmp(v, "1") == 0) return Mode::On;
  if (strcmp(v, "resident") == 0) return Mode::Resident;
  if (strcmp(v, "stream") == 0) return Mode::Stream;
  if (strcmp(v, "0") == 0) return Mode::Off;
  throw std::runtime_error(std::string("LIGHTNING_CUDA_DECODE_LAYER: expected 0, 1, resident or stream, got '") + v + "'");
}

// One of `names` (an empty or unset variable: dflt), as its index.
int choiceOf(const char* var, std::initializer_list<const char*> names, int dflt) {
  const char* v = getenv(var);
  if (!v || !*v) return dflt;
  int i = 0;
  std::string expected;
  for (const char* n : names) {
    if (strcmp(v, n) == 0) return i;
    expected += (i ? (i + 1 == (int)names.size() ? " or " : ", ") : "") + std::string(n);
    i++;
  }
  throw std::runtime_error(std::string(var) + ": expected " + expected + ", got '" + v + "'");
}

// LIGHTNING_CUDA_DECODE_LAYER_TRIGGER=entry|wait|end: where the kernel after is released (Trigger);
// by default at entry when streaming, at the end when resident.
int triggerOf(bool resident) { return choiceOf("LIGHTNING_CUDA_DECODE_LAYER_TRIGGER", {"entry", "wait", "end"}, resident ? TRIGGER_END : TRIGGER_ENTRY); }
const char* const TRIGGER_NAMES[] = {"entry", "wait", "end"};

// LIGHTNING_CUDA_DECODE_LAYER_BARRIER=atomic|red: how a block arrives at a grid barrier
// (BarrierKind); atomic by default.
int barrierOf() { return choiceOf("LIGHTNING_CUDA_DECODE_LAYER_BARRIER", {"atomic", "red"}, BARRIER_ATOMIC); }
const char* const BARRIER_NAMES[] = {"atomic", "red"};

// LIGHTNING_CUDA_DECODE_LAYER_PREFETCH=none|lines|bulk: how a streaming block asks L2 for its
// shares before it waits (Prefetch); bulk by default (lines before sm_90).
int prefetchOf() { return choiceOf("LIGHTNING_CUDA_DECODE_LAYER_PREFETCH", {"none", "lines", "bulk"}, PREFETCH_BULK); }
const char* const PREFETCH_NAMES[] = {"none", "lines", "bulk"};

// LIGHTNING_CUDA_DECODE_LAYER_PREFETCH_MB=n: at most n MB of the layer's weights (the whole grid's,
// in stage order) asked for in advance; by default all of them (27 MB at the 436M shape: the L2
// then holds the running layer's and most of the next one's).
int64_t prefetchBudget() {
  const char* v = getenv("LIGHTNING_CUDA_DECODE_LAYER_PREFETCH_MB");
  if (!v || !*v) return INT64_MAX;
  char* end = nullptr;
  const long long mb = strtoll(v, &end, 10);
  if (*end || mb < 0) throw std::runtime_error(std::string("LIGHTNING_CUDA_DECODE_LAYER_PREFETCH_MB: expected a whole number of MB, got '") + v + "'");
  return (int64_t)mb << 20;
}

// LIGHTNING_CUDA_DECODE_LAYER_COPY=cp.async (read once): resident weights by 16-byte cp.async on
// sm_90+ too instead of bulk copies, for comparing the two.
bool cpAsyncRequested() {
  static const bool on = [] {
    const char* v = getenv("LIGHTNING_CUDA_DECODE_LAYER_COPY");
    if (!v || !*v || strcmp(v, "bulk") == 0) return false;
    if (strcmp(v, "cp.async") == 0) return true;
    throw std::runtime_error(std::string("LIGHTNING_CUDA_DECODE_LAYER_COPY: expected bulk or cp.async, got '") + v + "'");
  }();
  return on;
}

bool cooperative() {
  static const bool on = [] {
    const char* v = getenv("LIGHTNING_CUDA_DECODE_LAYER_COOP");
    return v && strcmp(v, "1") == 0;
  }();
  return on;
}

// LIGHTNING_CUDA_DEBUG=1: the path taken, once per distinct (dtype, shape, path), on stderr.
bool debugOn() {
  static const bool on = [] {
    const char* v = getenv("LIGHTNING_CUDA_DEBUG");
    return v && *v && *v != '0';
  }();
  return on;
}

// path() builds the line only where it is printed.
template <class Path>
void debugNote(const std::string& key, Path path) {
  if (!debugOn()) return;
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  const std::string text = path();
  if (!seen.insert(key + text).second) return;
  fprintf(stderr, "[lightning-cuda] decodeLayer %s -> %s\n", key.c_str(), text.c_str());
}

int smemOptin() {
  static PerDevice<int> bytes;
  return bytes.get([] {
    int dev = 0, v = 0;
    LTS_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
    LTS_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "decodeLayer shared memory per block");
    return v;
  });
}

// Per device and instantiation: the static shared memory of the kernel, with the dynamic limit
// raised to what is left of the opt-in maximum.
template <class T, int B, bool RESIDENT>
int staticSmem() {
  static PerDevice<int> bytes;
  return bytes.get([] {
    auto kernel = decodeLayerKernel<T, B, RESIDENT>;
    cudaFuncAttributes attr{};
    LTS_CHECK(cudaFuncGetAttributes(&attr, kernel), "decodeLayer attributes");
    LTS_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smemOptin() - (int)attr.sharedSizeBytes), "decodeLayer smem attribute");
    // A streaming block takes little shared memory, and the SM's split between L1 and shared
    // memory is chosen when a block lands on an idle SM: the largest shared part leaves room for
    // the next layer's block beside this one (the weights bypass L1 anyway).
    if (!RESIDENT) LTS_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared), "decodeLayer carveout attribute");
    return (int)attr.sharedSizeBytes;
  });
}

// Per device and instantiation: whether a block with the most dynamic shared memory it may take fits
// an SM (registers and threads), so that one with less does too; asked once, not at every call.
template <class T, int B, bool RESIDENT>
bool fitsAnSm() {
  static PerDevice<bool> fits;
  return fits.get([] {
    int blocks = 0;
    const size_t most = (size_t)(smemOptin() - staticSmem<T, B, RESIDENT>());
    LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, decodeLayerKernel<T, B, RESIDENT>, threadsOf<RESIDENT>(), most), "decodeLayer occupancy");
    return blocks >= 1;
  });
}

// Blocks of an instantiation that fit an SM at `smem` bytes of dynamic shared memory (for the debug
// line: 2 where a streaming layer's next one can become resident beside it).
template <class T, int B, bool RESIDENT>
int blocksPerSm(int64_t smem) {
  int blocks = 0;
  LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, decodeLayerKernel<T, B, RESIDENT>, threadsOf<RESIDENT>(), (size_t)smem), "decodeLayer occupancy");
  return blocks;
}

// Launches the kernel where a block of it fits an SM with `smem` bytes of dynamic shared memory;
// otherwise returns why not, having enqueued nothing.
template <class T, int B, bool RESIDENT>
std::string tryLaunch(Context& c, const LayerArgs<T>& a, int64_t smem) {
  auto kernel = decodeLayerKernel<T, B, RESIDENT>;
  const int fixed = staticSmem<T, B, RESIDENT>();
  if (smem + fixed > smemOptin()) {
    return std::string(RESIDENT ? "a block's share of the weights and its rows, " : "a block's staged rows, ") + std::to_string((smem + 1023) / 1024) + " KB, exceed the " +
           std::to_string((smemOptin() - fixed) / 1024) + " KB of shared memory a block may take";
  }
  if (!fitsAnSm<T, B, RESIDENT>()) return "no block of the kernel fits an SM";
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(c.smCount);
  cfg.blockDim = dim3(threadsOf<RESIDENT>());
  cfg.dynamicSmemBytes = (size_t)smem;
  cfg.stream = c.stream;
  cudaLaunchAttribute attr[2];
  int n = 0;
  if (pdlEnabled() && c.ccMajor >= 9) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    n++;
  }
  if (cooperative()) {
    attr[n].id = cudaLaunchAttributeCooperative;
    attr[n].val.cooperative = 1;
    n++;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  LTS_CHECK(cudaLaunchKernelEx(&cfg, kernel, a), "decodeLayer kernel launch");
  return "";
}

template <class T, bool RESIDENT>
std::string tryLaunchRows(Context& c, int B, const LayerArgs<T>& a, int64_t smem) {
  switch (B) {
    case 1: return tryLaunch<T, 1, RESIDENT>(c, a, smem);
    case 2: return tryLaunch<T, 2, RESIDENT>(c, a, smem);
    case 3: return tryLaunch<T, 3, RESIDENT>(c, a, smem);
    default: return tryLaunch<T, 4, RESIDENT>(c, a, smem);
  }
  static_assert(MAX_ROWS == 4, "tryLaunchRows instantiates the kernel for every row count up to MAX_ROWS");
}

template <class T, bool RESIDENT>
int blocksPerSmRows(int B, int64_t smem) {
  switch (B) {
    case 1: return blocksPerSm<T, 1, RESIDENT>(smem);
    case 2: return blocksPerSm<T, 2, RESIDENT>(smem);
    case 3: return blocksPerSm<T, 3, RESIDENT>(smem);
    default: return blocksPerSm<T, 4, RESIDENT>(smem);
  }
}

// Elements of T each scratch region takes (rounded up to whole 16-byte packs), in the order q, k,
// v, u, o, h1, g; src/kernels.ts allocates their sum (decodeLayer's entry there).
int64_t packed(int64_t n) { return (n + EL - 1) / EL * EL; }


// p: [h, qkvu, out, l1, l2, l3, state, slopes, theta, positions, h2, nextState, scratch] (theta and
// positions 0 without LRPE; nextState may be state); i: [dtype, B, M, H, hd, G, activation, theta
// dtype or -1, scratch bytes]; f: [eps]. One persistent kernel where it applies (1–4 rows of
// f16/bf16, widths in whole 16-byte packs, aligned tensors, sm_80+, a block's staged rows in its
// shared memory): its weights resident in shared memory where every block's share fits, else
// streamed from global memory (LIGHTNING_CUDA_DECODE_LAYER=resident declines those shapes instead).
// Otherwise it sets c.declined and enqueues nothing.
void decodeLayer(Context& c, const Args& args) {
  const int dt = (int)args.i.at(0), B = (int)args.i.at(1), M = (int)args.i.at(2), H = (int)args.i.at(3), hd = (int)args.i.at(4), G = (int)args.i.at(5);
  const int act = (int)args.i.at(6), thDt = (int)args.i.at(7);
  const int64_t scratchBytes = args.i.at(8);
  const bool lrpe = args.p.at(8) != 0;
  const int D = lrpe ? 2 * hd : hd, E = hd, hid = H * hd;
  if (act < 0 || act >= kQkvActivationCount) throw std::runtime_error("decodeLayer: unknown activation code " + std::to_string(act));
  char keyText[160] = "";
  if (debugOn()) snprintf(keyText, sizeof keyText, "%s B=%d M=%d H=%d hd=%d G=%d lrpe=%d", dtypeName(dt), B, M, H, hd, G, lrpe ? 1 : 0);
  const std::string key = keyText;
  auto decline = [&](const std::string& why) {
    debugNote(key, [&] { return "chain of 5 kernels (" + why + ")"; });
    c.declined = true;
  };
  const Mode mode = modeOf();
  if (mode == Mode::Off) return decline("LIGHTNING_CUDA_DECODE_LAYER=0");
  if (dt != F16 && dt != BF16) return decline(std::string("dtype ") + dtypeName(dt) + ", the kernel takes f16 and bf16");
  if (B < 1 || B > MAX_ROWS) return decline(std::to_string(B) + " rows, the kernel takes 1 to " + std::to_string(MAX_ROWS));
  if (c.ccMajor < 8) return decline("compute capability below 8.0 (no cp.async)");
  if (M % EL != 0 || G % EL != 0 || hid % EL != 0 || hd % 4 != 0) return decline("M, G and H·hd must be multiples of 8");
  for (int j : {0, 1, 2, 3, 4, 5, 6, 10, 11, 12})
    if (!alignedTo(args.ptr<void>(j), 16)) return decline("an operand not on a 16-byte boundary");

  const int64_t need = (2 * packed((int64_t)B * H * D) + 3 * packed((int64_t)B * hid) + packed((int64_t)B * M) + packed((int64_t)B * G)) * 2;
  if (scratchBytes < need) throw std::runtime_error("decodeLayer: scratch of " + std::to_string(scratchBytes) + " bytes, needs " + std::to_string(need));

  // Shared memory: the largest share of each stage's weight rows, the stage-1 rows of h before the
  // qkvu share, later stages' staged rows over both (stage 1 is over by then).
  const int blocks = c.smCount;
  auto most = [&](int n) { return (int64_t)((n + blocks - 1) / blocks); };
  const int64_t xFirst = (int64_t)B * M, qRows = most(4 * hid) * M;
  const int64_t xLater = (int64_t)B * std::max(std::max(M, hid), G);
  const int64_t offQ = xFirst, offO = std::max(xFirst + qRows, xLater);
  const int64_t offW1 = offO + most(M) * hid, offW2 = offW1 + most(G) * M, offW3 = offW2 + most(G) * M;
  const int64_t residentSmem = (offW3 + most(M) * G) * 2, streamingSmem = xLater * 2;

  const bool bulkCopies = c.ccMajor >= 9 && !cpAsyncRequested();
  const int barrier = barrierOf();
  const int prefetch = c.ccMajor >= 9 ? prefetchOf() : std::min(prefetchOf(), (int)PREFETCH_LINES);
  const int64_t budget = prefetchBudget();
  auto run = [&](auto zero) {
    using T = decltype(zero);
    T* s = args.ptr<T>(12);
    T* q = s;
    T* k = q + packed((int64_t)B * H * D);
    T* v = k + packed((int64_t)B * H * D);
    T* u = v + packed((int64_t)B * hid);
    T* o = u + packed((int64_t)B * hid);
    T* h1 = o + packed((int64_t)B * hid);
    T* g = h1 + packed((int64_t)B * M);
    LayerArgs<T> a{args.ptr<const T>(0),   args.ptr<const T>(1),  args.ptr<const T>(2), args.ptr<const T>(3), args.ptr<const T>(4), args.ptr<const T>(5),
                   args.ptr<const float>(6), args.ptr<const float>(7), args.ptr<T>(10),     args.ptr<float>(11),
                   SplitArgs<T>{q, k, v, u, args.ptr<const void>(8), thDt, args.ptr<const float>(9), H, hd, act},
                   o, h1, g, M, G, H, D, E, (int)offQ, (int)offO, (int)offW1, (int)offW2, (int)offW3, budget == INT64_MAX ? INT64_MAX : budget / blocks,
                   prefetch, TRIGGER_END, barrier, bulkCopies, (float)args.f.at(0)};
    auto grid = [&](int64_t smem, bool resident) {
      return std::to_string(blocks) + " blocks of " + std::to_string(resident ? threadsOf<true>() : threadsOf<false>()) + " threads, " + std::to_string((smem + 1023) / 1024) + " KB of shared memory a block, " +
             std::to_string(resident ? blocksPerSmRows<T, true>(B, smem) : blocksPerSmRows<T, false>(B, smem)) + " fit an SM; " + BARRIER_NAMES[a.barrier] +
             " barrier, next kernel released at " + TRIGGER_NAMES[a.trigger] + ")";
    };
    std::string why;
    if (mode != Mode::Stream) {
      a.trigger = triggerOf(true);
      why = tryLaunchRows<T, true>(c, B, a, residentSmem);
      if (why.empty()) {
        debugNote(key, [&] { return std::string("persistent kernel, weights resident by ") + (a.bulk ? "bulk copies" : "cp.async") + " (" + grid(residentSmem, true); });
        return;
      }
      if (mode == Mode::Resident) return decline(why);
      why += "; ";
    } else {
      why = "LIGHTNING_CUDA_DECODE_LAYER=stream; ";
    }
    a.trigger = triggerOf(false);
    const std::string streamWhy = tryLaunchRows<T, false>(c, B, a, streamingSmem);
    if (!streamWhy.empty()) return decline(why + "streaming: " + streamWhy);
    debugNote(key, [&] {
      const std::string ahead = a.prefetch == PREFETCH_NONE ? "none" : a.prefetchBytes == INT64_MAX ? "all" : std::to_string(a.prefetchBytes * blocks >> 20) + " MB";
      return "persistent kernel, weights streamed, prefetched to L2 before the wait: " + ahead + " by " + PREFETCH_NAMES[a.prefetch] + " (" + why + grid(streamingSmem, false);
    });
  };
  if (dt == F16) run(__half{});
  else run(__nv_bfloat16{});
}

}  // namespace

void registerDecodeLayer(Registry& r) { r["decodeLayer"] = decodeLayer; }

}  // namespace lts
