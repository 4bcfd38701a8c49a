//! The stages' messages and the fates of frames. This crate owns how a frame, a
//! tensor and a result travel between stages — the metadata header parsed once at
//! the edge into a [`FrameMessage`] or [`TensorMessage`], the result envelope with its
//! trace context built in one place ([`result_envelope`]), a frame's original image
//! carried after a tensor's or a result's body for the evidence store
//! ([`attach_original`], [`split_original`]) — and what becomes of a
//! frame that cannot be run ([`fail`]: an error result, then a dead letter) or whose
//! deadline passed ([`expire`]: an `expired` result, then an ack).
//!
//! It sits between the queue and the roles: it imports the contract and the queue,
//! and must not import a role (ingest, preprocess, infer-worker, results), the
//! dashboard or HTTP. Both roles that touch frames (preprocess, infer-worker) use it,
//! so neither calls into the other.

mod codec;
mod original;
mod outcome;

pub use codec::{BadMessage, FrameMessage, TensorMessage, result_envelope};
pub use original::{attach_original, split_original};
pub use outcome::{Failure, expire, fail, publish_result};
