//! The prepared GPU check of the fused ops (issue 4): the CUDA implementations against the CPU
//! reference and against the composed candle ops, then timings at the paper setting's sizes.
//!
//!     cargo run --release -p tmca-kernels --features cuda --example gpu_check [-- OPTIONS]
//!     cargo run --release -p tmca-kernels --example gpu_check -- --cpu     # no GPU needed
//!
//! On a GPU machine use `kernels/gpu-check.sh` (build here, run there).
//!
//! Options:
//! * `--cpu`: run the same correctness checks with Device::Cpu as the device under test
//!   (fused f32 vs the f64 CPU op, fused vs composed); no timings unless `--time`.
//! * `--quick`: only the small odd-sized cases (and small timing sizes).
//! * `--sanitize`: quick cases, fused ops on the device only, no timings (for
//!   compute-sanitizer, whose slowdown would make the composed ops and the timings take long).
//! * `--no-time` / `--time`: skip / force the timings; `--reps N` (default 50, at least 1).
//! * `--md PATH`: also write the timing table (Markdown) to PATH.
//!
//! Exit status: 0 every check passed; 1 a check failed; 2 CUDA is not compiled in (build with
//! `--features cuda`) and `--cpu` was not given; 3 no usable CUDA device, or another error.
//!
//! # Correctness
//!
//! Every case draws fresh deterministic inputs in f64, rounded through f32, so that the f32 and
//! the f64 evaluations see identical values. The reference is the fused op on Device::Cpu in f64.
//! Per case, forward outputs and the gradients of a random weighted sum of them are compared as
//! max |a − b| / max |b| (non-finite values in `a` where `b` is finite count as ∞):
//!
//! * `dev32~cpu32`: the op on the device in f32 vs the same op on the CPU in f32;
//! * `dev32~cpu64`: device f32 vs the f64 reference (the f32 result's actual accuracy);
//! * `dev64~cpu64`: device f64 vs the f64 reference (the kernels' logic, without f32 noise);
//! * `comp32~dev32`, `comp64~dev64`: the composed candle ops on the device vs the fused op.
//!
//! Tolerances: f32 1e-5 forward, 1e-4 backward; f64 1e-9 forward and backward. With `--cpu` the
//! device is the CPU, so the `dev~cpu` checks of equal dtype are skipped (they are identities).
//!
//! # Poisoning (device runs only)
//!
//! The CUDA ops allocate their outputs and scratch buffers uninitialised, from cudarc's
//! stream-ordered memory pool (cuMemAllocAsync on candle's stream). Right before each fused
//! forward and before its backward, a NaN-filled tensor larger than everything the call
//! allocates (4× the inputs + 64 MiB) is created and dropped on that same stream, with no
//! synchronisation in between: its memory goes back to the pool still holding NaN, and the
//! op's allocations are carved out of it. An element a kernel forgets to write then reads NaN,
//! which every comparison counts as a failure. That the poison landed is checked, not assumed:
//! after each poisoned forward the output buffer's device address must lie inside the freed
//! NaN range; the number of runs where it did is reported, and a warning is printed if it never
//! did (the check is then only as strong as whatever the memory held before).
//!
//! # Timings
//!
//! B = 32, D = 256, levels 56², 28², 14², 7²; Lv = 4, N = 32 and 4096 for the contrastive loss;
//! f32. Each figure is the median of `--reps` runs after 5 warm-up runs, each run bracketed by
//! `Device::synchronize` (launch overhead and the wrappers' own small candle ops included).
//! GB/s = the op's compulsory bytes (inputs read once + outputs written once, formulas in the
//! table notes) / median time, against the device-to-device copy bandwidth of a 256 MiB
//! `Tensor::copy` (bytes read + written) timed the same way.
#![allow(dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use common::{reference, Rng};
use std::fmt::Write as _;
use std::time::Instant;
use tmca_kernels::{masked_pool, multi_level_contrastive, pixel_text_cos};

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub cpu: bool,
    pub quick: bool,
    pub sanitize: bool,
    pub time: Option<bool>,
    pub reps: usize,
    pub md: Option<String>,
}

impl Opts {
    pub fn parse(args: &[String]) -> std::result::Result<Self, String> {
        let mut o = Opts {
            reps: 50,
            ..Default::default()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--cpu" => o.cpu = true,
                "--quick" => o.quick = true,
                "--sanitize" => o.sanitize = true,
                "--time" => o.time = Some(true),
                "--no-time" => o.time = Some(false),
                "--reps" => {
                    o.reps = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&r: &usize| r > 0)
                        .ok_or("--reps needs a positive integer")?
                }
                "--md" => o.md = Some(it.next().ok_or("--md needs a path")?.clone()),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if o.sanitize {
            o.quick = true;
            o.time = Some(false);
        }
        Ok(o)
    }

    fn timings(&self) -> bool {
        self.time.unwrap_or(!self.cpu)
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// Forward and backward tolerances.
#[derive(Debug, Clone, Copy)]
struct Tol {
    fwd: f64,
    bwd: f64,
}

const TOL32: Tol = Tol {
    fwd: 1e-5,
    bwd: 1e-4,
};
const TOL64: Tol = Tol {
    fwd: 1e-9,
    bwd: 1e-9,
};

/// Named flat f64 CPU tensors.
type Outs = Vec<(&'static str, Tensor)>;

/// One evaluation: forward outputs and gradients.
struct Eval {
    fwd: Outs,
    bwd: Outs,
}

fn host(t: &Tensor) -> Result<Tensor> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()
}

/// max |a − b| / max(max |b|, floor) (absolute when that is zero); ∞ where a is non-finite and
/// b finite, or the shapes differ.
pub fn rel_err(a: &Tensor, b: &Tensor, floor: f64) -> Result<f64> {
    if a.dims() != b.dims() {
        return Ok(f64::INFINITY);
    }
    let (a, b) = (a.to_vec1::<f64>()?, b.to_vec1::<f64>()?);
    let mut diff: f64 = 0.0;
    let mut scale: f64 = floor;
    for (x, y) in a.iter().zip(&b) {
        if !x.is_finite() && y.is_finite() {
            return Ok(f64::INFINITY);
        }
        let d = (x - y).abs();
        if d.is_nan() || d > diff {
            diff = if d.is_nan() { f64::INFINITY } else { d };
        }
        scale = scale.max(y.abs());
    }
    Ok(if scale > 0.0 { diff / scale } else { diff })
}

/// Worst error over the named outputs, and the name of the worst.
fn worst(a: &Outs, b: &Outs, floor: f64) -> Result<(f64, &'static str)> {
    let mut w = (0.0, "");
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        let e = if na == nb && a.len() == b.len() {
            rel_err(ta, tb, floor)?
        } else {
            f64::INFINITY
        };
        if e > w.0 || w.1.is_empty() {
            w = (e, na);
        }
    }
    Ok(w)
}

/// Results of the correctness part.
#[derive(Default)]
pub struct Report {
    pub failures: Vec<String>,
    pub checks: usize,
    pub poison_tries: usize,
    pub poison_hits: usize,
}

impl Report {
    fn compare(
        &mut self,
        case: &Case,
        what: &str,
        check: &str,
        a: &Eval,
        b: &Eval,
        tol: Tol,
    ) -> Result<()> {
        let (ef, nf) = worst(&a.fwd, &b.fwd, 0.0)?;
        let (eb, nb) = worst(&a.bwd, &b.bwd, case.grad_floor())?;
        let ok = ef <= tol.fwd && eb <= tol.bwd;
        println!(
            "    {check:<13} fwd {ef:9.2e} ({nf:<14}) bwd {eb:9.2e} ({nb:<12}) {}",
            if ok { "ok" } else { "FAIL" }
        );
        self.checks += 1;
        if !ok {
            self.failures.push(format!(
                "{what}: {check}: fwd {ef:.2e} (tol {:.0e}), bwd {eb:.2e} (tol {:.0e})",
                tol.fwd, tol.bwd
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Device helpers: poisoning and device addresses

/// The device address of a CUDA tensor's storage.
#[cfg(feature = "cuda")]
fn device_addr(t: &Tensor) -> Option<u64> {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;
    let (storage, _) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cuda(c) => {
            let stream = c.device.cuda_stream();
            match t.dtype() {
                DType::F32 => c
                    .as_cuda_slice::<f32>()
                    .ok()
                    .map(|s| s.device_ptr(&stream).0),
                DType::F64 => c
                    .as_cuda_slice::<f64>()
                    .ok()
                    .map(|s| s.device_ptr(&stream).0),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(not(feature = "cuda"))]
fn device_addr(_: &Tensor) -> Option<u64> {
    None
}

/// How one evaluation runs.
struct Run<'a> {
    dev: &'a Device,
    dtype: DType,
    fused: bool,
    /// Poison before the fused calls (device runs of the fused op).
    poison: bool,
    /// Bytes to poison (≥ what the call allocates).
    poison_bytes: usize,
}

impl Run<'_> {
    /// A CPU f64 input on this run's device and dtype.
    fn put(&self, t: &Tensor) -> Result<Tensor> {
        t.to_dtype(self.dtype)?.to_device(self.dev)
    }

    fn var(&self, t: &Tensor) -> Result<Var> {
        Var::from_tensor(&self.put(t)?)
    }

    /// Fills `poison_bytes` of device memory with NaN and frees it (see the module docs);
    /// returns the freed range.
    fn poison(&self) -> Result<Option<(u64, u64)>> {
        if !self.poison {
            return Ok(None);
        }
        let n = self.poison_bytes.div_ceil(4);
        let t = Tensor::full(f32::NAN, n, self.dev)?;
        let range = device_addr(&t).map(|lo| (lo, lo + 4 * n as u64));
        drop(t);
        Ok(range)
    }

    /// Records whether `out`'s buffer lies in the poisoned range.
    fn landed(&self, rep: &mut Report, range: Option<(u64, u64)>, out: &Tensor) {
        if !self.poison {
            return;
        }
        rep.poison_tries += 1;
        if let (Some((lo, hi)), Some(a)) = (range, device_addr(out)) {
            if lo <= a && a < hi {
                rep.poison_hits += 1;
            }
        }
    }
}

fn grad(g: &GradStore, v: &Var) -> Result<Tensor> {
    match g.get(v) {
        Some(t) => host(t),
        None => host(&v.zeros_like()?),
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// Normal values rounded through f32, as an f64 CPU tensor.
fn normals(rng: &mut Rng, shape: &[usize], scale: f64) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f64> = rng.normals(n).iter().map(|x| x * scale).collect();
    round32(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn round32(t: Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)?.to_dtype(DType::F64)
}

fn unit_rows(rng: &mut Rng, shape: &[usize]) -> Result<Tensor> {
    let t = normals(rng, shape, 1.0)?;
    round32(reference::l2_normalize(&t, shape.len() - 1)?)
}

/// Soft masks (B, 1, H, W), sample i of kind (first + i) % 5: random soft, empty, full, binary,
/// tiny (Σm below the 1e-6 count clamp).
fn masks(rng: &mut Rng, b: usize, h: usize, w: usize, first: usize) -> Result<Tensor> {
    let mut v = Vec::with_capacity(b * h * w);
    for i in 0..b {
        for _ in 0..h * w {
            let x = rng.uniform();
            v.push(match (first + i) % 5 {
                0 => x,
                1 => 0.0,
                2 => 1.0,
                3 => f64::from(u8::from(x > 0.6)),
                _ => x * 1e-10,
            });
        }
    }
    round32(Tensor::from_vec(v, (b, 1, h, w), &Device::Cpu)?)
}

fn bytes_of(ts: &[&Tensor], dtype: DType) -> usize {
    ts.iter().map(|t| t.elem_count()).sum::<usize>() * dtype.size_in_bytes()
}

// ---------------------------------------------------------------------------------------------
// The three ops as check cases

/// masked_pool: p (B, D, H, W) scaled, masks starting at kind `first`, weights for the loss.
struct PoolCase {
    p: Tensor,
    m: Tensor,
    wt: Tensor,
    wb: Tensor,
}

impl PoolCase {
    fn new(
        rng: &mut Rng,
        (b, d, h, w): (usize, usize, usize, usize),
        scale: f64,
        first: usize,
    ) -> Result<Self> {
        Ok(Self {
            p: normals(rng, &[b, d, h, w], scale)?,
            m: masks(rng, b, h, w, first)?,
            wt: normals(rng, &[b, d], 1.0)?,
            wb: normals(rng, &[b, d], 1.0)?,
        })
    }

    fn eval(&self, r: &Run, rep: &mut Report) -> Result<Eval> {
        let p = r.var(&self.p)?;
        let m = r.put(&self.m)?;
        let (wt, wb) = (r.put(&self.wt)?, r.put(&self.wb)?);
        let (t, g, has) = if r.fused {
            let range = r.poison()?;
            let o = masked_pool(&p, &m)?;
            r.landed(rep, range, &o.target);
            (o.target, o.background, o.has_background)
        } else {
            reference::masked_pool_raw(&p, &m)?
        };
        let loss = ((&t * &wt)?.sum_all()? + (&g * &wb)?.sum_all()?)?;
        if r.fused {
            r.poison()?;
        }
        let grads = loss.backward()?;
        Ok(Eval {
            fwd: vec![
                ("target", host(&t)?),
                ("background", host(&g)?),
                ("has_background", host(&has)?),
            ],
            bwd: vec![("dp", grad(&grads, &p)?)],
        })
    }
}

/// pixel_text_cos: p (B, D, H, W) scaled, u unit rows or raw normals scaled.
struct CosCase {
    p: Tensor,
    u: Tensor,
    w: Tensor,
}

impl CosCase {
    fn new(
        rng: &mut Rng,
        (b, d, h, w): (usize, usize, usize, usize),
        scale: f64,
        raw_u: Option<f64>,
    ) -> Result<Self> {
        Ok(Self {
            p: normals(rng, &[b, d, h, w], scale)?,
            u: match raw_u {
                Some(s) => normals(rng, &[b, d], s)?,
                None => unit_rows(rng, &[b, d])?,
            },
            w: normals(rng, &[b, 1, h, w], 1.0)?,
        })
    }

    fn eval(&self, r: &Run, rep: &mut Report) -> Result<Eval> {
        let p = r.var(&self.p)?;
        let u = r.var(&self.u)?;
        let w = r.put(&self.w)?;
        let cos = if r.fused {
            let range = r.poison()?;
            let c = pixel_text_cos(&p, &u)?;
            r.landed(rep, range, &c);
            c
        } else {
            reference::pixel_text_cos_raw(&p, &u)?
        };
        let loss = (&cos * &w)?.sum_all()?;
        if r.fused {
            r.poison()?;
        }
        let grads = loss.backward()?;
        Ok(Eval {
            fwd: vec![("cos", host(&cos)?)],
            bwd: vec![("dp", grad(&grads, &p)?), ("du", grad(&grads, &u)?)],
        })
    }
}

/// How the contrastive case's group keys repeat.
#[derive(Debug, Clone, Copy)]
enum Groups {
    /// About N/3 distinct keys (templated reports), large arbitrary values.
    Duplicates,
    /// One group.
    Same,
    /// All distinct.
    Distinct,
}

struct ConCase {
    target: Tensor,
    text: Tensor,
    background: Tensor,
    has: Tensor,
    scales: Tensor,
    groups: Vec<u64>,
    background_negatives: bool,
    w: Tensor,
}

impl ConCase {
    fn new(
        rng: &mut Rng,
        (lv, n, d): (usize, usize, usize),
        scales: &[f64],
        groups: Groups,
        background_negatives: bool,
    ) -> Result<Self> {
        // Level 1 (when there is one) has no valid background at all.
        let has: Vec<f64> = (0..lv * n)
            .map(|k| f64::from(u8::from(k / n != 1 && rng.uniform() > 0.3)))
            .collect();
        let distinct = (n / 3).max(1) as u64;
        let groups = (0..n as u64)
            .map(|i| match groups {
                Groups::Duplicates => (rng.next_u64() % distinct) * 0x1_0000_0001 + 7,
                Groups::Same => 42,
                Groups::Distinct => i,
            })
            .collect();
        Ok(Self {
            target: unit_rows(rng, &[lv, n, d])?,
            text: unit_rows(rng, &[lv, n, d])?,
            background: unit_rows(rng, &[lv, n, d])?,
            has: Tensor::from_vec(has, (lv, n), &Device::Cpu)?,
            scales: round32(Tensor::new(scales, &Device::Cpu)?)?,
            groups,
            background_negatives,
            w: normals(rng, &[lv], 1.0)?,
        })
    }

    fn eval(&self, r: &Run, rep: &mut Report) -> Result<Eval> {
        let (t, u, v) = (
            r.var(&self.target)?,
            r.var(&self.text)?,
            r.var(&self.background)?,
        );
        let has = r.put(&self.has)?;
        let s = r.var(&self.scales)?;
        let w = r.put(&self.w)?;
        let bg = self.background_negatives;
        let loss = if r.fused {
            let range = r.poison()?;
            let l = multi_level_contrastive(&t, &u, &v, &has, &s, &self.groups, bg)?;
            r.landed(rep, range, &l);
            l
        } else {
            reference::multi_level(&t, &u, &v, &has, &s, &self.groups, bg)?
        };
        let total = (&loss * &w)?.sum_all()?;
        if r.fused {
            r.poison()?;
        }
        let grads = total.backward()?;
        Ok(Eval {
            fwd: vec![("loss", host(&loss)?)],
            bwd: vec![
                ("d target", grad(&grads, &t)?),
                ("d text", grad(&grads, &u)?),
                ("d background", grad(&grads, &v)?),
                ("d scales", grad(&grads, &s)?),
            ],
        })
    }
}

enum Case {
    Pool(PoolCase),
    Cos(CosCase),
    Con(ConCase),
}

impl Case {
    fn eval(&self, r: &Run, rep: &mut Report) -> Result<Eval> {
        match self {
            Case::Pool(c) => c.eval(r, rep),
            Case::Cos(c) => c.eval(r, rep),
            Case::Con(c) => c.eval(r, rep),
        }
    }

    /// The floor of the gradients' error scale. With D = 1 the pixel normalisation makes
    /// z = sign(p), so ∂/∂p vanishes identically and the computed gradient is rounding noise:
    /// it is compared in absolute terms against the O(1) scale of the weights and of 1/|p|.
    fn grad_floor(&self) -> f64 {
        let d = match self {
            Case::Pool(c) => c.p.dim(1),
            Case::Cos(c) => c.p.dim(1),
            Case::Con(_) => return 0.0,
        };
        if matches!(d, Ok(1)) {
            1.0
        } else {
            0.0
        }
    }

    /// Input bytes in f64 (an upper bound for f32).
    fn input_bytes(&self) -> usize {
        match self {
            Case::Pool(c) => bytes_of(&[&c.p, &c.m], DType::F64),
            Case::Cos(c) => bytes_of(&[&c.p, &c.u], DType::F64),
            Case::Con(c) => bytes_of(&[&c.target, &c.text, &c.background, &c.has], DType::F64),
        }
    }
}

/// The correctness cases: (description, case). `quick` leaves out the full-size ones.
fn cases(quick: bool) -> Result<Vec<(String, Case)>> {
    let mut rng = Rng::new(0x6d5);
    let mut out = Vec::new();
    // masked_pool: (B, D, H, W), scale of p, first mask kind.
    let mut pool = vec![
        ((4, 37, 5, 7), 1.0, 0),
        ((1, 1, 1, 1), 1.0, 0),
        ((1, 37, 3, 11), 1.0, 1),
        ((1, 37, 11, 3), 1.0, 2),
        ((5, 64, 14, 14), 1.0, 0),
        ((3, 3, 1, 9), 1e4, 3),
        ((5, 40, 6, 4), 1e-7, 4),
        ((5, 300, 9, 7), 1.0, 0),
        ((2, 256, 33, 31), 1.0, 0),
    ];
    if !quick {
        pool.extend([((32, 256, 56, 56), 1.0, 0), ((32, 256, 7, 7), 1.0, 0)]);
    }
    for (dims, scale, first) in pool {
        let c = PoolCase::new(&mut rng, dims, scale, first)?;
        let what =
            format!("masked_pool (B,D,H,W)={dims:?} scale {scale:e} masks from kind {first}");
        out.push((what, Case::Pool(c)));
    }
    // pixel_text_cos: (B, D, H, W), scale of p, raw u scale (None: unit u).
    let mut cos = vec![
        ((4, 37, 5, 7), 1.0, None),
        ((1, 1, 1, 1), 1.0, None),
        ((1, 37, 3, 11), 1.0, Some(1.0)),
        ((3, 256, 14, 14), 1.0, None),
        ((2, 37, 4, 9), 1e-7, None),
        ((2, 37, 9, 4), 1e4, Some(1e3)),
        ((5, 300, 9, 7), 1.0, None),
        ((2, 256, 33, 31), 1.0, None),
    ];
    if !quick {
        cos.extend([((32, 256, 56, 56), 1.0, None), ((32, 256, 7, 7), 1.0, None)]);
    }
    for (dims, scale, raw) in cos {
        let c = CosCase::new(&mut rng, dims, scale, raw)?;
        let u = raw.map_or("unit u".to_string(), |s| format!("raw u ×{s:e}"));
        let what = format!("pixel_text_cos (B,D,H,W)={dims:?} scale {scale:e} {u}");
        out.push((what, Case::Cos(c)));
    }
    // multi_level_contrastive: (Lv, N, D), scales, groups; each with and without background
    // negatives. τ = 0.01 → s = 100, τ = 10 → 0.1, τ = 0.07 → 14.285.
    let mut con = vec![
        (
            (4, 1, 37),
            vec![100.0, 0.1, 14.285, 1.0],
            Groups::Duplicates,
        ),
        ((2, 9, 37), vec![100.0, 0.1], Groups::Duplicates),
        ((4, 32, 256), vec![1.0 / 0.07; 4], Groups::Duplicates),
        ((3, 64, 16), vec![100.0, 1.0, 0.1], Groups::Duplicates),
        ((1, 2, 1), vec![100.0], Groups::Duplicates),
        ((2, 5, 8), vec![10.0, 1.0], Groups::Same),
        ((2, 7, 8), vec![10.0, 1.0], Groups::Distinct),
        ((2, 300, 40), vec![100.0, 0.1], Groups::Duplicates),
        ((1, 33, 300), vec![14.285], Groups::Duplicates),
    ];
    if !quick {
        con.push((
            (4, 4096, 256),
            vec![1.0 / 0.07, 100.0, 1.0, 0.1],
            Groups::Duplicates,
        ));
    }
    for (dims, scales, groups) in con {
        for bg in [true, false] {
            let c = ConCase::new(&mut rng, dims, &scales, groups, bg)?;
            let what = format!(
                "multi_level_contrastive (Lv,N,D)={dims:?} scales {scales:?} {groups:?} background {bg}"
            );
            out.push((what, Case::Con(c)));
        }
    }
    Ok(out)
}

/// Runs every correctness case with `dev` as the device under test.
pub fn correctness(dev: &Device, opts: &Opts) -> Result<Report> {
    let mut rep = Report::default();
    let on_cpu = dev.is_cpu();
    let cpu = Device::Cpu;
    for (what, case) in cases(opts.quick)? {
        println!("{what}");
        let run = |dev, dtype, fused, poison| Run {
            dev,
            dtype,
            fused,
            poison,
            poison_bytes: 4 * case.input_bytes() + (64 << 20),
        };
        let ref64 = case.eval(&run(&cpu, DType::F64, true, false), &mut rep)?;
        let ref32 = case.eval(&run(&cpu, DType::F32, true, false), &mut rep)?;
        let (dev32, dev64);
        let (fused32, fused64) = if on_cpu {
            rep.compare(&case, &what, "cpu32~cpu64", &ref32, &ref64, TOL32)?;
            (&ref32, &ref64)
        } else {
            dev32 = case.eval(&run(dev, DType::F32, true, true), &mut rep)?;
            dev64 = case.eval(&run(dev, DType::F64, true, true), &mut rep)?;
            rep.compare(&case, &what, "dev32~cpu32", &dev32, &ref32, TOL32)?;
            rep.compare(&case, &what, "dev32~cpu64", &dev32, &ref64, TOL32)?;
            rep.compare(&case, &what, "dev64~cpu64", &dev64, &ref64, TOL64)?;
            (&dev32, &dev64)
        };
        if opts.sanitize {
            continue;
        }
        let comp32 = case.eval(&run(dev, DType::F32, false, false), &mut rep)?;
        let comp64 = case.eval(&run(dev, DType::F64, false, false), &mut rep)?;
        rep.compare(&case, &what, "comp32~dev32", &comp32, fused32, TOL32)?;
        rep.compare(&case, &what, "comp64~dev64", &comp64, fused64, TOL64)?;
    }
    Ok(rep)
}

// ---------------------------------------------------------------------------------------------
// Timings

/// Median seconds of `reps` synchronised runs of `f` after 5 warm-up runs.
fn median_time(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..5 {
        f()?;
    }
    dev.synchronize()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

struct Row {
    op: &'static str,
    size: String,
    pass: &'static str,
    fused: f64,
    composed: f64,
    bytes: f64,
    flops: Option<f64>,
}

/// Device-to-device copy bandwidth (bytes read + written per second) of a 256 MiB tensor
/// (16 MiB with `quick`).
fn copy_bandwidth(dev: &Device, opts: &Opts) -> Result<f64> {
    let n = if opts.quick { 4 << 20 } else { 64 << 20 };
    let x = Tensor::ones(n, DType::F32, dev)?;
    let t = median_time(dev, opts.reps, || x.copy().map(drop))?;
    Ok(2.0 * 4.0 * n as f64 / t)
}

fn timings(dev: &Device, opts: &Opts) -> Result<(Vec<Row>, f64)> {
    let copy = copy_bandwidth(dev, opts)?;
    println!("copy bandwidth {:.1} GB/s", copy / 1e9);
    let (b, d) = if opts.quick { (2, 64) } else { (32, 256) };
    let sides: &[usize] = if opts.quick {
        &[14, 7]
    } else {
        &[56, 28, 14, 7]
    };
    let ns: &[usize] = if opts.quick { &[32, 256] } else { &[32, 4096] };
    let lv = 4;
    let reps = opts.reps;
    let mut rows = Vec::new();
    let mut push = |r: Row| {
        println!(
            "{:<24} {:<12} {:<8} fused {:9.3} ms  composed {:9.3} ms",
            r.op,
            r.size,
            r.pass,
            r.fused * 1e3,
            r.composed * 1e3
        );
        rows.push(r);
    };
    let f32b = 4.0;
    for &side in sides {
        let hw = side * side;
        let size = format!("{side}²");
        let p = Var::randn(0f32, 1., (b, d, side, side), dev)?;
        let m = Tensor::rand(0f32, 1., (b, 1, side, side), dev)?
            .ge(0.7)?
            .to_dtype(DType::F32)?;
        let u = Var::from_tensor(&reference::l2_normalize(
            &Tensor::randn(0f32, 1., (b, d), dev)?,
            1,
        )?)?;
        let wt = Tensor::randn(0f32, 1., (b, d), dev)?;
        let wb = Tensor::randn(0f32, 1., (b, d), dev)?;
        let wc = Tensor::randn(0f32, 1., (b, 1, side, side), dev)?;
        let (bdhw, bhw, bd) = ((b * d * hw) as f64, (b * hw) as f64, (b * d) as f64);

        // masked_pool: fwd reads p, m, writes [2·B·D + 4·B]; bwd reads p, m, ∂s (2·B·D + B),
        // writes ∂p.
        let fwd_bytes = f32b * (bdhw + bhw + 2.0 * bd + 4.0 * b as f64);
        let bwd_bytes = f32b * (2.0 * bdhw + bhw + 2.0 * bd + b as f64);
        let pool_loss = |t: &Tensor, g: &Tensor| -> Result<Tensor> {
            (t * &wt)?.sum_all()? + (g * &wb)?.sum_all()?
        };
        push(Row {
            op: "masked_pool",
            size: size.clone(),
            pass: "fwd",
            fused: median_time(dev, reps, || masked_pool(&p, &m).map(drop))?,
            composed: median_time(dev, reps, || reference::masked_pool_raw(&p, &m).map(drop))?,
            bytes: fwd_bytes,
            flops: None,
        });
        push(Row {
            op: "masked_pool",
            size: size.clone(),
            pass: "fwd+bwd",
            fused: median_time(dev, reps, || {
                let o = masked_pool(&p, &m)?;
                pool_loss(&o.target, &o.background)?.backward().map(drop)
            })?,
            composed: median_time(dev, reps, || {
                let (t, g, _) = reference::masked_pool_raw(&p, &m)?;
                pool_loss(&t, &g)?.backward().map(drop)
            })?,
            bytes: fwd_bytes + bwd_bytes,
            flops: None,
        });

        // pixel_text_cos: fwd reads p, u, writes [cos | 1/‖p‖] (2·B·HW); bwd reads p, u,
        // [g | cos | 1/‖p‖] (3·B·HW), writes ∂p, ∂u.
        let fwd_bytes = f32b * (bdhw + bd + 2.0 * bhw);
        let bwd_bytes = f32b * (2.0 * bdhw + 2.0 * bd + 3.0 * bhw);
        push(Row {
            op: "pixel_text_cos",
            size: size.clone(),
            pass: "fwd",
            fused: median_time(dev, reps, || pixel_text_cos(&p, &u).map(drop))?,
            composed: median_time(dev, reps, || {
                reference::pixel_text_cos_raw(&p, &u).map(drop)
            })?,
            bytes: fwd_bytes,
            flops: None,
        });
        push(Row {
            op: "pixel_text_cos",
            size,
            pass: "fwd+bwd",
            fused: median_time(dev, reps, || {
                (pixel_text_cos(&p, &u)? * &wc)?
                    .sum_all()?
                    .backward()
                    .map(drop)
            })?,
            composed: median_time(dev, reps, || {
                (reference::pixel_text_cos_raw(&p, &u)? * &wc)?
                    .sum_all()?
                    .backward()
                    .map(drop)
            })?,
            bytes: fwd_bytes + bwd_bytes,
            flops: None,
        });
    }

    for &n in ns {
        let emb = || -> Result<Var> {
            Var::from_tensor(&reference::l2_normalize(
                &Tensor::randn(0f32, 1., (lv, n, d), dev)?,
                2,
            )?)
        };
        let (t, u, v) = (emb()?, emb()?, emb()?);
        let has = Tensor::rand(0f32, 1., (lv, n), dev)?
            .ge(0.3)?
            .to_dtype(DType::F32)?;
        let s = Var::from_tensor(&Tensor::full(1f32 / 0.07, lv, dev)?)?;
        let mut rng = Rng::new(n as u64);
        let groups: Vec<u64> = (0..n).map(|_| rng.next_u64() % (n as u64 / 2)).collect();
        // The composed loss with the positive-pair matrix built once (not per call).
        let pos = reference::positives(&groups, DType::F32, dev)?;
        let composed = || -> Result<Tensor> {
            let losses = (0..lv)
                .map(|l| {
                    reference::level_loss(
                        &t.get(l)?,
                        &u.get(l)?,
                        &v.get(l)?,
                        &has.get(l)?,
                        &s.narrow(0, l, 1)?,
                        &pos,
                        true,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::stack(&losses, 0)
        };
        let fused = || multi_level_contrastive(&t, &u, &v, &has, &s, &groups, true);
        let (lnd, ln, lvf) = ((lv * n * d) as f64, (lv * n) as f64, lv as f64);
        // fwd reads emb (3·Lv·N·D), aux ((Lv + 2)·N), scales, writes [loss | LSEs] (Lv + 2·Lv·N);
        // bwd reads emb, aux, [scales | upstream | LSEs], writes ∂emb, ∂scales.
        let aux = (lv + 2) as f64 * n as f64;
        let fwd_bytes = f32b * (3.0 * lnd + aux + 2.0 * lvf + 2.0 * ln);
        let bwd_bytes = f32b * (6.0 * lnd + aux + 3.0 * lvf + 2.0 * ln);
        // Useful FLOPs: S = T Uᵀ (2·Lv·N²·D) forward; ∂T = G U and ∂U = Gᵀ T backward.
        let s_flops = 2.0 * lvf * (n * n * d) as f64;
        let size = format!("N={n}");
        push(Row {
            op: "multi_level_contrastive",
            size: size.clone(),
            pass: "fwd",
            fused: median_time(dev, reps, || fused().map(drop))?,
            composed: median_time(dev, reps, || composed().map(drop))?,
            bytes: fwd_bytes,
            flops: Some(s_flops),
        });
        push(Row {
            op: "multi_level_contrastive",
            size,
            pass: "fwd+bwd",
            fused: median_time(dev, reps, || fused()?.sum_all()?.backward().map(drop))?,
            composed: median_time(dev, reps, || composed()?.sum_all()?.backward().map(drop))?,
            bytes: fwd_bytes + bwd_bytes,
            flops: Some(3.0 * s_flops),
        });
    }
    // Grouped by op (stable: sizes keep their order).
    let order = ["masked_pool", "pixel_text_cos", "multi_level_contrastive"];
    rows.sort_by_key(|r| order.iter().position(|o| *o == r.op));
    Ok((rows, copy))
}

/// Today's date (UTC) as YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days to civil date (H. Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// "name, driver X, N MiB" of GPU 0 from nvidia-smi, if there is one.
fn card() -> String {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
            "--id=0",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let f: Vec<&str> = s.split(", ").collect();
            match f.as_slice() {
                [name, driver, mem] => format!("{name}, driver {driver}, {mem}"),
                _ => s,
            }
        }
        _ => "unknown card (nvidia-smi unavailable)".to_string(),
    }
}

fn table(rows: &[Row], copy: f64, dev: &Device, opts: &Opts) -> String {
    let mut s = String::new();
    let what = if dev.is_cpu() {
        "CPU".to_string()
    } else {
        format!("CUDA: {}", card())
    };
    let _ = writeln!(
        s,
        "### Fused ops, {what}, {}{}\n",
        today(),
        if opts.quick { " (quick sizes)" } else { "" }
    );
    let _ = writeln!(
        s,
        "f32; median of {} runs after 5 warm-up runs, each bracketed by `Device::synchronize`. \
         Device-to-device copy (`Tensor::copy`, bytes read + written): **{:.1} GB/s**.\n",
        opts.reps,
        copy / 1e9
    );
    let _ = writeln!(
        s,
        "| op | size | pass | fused ms | composed ms | speedup | MB | fused GB/s | % of copy | fused GFLOP/s |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let gbs = r.bytes / r.fused / 1e9;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.3} | {:.1}× | {:.1} | {:.0} | {:.0}% | {} |",
            r.op,
            r.size,
            r.pass,
            r.fused * 1e3,
            r.composed * 1e3,
            r.composed / r.fused,
            r.bytes / 1e6,
            gbs,
            100.0 * r.bytes / r.fused / copy,
            r.flops
                .map_or("–".to_string(), |f| format!("{:.0}", f / r.fused / 1e9))
        );
    }
    let _ = writeln!(
        s,
        "\nMB = compulsory bytes of the fused op: inputs read once, outputs written once. \
         masked_pool fwd: p, m, out (2·B·D + 4·B); bwd: p, m, ∂s (2·B·D + B), ∂p. \
         pixel_text_cos fwd: p, u, out (2·B·H·W); bwd: p, u, [g | cos | 1/‖p‖] (3·B·H·W), ∂p, ∂u. \
         contrastive fwd: emb (3·Lv·N·D), aux ((Lv + 2)·N), scales, out (Lv + 2·Lv·N); \
         bwd: emb, aux, saved (2·Lv + 2·Lv·N), ∂emb, ∂scales. GFLOP/s counts S = T Uᵀ \
         (2·Lv·N²·D) forward and 3× that forward + backward. fwd+bwd rows include candle's \
         autograd around the op (weighted-sum loss, gradient accumulation); composed \
         contrastive builds its N×N positive matrix once, outside the timed call. \
         B = {}, D = {}, Lv = 4, background negatives on.",
        if opts.quick { 2 } else { 32 },
        if opts.quick { 64 } else { 256 }
    );
    s
}

// ---------------------------------------------------------------------------------------------

/// The whole check on `dev`; Ok(true) when every check passed.
pub fn run(dev: &Device, opts: &Opts) -> Result<bool> {
    let start = Instant::now();
    let rep = correctness(dev, opts)?;
    println!(
        "\n{} checks, {} failed ({:.1} s)",
        rep.checks,
        rep.failures.len(),
        start.elapsed().as_secs_f64()
    );
    if rep.poison_tries > 0 {
        println!(
            "poison: the output buffer lay in the freed NaN range in {} of {} poisoned runs",
            rep.poison_hits, rep.poison_tries
        );
        if rep.poison_hits == 0 {
            println!(
                "WARNING: the poison never landed on an output buffer: unwritten elements \
                 would go unnoticed unless the memory held NaN by chance"
            );
        }
    }
    for f in &rep.failures {
        println!("FAIL {f}");
    }
    if opts.timings() {
        println!("\ntimings");
        let (rows, copy) = timings(dev, opts)?;
        let md = table(&rows, copy, dev, opts);
        println!("\n{md}");
        if let Some(path) = &opts.md {
            std::fs::write(path, &md)?;
            println!("wrote {path}");
        }
    }
    println!("total {:.1} s", start.elapsed().as_secs_f64());
    Ok(rep.failures.is_empty())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("gpu_check: {e}");
            }
            eprintln!(
                "usage: gpu_check [--cpu] [--quick] [--sanitize] [--time|--no-time] [--reps N] [--md PATH]"
            );
            std::process::exit(if e.is_empty() { 0 } else { 3 });
        }
    };
    let dev = if opts.cpu {
        Device::Cpu
    } else if !cfg!(feature = "cuda") {
        eprintln!(
            "gpu_check: CUDA is not compiled in; build with `--features cuda` \
             (or pass --cpu for the CPU-only checks)"
        );
        std::process::exit(2);
    } else {
        match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("gpu_check: no usable CUDA device 0: {e}");
                std::process::exit(3);
            }
        }
    };
    match run(&dev, &opts) {
        Ok(true) => println!("gpu_check: all checks passed"),
        Ok(false) => {
            eprintln!("gpu_check: checks FAILED");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("gpu_check: error: {e}");
            std::process::exit(3);
        }
    }
}
