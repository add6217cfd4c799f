//! Fused ops vs the same computation composed from candle ops, at the paper setting's sizes:
//! B = 32, D = 256, the four levels 56², 28², 14², 7² (224² input), Lv = 4, N = 32 (and a larger
//! gathered batch N = 256; the fused loss alone up to N = 4096). Forward, and forward +
//! backward; the contrastive forward from detached inputs (inference: with tracked inputs its
//! fused forward also computes the gradients).
//!
//!     cargo bench -p tmca-kernels --bench fused [-- FILTER]

#[path = "../tests/common/reference.rs"]
mod reference;

use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::Duration;

const B: usize = 32;
const D: usize = 256;
const SIDES: [usize; 4] = [56, 28, 14, 7];

fn inputs(side: usize) -> Result<(Var, Tensor, Var, Tensor)> {
    let dev = Device::Cpu;
    let p = Var::randn(0f32, 1., (B, D, side, side), &dev)?;
    let m = Tensor::rand(0f32, 1., (B, 1, side, side), &dev)?
        .ge(0.7)?
        .to_dtype(DType::F32)?;
    let u = Var::from_tensor(&reference::l2_normalize(
        &Tensor::randn(0f32, 1., (B, D), &dev)?,
        1,
    )?)?;
    let w = Tensor::randn(0f32, 1., (B, D), &dev)?;
    Ok((p, m, u, w))
}

fn pool_loss(t: &Tensor, g: &Tensor, w: &Tensor) -> Result<Tensor> {
    (t * w)?.sum_all()? + (g * w)?.sum_all()?
}

fn masked_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("masked_pool");
    for side in SIDES {
        let Ok((p, m, _, w)) = inputs(side) else {
            return;
        };
        let id = |s: &str| BenchmarkId::new(s, format!("{side}x{side}"));
        group.bench_function(id("fused/fwd"), |b| {
            b.iter(|| tmca_kernels::masked_pool(&p, &m).map(|o| o.target))
        });
        group.bench_function(id("composed/fwd"), |b| {
            b.iter(|| reference::masked_pool_raw(&p, &m).map(|o| o.0))
        });
        group.bench_function(id("fused/fwd+bwd"), |b| {
            b.iter(|| -> Result<_> {
                let o = tmca_kernels::masked_pool(&p, &m)?;
                pool_loss(&o.target, &o.background, &w)?.backward()
            })
        });
        group.bench_function(id("composed/fwd+bwd"), |b| {
            b.iter(|| -> Result<_> {
                let (t, g, _) = reference::masked_pool_raw(&p, &m)?;
                pool_loss(&t, &g, &w)?.backward()
            })
        });
    }
    group.finish();
}

fn pixel_text_cos(c: &mut Criterion) {
    let mut group = c.benchmark_group("pixel_text_cos");
    for side in SIDES {
        let Ok((p, _, u, _)) = inputs(side) else {
            return;
        };
        let id = |s: &str| BenchmarkId::new(s, format!("{side}x{side}"));
        group.bench_function(id("fused/fwd"), |b| {
            b.iter(|| tmca_kernels::pixel_text_cos(&p, &u))
        });
        group.bench_function(id("composed/fwd"), |b| {
            b.iter(|| reference::pixel_text_cos_raw(&p, &u))
        });
        group.bench_function(id("fused/fwd+bwd"), |b| {
            b.iter(|| tmca_kernels::pixel_text_cos(&p, &u)?.sum_all()?.backward())
        });
        group.bench_function(id("composed/fwd+bwd"), |b| {
            b.iter(|| reference::pixel_text_cos_raw(&p, &u)?.sum_all()?.backward())
        });
    }
    group.finish();
}

struct Levels {
    target: Var,
    text: Var,
    background: Var,
    has: Tensor,
    log_scale: Var,
    groups: Vec<u64>,
}

fn levels(n: usize) -> Result<Levels> {
    let dev = Device::Cpu;
    let unit = || -> Result<Var> {
        Var::from_tensor(&reference::l2_normalize(
            &Tensor::randn(0f32, 1., (4, n, D), &dev)?,
            2,
        )?)
    };
    Ok(Levels {
        target: unit()?,
        text: unit()?,
        background: unit()?,
        has: Tensor::rand(0f32, 1., (4, n), &dev)?
            .ge(0.2)?
            .to_dtype(DType::F32)?,
        log_scale: Var::from_tensor(&Tensor::full((1.0f32 / 0.07).ln(), 4, &dev)?)?,
        groups: (0..n as u64).map(|i| i % (n as u64 / 2).max(1)).collect(),
    })
}

fn contrastive(c: &mut Criterion) {
    let mut group = c.benchmark_group("contrastive");
    for n in [32, 256] {
        let Ok(lv) = levels(n) else { return };
        // `track`: from the variables (training: the fused op then computes its gradients in
        // the forward), or from detached copies (inference: the forward alone).
        let run = |fused: bool, track: bool| -> Result<Tensor> {
            let inputs = [&lv.target, &lv.text, &lv.background, &lv.log_scale];
            let [t, x, g, ls] = inputs.map(|v| {
                if track {
                    v.as_tensor().clone()
                } else {
                    v.as_tensor().detach()
                }
            });
            let s = ls.exp()?;
            if fused {
                tmca_kernels::multi_level_contrastive(&t, &x, &g, &lv.has, &s, &lv.groups, true)
            } else {
                reference::multi_level(&t, &x, &g, &lv.has, &s, &lv.groups, true)
            }
        };
        let id = |s: &str| BenchmarkId::new(s, format!("Lv4_N{n}"));
        group.bench_function(id("fused/fwd"), |b| b.iter(|| run(true, false)));
        group.bench_function(id("composed/fwd"), |b| b.iter(|| run(false, false)));
        group.bench_function(id("fused/fwd+bwd"), |b| {
            b.iter(|| run(true, true)?.sum_all()?.backward())
        });
        group.bench_function(id("composed/fwd+bwd"), |b| {
            b.iter(|| run(false, true)?.sum_all()?.backward())
        });
    }
    group.finish();
}

/// Large gathered batches, fused only (the composed loss would hold GiBs of N×N tensors): the
/// tiled path's time as N grows.
fn contrastive_large(c: &mut Criterion) {
    let mut group = c.benchmark_group("contrastive_large");
    for n in [1024, 2048, 4096] {
        let Ok(lv) = levels(n) else { return };
        let id = BenchmarkId::new("fused/fwd+bwd", format!("Lv4_N{n}"));
        group.bench_function(id, |b| {
            b.iter(|| -> Result<_> {
                let s = lv.log_scale.exp()?;
                let (t, x, g) = (&lv.target, &lv.text, &lv.background);
                tmca_kernels::multi_level_contrastive(t, x, g, &lv.has, &s, &lv.groups, true)?
                    .sum_all()?
                    .backward()
            })
        });
    }
    group.finish();
}

/// Depthwise 7×7 convolution: the CPU op vs the shifted sum (the composed form) and candle's
/// grouped convolution, at the default `cpu-small` model's first stage (B = 8, C = 16, 32², a
/// 128² input) and ConvNeXt-T's (B = 32, C = 96, 56²), forward + backward.
fn depthwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("depthwise");
    for (b, ch, side) in [(8, 16, 32), (32, 96, 56)] {
        let dev = Device::Cpu;
        let Ok(x) = Var::randn(0f32, 1., (b, ch, side, side), &dev) else {
            return;
        };
        let Ok(w) = Var::randn(0f32, 0.1, (ch, 1, 7, 7), &dev) else {
            return;
        };
        let Ok(bias) = Var::randn(0f32, 0.1, ch, &dev) else {
            return;
        };
        let id = |s: &str| BenchmarkId::new(s, format!("B{b}_C{ch}_{side}x{side}"));
        group.bench_function(id("fused/fwd+bwd"), |bn| {
            bn.iter(|| {
                tmca_kernels::depthwise_conv2d(&x, &w, &bias)?
                    .sum_all()?
                    .backward()
            })
        });
        group.bench_function(id("composed/fwd+bwd"), |bn| {
            bn.iter(|| {
                reference::depthwise_shifted(&x, &w, &bias)?
                    .sum_all()?
                    .backward()
            })
        });
        group.bench_function(id("grouped_conv/fwd+bwd"), |bn| {
            bn.iter(|| -> Result<_> {
                let y = x.conv2d(&w, 3, 1, 1, ch)?;
                y.broadcast_add(&bias.reshape((1, ch, 1, 1))?)?
                    .sum_all()?
                    .backward()
            })
        });
    }
    group.finish();
}

/// The backbone's CPU ops vs candle's at the 128² `cpu-small` model's shapes (batch 8): dense
/// and transposed convolutions (the head's 3×3 at 64², the last decoder stage's 3×3 at 32², the
/// stem's 4×4/4 patchify, the head's ×2 upsampling to 128²), then the first ConvNeXt stage's
/// pointwise linear layer (channels-last 32², 16 → 64) and the GELU after it.
fn backbone(c: &mut Criterion) {
    let mut group = c.benchmark_group("backbone");
    // (name, cin, cout, side, k, stride, padding, transposed)
    let cases = [
        ("3x3_8to8_64", 8, 8, 64, 3, 1, 1, false),
        ("3x3_32to16_32", 32, 16, 32, 3, 1, 1, false),
        ("4x4s4_3to16_128", 3, 16, 128, 4, 4, 0, false),
        ("up2x2_8to8_64", 8, 8, 64, 2, 2, 0, true),
    ];
    for (name, cin, cout, side, k, s, p, transposed) in cases {
        let dev = Device::Cpu;
        let wshape = if transposed {
            (cin, cout, k, k)
        } else {
            (cout, cin, k, k)
        };
        let (Ok(x), Ok(w), Ok(bias)) = (
            Var::randn(0f32, 1., (8, cin, side, side), &dev),
            Var::randn(0f32, 0.1, wshape, &dev),
            Var::randn(0f32, 0.1, cout, &dev),
        ) else {
            return;
        };
        let ours = || -> Result<Tensor> {
            if transposed {
                tmca_kernels::conv_transpose2d(&x, &w, &bias, s, p, 0)
            } else {
                tmca_kernels::conv2d(&x, &w, &bias, s, p)
            }
        };
        let candle = || -> Result<Tensor> {
            let y = if transposed {
                x.conv_transpose2d(&w, p, 0, s, 1)?
            } else {
                x.conv2d(&w, p, s, 1, 1)?
            };
            y.broadcast_add(&bias.reshape((1, cout, 1, 1))?)
        };
        let id = |s: &str| BenchmarkId::new(s, format!("B8_{name}"));
        group.bench_function(id("tmca/fwd"), |bn| bn.iter(ours));
        group.bench_function(id("candle/fwd"), |bn| bn.iter(candle));
        group.bench_function(id("tmca/fwd+bwd"), |bn| {
            bn.iter(|| ours()?.sum_all()?.backward())
        });
        group.bench_function(id("candle/fwd+bwd"), |bn| {
            bn.iter(|| candle()?.sum_all()?.backward())
        });
    }
    let dev = Device::Cpu;
    let (Ok(x), Ok(w), Ok(bias)) = (
        Var::randn(0f32, 1., (8, 32, 32, 16), &dev),
        Var::randn(0f32, 0.1, (64, 16), &dev),
        Var::randn(0f32, 0.1, 64, &dev),
    ) else {
        return;
    };
    let id = |s: &str| BenchmarkId::new(s, "B8_linear_16to64_32x32");
    let ours = || tmca_kernels::linear(&x, &w, &bias);
    let candle = || x.broadcast_matmul(&w.t()?)?.broadcast_add(&bias);
    group.bench_function(id("tmca/fwd+bwd"), |bn| {
        bn.iter(|| ours()?.sum_all()?.backward())
    });
    group.bench_function(id("candle/fwd+bwd"), |bn| {
        bn.iter(|| candle()?.sum_all()?.backward())
    });
    let Ok(h) = Var::randn(0f32, 1., (8, 32, 32, 64), &dev) else {
        return;
    };
    let id = |s: &str| BenchmarkId::new(s, "B8_gelu_32x32x64");
    group.bench_function(id("tmca/fwd+bwd"), |bn| {
        bn.iter(|| tmca_kernels::gelu(&h)?.sum_all()?.backward())
    });
    group.bench_function(id("candle/fwd+bwd"), |bn| {
        bn.iter(|| h.gelu_erf()?.sum_all()?.backward())
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = masked_pool, pixel_text_cos, contrastive, contrastive_large, depthwise, backbone
}
criterion_main!(benches);
