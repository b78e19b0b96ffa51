// A CPU emulation of the CUDA execution model, enough to run jemc_infer/index/topk.cu (tests only).
//
// The kernel's own source is compiled by g++ with this header forced in first (tests/fakes/cuda_emu.py).
// Every thread of a block is a coroutine (ucontext) with its own stack and its own threadIdx;
// __syncthreads() parks it until every live thread of the block has arrived, __shfl_xor_sync()
// until every live lane of its warp has (so a barrier in divergent code deadlocks here as on a
// GPU, and is reported). Threads run in a different order after every barrier (forward, then
// backward), so a read that is not ordered after its write by a barrier sees stale data in one
// of the two. Blocks run one after another; __shared__ variables are one per kernel (blocks never
// overlap), the dynamic shared memory is the launch's size, zero-filled. WMMA is tests/fakes/
// cuda_emu/mma.h. What is not emulated: memory bounds (pointers are host pointers), warp-level
// timing, atomics' races (atomicAdd is a plain add: the order of survivors is the threads' order).
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <vector_functions.h>
#include <vector_types.h>

#undef __global__  // (the CUDA headers' host definitions, replaced)
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define JEMC_EMULATED 1

using std::max;
using std::min;

namespace jemc_emu {

enum State { RUNNING, AT_BARRIER, AT_SHUFFLE, DONE };

struct Thread {
  ucontext_t ctx;
  uint3 tid;
  State state;
};

struct Block {
  uint3 block_idx, block_dim, grid_dim;
  std::vector<Thread> threads;
  ucontext_t sched;
  int current = 0;
  std::function<void()> body;
  std::vector<float> lanes;  // __shfl_xor_sync's exchange, one slot per thread
  unsigned char* dynamic_shared = nullptr;
};

inline Block* block = nullptr;
inline std::vector<std::vector<char>> stacks;
inline std::vector<unsigned char> dynamic_shared;
inline char error[512] = "";

inline Thread& me() { return block->threads[block->current]; }
inline int flat_id() {
  const uint3 t = me().tid;
  return t.x + block->block_dim.x * (t.y + block->block_dim.y * t.z);
}

inline void park(State s) {
  me().state = s;
  swapcontext(&me().ctx, &block->sched);
}

inline void entry() {
  block->body();
  me().state = DONE;
  swapcontext(&me().ctx, &block->sched);
}

// Run one block to its end; false (and `error` set) on a deadlock.
inline bool run_block() {
  Block& b = *block;
  const int n = (int)b.threads.size();
  for (int t = 0; t < n; ++t) {
    Thread& th = b.threads[t];
    getcontext(&th.ctx);
    th.ctx.uc_stack.ss_sp = stacks[t].data();
    th.ctx.uc_stack.ss_size = stacks[t].size();
    th.ctx.uc_link = nullptr;
    makecontext(&th.ctx, entry, 0);
    th.state = RUNNING;
  }
  for (int round = 0;; ++round) {
    for (int i = 0; i < n; ++i) {
      const int t = round % 2 ? n - 1 - i : i;
      if (b.threads[t].state != RUNNING) continue;
      b.current = t;
      swapcontext(&b.sched, &b.threads[t].ctx);
    }
    int done = 0, at_barrier = 0;
    bool released = false;
    for (int w = 0; w < n; w += 32) {  // a warp whose live lanes all wait on a shuffle goes on
      int waiting = 0, live = 0;
      for (int t = w; t < std::min(n, w + 32); ++t) {
        live += b.threads[t].state != DONE;
        waiting += b.threads[t].state == AT_SHUFFLE;
      }
      if (waiting && waiting == live) {
        for (int t = w; t < std::min(n, w + 32); ++t)
          if (b.threads[t].state == AT_SHUFFLE) b.threads[t].state = RUNNING;
        released = true;
      }
    }
    if (released) continue;
    for (const Thread& th : b.threads) {
      done += th.state == DONE;
      at_barrier += th.state == AT_BARRIER;
    }
    if (done == n) return true;
    if (at_barrier == n - done) {
      for (Thread& th : b.threads)
        if (th.state == AT_BARRIER) th.state = RUNNING;
      continue;
    }
    std::snprintf(error, sizeof error, "deadlock in block (%u,%u,%u): %d threads at __syncthreads, %d done, the rest at a shuffle",
                  b.block_idx.x, b.block_idx.y, b.block_idx.z, at_barrier, done);
    return false;
  }
}

// Launch: every block of `grid` in turn, `body` the kernel call (its arguments captured).
inline bool launch(uint3 grid, uint3 block_dim, size_t shared, std::function<void()> body) {
  const int n = block_dim.x * block_dim.y * block_dim.z;
  stacks.resize(n);
  for (auto& s : stacks) s.resize(256 << 10);
  dynamic_shared.assign(shared + 16, 0);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block b;
        b.block_idx = make_uint3(x, y, z);
        b.block_dim = block_dim;
        b.grid_dim = grid;
        b.threads.resize(n);
        for (int t = 0; t < n; ++t)
          b.threads[t].tid = make_uint3(t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y));
        b.body = body;
        b.lanes.assign(n, 0.0f);
        b.dynamic_shared = dynamic_shared.data();
        block = &b;
        const bool ok = run_block();
        block = nullptr;
        if (!ok) return false;
      }
  return true;
}

}  // namespace jemc_emu

#define threadIdx (jemc_emu::me().tid)
#define blockIdx (jemc_emu::block->block_idx)
#define blockDim (jemc_emu::block->block_dim)
#define gridDim (jemc_emu::block->grid_dim)
#define JEMC_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(jemc_emu::block->dynamic_shared)

inline void __syncthreads() { jemc_emu::park(jemc_emu::AT_BARRIER); }

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  if (mask != 0xffffffffu) {
    std::fprintf(stderr, "cuda_emu: __shfl_xor_sync with a partial mask is not emulated\n");
    std::abort();
  }
  const int t = jemc_emu::flat_id();
  jemc_emu::block->lanes[t] = v;
  jemc_emu::park(jemc_emu::AT_SHUFFLE);  // every lane has written
  const float out = jemc_emu::block->lanes[t ^ lane_mask];
  jemc_emu::park(jemc_emu::AT_SHUFFLE);  // every lane has read
  return out;
}

inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
