// Masked pooling with fused pixel normalisation (see src/cpu/masked_pool.rs for the packing).
// p (B, D, HW) raw projections, m (B, HW) soft mask.

// inv[b, q] = 1 / sqrt(Σ_d p² + ε). Grid (ceil(HW / BLOCK), B), one thread per pixel.
template <typename T>
__device__ void mp_inv_norm(const T* p, T* inv, int d, int hw) {
    const int b = blockIdx.y, q = blockIdx.x * BLOCK + threadIdx.x;
    if (q >= hw) return;
    const T* pb = p + (i64)b * d * hw + q;
    T acc = T(0);
    for (int k = 0; k < d; ++k) { T x = pb[(i64)k * hw]; acc += x * x; }
    inv[(i64)b * hw + q] = T(1) / t_sqrt(acc + T(NORM_EPS));
}

// sums[b, 0..3, k] = (Σ m z, Σ (1−m) z, Σ z) over pixels. Grid (D, B).
template <typename T>
__device__ void mp_sums(const T* p, const T* m, const T* inv, T* sums, int d, int hw) {
    const int k = blockIdx.x, b = blockIdx.y;
    const T* row = p + ((i64)b * d + k) * hw;
    const T* mb = m + (i64)b * hw;
    const T* ib = inv + (i64)b * hw;
    T am = T(0), ab = T(0), aa = T(0);
    for (int q = threadIdx.x; q < hw; q += BLOCK) {
        T z = row[q] * ib[q], w = mb[q];
        am += w * z; ab += (T(1) - w) * z; aa += z;
    }
    am = block_sum(am); ab = block_sum(ab); aa = block_sum(aa);
    if (threadIdx.x == 0) {
        T* s = sums + (i64)b * 3 * d;
        s[k] = am; s[d + k] = ab; s[2 * d + k] = aa;
    }
}

// Normalises sums[b, which] / count into out_emb (D values); returns k = 1 / (count · r).
template <typename T>
__device__ T mp_normalise(const T* s, T count, T* out_emb, int d) {
    const T c = t_max(count, T(1e-6));
    T r2 = T(0);
    for (int k = threadIdx.x; k < d; k += BLOCK) { T a = s[k] / c; r2 += a * a; }
    r2 = block_sum(r2);
    const T r = t_sqrt(r2 + T(NORM_EPS));
    for (int k = threadIdx.x; k < d; k += BLOCK) out_emb[k] = (s[k] / c) / r;
    return T(1) / (c * r);
}

// Grid (B): masks' areas, the two normalised embeddings and the statistics.
template <typename T>
__device__ void mp_finalize(const T* m, const T* sums, T* out, int nb, int d, int hw) {
    const int b = blockIdx.x;
    const T* mb = m + (i64)b * hw;
    T area = T(0), rest = T(0);
    for (int q = threadIdx.x; q < hw; q += BLOCK) { area += mb[q]; rest += T(1) - mb[q]; }
    area = block_sum(area); rest = block_sum(rest);
    const bool has_t = area > T(0);
    const T* s = sums + (i64)b * 3 * d;
    const T kt = mp_normalise(has_t ? s : s + 2 * d, has_t ? area : T(hw), out + (i64)b * d, d);
    const T kb = mp_normalise(s + d, rest, out + (i64)nb * d + (i64)b * d, d);
    if (threadIdx.x == 0) {
        T* st = out + 2 * (i64)nb * d;
        st[b] = (has_t && rest > T(0)) ? T(1) : T(0);
        st[nb + b] = has_t ? T(1) : T(0);
        st[2 * nb + b] = kt;
        st[3 * nb + b] = kb;
    }
}

// dp from ds = [ds_t B·D | ds_b B·D | has_target B]. Grid (ceil(HW / BLOCK), B), one thread
// per pixel: one pass for Σp², p·ds_t, p·ds_b, one pass writing dp.
template <typename T>
__device__ void mp_backward(const T* p, const T* m, const T* ds, T* dp, int nb, int d, int hw) {
    const int b = blockIdx.y, q = blockIdx.x * BLOCK + threadIdx.x;
    if (q >= hw) return;
    const T* pb = p + (i64)b * d * hw + q;
    T* db = dp + (i64)b * d * hw + q;
    const T* dst = ds + (i64)b * d;
    const T* dsb = ds + (i64)nb * d + (i64)b * d;
    const bool has_t = ds[2 * (i64)nb * d + b] > T(0);
    T n2 = T(0), al = T(0), be = T(0);
    for (int k = 0; k < d; ++k) {
        T x = pb[(i64)k * hw];
        n2 += x * x; al += x * dst[k]; be += x * dsb[k];
    }
    const T inv = T(1) / t_sqrt(n2 + T(NORM_EPS));
    const T mq = m[(i64)b * hw + q];
    const T wt = has_t ? mq : T(1), wb = T(1) - mq;
    const T at = wt * inv, ab = wb * inv, c3 = (wt * al + wb * be) * inv * inv * inv;
    for (int k = 0; k < d; ++k) {
        const i64 o = (i64)k * hw;
        db[o] = at * dst[k] + ab * dsb[k] - c3 * pb[o];
    }
}

#define MP_INSTANTIATE(T, S)                                                                 \
    extern "C" __global__ void mp_inv_norm_##S(const T* p, T* inv, int d, int hw) {          \
        mp_inv_norm<T>(p, inv, d, hw);                                                       \
    }                                                                                        \
    extern "C" __global__ void mp_sums_##S(const T* p, const T* m, const T* inv, T* sums,    \
                                           int d, int hw) {                                  \
        mp_sums<T>(p, m, inv, sums, d, hw);                                                  \
    }                                                                                        \
    extern "C" __global__ void mp_finalize_##S(const T* m, const T* sums, T* out, int nb,    \
                                               int d, int hw) {                              \
        mp_finalize<T>(m, sums, out, nb, d, hw);                                             \
    }                                                                                        \
    extern "C" __global__ void mp_backward_##S(const T* p, const T* m, const T* ds, T* dp,   \
                                               int nb, int d, int hw) {                      \
        mp_backward<T>(p, m, ds, dp, nb, d, hw);                                             \
    }

MP_INSTANTIATE(float, f32)
MP_INSTANTIATE(double, f64)
