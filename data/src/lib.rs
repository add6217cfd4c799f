//! tmca-data: everything TMCA reads goes through this crate.
//!
//! * [`store`]: the Zarr v3 dataset format (write to a temporary name, rename when complete; read
//!   with schema checks).
//! * [`convert`]: importers from the layouts the PyTorch peers use (LViT, GuideDecoder, generic).
//! * [`synth`]: four synthetic datasets mimicking the four modalities, whose reports carry
//!   information the image alone does not.
//! * [`inspect`], [`validate`], [`preview`]: look at a store.
//! * [`sampler`], [`augment`], [`tokenize`], [`loader`]: deterministic sharded batches for training.
//! * [`folds`]: k-fold cross-validation over a store's training and validation samples.
//!
//! The crate knows nothing of candle or of the process environment: ranks come in as numbers.

pub mod augment;
pub mod convert;
pub mod error;
pub mod folds;
pub mod imageops;
pub mod inspect;
pub mod loader;
pub mod preview;
pub mod progress;
pub mod sample;
pub mod sampler;
pub mod short_float;
pub mod store;
pub mod synth;
pub mod tokenize;
pub mod validate;

pub use error::{DataError, Result};
pub use progress::{NoProgress, Progress};
pub use sample::{Modality, Sample, Split, StoreInfo};
