// Runs the CUDA kernels under cuda_emu.h on the inputs written by tests/cuda_emu_dump.rs and
// compares with the composed references (f64 and f32 instantiations). Exit status 1 on a
// mismatch. Built and run by run.sh.
#include "cuda_emu.h"
#include "common.inc"
#include "masked_pool.inc"
#include "similarity.inc"
#include "contrastive.inc"
#include <fstream>
#include <string>
#include <sstream>

static std::vector<double> rd(const std::string& dir, const std::string& n) {
    std::ifstream f(dir + "/" + n + ".bin", std::ios::binary);
    std::vector<double> v;
    double x;
    while (f.read((char*)&x, 8)) v.push_back(x);
    return v;
}
static std::vector<long> dims(const std::string& dir) {
    std::ifstream f(dir + "/dims.txt");
    std::vector<long> d; long x;
    while (f >> x) d.push_back(x);
    return d;
}
template <class T> std::vector<T> cv(const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); }
static double worst_all = 0;
static int failures = 0;
template <class T> void cmp(const char* what, const std::string& dir, const T* a, const std::vector<double>& ref, double tol) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < ref.size(); ++i) { diff = std::max(diff, std::fabs((double)a[i] - ref[i])); scale = std::max(scale, std::fabs(ref[i])); }
    double e = scale > 0 ? diff / scale : diff;
    if (!(e <= tol)) { printf("FAIL "); ++failures; }
    printf("%-6s %-14s %-6s rel err %.3e\n", dir.substr(dir.rfind('/') + 1).c_str(), what, sizeof(T) == 4 ? "f32" : "f64", e);
    if (sizeof(T) == 8) worst_all = std::max(worst_all, e);
}
#define B 256

template <class T, class K1, class K2, class K3, class K4>
void mp(const std::string& dir, K1 inv_norm, K2 sums_k, K3 fin, K4 back, double tol) {
    auto dm = dims(dir); int b = dm[0], d = dm[1], hw = dm[2];
    auto p = cv<T>(rd(dir, "p")), m = cv<T>(rd(dir, "m")), wt = cv<T>(rd(dir, "wt")), wb = cv<T>(rd(dir, "wb"));
    std::vector<T> inv(b * hw), sums(3 * b * d), out(2 * b * d + 4 * b);
    launch((hw + B - 1) / B, b, B, 0, [&] { inv_norm(p.data(), inv.data(), d, hw); });
    launch(d, b, B, 0, [&] { sums_k(p.data(), m.data(), inv.data(), sums.data(), d, hw); });
    launch(b, 1, B, 0, [&] { fin(m.data(), sums.data(), out.data(), b, d, hw); });
    cmp("target", dir, out.data(), rd(dir, "target"), tol);
    cmp("background", dir, out.data() + b * d, rd(dir, "background"), tol);
    cmp("has", dir, out.data() + 2 * b * d, rd(dir, "has"), 0);
    // The Rust glue: ds = k (g - y (y.g)).
    std::vector<T> ds(2 * b * d + b);
    for (int s = 0; s < 2; ++s) for (int i = 0; i < b; ++i) {
        const T* y = out.data() + s * b * d + i * d; const T* g = (s ? wb : wt).data() + i * d;
        T yg = 0; for (int k = 0; k < d; ++k) yg += y[k] * g[k];
        T kk = out[2 * b * d + (2 + s) * b + i];
        for (int k = 0; k < d; ++k) ds[s * b * d + i * d + k] = kk * (g[k] - y[k] * yg);
    }
    for (int i = 0; i < b; ++i) ds[2 * b * d + i] = out[2 * b * d + b + i];
    std::vector<T> dp(b * d * hw);
    launch((hw + B - 1) / B, b, B, 0, [&] { back(p.data(), m.data(), ds.data(), dp.data(), b, d, hw); });
    cmp("dp", dir, dp.data(), rd(dir, "dp"), tol * 10);
}

template <class T, class K1, class K2, class K3>
void ptc(const std::string& dir, K1 fwd, K2 bp, K3 bu, double tol) {
    auto dm = dims(dir); int b = dm[0], d = dm[1], hw = dm[2];
    auto p = cv<T>(rd(dir, "p")), u = cv<T>(rd(dir, "u")), wg = cv<T>(rd(dir, "wg"));
    std::vector<T> out(2 * b * hw);
    launch((hw + B - 1) / B, b, B, 0, [&] { fwd(p.data(), u.data(), out.data(), b, d, hw); });
    cmp("cos", dir, out.data(), rd(dir, "cos"), tol);
    std::vector<T> pack(wg); pack.insert(pack.end(), out.begin(), out.end());
    std::vector<T> g(b * d * hw + b * d);
    launch((hw + B - 1) / B, b, B, 0, [&] { bp(p.data(), u.data(), pack.data(), g.data(), b, d, hw); });
    launch(d, b, B, 0, [&] { bu(p.data(), pack.data(), g.data(), b, d, hw); });
    cmp("dp", dir, g.data(), rd(dir, "dp"), tol * 10);
    cmp("du", dir, g.data() + b * d * hw, rd(dir, "du"), tol * 10);
}

template <class T, class K1, class K2, class K3, class K4, class K5>
void cl(const std::string& dir, K1 rows, K2 cols, K3 loss, K4 back, K5 dsc, double tol) {
    auto dm = dims(dir); int lv = dm[0], n = dm[1], d = dm[2], bg = dm[3];
    auto emb = cv<T>(rd(dir, "emb")), sc = cv<T>(rd(dir, "scales")), aux = cv<T>(rd(dir, "aux")), wl = cv<T>(rd(dir, "wl"));
    std::vector<T> out(lv + 2 * lv * n), terms(2 * lv * n);
    launch(n, lv, B, 0, [&] { rows(emb.data(), sc.data(), aux.data(), out.data(), terms.data(), lv, n, d); });
    launch(n, lv, B, 0, [&] { cols(emb.data(), sc.data(), aux.data(), out.data(), terms.data(), lv, n, d, bg); });
    launch(1, lv, B, 0, [&] { loss(terms.data(), out.data(), lv, n); });
    cmp("loss", dir, out.data(), rd(dir, "loss"), tol);
    std::vector<T> pack(sc); pack.insert(pack.end(), wl.begin(), wl.end());
    pack.insert(pack.end(), out.begin() + lv, out.end());
    std::vector<T> g(3 * lv * n * d + lv), ds(2 * lv * n);
    for (int byc = 0; byc < 2; ++byc)
        launch(n, lv, B, d * sizeof(T), [&] { back(emb.data(), pack.data(), aux.data(), g.data(), ds.data(), lv, n, d, byc, bg); });
    launch(1, lv, B, 0, [&] { dsc(ds.data(), g.data(), lv, n, d); });
    cmp("demb", dir, g.data(), rd(dir, "demb"), tol * 10);
    cmp("dscales", dir, g.data() + 3 * lv * n * d, rd(dir, "dscales"), tol * 10);
}

int main(int argc, char** argv) {
    const std::string root = argc > 1 ? argv[1] : ".";
    for (int k = 0; k < 2; ++k) {
        std::string dir = root + "/mp" + std::to_string(k);
        mp<double>(dir, mp_inv_norm_f64, mp_sums_f64, mp_finalize_f64, mp_backward_f64, 1e-12);
        mp<float>(dir, mp_inv_norm_f32, mp_sums_f32, mp_finalize_f32, mp_backward_f32, 1e-5);
        dir = root + "/ptc" + std::to_string(k);
        ptc<double>(dir, ptc_forward_f64, ptc_backward_p_f64, ptc_backward_u_f64, 1e-12);
        ptc<float>(dir, ptc_forward_f32, ptc_backward_p_f32, ptc_backward_u_f32, 1e-5);
    }
    for (int k = 0; k < 6; ++k) {
        std::string dir = root + "/cl" + std::to_string(k);
        cl<double>(dir, cl_rows_f64, cl_cols_f64, cl_loss_f64, cl_backward_f64, cl_dscale_f64, 1e-12);
        cl<float>(dir, cl_rows_f32, cl_cols_f32, cl_loss_f32, cl_backward_f32, cl_dscale_f32, 1e-5);
    }
    printf("worst f64 rel err %.3e, %d failed\n", worst_all, failures);
    return failures ? 1 : 0;
}
