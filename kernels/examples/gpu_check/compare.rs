//! Comparison of results: tolerances, relative errors, the report; device helpers (poisoning, device addresses).

use super::*;

/// Forward and backward tolerances.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tol {
    pub(crate) fwd: f64,
    pub(crate) bwd: f64,
}

pub(crate) const TOL32: Tol = Tol {
    fwd: 1e-5,
    bwd: 1e-4,
};
pub(crate) const TOL64: Tol = Tol {
    fwd: 1e-9,
    bwd: 1e-9,
};

/// Named flat f64 CPU tensors.
pub(crate) type Outs = Vec<(&'static str, Tensor)>;

/// One evaluation: forward outputs and gradients.
pub(crate) struct Eval {
    pub(crate) fwd: Outs,
    pub(crate) bwd: Outs,
}

pub(crate) fn host(t: &Tensor) -> Result<Tensor> {
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
pub(crate) fn worst(a: &Outs, b: &Outs, floor: f64) -> Result<(f64, &'static str)> {
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
    pub(crate) fn compare(
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

// Device helpers: poisoning and device addresses

/// The device address of a CUDA tensor's storage.
#[cfg(feature = "cuda")]
pub(crate) fn device_addr(t: &Tensor) -> Option<u64> {
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
pub(crate) fn device_addr(_: &Tensor) -> Option<u64> {
    None
}

/// How one evaluation runs.
pub(crate) struct Run<'a> {
    pub(crate) dev: &'a Device,
    pub(crate) dtype: DType,
    pub(crate) fused: bool,
    /// Poison before the fused calls (device runs of the fused op).
    pub(crate) poison: bool,
    /// Bytes to poison (≥ what the call allocates).
    pub(crate) poison_bytes: usize,
}

impl Run<'_> {
    /// A CPU f64 input on this run's device and dtype.
    pub(crate) fn put(&self, t: &Tensor) -> Result<Tensor> {
        t.to_dtype(self.dtype)?.to_device(self.dev)
    }

    pub(crate) fn var(&self, t: &Tensor) -> Result<Var> {
        Var::from_tensor(&self.put(t)?)
    }

    /// Fills `poison_bytes` of device memory with NaN and frees it (see the module docs);
    /// returns the freed range.
    pub(crate) fn poison(&self) -> Result<Option<(u64, u64)>> {
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
    pub(crate) fn landed(&self, rep: &mut Report, range: Option<(u64, u64)>, out: &Tensor) {
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

pub(crate) fn grad(g: &GradStore, v: &Var) -> Result<Tensor> {
    match g.get(v) {
        Some(t) => host(t),
        None => host(&v.zeros_like()?),
    }
}
