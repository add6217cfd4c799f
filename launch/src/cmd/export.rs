//! `tmca export`: a run as a PyTorch folder.

use crate::cli::ExportArgs;
use tmca_trainer::export::export_torch;

pub fn run(a: &ExportArgs) -> anyhow::Result<()> {
    // On the CPU: the export is files, and a GPU-less machine can export a GPU-trained run.
    let threshold = super::ensemble::chosen_on_val(&a.runs, &a.checkpoint, a.threshold, false)?;
    let models =
        super::ensemble::load(&a.runs, &a.checkpoint, &candle_core::Device::Cpu, threshold)?;
    let e = export_torch(&models, &a.output)?;
    let what = match models.members() {
        [one] => format!("{} (step {})", one.checkpoint.display(), one.step),
        many => format!("an ensemble of {} runs", many.len()),
    };
    println!(
        "exported {what} to {}: {} weight tensors{}",
        e.dir.display(),
        e.tensors,
        if e.bert_tensors > 0 {
            format!(" ({} from the frozen BERT)", e.bert_tensors)
        } else {
            String::new()
        }
    );
    println!(
        "predict there: python {} {} --image IMAGE --report \"…\"",
        super::util::shell_word(&e.dir.join("tmca_predict.py")),
        super::util::shell_word(&e.dir)
    );
    Ok(())
}
