// Multi-level symmetric multi-positive InfoNCE, streamed (see src/cpu/contrastive.rs for the
// math and the packing). emb (3, Lv, N, D) = [target; text; background], scales (Lv),
// aux (Lv + 2, N) = [dense group id; group size; has_background per level].
// One block per (row or column, level): grid (N, Lv); the N×N logits are never stored.

template <typename T> struct Level {
    const T *t, *u, *v, *gid, *cnt, *has;
    T s;
    int n, d;
    // The level of this block (blockIdx.y), with inverse temperature s_.
    __device__ Level(const T* emb, const T* aux, T s_, int lv, int n_, int d_) {
        const int l = blockIdx.y;
        n = n_; d = d_; s = s_;
        t = emb + ((i64)0 * lv + l) * n * d;
        u = emb + ((i64)1 * lv + l) * n * d;
        v = emb + ((i64)2 * lv + l) * n * d;
        gid = aux; cnt = aux + n; has = aux + (i64)(2 + l) * n;
    }
};

template <typename T> __device__ __forceinline__ T background_logit(T s, T c, T has) {
    return s * c * has + (has - T(1)) * T(1e4);
}

// Per-warp (LSE state, positive sum) → merged over the block into thread 0's st and pos.
template <typename T> __device__ void merge_warps(Lse<T>& st, T& pos) {
    __shared__ T sm[WARPS], sz[WARPS], sp[WARPS];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) { sm[w] = st.m; sz[w] = st.z; sp[w] = pos; }
    __syncthreads();
    if (threadIdx.x == 0) {
        Lse<T> all; all.init();
        T p = T(0);
        for (int k = 0; k < WARPS; ++k) { all.merge(sm[k], sz[k]); p += sp[k]; }
        st = all; pos = p;
    }
}

// Row i (image → texts): row LSE into out[Lv + l·N + i], the row term into terms[l·N + i].
template <typename T>
__device__ void cl_rows(const T* emb, const T* scales, const T* aux, T* out, T* terms, int lv, int n, int d) {
    const Level<T> L(emb, aux, scales[blockIdx.y], lv, n, d);
    const int i = blockIdx.x, l = blockIdx.y, w = threadIdx.x >> 5;
    Lse<T> st; st.init();
    T pos = T(0);
    for (int j = w; j < n; j += WARPS) {
        const T sij = warp_dot(L.t + (i64)i * d, L.u + (i64)j * d, d);
        st.add(L.s * sij);
        if (L.gid[j] == L.gid[i]) pos += sij;
    }
    merge_warps(st, pos);
    if (threadIdx.x == 0) {
        const T lse = st.value();
        out[lv + (i64)l * n + i] = lse;
        terms[(i64)l * n + i] = lse - L.s * pos / L.cnt[i];
    }
}

// Column j (text → images, plus its background): column LSE into out[Lv + Lv·N + l·N + j],
// the column term into terms[Lv·N + l·N + j].
template <typename T>
__device__ void cl_cols(const T* emb, const T* scales, const T* aux, T* out, T* terms, int lv, int n, int d, int background) {
    const Level<T> L(emb, aux, scales[blockIdx.y], lv, n, d);
    const int j = blockIdx.x, l = blockIdx.y, w = threadIdx.x >> 5;
    Lse<T> st; st.init();
    T pos = T(0);
    for (int i = w; i < n; i += WARPS) {
        const T sij = warp_dot(L.t + (i64)i * d, L.u + (i64)j * d, d);
        st.add(L.s * sij);
        if (L.gid[j] == L.gid[i]) pos += sij;
    }
    __shared__ T bg;
    if (w == 0) {
        const T c = warp_dot(L.u + (i64)j * d, L.v + (i64)j * d, d);
        if (threadIdx.x == 0) bg = background_logit(L.s, c, L.has[j]);
    }
    merge_warps(st, pos);
    if (threadIdx.x == 0) {
        if (background) st.add(bg);
        const T lse = st.value();
        out[lv + (i64)lv * n + (i64)l * n + j] = lse;
        terms[(i64)lv * n + (i64)l * n + j] = lse - L.s * pos / L.cnt[j];
    }
}

// loss_l = ½ (Σ row terms + Σ column terms) / N. Grid (1, Lv).
template <typename T>
__device__ void cl_loss(const T* terms, T* out, int lv, int n) {
    const int l = blockIdx.y;
    T acc = T(0);
    for (int k = threadIdx.x; k < n; k += BLOCK)
        acc += terms[(i64)l * n + k] + terms[(i64)lv * n + (i64)l * n + k];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[l] = T(0.5) * acc / T(n);
}

// The saved statistics in pack = [scales Lv | upstream Lv | row LSE Lv·N | column LSE Lv·N].
template <typename T> struct Saved {
    T coef;
    const T *row, *col;
    __device__ Saved(const T* pack, int lv, int n) {
        const int l = blockIdx.y;
        coef = pack[lv + l] * T(0.5) / T(n);
        row = pack + 2 * lv + (i64)l * n;
        col = pack + 2 * lv + (i64)lv * n + (i64)l * n;
    }
};

// ∂loss/∂logit_ij.
template <typename T>
__device__ __forceinline__ T grad_logit(const Level<T>& L, const Saved<T>& S, T sij, int i, int j) {
    const T x = L.s * sij;
    const T p = L.gid[i] == L.gid[j] ? T(1) : T(0);
    return S.coef * ((t_exp(x - S.row[i]) - p / L.cnt[i]) + (t_exp(x - S.col[j]) - p / L.cnt[j]));
}

#define TILE 32

// Shared, per block: acc[D] (dynamic) and the gradient tile.
// Row i: ∂t_i = s Σ_j G_ij u_j into out, Σ_j G_ij S_ij into dscale[l·N + i].
// If `by_column`, the roles swap: column j: ∂u_j = s Σ_i G_ij t_i (+ the background terms).
template <typename T>
__device__ void cl_backward(const T* emb, const T* pack, const T* aux, T* out, T* dscale, int lv, int n, int d, int by_column, int background) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* acc = reinterpret_cast<T*>(smem_raw);
    __shared__ T tile[TILE];
    __shared__ T wsum[WARPS];
    const T s = pack[blockIdx.y];
    const Level<T> Ls(emb, aux, s, lv, n, d);
    const Saved<T> S(pack, lv, n);
    const int me = blockIdx.x, l = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const T* mine = by_column ? Ls.u + (i64)me * d : Ls.t + (i64)me * d;
    const T* others = by_column ? Ls.t : Ls.u;
    for (int k = threadIdx.x; k < d; k += BLOCK) acc[k] = T(0);
    T dsacc = T(0);
    for (int o0 = 0; o0 < n; o0 += TILE) {
        const int len = min(TILE, n - o0);
        for (int oo = w; oo < TILE; oo += WARPS) {
            T g = T(0);
            if (oo < len) {
                const int o = o0 + oo;
                const T sij = warp_dot(mine, others + (i64)o * d, d);
                g = by_column ? grad_logit(Ls, S, sij, o, me) : grad_logit(Ls, S, sij, me, o);
                dsacc += g * sij;
            }
            if (lane == 0) tile[oo] = s * g;
        }
        __syncthreads();
        for (int k = threadIdx.x; k < d; k += BLOCK) {
            T a = acc[k];
            for (int oo = 0; oo < len; ++oo) a += tile[oo] * others[(i64)(o0 + oo) * d + k];
            acc[k] = a;
        }
        __syncthreads();
    }
    if (lane == 0) wsum[w] = dsacc;
    __syncthreads();
    const i64 nd = (i64)n * d;
    if (!by_column) {
        T* dt = out + ((i64)0 * lv + l) * nd + (i64)me * d;
        for (int k = threadIdx.x; k < d; k += BLOCK) dt[k] = acc[k];
        if (threadIdx.x == 0) {
            T tot = T(0);
            for (int k = 0; k < WARPS; ++k) tot += wsum[k];
            dscale[(i64)l * n + me] = tot;
        }
        return;
    }
    // Column: the background negative of text j.
    __shared__ T bgc[2];
    if (w == 0) {
        const T c = warp_dot(Ls.u + (i64)me * d, Ls.v + (i64)me * d, d);
        if (lane == 0) {
            const T has = Ls.has[me];
            const T gb = background ? S.coef * t_exp(background_logit(s, c, has) - S.col[me]) : T(0);
            bgc[0] = s * has * gb;                // weight of v_j in ∂u_j and of u_j in ∂v_j
            bgc[1] = gb * has * c;                // ∂scale contribution
        }
    }
    __syncthreads();
    const T* u = Ls.u + (i64)me * d;
    const T* v = Ls.v + (i64)me * d;
    T* du = out + ((i64)1 * lv + l) * nd + (i64)me * d;
    T* dv = out + ((i64)2 * lv + l) * nd + (i64)me * d;
    for (int k = threadIdx.x; k < d; k += BLOCK) {
        du[k] = acc[k] + bgc[0] * v[k];
        dv[k] = bgc[0] * u[k];
    }
    if (threadIdx.x == 0) dscale[(i64)lv * n + (i64)l * n + me] = bgc[1];
}

// ∂scale_l = Σ over the 2N partial sums, into out[3·Lv·N·D + l]. Grid (1, Lv).
template <typename T>
__device__ void cl_dscale(const T* dscale, T* out, int lv, int n, int d) {
    const int l = blockIdx.y;
    T acc = T(0);
    for (int k = threadIdx.x; k < n; k += BLOCK)
        acc += dscale[(i64)l * n + k] + dscale[(i64)lv * n + (i64)l * n + k];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[3 * (i64)lv * n * d + l] = acc;
}

#define CL_INSTANTIATE(T, S)                                                                 \
    extern "C" __global__ void cl_rows_##S(const T* emb, const T* scales, const T* aux,      \
                                           T* out, T* terms, int lv, int n, int d) {         \
        cl_rows<T>(emb, scales, aux, out, terms, lv, n, d);                                  \
    }                                                                                        \
    extern "C" __global__ void cl_cols_##S(const T* emb, const T* scales, const T* aux,      \
                                           T* out, T* terms, int lv, int n, int d,           \
                                           int background) {                                 \
        cl_cols<T>(emb, scales, aux, out, terms, lv, n, d, background);                      \
    }                                                                                        \
    extern "C" __global__ void cl_loss_##S(const T* terms, T* out, int lv, int n) {          \
        cl_loss<T>(terms, out, lv, n);                                                       \
    }                                                                                        \
    extern "C" __global__ void cl_backward_##S(const T* emb, const T* pack, const T* aux,    \
                                               T* out, T* dscale, int lv, int n, int d,      \
                                               int by_column, int background) {              \
        cl_backward<T>(emb, pack, aux, out, dscale, lv, n, d, by_column, background);        \
    }                                                                                        \
    extern "C" __global__ void cl_dscale_##S(const T* dscale, T* out, int lv, int n, int d) { \
        cl_dscale<T>(dscale, out, lv, n, d);                                                 \
    }

CL_INSTANTIATE(float, f32)
CL_INSTANTIATE(double, f64)
