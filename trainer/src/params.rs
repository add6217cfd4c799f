//! The trainable parameters: a name-ordered store whose initial values are a pure function of
//! (seed, parameter name) — independent of construction order, thread count or device — and
//! which tells the optimiser which parameters take weight decay.

use crate::state_error::StateError;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shared, name-ordered map of the model's variables; those under a frozen prefix reach the
/// model detached (no gradient, no backward through them) and are left out of training.
#[derive(Clone, Default)]
pub struct ParamStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    seed: u64,
    frozen: Arc<Vec<String>>,
    /// Initial values for parameters not yet created ([`preload`](Self::preload)).
    preloaded: Arc<Mutex<BTreeMap<String, Tensor>>>,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParamStore({} tensors)", self.len())
    }
}

fn name_seed(seed: u64, name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    tmca_data::sampler::derive_seed(&[seed, h])
}

/// Samples `init` for `shape` from a generator seeded by `seed`.
fn sample(init: Init, shape: &Shape, seed: u64) -> Vec<f32> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> f32 {
        // Box–Muller.
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        (mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    };
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> f32 {
        (lo + (up - lo) * rng.random::<f64>()) as f32
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => (0..n).map(|_| normal(&mut rng, mean, stdev)).collect(),
        Init::Uniform { lo, up } => (0..n).map(|_| uniform(&mut rng, lo, up)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => (0..n).map(|_| normal(&mut rng, 0.0, std)).collect(),
                NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    (0..n).map(|_| uniform(&mut rng, -b, b)).collect()
                }
            }
        }
    }
}

impl ParamStore {
    /// An empty store whose new parameters are initialised from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            vars: Default::default(),
            seed,
            frozen: Default::default(),
            preloaded: Default::default(),
        }
    }

    /// Freezes every parameter whose name starts with one of `prefixes` (set before the model
    /// is built: the model then holds detached views of them, which still see
    /// [`assign_all`](Self::assign_all) and checkpoint loads).
    pub fn with_frozen(mut self, prefixes: &[String]) -> Self {
        self.frozen = Arc::new(prefixes.to_vec());
        self
    }

    /// Whether `name` is frozen.
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// The parameters training updates, ordered by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.vars()
            .into_iter()
            .filter(|(name, _)| !self.is_frozen(name))
            .collect()
    }

    /// A `VarBuilder` creating (or reusing) parameters in this store, in f32 on `device`.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        self.var_builder_dtype(DType::F32, device)
    }

    /// Like [`var_builder`](Self::var_builder) in another precision (f64 for gradient checks).
    pub fn var_builder_dtype(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.vars.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All parameters, ordered by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.vars
            .lock()
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Total number of scalar parameters.
    pub fn numel(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Whether AdamW decays this parameter: matrices and kernels yes; biases, norms, scales,
    /// temperatures and other vectors no.
    pub fn decays(name: &str, var: &Var) -> bool {
        var.rank() >= 2
            && !name.contains("norm")
            && !name.contains("LayerNorm")
            && !name.ends_with("embeddings.weight")
    }

    /// Gives initial values (pretrained weights to fine-tune) to parameters the model has not
    /// requested yet: a requested name takes its preloaded tensor (which must have the requested
    /// shape) instead of a random draw; names never requested never become parameters.
    pub fn preload(&self, tensors: impl IntoIterator<Item = (String, Tensor)>) {
        if let Ok(mut p) = self.preloaded.lock() {
            p.extend(tensors);
        }
    }

    /// Removes and returns the names of the preloaded tensors no parameter took.
    pub fn take_unused_preloaded(&self) -> Vec<String> {
        self.preloaded
            .lock()
            .map(|mut p| std::mem::take(&mut *p).into_keys().collect())
            .unwrap_or_default()
    }

    /// Overwrites every parameter with the tensor of the same name in `tensors`; all must exist
    /// with the same shape.
    pub fn assign_all(
        &self,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> std::result::Result<(), StateError> {
        for (name, var) in self.vars() {
            let t = tensors
                .get(&name)
                .ok_or_else(|| StateError::Missing { key: name.clone() })?;
            StateError::check_shape(&name, t, var.dims())?;
            t.to_dtype(var.dtype())
                .and_then(|t| var.set(&t))
                .map_err(StateError::tensor(&name))?;
        }
        Ok(())
    }
}

impl ParamStore {
    /// What the model holds of `var`: the variable, or a detached view (same storage) when
    /// frozen.
    fn view(&self, name: &str, var: &Var) -> Tensor {
        if self.is_frozen(name) {
            var.as_tensor().detach()
        } else {
            var.as_tensor().clone()
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for ParamStore {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut vars = self
            .vars
            .lock()
            .map_err(|_| candle_core::Error::Msg("parameter store poisoned".into()))?;
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "parameter '{name}' has shape {:?}, requested {:?}",
                    v.shape(),
                    s
                );
            }
            return Ok(self.view(name, v));
        }
        let preloaded = self
            .preloaded
            .lock()
            .map_err(|_| candle_core::Error::Msg("parameter store poisoned".into()))?
            .remove(name);
        let init = match preloaded {
            Some(t) if t.shape() != &s => candle_core::bail!(
                "pretrained tensor '{name}' has shape {:?}, the model needs {:?}",
                t.shape(),
                s
            ),
            Some(t) => t.to_device(dev)?,
            None => Tensor::from_vec(sample(h, &s, name_seed(self.seed, name)), s, dev)?,
        };
        let var = Var::from_tensor(&init.to_dtype(dtype)?)?;
        let t = self.view(name, &var);
        vars.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let vars = self
            .vars
            .lock()
            .map_err(|_| candle_core::Error::Msg("parameter store poisoned".into()))?;
        vars.get(name).map(|v| self.view(name, v)).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars
            .lock()
            .map(|v| v.contains_key(name))
            .unwrap_or(false)
    }
}
