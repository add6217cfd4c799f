//! AdamW as PyTorch's `torch.optim.AdamW`, with two parameter groups: weight decay for
//! matrices and kernels, none for biases, norms, scales and temperatures
//! ([`ParamStore::decays`]). (candle_nn's AdamW decays every parameter.)

use super::Grads;
use crate::params::ParamStore;
use crate::state_error::StateError;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// `[optim]` hyper-parameters of AdamW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Learning-rate factors by parameter-name prefix (longest match wins, 1 elsewhere).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lr_scale: BTreeMap<String, f64>,
}

impl AdamWConfig {
    /// The learning-rate factor of parameter `name`: that of the longest matching prefix.
    pub fn lr_scale_of(&self, name: &str) -> f64 {
        self.lr_scale
            .iter()
            .filter(|(p, _)| name.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map_or(1.0, |(_, f)| *f)
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
            lr_scale: BTreeMap::new(),
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    /// This parameter's factor of the learning rate.
    lr_scale: f64,
    m: Tensor,
    v: Tensor,
    /// Updates this parameter has had: its moments' bias correction (PyTorch keeps one count
    /// per parameter too, so one released from `optim.freeze` on resume starts at 1).
    steps: u64,
}

/// The optimiser and its state.
pub struct AdamW {
    slots: Vec<Slot>,
    step: u64,
    cfg: AdamWConfig,
}

impl AdamW {
    /// Optimises every trainable (not frozen) parameter of `store`.
    pub fn new(store: &ParamStore, cfg: AdamWConfig) -> Result<Self> {
        let slots = store
            .trainable()
            .into_iter()
            .map(|(name, var)| {
                let decay = ParamStore::decays(&name, &var);
                let lr_scale = cfg.lr_scale_of(&name);
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                Ok(Slot {
                    name,
                    var,
                    decay,
                    lr_scale,
                    m,
                    v,
                    steps: 0,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            step: 0,
            cfg,
        })
    }

    /// Optimiser steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Number of parameters with / without weight decay.
    pub fn group_sizes(&self) -> (usize, usize) {
        let d = self.slots.iter().filter(|s| s.decay).count();
        (d, self.slots.len() - d)
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left untouched
    /// (and their update count with them).
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.step += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.name) else {
                continue;
            };
            s.steps += 1;
            let t = i32::try_from(s.steps).unwrap_or(i32::MAX);
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            let lr = lr * s.lr_scale;
            s.m = ((&s.m * b1)? + (g * (1.0 - b1))?)?;
            s.v = ((&s.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let mut p = s.var.as_tensor().clone();
            if s.decay && self.cfg.weight_decay > 0.0 {
                p = (&p * (1.0 - lr * self.cfg.weight_decay))?;
            }
            let denom = ((&s.v / bc2)?.sqrt()? + self.cfg.eps)?;
            let update = ((&s.m / bc1)? / denom)?;
            s.var.set(&(p - (update * lr)?)?.detach())?;
            s.m = s.m.detach();
            s.v = s.v.detach();
        }
        Ok(())
    }

    /// State tensors for a checkpoint: `m.<name>`, `v.<name>` and the update count
    /// `steps.<name>` (an f64 scalar).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
            let steps = Tensor::new(s.steps as f64, s.m.device())?;
            out.insert(format!("steps.{}", s.name), steps);
        }
        Ok(out)
    }

    /// Restores [`state`](Self::state) and the step count. Parameters the state has no
    /// moments for (frozen when it was written, `optim.freeze`) start from zero moments and
    /// zero updates; their names are returned. A state without update counts (written before
    /// they were kept) counts `step` updates for every parameter it has moments of.
    pub fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
        step: u64,
    ) -> std::result::Result<Vec<String>, StateError> {
        let mut fresh = vec![];
        for s in &mut self.slots {
            let (mk, vk) = (format!("m.{}", s.name), format!("v.{}", s.name));
            if !state.contains_key(&mk) && !state.contains_key(&vk) {
                fresh.push(s.name.clone());
                continue;
            }
            for (key, slot) in [(mk, &mut s.m), (vk, &mut s.v)] {
                let t = state
                    .get(&key)
                    .ok_or_else(|| StateError::Missing { key: key.clone() })?;
                StateError::check_shape(&key, t, slot.dims())?;
                *slot = t.clone();
            }
            let sk = format!("steps.{}", s.name);
            s.steps = match state.get(&sk) {
                None => step,
                Some(t) => {
                    let n = t
                        .to_dtype(candle_core::DType::F64)
                        .and_then(|t| t.to_scalar::<f64>())
                        .map_err(StateError::tensor(&sk))?;
                    if !(n >= 0.0 && n <= step as f64 && n.fract() == 0.0) {
                        return Err(StateError::BadCount {
                            key: sk,
                            value: n,
                            max: step,
                        });
                    }
                    n as u64
                }
            };
        }
        self.step = step;
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// One step from equal values and gradients: each parameter moves by its factor of the
    /// unscaled move (weight decay included); the longest prefix wins.
    #[test]
    fn learning_rate_factors_scale_each_parameters_step() {
        let dev = Device::Cpu;
        let store = ParamStore::new(0);
        let names = ["enc.a.weight", "enc.b.weight", "head.weight"];
        store.preload(names.map(|n| {
            (
                n.to_string(),
                Tensor::ones((2, 3), DType::F32, &dev).unwrap(),
            )
        }));
        let vb = store.var_builder(&dev);
        for n in names {
            vb.get((2, 3), n).unwrap();
        }
        let cfg = AdamWConfig {
            weight_decay: 0.5,
            lr_scale: [("enc.".to_string(), 0.5), ("enc.b.".to_string(), 0.0)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(cfg.lr_scale_of("enc.b.weight"), 0.0);
        assert_eq!(cfg.lr_scale_of("enc.a.weight"), 0.5);
        assert_eq!(cfg.lr_scale_of("head.weight"), 1.0);
        let mut opt = AdamW::new(&store, cfg).unwrap();
        let mut grads = Grads::default();
        for n in names {
            grads.insert(n, Tensor::full(0.3f32, (2, 3), &dev).unwrap());
        }
        opt.step(&grads, 0.1).unwrap();
        let moved = |n: &str| {
            let v = store.vars().into_iter().find(|(k, _)| k == n).unwrap().1;
            1.0 - v.as_tensor().to_vec2::<f32>().unwrap()[0][0]
        };
        let full = moved("head.weight");
        assert!(full > 0.1, "{full}");
        // Adam's first step moves by lr, decay by lr·wd·p (p = 1): lr·(1 + wd) at factor 1,
        // half of it at 0.5.
        assert!((full - 0.1 * 1.5).abs() < 1e-5, "{full}");
        assert!((moved("enc.a.weight") - 0.05 * 1.5).abs() < 1e-5);
        assert_eq!(moved("enc.b.weight"), 0.0);
    }

    /// Two parameters, 1 each; `store` and `names`.
    fn two_params(dev: &Device) -> (ParamStore, [&'static str; 2]) {
        let store = ParamStore::new(0);
        let names = ["a.weight", "b.weight"];
        store.preload(names.map(|n| {
            (
                n.to_string(),
                Tensor::ones((2, 3), DType::F32, dev).unwrap(),
            )
        }));
        let vb = store.var_builder(dev);
        for n in names {
            vb.get((2, 3), n).unwrap();
        }
        (store, names)
    }

    fn value(store: &ParamStore, n: &str) -> f32 {
        let v = store.vars().into_iter().find(|(k, _)| k == n).unwrap().1;
        v.as_tensor().to_vec2::<f32>().unwrap()[0][0]
    }

    /// A parameter released from `optim.freeze` on a resume at step 1000 starts its bias
    /// correction at 1, as PyTorch's per-parameter step does: its first update moves it by lr
    /// (it moved 2.5 lr with the run's step count), while one resumed with moments carries on.
    #[test]
    fn each_parameter_counts_its_own_updates() {
        let dev = Device::Cpu;
        let (store, names) = two_params(&dev);
        let cfg = AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        };
        let g = |v: f32| Tensor::full(v, (2, 3), &dev).unwrap();
        let mut first = AdamW::new(&store, cfg.clone()).unwrap();
        let mut only_b = Grads::default();
        only_b.insert("b.weight", g(0.3));
        for _ in 0..3 {
            first.step(&only_b, 0.1).unwrap();
        }
        let state = first.state().unwrap();
        assert_eq!(state["steps.a.weight"].to_scalar::<f64>().unwrap(), 0.0);
        assert_eq!(state["steps.b.weight"].to_scalar::<f64>().unwrap(), 3.0);

        // Resumed at step 1000 with moments for b only (a was frozen when it was written).
        let mut state = state;
        state.retain(|k, _| k.ends_with("b.weight"));
        state.remove("steps.b.weight");
        let mut opt = AdamW::new(&store, cfg.clone()).unwrap();
        assert_eq!(opt.load_state(&state, 1000).unwrap(), ["a.weight"]);
        let before = names.map(|n| value(&store, n));
        let mut both = Grads::default();
        both.insert("a.weight", g(0.3));
        both.insert("b.weight", g(0.3));
        opt.step(&both, 0.1).unwrap();
        let moved = |k: usize| before[k] - value(&store, names[k]);
        assert!(
            (moved(0) - 0.1).abs() < 1e-5,
            "released parameter moved {}",
            moved(0)
        );
        // b's moments are those of 3 updates; without its own count it takes the run's 1000:
        // bias corrections ≈ 1 and 1 − 0.999^1001, a move of m/(√(v/0.632)+ε) ≠ lr.
        let m = 0.3 * (1.0 - 0.9f64.powi(4));
        let v = 0.09 * (1.0 - 0.999f64.powi(4));
        let want = 0.1 * m / ((v / (1.0 - 0.999f64.powi(1001))).sqrt() + 1e-8);
        assert!(
            (f64::from(moved(1)) - want).abs() < 1e-5,
            "{} vs {want}",
            moved(1)
        );

        // Counts survive a checkpoint round trip; a count beyond the step is refused.
        let saved = opt.state().unwrap();
        assert_eq!(saved["steps.a.weight"].to_scalar::<f64>().unwrap(), 1.0);
        assert_eq!(saved["steps.b.weight"].to_scalar::<f64>().unwrap(), 1001.0);
        let mut again = AdamW::new(&store, cfg).unwrap();
        assert!(again.load_state(&saved, 1001).unwrap().is_empty());
        assert_eq!(
            again.state().unwrap()["steps.a.weight"]
                .to_scalar::<f64>()
                .unwrap(),
            1.0
        );
        let e = again.load_state(&saved, 5).unwrap_err().to_string();
        assert!(e.contains("steps.b.weight"), "{e}");
    }
}
