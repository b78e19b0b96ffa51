// nvcuda::wmma on the CPU for tests/fakes/cuda_emu (m16n16k16 only; half / bf16 inputs, float
// accumulators). Each thread holds the whole 16x16 tile (on a GPU a warp shares it), so every lane
// computes the same product. The API's rules are enforced: pointers 256-bit aligned, ldm a multiple
// of 16 bytes. The accumulation is fp32 in k order (tensor cores round differently: tests compare
// scores to a tolerance).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "cuda_emu: m16n16k16 only");
  float x[256];
};

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

inline void check(const void* p, unsigned ldm, unsigned elem, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * elem) % 16 != 0) {
    std::fprintf(stderr, "cuda_emu: %s: pointer %p not 256-bit aligned or ldm %u not a multiple of 16 bytes\n", what, p, ldm);
    std::abort();
  }
}

template <typename T>
void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major>& f, const T* p, unsigned ldm) {
  check(p, ldm, sizeof(T), "load_matrix_sync(matrix_a)");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = to_float(p[r * ldm + c]);
}

template <typename T>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major>& f, const T* p, unsigned ldm) {
  check(p, ldm, sizeof(T), "load_matrix_sync(matrix_b)");
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) f.x[k * 16 + n] = to_float(p[n * ldm + k]);  // column n holds B(., n)
}

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}

template <typename T>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, row_major>& a,
              const fragment<matrix_b, 16, 16, 16, T, col_major>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float acc = c.x[m * 16 + n];
      for (int k = 0; k < 16; ++k) acc += a.x[m * 16 + k] * b.x[k * 16 + n];
      out[m * 16 + n] = acc;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t layout) {
  check(p, ldm, sizeof(float), "store_matrix_sync");
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      const float v = f.x[m * 16 + n];
      if (layout == mem_row_major) p[m * ldm + n] = v;
      else p[n * ldm + m] = v;
    }
}

}  // namespace wmma
}  // namespace nvcuda
