//! Per-image results of an evaluation (`tmca eval --per-image FILE.csv`): which images a model
//! gets wrong, and paired per-image scores for comparing two runs on the same test set.

use crate::metrics::ImageScores;
use crate::{Result, TrainError};
use std::path::Path;
use tmca_data::convert::table::csv_field;
use tmca_data::loader::Batch;
use tmca_data::store::Store;

/// The scores of one image (at the model's input size, as the dataset metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageResult {
    pub dataset: String,
    /// Index of the sample in its store, and its source file name.
    pub index: usize,
    pub source_name: String,
    pub dice: f64,
    pub iou: f64,
    /// Boundary distances in pixels (see [`crate::metrics::surface`]).
    pub hd95: f64,
    pub assd: f64,
    pub predicted_pixels: u64,
    pub mask_pixels: u64,
    /// The report as stored.
    pub report: String,
}

/// The rows of one evaluated batch of `store`, from its images' `scores` (as scored for the
/// dataset metrics).
pub fn image_results(store: &Store, b: &Batch, scores: &[ImageScores]) -> Vec<ImageResult> {
    let info = store.info();
    b.items
        .iter()
        .zip(scores)
        .map(|(item, s)| {
            let c = &s.confusion;
            ImageResult {
                dataset: info.name.clone(),
                index: item.index,
                source_name: store.names().get(item.index).cloned().unwrap_or_default(),
                dice: s.dice,
                iou: s.iou,
                hd95: s.hd95,
                assd: s.assd,
                predicted_pixels: c.true_pos + c.false_pos,
                mask_pixels: c.true_pos + c.false_neg,
                report: store.reports().get(item.index).cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// Which model made the rows and how (the last two columns of every row): `tmca compare`
/// says when two files were evaluated differently.
#[derive(Debug, Clone, PartialEq)]
pub struct MadeBy {
    /// The run directory, or the runs of an ensemble joined by " + ".
    pub model: String,
    /// The checkpoint, threshold, TTA and min-area ([`super::results::ResultRecord::protocol`]).
    pub protocol: String,
}

/// The rows as CSV (RFC 4180), with a header; scores in full precision (rounding would make
/// ties of paired comparisons).
pub fn to_csv(rows: &[ImageResult], by: &MadeBy) -> String {
    let mut s = String::from(
        "dataset,index,source_name,dice,iou,hd95,assd,predicted_pixels,mask_pixels,report,model,protocol\n",
    );
    let made = format!("{},{}", csv_field(&by.model), csv_field(&by.protocol));
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{made}\n",
            csv_field(&r.dataset),
            r.index,
            csv_field(&r.source_name),
            r.dice,
            r.iou,
            r.hd95,
            r.assd,
            r.predicted_pixels,
            r.mask_pixels,
            csv_field(&r.report)
        ));
    }
    s
}

/// Writes [`to_csv`] to `path` (complete or not at all).
pub fn write_csv(path: &Path, rows: &[ImageResult], by: &MadeBy) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "per-image.csv".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, to_csv(rows, by)).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let r = ImageResult {
            dataset: "qata".into(),
            index: 7,
            source_name: "a,b.png".into(),
            dice: 0.5,
            iou: 1.0 / 3.0,
            hd95: 2.5,
            assd: 1.0,
            predicted_pixels: 10,
            mask_pixels: 30,
            report: "Left lung, \"two\" areas.".into(),
        };
        let by = MadeBy {
            model: "runs/a".into(),
            protocol: "best t=0.50".into(),
        };
        assert_eq!(
            to_csv(&[r], &by),
            "dataset,index,source_name,dice,iou,hd95,assd,predicted_pixels,mask_pixels,report,model,protocol\n\
             qata,7,\"a,b.png\",0.5,0.3333333333333333,2.5,1,10,30,\"Left lung, \"\"two\"\" areas.\",runs/a,best t=0.50\n"
        );
    }
}
