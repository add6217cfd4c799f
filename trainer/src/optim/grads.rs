//! Gradients by parameter name: accumulated over micro-batches, flattened for all-reduce,
//! clipped by global norm.

use crate::params::ParamStore;
use candle_core::{backprop::GradStore, DType, Result, Tensor};
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

    /// Adds zero gradients for the trainable parameters of `store` that have none, so that
    /// every rank flattens the same parameters in the same order for the all-reduce.
    pub fn fill_missing(&mut self, store: &ParamStore) -> Result<()> {
        for (name, var) in store.trainable() {
            if let std::collections::btree_map::Entry::Vacant(e) = self.map.entry(name) {
                e.insert(var.as_tensor().zeros_like()?);
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

    /// Sets the gradient of `name` (custom training loops, tests).
    pub fn insert(&mut self, name: &str, grad: Tensor) {
        self.map.insert(name.to_string(), grad);
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

    /// Global L2 norm over all gradients: each tensor's sum of squares on its device, one copy
    /// of those sums to the host, summed there in f64.
    pub fn norm(&self) -> Result<f64> {
        if self.map.is_empty() {
            return Ok(0.0);
        }
        let sums = self
            .map
            .values()
            .map(|t| t.sqr()?.sum_all()?.to_dtype(DType::F32))
            .collect::<Result<Vec<_>>>()?;
        let sums = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
        Ok(sums.iter().map(|&v| v as f64).sum::<f64>().sqrt())
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

    /// All gradients in one f32 tensor on their device (name order), for all-reduce; `None`
    /// when there are none.
    pub fn flatten(&self) -> Result<Option<Tensor>> {
        if self.map.is_empty() {
            return Ok(None);
        }
        let parts = self
            .map
            .values()
            .map(|t| t.flatten_all()?.to_dtype(DType::F32))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0).map(Some)
    }

    /// Takes the gradients back from a tensor produced by [`flatten`](Self::flatten) (e.g.
    /// after all-reduce): each one a view of it, no copy.
    pub fn unflatten(&mut self, flat: &Tensor) -> Result<()> {
        let total: usize = self.map.values().map(Tensor::elem_count).sum();
        if flat.dims() != [total] {
            candle_core::bail!(
                "gradient buffer of shape {:?}, expected [{total}]",
                flat.dims()
            );
        }
        let mut off = 0;
        for t in self.map.values_mut() {
            let n = t.elem_count();
            *t = flat
                .narrow(0, off, n)?
                .reshape(t.shape())?
                .to_dtype(t.dtype())?;
            off += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn flatten_and_unflatten_round_trip_in_name_order_and_norm_is_global() {
        let dev = Device::Cpu;
        let mut g = Grads::default();
        g.map
            .insert("b".into(), Tensor::new(&[[3f32, 4.0]], &dev).unwrap());
        g.map
            .insert("a".into(), Tensor::new(&[12f32], &dev).unwrap());
        assert_eq!(g.norm().unwrap(), 13.0);
        let flat = g.flatten().unwrap().unwrap();
        assert_eq!(flat.to_vec1::<f32>().unwrap(), vec![12.0, 3.0, 4.0]);
        g.unflatten(&(flat * 2.0).unwrap()).unwrap();
        let b = g.get("b").unwrap();
        assert_eq!(b.dims(), [1, 2]);
        assert_eq!(b.to_vec2::<f32>().unwrap(), vec![vec![6.0, 8.0]]);
        assert_eq!(g.get("a").unwrap().to_vec1::<f32>().unwrap(), vec![24.0]);
        let short = Tensor::zeros(2, DType::F32, &dev).unwrap();
        assert!(g
            .unflatten(&short)
            .unwrap_err()
            .to_string()
            .contains("expected [3]"));
        assert!(Grads::default().flatten().unwrap().is_none());
        assert_eq!(Grads::default().norm().unwrap(), 0.0);
    }
}
