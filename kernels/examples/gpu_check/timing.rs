//! Timings against a device-to-device copy, and their Markdown table.

use super::*;

/// Median seconds of `reps` synchronised runs of `f` after 5 warm-up runs.
pub(crate) fn median_time(
    dev: &Device,
    reps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
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

pub(crate) struct Row {
    pub(crate) op: &'static str,
    pub(crate) size: String,
    pub(crate) pass: &'static str,
    pub(crate) fused: f64,
    pub(crate) composed: f64,
    pub(crate) bytes: f64,
    pub(crate) flops: Option<f64>,
}

/// Device-to-device copy bandwidth (bytes read + written per second) of a 256 MiB tensor
/// (16 MiB with `quick`).
pub(crate) fn copy_bandwidth(dev: &Device, opts: &Opts) -> Result<f64> {
    let n = if opts.quick { 4 << 20 } else { 64 << 20 };
    let x = Tensor::ones(n, DType::F32, dev)?;
    let t = median_time(dev, opts.reps, || x.copy().map(drop))?;
    Ok(2.0 * 4.0 * n as f64 / t)
}

pub(crate) fn timings(dev: &Device, opts: &Opts) -> Result<(Vec<Row>, f64)> {
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
pub(crate) fn today() -> String {
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
pub(crate) fn card() -> String {
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

pub(crate) fn table(rows: &[Row], copy: f64, dev: &Device, opts: &Opts) -> String {
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
