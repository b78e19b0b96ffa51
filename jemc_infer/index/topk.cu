// Fused scoring and filtering for exact top-k inner-product search (jemc_infer.index.gpu).
//
// One pass reads every `step`-th index row once, scores it against a tile of queries (fp32
// accumulation) and appends the rows whose (score, id) pair reaches the query's threshold — score
// descending, then id ascending, the CPU search's order — to that query's candidate buffer through
// an atomic counter. The host selects the exact top-k from the survivors and, where a buffer
// overflowed or a guessed threshold let too few through, scans again (jemc_infer/index/topk_plan.py,
// which also models this kernel in NumPy). Dead rows (id < 0) are skipped; a NaN score never
// passes a comparison.
//
// Two families, the host picks by batch size and row type (jemc_infer.index.gpu.kernel_for):
// - jemc_simt{2,8}_{f32,f16,bf16} (CUDA cores): a tile of QT = 2 or 8 queries in shared memory as
//   fp32; one warp scores one row at a time with 16-byte loads (512 contiguous bytes per warp step).
//   Each 16 bytes of a row cost QT * 16 (fp32 rows) or QT * 32 (16-bit rows) bytes of shared-memory
//   reads: QT = 2 keeps one or two queries under the SM's shared bandwidth at full memory speed.
// - jemc_tc{16,64}_{f16,bf16} (tensor cores, sm_80+): a tile of BR rows times 16 or 64
//   queries, streamed through shared memory in chunks of BK elements, multiplied with WMMA
//   (m16n16k16, fp32 accumulators). The queries come as two halves in the rows' type, hi and lo
//   (q = hi + lo to ~2^-22 for fp16), both multiplied: scores as with fp32 queries, not queries
//   rounded to 16 bits.
// Both take the query tile from blockIdx.x % q_tiles, so the blocks that run together share their
// rows through L2 and a batch of many tiles reads the index from memory about once.
//
// Layout: rows [n_rows, dim] row-major in T (float, __half, __nv_bfloat16), dim a multiple of
// 8 elements and every row 16-byte aligned (the host pads); queries [nq, dim] likewise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>

#ifndef JEMC_DYNAMIC_SHARED  // (tests/fakes/cuda_emu runs this file on the CPU with its own definitions)
#define JEMC_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

#define WARPS 8        // warps per block
#define THREADS (WARPS * 32)

template <typename T> struct Vec;  // 16 bytes of T, widened to floats
template <> struct Vec<float> {
  static constexpr int N = 4;
  __device__ __forceinline__ static void load(const float* p, float* out) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
  }
};
template <> struct Vec<__half> {
  static constexpr int N = 8;
  __device__ __forceinline__ static void load(const __half* p, float* out) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(h[i]);
      out[2 * i] = f.x; out[2 * i + 1] = f.y;
    }
  }
};
template <> struct Vec<__nv_bfloat16> {
  static constexpr int N = 8;
  __device__ __forceinline__ static void load(const __nv_bfloat16* p, float* out) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      out[2 * i] = f.x; out[2 * i + 1] = f.y;
    }
  }
};

template <typename T, int QT>
__device__ __forceinline__ void scan(const T* __restrict__ rows, const long long* __restrict__ ids, int dim,
                                     long long n_visit, long long step, const float* __restrict__ queries, int nq,
                                     const float* __restrict__ thr_scores, const long long* __restrict__ thr_ids,
                                     float* __restrict__ out_scores, long long* __restrict__ out_ids,
                                     unsigned long long* __restrict__ counts, int cap) {
  JEMC_DYNAMIC_SHARED(float, tile);  // [QT][dim] fp32 queries of this block's tile
  const int q_tiles = (nq + QT - 1) / QT;  // gridDim.x is a multiple of it (the host sees to that)
  const int q0 = (blockIdx.x % q_tiles) * QT;
  const int nt = min(QT, nq - q0);
  for (int i = threadIdx.x; i < QT * dim; i += THREADS) {
    const int j = i / dim;
    tile[i] = j < nt ? queries[(long long)(q0 + j) * dim + (i - j * dim)] : 0.0f;
  }
  __syncthreads();
  constexpr int V = Vec<T>::N;
  const int lane = threadIdx.x & 31;
  const long long first = (long long)(blockIdx.x / q_tiles) * WARPS + (threadIdx.x >> 5);
  const long long stride = (long long)(gridDim.x / q_tiles) * WARPS;
  for (long long s = first; s < n_visit; s += stride) {
    const long long r = s * step;
    const long long id = ids[r];
    if (id < 0) continue;  // a dead row: the same branch for the whole warp
    const T* row = rows + r * dim;
    float acc[QT];
#pragma unroll
    for (int j = 0; j < QT; ++j) acc[j] = 0.0f;
#pragma unroll 4
    for (int c = lane * V; c < dim; c += 32 * V) {
      float x[V];
      Vec<T>::load(row + c, x);
#pragma unroll
      for (int j = 0; j < QT; ++j) {
        const float4* q = reinterpret_cast<const float4*>(tile + j * dim + c);  // 16-byte shared loads
#pragma unroll
        for (int e = 0; e < V / 4; ++e) {
          const float4 w = q[e];
          acc[j] = fmaf(x[4 * e], w.x, acc[j]);
          acc[j] = fmaf(x[4 * e + 1], w.y, acc[j]);
          acc[j] = fmaf(x[4 * e + 2], w.z, acc[j]);
          acc[j] = fmaf(x[4 * e + 3], w.w, acc[j]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < QT; ++j) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], off);
    }
#pragma unroll
    for (int j = 0; j < QT; ++j) {
      if (lane == j && j < nt) {  // lane j files the row for query j
        const int q = q0 + j;
        const float ts = thr_scores[q];
        if (acc[j] > ts || (acc[j] == ts && id <= thr_ids[q])) {
          const unsigned long long slot = atomicAdd(counts + q, 1ULL);
          if (slot < (unsigned long long)cap) {
            out_scores[(long long)q * cap + slot] = acc[j];
            out_ids[(long long)q * cap + slot] = id;
          }
        }
      }
    }
  }
}

#define JEMC_SIMT(NAME, T, Q)                                                                                    \
  extern "C" __global__ void __launch_bounds__(THREADS) NAME(                                                    \
      const T* __restrict__ rows, const long long* __restrict__ ids, int dim, long long n_visit, long long step, \
      const float* __restrict__ queries, int nq, const float* __restrict__ thr_scores,                          \
      const long long* __restrict__ thr_ids, float* __restrict__ out_scores, long long* __restrict__ out_ids,   \
      unsigned long long* __restrict__ counts, int cap) {                                                        \
    scan<T, Q>(rows, ids, dim, n_visit, step, queries, nq, thr_scores, thr_ids, out_scores, out_ids, counts, cap); \
  }

JEMC_SIMT(jemc_simt2_f32, float, 2)
JEMC_SIMT(jemc_simt2_f16, __half, 2)
JEMC_SIMT(jemc_simt2_bf16, __nv_bfloat16, 2)
JEMC_SIMT(jemc_simt8_f32, float, 8)
JEMC_SIMT(jemc_simt8_f16, __half, 8)
JEMC_SIMT(jemc_simt8_bf16, __nv_bfloat16, 8)

// --- tensor cores -----------------------------------------------------------------------------------

#define BK 64        // elements per chunk of a row
#define LDK (BK + 8) // shared row pitch of a chunk (elements): 16 bytes of padding against bank conflicts

template <typename T, int BR, int BQ>
struct TcShared {
  union {
    struct {
      T a[BR][LDK];   // the rows' chunk
      T hi[BQ][LDK];  // the queries' chunk, high halves
      T lo[BQ][LDK];  // and low halves
    } in;
    float c[BR][BQ + 4];  // scores of the tile (after the last chunk)
  } u;
  long long row[BR];  // the index row of each tile row, -1 where none or dead
  long long id[BR];
  float thr_s[BQ];
  long long thr_i[BQ];
};

template <typename T, int BR, int BQ>
__device__ __forceinline__ void tc_scan(const T* __restrict__ rows, const long long* __restrict__ ids, int dim,
                                        long long n_visit, long long step, const T* __restrict__ q_hi,
                                        const T* __restrict__ q_lo, int nq, const float* __restrict__ thr_scores,
                                        const long long* __restrict__ thr_ids, float* __restrict__ out_scores,
                                        long long* __restrict__ out_ids, unsigned long long* __restrict__ counts,
                                        int cap) {
#if __CUDA_ARCH__ >= 800 || defined(JEMC_EMULATED)
  using namespace nvcuda;
  constexpr int WQ = BQ >= 32 ? 2 : 1;     // warps across the queries
  constexpr int WR = WARPS / WQ;           // and down the rows
  constexpr int FM = BR / WR / 16;         // 16x16 fragments per warp, rows
  constexpr int FN = BQ / WQ / 16;         // and queries
  constexpr int VR = BR * BK / 8 / THREADS;  // 16-byte loads per thread per chunk: rows
  constexpr int VQ = (BQ * BK / 8 + THREADS - 1) / THREADS;  // queries (each of hi, lo)
  __shared__ __align__(128) TcShared<T, BR, BQ> sh;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wr = warp / WQ, wq = warp % WQ;
  const int q_tiles = (nq + BQ - 1) / BQ;
  const int q0 = (blockIdx.x % q_tiles) * BQ;
  const int nt = min(BQ, nq - q0);
  const long long n_tiles = (n_visit + BR - 1) / BR;
  for (int j = tid; j < BQ; j += THREADS) {
    sh.thr_s[j] = j < nt ? thr_scores[q0 + j] : 0.0f;
    sh.thr_i[j] = j < nt ? thr_ids[q0 + j] : 0;
  }
  for (long long t = blockIdx.x / q_tiles; t < n_tiles; t += gridDim.x / q_tiles) {
    for (int i = tid; i < BR; i += THREADS) {
      const long long s = t * BR + i;
      const long long id = s < n_visit ? ids[s * step] : -1;
      sh.id[i] = id;
      sh.row[i] = id >= 0 ? s * step : -1;
    }
    __syncthreads();
    uint4 ra[VR], rh[VQ], rl[VQ];
    auto load = [&](int c0) {  // the chunk at column c0 into registers; zeros past the ends
#pragma unroll
      for (int v = 0; v < VR; ++v) {
        const int e = tid + v * THREADS, i = e / (BK / 8), c = c0 + (e % (BK / 8)) * 8;
        const long long r = sh.row[i];
        ra[v] = r >= 0 && c < dim ? *reinterpret_cast<const uint4*>(rows + r * dim + c) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int v = 0; v < VQ; ++v) {
        const int e = tid + v * THREADS, j = e / (BK / 8), c = c0 + (e % (BK / 8)) * 8;
        const bool ok = e < BQ * BK / 8 && j < nt && c < dim;
        rh[v] = ok ? *reinterpret_cast<const uint4*>(q_hi + (long long)(q0 + j) * dim + c) : make_uint4(0, 0, 0, 0);
        rl[v] = ok ? *reinterpret_cast<const uint4*>(q_lo + (long long)(q0 + j) * dim + c) : make_uint4(0, 0, 0, 0);
      }
    };
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int m = 0; m < FM; ++m)
#pragma unroll
      for (int n = 0; n < FN; ++n) wmma::fill_fragment(acc[m][n], 0.0f);
    load(0);
    for (int c0 = 0; c0 < dim; c0 += BK) {
#pragma unroll
      for (int v = 0; v < VR; ++v) {
        const int e = tid + v * THREADS;
        *reinterpret_cast<uint4*>(&sh.u.in.a[e / (BK / 8)][(e % (BK / 8)) * 8]) = ra[v];
      }
#pragma unroll
      for (int v = 0; v < VQ; ++v) {
        const int e = tid + v * THREADS;
        if (e < BQ * BK / 8) {
          *reinterpret_cast<uint4*>(&sh.u.in.hi[e / (BK / 8)][(e % (BK / 8)) * 8]) = rh[v];
          *reinterpret_cast<uint4*>(&sh.u.in.lo[e / (BK / 8)][(e % (BK / 8)) * 8]) = rl[v];
        }
      }
      __syncthreads();
      if (c0 + BK < dim) load(c0 + BK);  // in flight while the tensor cores work
#pragma unroll
      for (int kk = 0; kk < BK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[FM];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
#pragma unroll
        for (int m = 0; m < FM; ++m) wmma::load_matrix_sync(a[m], &sh.u.in.a[(wr * FM + m) * 16][kk], LDK);
#pragma unroll
        for (int n = 0; n < FN; ++n) {
          wmma::load_matrix_sync(b, &sh.u.in.hi[(wq * FN + n) * 16][kk], LDK);
#pragma unroll
          for (int m = 0; m < FM; ++m) wmma::mma_sync(acc[m][n], a[m], b, acc[m][n]);
          wmma::load_matrix_sync(b, &sh.u.in.lo[(wq * FN + n) * 16][kk], LDK);
#pragma unroll
          for (int m = 0; m < FM; ++m) wmma::mma_sync(acc[m][n], a[m], b, acc[m][n]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < FM; ++m)
#pragma unroll
      for (int n = 0; n < FN; ++n)
        wmma::store_matrix_sync(&sh.u.c[(wr * FM + m) * 16][(wq * FN + n) * 16], acc[m][n], BQ + 4, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < BR * BQ; e += THREADS) {
      const int i = e / BQ, j = e % BQ;
      const long long id = sh.id[i];
      if (j >= nt || id < 0) continue;
      const float score = sh.u.c[i][j], ts = sh.thr_s[j];
      if (score > ts || (score == ts && id <= sh.thr_i[j])) {
        const int q = q0 + j;
        const unsigned long long slot = atomicAdd(counts + q, 1ULL);
        if (slot < (unsigned long long)cap) {
          out_scores[(long long)q * cap + slot] = score;
          out_ids[(long long)q * cap + slot] = id;
        }
      }
    }
    __syncthreads();
  }
#endif
}

#define JEMC_TC(NAME, T, R, Q)                                                                                    \
  extern "C" __global__ void __launch_bounds__(THREADS, 2) NAME(                                                 \
      const T* __restrict__ rows, const long long* __restrict__ ids, int dim, long long n_visit, long long step, \
      const T* __restrict__ q_hi, const T* __restrict__ q_lo, int nq, const float* __restrict__ thr_scores,     \
      const long long* __restrict__ thr_ids, float* __restrict__ out_scores, long long* __restrict__ out_ids,   \
      unsigned long long* __restrict__ counts, int cap) {                                                        \
    tc_scan<T, R, Q>(rows, ids, dim, n_visit, step, q_hi, q_lo, nq, thr_scores, thr_ids, out_scores, out_ids,      \
                  counts, cap);                                                                                  \
  }

// 128 rows x 16 queries, 64 x 64: each within 128 registers (two blocks per SM) and without spills
JEMC_TC(jemc_tc16_f16, __half, 128, 16)
JEMC_TC(jemc_tc64_f16, __half, 64, 64)
JEMC_TC(jemc_tc16_bf16, __nv_bfloat16, 128, 16)
JEMC_TC(jemc_tc64_bf16, __nv_bfloat16, 64, 64)
