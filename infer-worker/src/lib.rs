//! The infer-worker: this crate owns running the model. It loads a YOLO-family
//! ONNX model on ONNX Runtime (CPU, or CUDA when configured), gathers tensors into
//! batches — up to `max_batch_size` frames or `max_batch_wait_ms`, whichever comes
//! first — runs one forward pass per batch, decodes the output (YOLOv3/v5, v8/v11,
//! v10 layouts), applies class-aware NMS, maps boxes back through the letterbox and
//! publishes the results. It consumes preprocessed tensors, or raw frames that it
//! preprocesses on its own threads ("inline", with the preprocess crate's
//! `prepare_frame`). With a model repository it also owns the serving model's
//! lifecycle ([`ModelControl`]): activating, rolling back and following other
//! workers' activations, switching models between two batches. It imports the
//! contract, the queue, the stage messages (parsed once per delivery; failing and
//! expiring frames; publishing results), the preprocess library and the model
//! repository, and the model chains (`visionq-chain`: a second model on the crops of
//! chosen detections, run before a frame's result is published); it must not import
//! ingest, results or the dashboard.

mod batcher;
mod chained;
mod control;
pub mod decode;
mod error;
pub mod gpu;
pub mod model;
mod provider;
mod role;
mod runner;
pub mod serving;
mod swap;

pub use chained::load_chains;
pub use control::{ActivateError, Activated, ModelControl};
pub use error::InferError;
pub use model::{Assembler, BatchDim, InputFormat, Model, ModelSpec, PassDone};
pub use role::{run, run_models, to_detections};
pub use serving::{Agreement, CandidateReport, Ended, PassTally, Plan, Slot};
pub use swap::Switch;
