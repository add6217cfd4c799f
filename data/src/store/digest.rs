//! The content digest of a store: sha256 over the image shape and, in store order, each
//! sample's own sha256 (of its name, report, image and mask bytes and split). Two stores with
//! the same digest hold the same data, whatever their path, name or provenance; a store
//! written again from other images, or with another seed, has another. Written into the
//! store's attributes when it is written; computed from the samples (in parallel: hence the two
//! levels) for a store another tool wrote, and checked by `tmca data validate`.

use sha2::{Digest, Sha256};

/// The digest of one sample.
pub fn sample_digest(name: &str, split: u8, report: &str, image: &[u8], mask: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [name.as_bytes(), report.as_bytes(), image, mask] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update([split]);
    h.finalize().into()
}

/// Builds the store's digest from its samples' digests, in order.
pub struct ContentHasher(Sha256);

impl ContentHasher {
    /// Starts the digest of a store of `channels`×`height`×`width` images.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        let mut h = Sha256::new();
        h.update(b"tmca store content v1\n");
        for v in [channels, height, width] {
            h.update((v as u64).to_le_bytes());
        }
        Self(h)
    }

    /// Adds the next sample's [`sample_digest`].
    pub fn add(&mut self, sample: &[u8; 32]) {
        self.0.update(sample);
    }

    /// The digest, as lowercase hex.
    pub fn finish(self) -> String {
        format!("{:x}", self.0.finalize())
    }
}
