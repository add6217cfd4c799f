// Pixel–text cosine with fused pixel normalisation (see src/cpu/similarity.rs for the packing).
// p (B, D, HW) raw projections, u (B, D).

// out = [cos B·HW | inv B·HW]. Grid (ceil(HW / BLOCK), B), one thread per pixel.
template <typename T>
__device__ void ptc_forward(const T* p, const T* u, T* out, int nb, int d, int hw) {
    const int b = blockIdx.y, q = blockIdx.x * BLOCK + threadIdx.x;
    if (q >= hw) return;
    const T* pb = p + (i64)b * d * hw + q;
    const T* ub = u + (i64)b * d;
    T n2 = T(0), dot = T(0);
    for (int k = 0; k < d; ++k) { T x = pb[(i64)k * hw]; n2 += x * x; dot += x * ub[k]; }
    const T inv = T(1) / t_sqrt(n2 + T(NORM_EPS));
    out[(i64)b * hw + q] = dot * inv;
    out[(i64)nb * hw + (i64)b * hw + q] = inv;
}

// dp part of out = [dp B·D·HW | du B·D] from pack = [g | cos | inv] (B·HW each).
// Grid (ceil(HW / BLOCK), B).
template <typename T>
__device__ void ptc_backward_p(const T* p, const T* u, const T* pack, T* out, int nb, int d, int hw) {
    const int b = blockIdx.y, q = blockIdx.x * BLOCK + threadIdx.x;
    if (q >= hw) return;
    const i64 bq = (i64)b * hw + q, bhw = (i64)nb * hw;
    const T inv = pack[2 * bhw + bq];
    const T a = pack[bq] * inv, c = a * pack[bhw + bq] * inv;
    const T* pb = p + (i64)b * d * hw + q;
    const T* ub = u + (i64)b * d;
    T* db = out + (i64)b * d * hw + q;
    for (int k = 0; k < d; ++k) {
        const i64 o = (i64)k * hw;
        db[o] = a * ub[k] - c * pb[o];
    }
}

// du part: du[b, k] = Σ_q g_q inv_q p_kq. Grid (D, B).
template <typename T>
__device__ void ptc_backward_u(const T* p, const T* pack, T* out, int nb, int d, int hw) {
    const int k = blockIdx.x, b = blockIdx.y;
    const i64 bhw = (i64)nb * hw;
    const T* row = p + ((i64)b * d + k) * hw;
    const T* g = pack + (i64)b * hw;
    const T* inv = pack + 2 * bhw + (i64)b * hw;
    T acc = T(0);
    for (int q = threadIdx.x; q < hw; q += BLOCK) acc += g[q] * inv[q] * row[q];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[(i64)nb * d * hw + (i64)b * d + k] = acc;
}

#define PTC_INSTANTIATE(T, S)                                                                \
    extern "C" __global__ void ptc_forward_##S(const T* p, const T* u, T* out, int nb, int d, \
                                               int hw) {                                     \
        ptc_forward<T>(p, u, out, nb, d, hw);                                                \
    }                                                                                        \
    extern "C" __global__ void ptc_backward_p_##S(const T* p, const T* u, const T* pack,     \
                                                  T* out, int nb, int d, int hw) {           \
        ptc_backward_p<T>(p, u, pack, out, nb, d, hw);                                       \
    }                                                                                        \
    extern "C" __global__ void ptc_backward_u_##S(const T* p, const T* pack, T* out, int nb, \
                                                  int d, int hw) {                           \
        ptc_backward_u<T>(p, pack, out, nb, d, hw);                                          \
    }

PTC_INSTANTIATE(float, f32)
PTC_INSTANTIATE(double, f64)
