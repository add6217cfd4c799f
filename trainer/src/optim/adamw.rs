//! AdamW as PyTorch's `torch.optim.AdamW`, with two parameter groups: weight decay for
//! matrices and kernels, none for biases, norms, scales and temperatures
//! ([`ParamStore::decays`]). (candle_nn's AdamW decays every parameter.)

use super::Grads;
use crate::params::ParamStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[optim]` hyper-parameters of AdamW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
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
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                Ok(Slot {
                    name,
                    var,
                    decay,
                    m,
                    v,
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

    /// One update with learning rate `lr`. Parameters without a gradient are left untouched.
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.name) else {
                continue;
            };
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

    /// State tensors for a checkpoint: `m.<name>`, `v.<name>`.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
        }
        out
    }

    /// Restores [`state`](Self::state) and the step count. Parameters the state has no
    /// moments for (frozen when it was written, `optim.freeze`) start from zero moments; their
    /// names are returned.
    pub fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
        step: u64,
    ) -> std::result::Result<Vec<String>, String> {
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
                    .ok_or_else(|| format!("optimiser state has no '{key}'"))?;
                if t.dims() != slot.dims() {
                    return Err(format!(
                        "optimiser state '{key}' has shape {:?}, expected {:?}",
                        t.dims(),
                        slot.dims()
                    ));
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(fresh)
    }
}
