// A minimal CPU emulation of the CUDA features the kernels use, to check their logic without a
// GPU: one block at a time, one std::thread per CUDA thread, std::barrier for __syncthreads
// and for warp shuffles (exchanged through per-warp slots). Not a performance model.
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>
#include <algorithm>
#include <memory>
using std::min;
struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) alignas(n)
static std::unique_ptr<std::barrier<>> g_block;
static std::unique_ptr<std::barrier<>> g_warp_bar[32];
static double g_warp_vals[32][32];
static std::vector<unsigned char> g_dyn_smem;
inline void __syncthreads() { g_block->arrive_and_wait(); }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    g_warp_bar[w]->arrive_and_wait();
    g_warp_vals[w][lane] = (double)v;
    g_warp_bar[w]->arrive_and_wait();
    return (T)g_warp_vals[w][lane ^ o];
}
template <class F> void launch(unsigned gx, unsigned gy, unsigned block, size_t smem, F f) {
    blockDim = {block, 1, 1};
    gridDim = {gx, gy, 1};
    g_dyn_smem.assign(smem + 16, 0xAB);  // garbage-filled, as on a GPU
    for (unsigned by = 0; by < gy; ++by)
        for (unsigned bx = 0; bx < gx; ++bx) {
            g_block = std::make_unique<std::barrier<>>(block);
            for (unsigned w = 0; w < block / 32; ++w) g_warp_bar[w] = std::make_unique<std::barrier<>>(32);
            std::vector<std::thread> ts;
            for (unsigned t = 0; t < block; ++t)
                ts.emplace_back([=] { threadIdx = {t, 0, 0}; blockIdx = {bx, by, 0}; f(); });
            for (auto& t : ts) t.join();
        }
}
