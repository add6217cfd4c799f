//! Peak heap memory of the fused ops vs the composed candle ops (CPU), counted by a global
//! allocator, at B = 32, D = 256, levels 56², 28², 14², 7², Lv = 4, N = 32, 256, 1024 (and the
//! fused loss alone at N = 4096), and the depthwise 7×7 convolution.
//!
//!     cargo run --release -p tmca-kernels --example fused_memory
//!
//! "peak" is the largest number of bytes live at once during the call above what was live
//! before it (inputs excluded; outputs and autograd intermediates included), each op warmed up
//! by one call first.

#[path = "../tests/common/reference.rs"]
mod reference;

use candle_core::{DType, Device, Result, Tensor, Var};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak bytes above the live bytes at entry while `f` runs (its result dropped inside), after
/// one untimed call so that lazily created per-thread buffers (the matmul's packing space,
/// thread pools) count for neither side.
fn peak<T>(f: impl Fn() -> Result<T>) -> Result<usize> {
    drop(f()?);
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    drop(f()?);
    Ok(PEAK.load(Relaxed) - base)
}

fn mib(b: usize) -> String {
    format!("{:8.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn row(name: &str, fused: usize, composed: usize) {
    println!(
        "{name:<34} fused {}  composed {}  ratio {:5.1}x",
        mib(fused),
        mib(composed),
        composed as f64 / fused.max(1) as f64
    );
}

/// The contrastive loss's inputs at Lv = 4: unit embeddings, every background valid,
/// temperature 0.07, distinct groups.
struct Contrastive {
    t: Var,
    x: Var,
    g: Var,
    has: Tensor,
    s: Var,
    groups: Vec<u64>,
}

impl Contrastive {
    fn new(n: usize, d: usize, dev: &Device) -> Result<Self> {
        let unit = || -> Result<Var> {
            Var::from_tensor(&reference::l2_normalize(
                &Tensor::randn(0f32, 1., (4, n, d), dev)?,
                2,
            )?)
        };
        Ok(Self {
            t: unit()?,
            x: unit()?,
            g: unit()?,
            has: Tensor::ones((4, n), DType::F32, dev)?,
            s: Var::from_tensor(&Tensor::full(1.0f32 / 0.07, 4, dev)?)?,
            groups: (0..n as u64).collect(),
        })
    }
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let (b, d) = (32, 256);
    println!("B = {b}, D = {d}, f32, CPU");
    for side in [56, 28, 14, 7] {
        let p = Var::randn(0f32, 1., (b, d, side, side), &dev)?;
        let m = Tensor::rand(0f32, 1., (b, 1, side, side), &dev)?
            .ge(0.7)?
            .to_dtype(DType::F32)?;
        let u = Var::from_tensor(&reference::l2_normalize(
            &Tensor::randn(0f32, 1., (b, d), &dev)?,
            1,
        )?)?;
        println!("level {side}x{side} (input p: {})", mib(p.elem_count() * 4));
        let f = peak(|| tmca_kernels::masked_pool(&p, &m))?;
        let c = peak(|| reference::masked_pool_raw(&p, &m))?;
        row("  masked_pool fwd", f, c);
        let f = peak(|| {
            let o = tmca_kernels::masked_pool(&p, &m)?;
            (o.target.sum_all()? + o.background.sum_all()?)?.backward()
        })?;
        let c = peak(|| {
            let (t, g, _) = reference::masked_pool_raw(&p, &m)?;
            (t.sum_all()? + g.sum_all()?)?.backward()
        })?;
        row("  masked_pool fwd+bwd", f, c);
        let f = peak(|| tmca_kernels::pixel_text_cos(&p, &u))?;
        let c = peak(|| reference::pixel_text_cos_raw(&p, &u))?;
        row("  pixel_text_cos fwd", f, c);
        let f = peak(|| tmca_kernels::pixel_text_cos(&p, &u)?.sum_all()?.backward())?;
        let c = peak(|| reference::pixel_text_cos_raw(&p, &u)?.sum_all()?.backward())?;
        row("  pixel_text_cos fwd+bwd", f, c);
    }
    for n in [32, 256, 1024] {
        let Contrastive {
            t,
            x,
            g,
            has,
            s,
            groups,
        } = Contrastive::new(n, d, &dev)?;
        println!("contrastive Lv = 4, N = {n}");
        let fused = || tmca_kernels::multi_level_contrastive(&t, &x, &g, &has, &s, &groups, true);
        let composed = || reference::multi_level(&t, &x, &g, &has, &s, &groups, true);
        row("  contrastive fwd", peak(fused)?, peak(composed)?);
        let f = peak(|| fused()?.sum_all()?.backward())?;
        let c = peak(|| composed()?.sum_all()?.backward())?;
        row("  contrastive fwd+bwd", f, c);
    }
    for (b, ch, side) in [(8, 16, 32), (32, 96, 56)] {
        let x = Var::randn(0f32, 1., (b, ch, side, side), &dev)?;
        let w = Var::randn(0f32, 0.1, (ch, 1, 7, 7), &dev)?;
        let bias = Var::randn(0f32, 0.1, ch, &dev)?;
        println!(
            "depthwise 7x7 B = {b}, C = {ch}, {side}x{side} (input {})",
            mib(x.elem_count() * 4)
        );
        let f = peak(|| {
            tmca_kernels::depthwise_conv2d(&x, &w, &bias)?
                .sum_all()?
                .backward()
        })?;
        let c = peak(|| {
            reference::depthwise_shifted(&x, &w, &bias)?
                .sum_all()?
                .backward()
        })?;
        row("  depthwise fwd+bwd", f, c);
    }
    // The largest gathered batch, fused only (the composed loss would hold several GiB of
    // N×N tensors): the op's scratch stays one tile of 1M entries per level.
    let n = 4096;
    let Contrastive {
        t,
        x,
        g,
        has,
        s,
        groups,
    } = Contrastive::new(n, d, &dev)?;
    let fused = || tmca_kernels::multi_level_contrastive(&t, &x, &g, &has, &s, &groups, true);
    println!(
        "contrastive Lv = 4, N = {n} (inputs 3 × {})",
        mib(t.elem_count() * 4)
    );
    println!(
        "  contrastive fwd+bwd              fused {}",
        mib(peak(|| fused()?.sum_all()?.backward())?)
    );
    Ok(())
}
