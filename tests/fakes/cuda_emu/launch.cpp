// topk.cu's kernels on the CPU (tests/support/cuda_emu.py builds this with g++, cuda_emu.h forced in).
// emu_launch takes its arguments as cuLaunchKernel does: args[i] points at the i-th argument's value.
#include JEMC_TOPK_CU

#include <string>

extern "C" const char* emu_error() { return jemc_emu::error; }

#define A(i, T) (*reinterpret_cast<T*>(args[i]))
#define SIMT(NAME, T)                                                                                            \
  if (k == #NAME)                                                                                                \
    body = [=] {                                                                                                 \
      NAME(A(0, const T*), A(1, const long long*), A(2, int), A(3, long long), A(4, long long), A(5, const float*), \
           A(6, int), A(7, const float*), A(8, const long long*), A(9, float*), A(10, long long*),                \
           A(11, unsigned long long*), A(12, int));                                                               \
    };
#define TC(NAME, T)                                                                                              \
  if (k == #NAME)                                                                                                \
    body = [=] {                                                                                                 \
      NAME(A(0, const T*), A(1, const long long*), A(2, int), A(3, long long), A(4, long long), A(5, const T*),  \
           A(6, const T*), A(7, int), A(8, const float*), A(9, const long long*), A(10, float*), A(11, long long*), \
           A(12, unsigned long long*), A(13, int));                                                               \
    };

extern "C" int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                          size_t shared, void** args) {
  const std::string k(name);
  std::function<void()> body;
  SIMT(jemc_simt2_f32, float)
  SIMT(jemc_simt2_f16, __half)
  SIMT(jemc_simt2_bf16, __nv_bfloat16)
  SIMT(jemc_simt8_f32, float)
  SIMT(jemc_simt8_f16, __half)
  SIMT(jemc_simt8_bf16, __nv_bfloat16)
  TC(jemc_tc16_f16, __half)
  TC(jemc_tc64_f16, __half)
  TC(jemc_tc16_bf16, __nv_bfloat16)
  TC(jemc_tc64_bf16, __nv_bfloat16)
  if (!body) {
    std::snprintf(jemc_emu::error, sizeof jemc_emu::error, "no kernel named %s", name);
    return 1;
  }
  jemc_emu::error[0] = 0;
  return jemc_emu::launch(make_uint3(gx, gy, gz), make_uint3(bx, by, bz), shared, body) ? 0 : 2;
}
