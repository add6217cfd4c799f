// Shared device helpers, prepended to every module before NVRTC compiles it.
// Kernels are written once as templates and instantiated for float and double as
// extern "C" entry points named <kernel>_f32 / <kernel>_f64.

#define BLOCK 256
#define WARPS (BLOCK / 32)
#define NORM_EPS 1e-12

typedef long long i64;

__device__ __forceinline__ float t_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double t_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float t_exp(float x) { return expf(x); }
__device__ __forceinline__ double t_exp(double x) { return exp(x); }
__device__ __forceinline__ float t_log(float x) { return logf(x); }
__device__ __forceinline__ double t_log(double x) { return log(x); }
__device__ __forceinline__ float t_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double t_max(double a, double b) { return fmax(a, b); }

// Sum over the 32 lanes of a warp; every lane gets the result.
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a block of BLOCK threads; every thread gets the result. Safe to call repeatedly.
template <typename T> __device__ T block_sum(T v) {
    __shared__ T part[WARPS];
    __shared__ T total;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) part[w] = v;
    __syncthreads();
    if (w == 0) {
        T x = lane < WARPS ? part[lane] : T(0);
        x = warp_sum(x);
        if (lane == 0) total = x;
    }
    __syncthreads();
    return total;
}

// Warp-cooperative dot product of two d-vectors; every lane gets the result.
template <typename T> __device__ __forceinline__ T warp_dot(const T* a, const T* b, int d) {
    T acc = T(0);
    for (int k = threadIdx.x & 31; k < d; k += 32) acc += a[k] * b[k];
    return warp_sum(acc);
}

// Streaming log-sum-exp state: z = Σ exp(x − m); z == 0 means empty.
template <typename T> struct Lse {
    T m, z;
    __device__ void init() { m = T(0); z = T(0); }
    __device__ void add(T x) {
        if (z == T(0)) { m = x; z = T(1); }
        else if (x > m) { z = z * t_exp(m - x) + T(1); m = x; }
        else { z += t_exp(x - m); }
    }
    __device__ void merge(T om, T oz) {
        if (oz == T(0)) return;
        if (z == T(0)) { m = om; z = oz; return; }
        T mm = t_max(m, om);
        z = z * t_exp(m - mm) + oz * t_exp(om - mm);
        m = mm;
    }
    __device__ T value() const { return m + t_log(z); }
};
