//! A call recorder for profiling: candle has no profiler, so while recording is switched on
//! (by `tmca bench step`, never by training) the building blocks of [`crate::nn`] and the
//! contrastive branch of the model log each call they make — which part of the model it is, a
//! replayable copy of the module and its inputs (detached: shared storage, no graph). The
//! bench then replays every call in isolation, forward and forward + backward, and sums the
//! times per [`Part`].
//!
//! Off by default; while off, [`scope`] costs one thread-local read. Calls made inside a
//! recorded call (a LayerNorm inside a LayerNorm2d, the convolution inside a projection) are
//! not recorded again.

use candle_core::{Result, Tensor};
use std::cell::{Cell, RefCell};

/// The groups a recorded call is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Dense 2-D convolutions (stem, downsampling, decoder, projections).
    Conv2d,
    /// ConvNeXt's depthwise k×k convolutions.
    DepthwiseConv,
    /// Transposed convolutions (decoder upsampling).
    ConvTranspose,
    /// Attention cores: Q·Kᵀ, mask, softmax, ·V (projections are [`Part::Linear`]).
    Attention,
    /// Linear layers (matrix products with bias).
    Linear,
    /// LayerNorms.
    Norm,
    /// GELU.
    Activation,
    /// The TMCA-specific ops: L2 normalisation of the projections, mask-weighted pooling,
    /// multi-level InfoNCE, enhancement maps.
    Contrastive,
    /// Dice + BCE of the logits.
    Loss,
}

impl Part {
    /// Every part, in display order.
    pub const ALL: [Part; 9] = [
        Part::Conv2d,
        Part::DepthwiseConv,
        Part::ConvTranspose,
        Part::Attention,
        Part::Linear,
        Part::Norm,
        Part::Activation,
        Part::Contrastive,
        Part::Loss,
    ];

    /// Stable short name (used in the bench's JSON and tables).
    pub fn name(self) -> &'static str {
        match self {
            Part::Conv2d => "conv2d",
            Part::DepthwiseConv => "depthwise conv",
            Part::ConvTranspose => "transposed conv",
            Part::Attention => "attention core",
            Part::Linear => "linear",
            Part::Norm => "layernorm",
            Part::Activation => "gelu",
            Part::Contrastive => "contrastive & pooling",
            Part::Loss => "seg. loss",
        }
    }
}

/// Recomputes a recorded call from (copies of) its inputs; returns its floating-point outputs.
pub type Replay = Box<dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>>;

/// One recorded call.
pub struct Call {
    pub part: Part,
    /// The call's tensor inputs, detached.
    pub inputs: Vec<Tensor>,
    /// Whether each input was part of an autograd graph (so the real backward reached it).
    pub tracked: Vec<bool>,
    pub replay: Replay,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("part", &self.part)
            .field("inputs", &self.inputs)
            .finish()
    }
}

thread_local! {
    static CALLS: RefCell<Option<Vec<Call>>> = const { RefCell::new(None) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Starts recording on this thread (discarding anything recorded before).
pub fn start() {
    CALLS.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

/// Stops recording and returns the calls, in order.
pub fn finish() -> Vec<Call> {
    CALLS.with(|c| c.borrow_mut().take()).unwrap_or_default()
}

/// Whether this thread records.
pub fn recording() -> bool {
    CALLS.with(|c| c.borrow().is_some())
}

struct Nested;

impl Nested {
    fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        Nested
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `f`, the body of one call of `part` on `inputs`. While recording (and not inside
/// another recorded call) it first logs the call with the replay `make_replay()` builds;
/// calls made inside `f` are not logged.
pub fn scope<T>(
    part: Part,
    inputs: &[&Tensor],
    make_replay: impl FnOnce() -> Replay,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if !recording() {
        return f();
    }
    if DEPTH.with(|d| d.get()) == 0 {
        let call = Call {
            part,
            inputs: inputs.iter().map(|t| t.detach()).collect(),
            tracked: inputs.iter().map(|t| t.track_op()).collect(),
            replay: make_replay(),
        };
        CALLS.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                v.push(call);
            }
        });
    }
    let _nested = Nested::enter();
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn double(x: &Tensor) -> Result<Tensor> {
        scope(
            Part::Activation,
            &[x],
            || Box::new(|i: &[Tensor]| Ok(vec![(&i[0] * 2.0)?])),
            || x * 2.0,
        )
    }

    #[test]
    fn records_outer_calls_only_while_on() {
        let x = Var::from_tensor(&Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        double(x.as_tensor()).unwrap();
        assert!(finish().is_empty());
        start();
        let y = scope(
            Part::Norm,
            &[x.as_tensor()],
            || Box::new(|i: &[Tensor]| Ok(vec![double(&i[0])?])),
            || double(x.as_tensor()),
        )
        .unwrap();
        let plain = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        double(&plain).unwrap();
        let calls = finish();
        assert!(!recording());
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].part, Part::Norm);
        assert_eq!(calls[0].tracked, vec![true]);
        assert_eq!(calls[1].tracked, vec![false]);
        let again = (calls[0].replay)(&calls[0].inputs).unwrap();
        assert_eq!(
            again[0].to_vec1::<f32>().unwrap(),
            y.to_vec1::<f32>().unwrap()
        );
    }
}
