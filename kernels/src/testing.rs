//! Test helpers: an op against a reference computation, forward and every input gradient.

use candle_core::{DType, Device, Result, Tensor, Var};

/// The largest absolute difference between two tensors of the same shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| {
            d.abs()?
                .flatten_all()?
                .max(0)?
                .to_dtype(DType::F64)?
                .to_scalar()
        })
        .unwrap()
}

/// Runs `ours` and `reference` on the same fresh N(0, 1) variables of `shapes` in `dtype` and
/// asserts the outputs agree within `tol.0` and the gradients of Σ(y·probe) (a random probe)
/// with respect to every input within `tol.1`.
pub fn assert_agree(
    case: &str,
    dtype: DType,
    shapes: &[&[usize]],
    tol: (f64, f64),
    ours: impl Fn(&[&Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[&Tensor]) -> Result<Tensor>,
) {
    let dev = Device::Cpu;
    let vars: Vec<Var> = shapes
        .iter()
        .map(|s| {
            let t = Tensor::randn(0f64, 1.0, *s, &dev).unwrap();
            Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
        })
        .collect();
    let inputs: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let a = ours(&inputs).unwrap();
    let b = reference(&inputs).unwrap();
    assert_eq!(a.dims(), b.dims(), "{case}: shapes");
    let d = max_diff(&a, &b);
    assert!(d < tol.0, "{case}: forward differs by {d}");
    let probe = Tensor::randn(0f64, 1.0, a.shape(), &dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let ga = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    let gb = (b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, t) in inputs.iter().enumerate() {
        let d = max_diff(ga.get(t).unwrap(), gb.get(t).unwrap());
        assert!(d < tol.1, "{case}: gradient of input {i} differs by {d}");
    }
}
