//! The infer-worker: this crate owns running the model. It loads a YOLO-family
//! ONNX model on ONNX Runtime (CPU, or CUDA when configured), gathers tensors into
//! batches — up to `max_batch_size` frames or `max_batch_wait_ms`, whichever comes
//! first — runs one forward pass per batch, decodes the output (YOLOv3/v5, v8/v11,
//! v10 layouts), applies class-aware NMS, maps boxes back through the letterbox and
//! publishes the results. It consumes preprocessed tensors, or raw frames that it
//! preprocesses on its own threads ("inline").

mod batcher;
pub mod decode;
pub mod gpu;
pub mod model;
mod provider;
mod role;
mod runner;

pub use model::{Assembler, BatchDim, InferError, InputFormat, Model, PassDone};
pub use role::{run, to_detections};
