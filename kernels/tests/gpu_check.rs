//! The logic of the GPU check (examples/gpu_check/) on the CPU: its quick correctness cases
//! with Device::Cpu as the device under test, and its timing/table code at tiny sizes.

#[path = "../examples/gpu_check/main.rs"]
mod gpu_check;

use candle_core::{Device, Result, Tensor};

fn opts(args: &[&str]) -> Result<gpu_check::Opts> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    gpu_check::Opts::parse(&args).map_err(candle_core::Error::Msg)
}

#[test]
fn cpu_mode_passes() -> Result<()> {
    let o = opts(&["--cpu", "--quick", "--time", "--reps", "2"])?;
    assert!(gpu_check::run(&Device::Cpu, &o)?, "a check failed");
    Ok(())
}

#[test]
fn non_finite_results_fail() -> Result<()> {
    let good = Tensor::new(&[1.0f64, -2.0, 3.0], &Device::Cpu)?;
    let nan = Tensor::new(&[1.0f64, f64::NAN, 3.0], &Device::Cpu)?;
    let inf = Tensor::new(&[1.0f64, f64::INFINITY, 3.0], &Device::Cpu)?;
    assert_eq!(gpu_check::rel_err(&good, &good, 0.0)?, 0.0);
    assert_eq!(gpu_check::rel_err(&nan, &good, 0.0)?, f64::INFINITY);
    assert_eq!(gpu_check::rel_err(&inf, &good, 0.0)?, f64::INFINITY);
    let close = Tensor::new(&[1.0f64, -2.0, 3.000003], &Device::Cpu)?;
    assert!((gpu_check::rel_err(&close, &good, 0.0)? - 1e-6).abs() < 1e-9);
    Ok(())
}
