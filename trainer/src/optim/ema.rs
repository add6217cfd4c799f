//! Exponential moving average of the trained weights (`optim.ema`): validation, the best
//! checkpoint's selection, `tmca eval`, `predict` and `export` use the averaged weights, which
//! are smoother than the last step's.
//!
//! After every optimiser step, `ema ← d·ema + (1 − d)·w` with `d = min(decay, (1 + n)/(10 + n))`
//! for the n-th update (the warm-up of timm's `ModelEma` and TensorFlow's
//! `ExponentialMovingAverage`, so early averages do not hold on to the initialisation). Frozen
//! parameters do not change and are not averaged. The averages live in the optimiser state of
//! the checkpoints (`ema.<name>`) with the number of updates (`ema_updates`).

use crate::params::ParamStore;
use crate::state_error::StateError;
use candle_core::{DType, Device, Result, Tensor, Var};
use std::collections::HashMap;

/// The key of the update count in the optimiser state.
const UPDATES: &str = "ema_updates";

/// Averages of every trainable parameter.
pub struct Ema {
    decay: f64,
    slots: Vec<(String, Var, Tensor)>,
    updates: u64,
}

impl Ema {
    /// Starts averaging the current values of `store`'s trainable parameters.
    pub fn new(store: &ParamStore, decay: f64) -> Result<Self> {
        let slots = store
            .trainable()
            .into_iter()
            .map(|(name, var)| {
                let avg = var.as_tensor().copy()?.detach();
                Ok((name, var, avg))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            decay,
            slots,
            updates: 0,
        })
    }

    /// The decay of the next update.
    pub fn next_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Folds the parameters' current values into the averages.
    pub fn update(&mut self) -> Result<()> {
        let d = self.next_decay();
        for (_, var, avg) in &mut self.slots {
            *avg = ((&*avg * d)? + (var.as_tensor() * (1.0 - d))?)?.detach();
        }
        self.updates += 1;
        Ok(())
    }

    /// Exchanges the parameters' values and the averages (twice restores both exactly): the
    /// model then computes with the averaged weights.
    pub fn swap(&mut self) -> Result<()> {
        for (_, var, avg) in &mut self.slots {
            let current = var.as_tensor().copy()?.detach();
            var.set(avg)?;
            *avg = current;
        }
        Ok(())
    }

    /// The averages as optimiser-state entries (`ema.<name>`, `ema_updates`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out: HashMap<String, Tensor> = self
            .slots
            .iter()
            .map(|(name, _, avg)| (format!("ema.{name}"), avg.clone()))
            .collect();
        if let Ok(t) = Tensor::new(&[self.updates as f64], &Device::Cpu) {
            out.insert(UPDATES.into(), t);
        }
        out
    }

    /// Continues from a checkpoint's optimiser state; returns the parameters it had no average
    /// of (written without `optim.ema`, or frozen then), which start from their current value.
    pub fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
    ) -> std::result::Result<Vec<String>, StateError> {
        let mut fresh = Vec::new();
        for (name, _, avg) in &mut self.slots {
            let key = format!("ema.{name}");
            match state.get(&key) {
                Some(t) => {
                    StateError::check_shape(&key, t, avg.dims())?;
                    *avg = t
                        .to_dtype(avg.dtype())
                        .and_then(|t| t.to_device(avg.device()))
                        .map_err(StateError::tensor(&key))?;
                }
                None => fresh.push(name.clone()),
            }
        }
        self.updates = state
            .get(UPDATES)
            .and_then(|t| t.to_dtype(DType::F64).ok()?.to_vec1::<f64>().ok())
            .and_then(|v| v.first().copied())
            .map_or(0, |n| n as u64);
        Ok(fresh)
    }
}

/// The averaged weights in a checkpoint's optimiser state, by parameter name (empty when it
/// was written without `optim.ema`).
pub fn averaged_weights(state: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    state
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("ema.").map(|n| (n.to_string(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_with_warm_up_and_swaps_exactly() {
        let dev = Device::Cpu;
        let store = ParamStore::new(0);
        store.preload([("w".to_string(), Tensor::new(&[0f32, 10.0], &dev).unwrap())]);
        let vb = store.var_builder(&dev);
        vb.get(2, "w").unwrap();
        let var = store.vars()[0].1.clone();
        let mut ema = Ema::new(&store, 0.5).unwrap();
        assert!((ema.next_decay() - 0.1).abs() < 1e-12, "warm-up: 1/10");
        var.set(&Tensor::new(&[10f32, 10.0], &dev).unwrap())
            .unwrap();
        ema.update().unwrap();
        // 0.1·0 + 0.9·10 = 9; then d = min(0.5, 2/11): 2/11·9 + 9/11·20.
        let after_one = ema.state()["ema.w"].to_vec1::<f32>().unwrap();
        assert!((after_one[0] - 9.0).abs() < 1e-5, "{after_one:?}");
        var.set(&Tensor::new(&[20f32, 10.0], &dev).unwrap())
            .unwrap();
        ema.update().unwrap();
        let want = 2.0 / 11.0 * 9.0 + 9.0 / 11.0 * 20.0;
        let avg = ema.state()["ema.w"].to_vec1::<f32>().unwrap();
        assert!(
            (avg[0] - want).abs() < 1e-4 && (avg[1] - 10.0).abs() < 1e-5,
            "{avg:?}"
        );
        assert!(
            (ema.next_decay() - 0.25).abs() < 1e-12,
            "still warming up: 3/12"
        );

        // Swapping in and back leaves both exactly as they were.
        ema.swap().unwrap();
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), avg);
        ema.swap().unwrap();
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), [20.0, 10.0]);
        assert_eq!(ema.state()["ema.w"].to_vec1::<f32>().unwrap(), avg);

        // The state round-trips, update count included.
        let state = ema.state();
        let mut again = Ema::new(&store, 0.5).unwrap();
        assert!(again.load_state(&state).unwrap().is_empty());
        assert_eq!(again.state()["ema.w"].to_vec1::<f32>().unwrap(), avg);
        assert_eq!(again.next_decay(), ema.next_decay());
        assert_eq!(averaged_weights(&state).len(), 1);
        let mut fresh = Ema::new(&store, 0.5).unwrap();
        assert_eq!(fresh.load_state(&HashMap::new()).unwrap(), ["w"]);
    }
}
