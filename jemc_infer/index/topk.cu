// Fused scoring and filtering for exact top-k inner-product search (jemc_infer.index.gpu).
//
// One pass reads every `step`-th index row once, scores it against a tile of up to QT queries
// (fp32 accumulation, the queries held in shared memory as fp32) and appends the rows whose
// (score, id) pair reaches the query's threshold — score descending, then id ascending, the CPU
// search's order — to that query's candidate buffer through an atomic counter. The host selects
// the exact top-k from the survivors and, where a buffer overflowed, scans again with the better
// threshold the kept survivors prove (jemc_infer/index/topk_plan.py, which also models this kernel
// in NumPy). Dead rows (id < 0) are skipped; a NaN score never passes a comparison.
//
// Layout: rows [n_rows, dim] row-major in T (float, __half, __nv_bfloat16), dim a multiple of
// 8 elements and every row 16-byte aligned (the host pads); one warp scores one row at a time with
// 16-byte loads, so a warp reads 512 contiguous bytes per step.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define QT 8           // queries per block (blockIdx.y tiles the query batch)
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

template <typename T>
__device__ __forceinline__ void scan(const T* __restrict__ rows, const long long* __restrict__ ids, int dim,
                                     long long n_visit, long long step, const float* __restrict__ queries, int nq,
                                     const float* __restrict__ thr_scores, const long long* __restrict__ thr_ids,
                                     float* __restrict__ out_scores, long long* __restrict__ out_ids,
                                     unsigned long long* __restrict__ counts, int cap) {
  extern __shared__ float tile[];  // [QT][dim] fp32 queries of this block's tile
  const int q0 = blockIdx.y * QT;
  const int nt = min(QT, nq - q0);
  for (int i = threadIdx.x; i < QT * dim; i += THREADS) {
    const int j = i / dim;
    tile[i] = j < nt ? queries[(long long)(q0 + j) * dim + (i - j * dim)] : 0.0f;
  }
  __syncthreads();
  constexpr int V = Vec<T>::N;
  const int lane = threadIdx.x & 31;
  const long long first = (long long)blockIdx.x * WARPS + (threadIdx.x >> 5);
  const long long stride = (long long)gridDim.x * WARPS;
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

#define JEMC_SCAN(NAME, T)                                                                                       \
  extern "C" __global__ void __launch_bounds__(THREADS) NAME(                                                    \
      const T* __restrict__ rows, const long long* __restrict__ ids, int dim, long long n_visit, long long step, \
      const float* __restrict__ queries, int nq, const float* __restrict__ thr_scores,                          \
      const long long* __restrict__ thr_ids, float* __restrict__ out_scores, long long* __restrict__ out_ids,   \
      unsigned long long* __restrict__ counts, int cap) {                                                        \
    scan<T>(rows, ids, dim, n_visit, step, queries, nq, thr_scores, thr_ids, out_scores, out_ids, counts, cap);  \
  }

JEMC_SCAN(jemc_scan_f32, float)
JEMC_SCAN(jemc_scan_f16, __half)
JEMC_SCAN(jemc_scan_bf16, __nv_bfloat16)
