//! Model chains (issue 22): this crate owns the second stage that runs on each chosen
//! detection's crop — choosing the detections (class, score floor, at most N per
//! frame, highest score first), cutting their crops out of the original image in
//! original pixels (a region of the box, a margin, clamped to the image), fitting
//! them to the second model (OpenCV-style linear resize, normalisation), batching
//! crops of many frames into one pass per chain, and decoding the outputs into a
//! detection's `classification` (a classifier) or `text` (a CTC text recogniser,
//! PP-OCR style). The infer-worker calls it between decoding a frame's detections and
//! publishing its result, and hands it the ONNX Runtime sessions ([`Opener`]: the
//! runtime and its execution providers are the infer-worker's). It imports the
//! contract, the preprocess library (image decoding) and the model repository's
//! `model.toml` (class names and input size of a chain model kept in a repository
//! version's directory); it must not import the
//! infer-worker, the queue, ingest, results or the dashboard.

mod chains;
pub mod crop;
pub mod decode;
mod model;
pub mod prep;
mod runner;

pub use chains::{Applied, Chains, Loaded, load};
pub use model::{ChainModel, Opener, Output};

/// Why a chain could not load, or a frame's second stage failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    #[error("chain `{chain}` cannot load: {message}")]
    Load { chain: String, message: String },
    #[error("chain `{chain}` failed: {message}")]
    Run { chain: String, message: String },
    #[error("chain: the frame's original image did not come with its tensor")]
    NoOriginal,
    #[error("chain: cannot read the frame's original image: {0}")]
    Image(String),
}
