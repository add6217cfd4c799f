//! Host batches to tensors.

use crate::model::Inputs;
use candle_core::{Device, Result, Tensor};
use tmca_data::loader::Batch;

/// Moves a loader batch onto `device` as model inputs.
pub fn to_inputs(b: &Batch, device: &Device) -> Result<Inputs> {
    Ok(Inputs {
        images: Tensor::from_slice(&b.images, (b.size, b.channels, b.height, b.width), device)?,
        token_ids: Tensor::from_slice(&b.token_ids, (b.size, b.max_len), device)?,
        attention: Tensor::from_slice(&b.attention, (b.size, b.max_len), device)?,
        masks: Some(Tensor::from_slice(
            &b.masks,
            (b.size, 1, b.height, b.width),
            device,
        )?),
        drop_path: None,
    })
}
