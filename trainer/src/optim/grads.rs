//! Gradients by parameter name: accumulated over micro-batches, flattened for all-reduce,
//! clipped by global norm.

use crate::params::ParamStore;
use candle_core::{backprop::GradStore, Result, Tensor};
use std::collections::BTreeMap;

/// Gradients of the trainable parameters, ordered by name.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    map: BTreeMap<String, Tensor>,
}

impl Grads {
    /// Picks the parameters' gradients out of a backward pass.
    pub fn from_backward(store: &ParamStore, g: &GradStore) -> Self {
        let map = store
            .vars()
            .into_iter()
            // Detached: a gradient computed by autograd still references the graph, and the
            // optimiser's moments would otherwise keep every past step's graph alive.
            .filter_map(|(name, var)| g.get(var.as_tensor()).map(|t| (name, t.detach())))
            .collect();
        Self { map }
    }

    /// Adds zero gradients for the parameters of `store` that have none, so that every rank
    /// flattens the same parameters in the same order for the all-reduce.
    pub fn fill_missing(&mut self, store: &ParamStore) -> Result<()> {
        for (name, var) in store.vars() {
            if !self.map.contains_key(&name) {
                self.map.insert(name, var.as_tensor().zeros_like()?);
            }
        }
        Ok(())
    }

    /// Adds another micro-batch's gradients.
    pub fn accumulate(&mut self, other: Grads) -> Result<()> {
        for (name, t) in other.map {
            let sum = match self.map.remove(&name) {
                Some(prev) => (prev + t)?,
                None => t,
            };
            self.map.insert(name, sum);
        }
        Ok(())
    }

    /// Multiplies every gradient by `s`.
    pub fn scale(&mut self, s: f64) -> Result<()> {
        for t in self.map.values_mut() {
            *t = (&*t * s)?;
        }
        Ok(())
    }

    /// The gradient of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }

    /// Names with a gradient.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }

    /// Number of gradient tensors.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no parameter got a gradient.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Global L2 norm over all gradients.
    pub fn norm(&self) -> Result<f64> {
        let mut s = 0f64;
        for t in self.map.values() {
            s += t
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(s.sqrt())
    }

    /// Scales so that the global norm is at most `max_norm` (as `clip_grad_norm_`); returns
    /// the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.norm()?;
        if max_norm > 0.0 && norm > max_norm {
            self.scale(max_norm / (norm + 1e-6))?;
        }
        Ok(norm)
    }

    /// All gradients flattened into one f32 buffer (name order), for all-reduce.
    pub fn flatten(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for t in self.map.values() {
            out.extend(
                t.flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(out)
    }

    /// Writes back a buffer produced by [`flatten`](Self::flatten) (e.g. after all-reduce).
    pub fn unflatten(&mut self, buf: &[f32]) -> Result<()> {
        let mut off = 0;
        for t in self.map.values_mut() {
            let n = t.elem_count();
            let chunk = buf
                .get(off..off + n)
                .ok_or_else(|| candle_core::Error::Msg("gradient buffer too short".into()))?;
            *t = Tensor::from_slice(chunk, t.shape(), t.device())?.to_dtype(t.dtype())?;
            off += n;
        }
        Ok(())
    }
}
