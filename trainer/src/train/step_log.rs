//! What rank 0 logs of an optimiser step (every `train.log_every` steps, and step 1): loss
//! terms, learning rate, gradient norm, throughput and the contrastive temperatures.

use super::ranks::LossValues;
use crate::sink::MetricSink;

/// One logged step.
pub(super) struct StepScalars<'a> {
    pub step: u64,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    pub lr: f64,
    /// Before clipping.
    pub grad_norm: f64,
    pub images_per_s: f64,
    /// The last micro-batch's loss terms.
    pub terms: Option<&'a LossValues>,
    /// `model.contrastive_levels`, with each level's temperature.
    pub levels: &'a [usize],
    pub temperatures: Vec<f32>,
}

impl StepScalars<'_> {
    /// To TensorBoard's `train/*` scalars, and a debug log line.
    pub fn write(&self, sink: &mut dyn MetricSink) {
        let step = self.step;
        sink.scalar("train/loss", self.loss, step);
        sink.scalar("train/lr", self.lr, step);
        sink.scalar("train/grad_norm", self.grad_norm, step);
        sink.scalar("train/images_per_s", self.images_per_s, step);
        if let Some(l) = self.terms {
            sink.scalar("train/dice_loss", l.dice, step);
            sink.scalar("train/bce", l.bce, step);
            if let Some(c) = l.contrastive {
                sink.scalar("train/contrastive", c, step);
            }
            for (lv, t) in self.levels.iter().zip(&l.per_level) {
                sink.scalar(&format!("train/contrastive_level{lv}"), *t, step);
            }
            if let Some(a) = l.aux {
                sink.scalar("train/aux", a, step);
            }
        }
        for (lv, tau) in self.levels.iter().zip(&self.temperatures) {
            sink.scalar(&format!("train/temperature_level{lv}"), *tau as f64, step);
        }
        tracing::debug!(
            "step {step} loss {:.4} lr {:.2e} grad norm {:.3} {:.1} img/s",
            self.loss,
            self.lr,
            self.grad_norm,
            self.images_per_s
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    #[test]
    fn every_term_and_level_is_logged_at_its_step() {
        let terms = LossValues {
            total: 1.0,
            dice: 0.5,
            bce: 0.25,
            contrastive: Some(0.2),
            per_level: vec![0.1, 0.3],
            aux: None,
            stop: false,
        };
        let mut sink = MemorySink::new();
        StepScalars {
            step: 7,
            loss: 0.9,
            lr: 1e-3,
            grad_norm: 2.0,
            images_per_s: 40.0,
            terms: Some(&terms),
            levels: &[2, 4],
            temperatures: vec![0.07, 0.05],
        }
        .write(&mut sink);
        for (tag, want) in [
            ("train/loss", 0.9),
            ("train/grad_norm", 2.0),
            ("train/dice_loss", 0.5),
            ("train/contrastive_level4", 0.3),
            ("train/temperature_level2", 0.07f32 as f64),
        ] {
            assert_eq!(sink.scalars(tag), [(7, want)], "{tag}");
        }
        assert!(sink.scalars("train/aux").is_empty());
    }
}
