//! The three ops as check cases, and the correctness pass over them.

use super::*;

/// masked_pool: p (B, D, H, W) scaled, masks starting at kind `first`, weights for the loss.
pub(crate) struct PoolCase {
    pub(crate) p: Tensor,
    pub(crate) m: Tensor,
    pub(crate) wt: Tensor,
    pub(crate) wb: Tensor,
}

impl PoolCase {
    pub(crate) fn new(
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

    pub(crate) fn eval(&self, r: &Run, rep: &mut Report) -> Result<Eval> {
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
pub(crate) struct CosCase {
    pub(crate) p: Tensor,
    pub(crate) u: Tensor,
    pub(crate) w: Tensor,
}

impl CosCase {
    pub(crate) fn new(
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

    pub(crate) fn eval(&self, r: &Run, rep: &mut Report) -> Result<Eval> {
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
pub(crate) enum Groups {
    /// About N/3 distinct keys (templated reports), large arbitrary values.
    Duplicates,
    /// One group.
    Same,
    /// All distinct.
    Distinct,
}

pub(crate) struct ConCase {
    pub(crate) target: Tensor,
    pub(crate) text: Tensor,
    pub(crate) background: Tensor,
    pub(crate) has: Tensor,
    pub(crate) scales: Tensor,
    pub(crate) groups: Vec<u64>,
    pub(crate) background_negatives: bool,
    pub(crate) w: Tensor,
}

impl ConCase {
    pub(crate) fn new(
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

    pub(crate) fn eval(&self, r: &Run, rep: &mut Report) -> Result<Eval> {
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

pub(crate) enum Case {
    Pool(PoolCase),
    Cos(CosCase),
    Con(ConCase),
}

impl Case {
    pub(crate) fn eval(&self, r: &Run, rep: &mut Report) -> Result<Eval> {
        match self {
            Case::Pool(c) => c.eval(r, rep),
            Case::Cos(c) => c.eval(r, rep),
            Case::Con(c) => c.eval(r, rep),
        }
    }

    /// The floor of the gradients' error scale. With D = 1 the pixel normalisation makes
    /// z = sign(p), so ∂/∂p vanishes identically and the computed gradient is rounding noise:
    /// it is compared in absolute terms against the O(1) scale of the weights and of 1/|p|.
    pub(crate) fn grad_floor(&self) -> f64 {
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
    pub(crate) fn input_bytes(&self) -> usize {
        match self {
            Case::Pool(c) => bytes_of(&[&c.p, &c.m], DType::F64),
            Case::Cos(c) => bytes_of(&[&c.p, &c.u], DType::F64),
            Case::Con(c) => bytes_of(&[&c.target, &c.text, &c.background, &c.has], DType::F64),
        }
    }
}

/// The correctness cases: (description, case). `quick` leaves out the full-size ones.
pub(crate) fn cases(quick: bool) -> Result<Vec<(String, Case)>> {
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
