//! `tmca export`: a run as a PyTorch folder.

use crate::cli::ExportArgs;
use tmca_trainer::export::export_torch;
use tmca_trainer::inference::Trained;

pub fn run(a: &ExportArgs) -> anyhow::Result<()> {
    // On the CPU: the export is files, and a GPU-less machine can export a GPU-trained run.
    let trained = Trained::load(&a.run, &a.checkpoint, &candle_core::Device::Cpu)?;
    let e = export_torch(&trained, &a.output)?;
    println!(
        "exported {} (step {}) to {}: {} weight tensors{}",
        trained.checkpoint.display(),
        trained.step,
        e.dir.display(),
        e.tensors,
        if e.bert_tensors > 0 {
            format!(" ({} from the frozen BERT)", e.bert_tensors)
        } else {
            String::new()
        }
    );
    println!(
        "predict there: python {}/tmca_predict.py {} --image IMAGE --report \"…\"",
        e.dir.display(),
        e.dir.display()
    );
    Ok(())
}
