//! Ingest: this crate owns the front door for frames. It checks who posts (the
//! station's bearer token) and how often (its rate limit), validates what a station
//! posts (station identity, body encoding, image header — JPEG, PNG or WebP — size and
//! pixel limits, a JPEG's EXIF orientation), gives the frame an id, publishes it and
//! answers `202` only once the broker confirmed it — or holds the request until the
//! frame's result arrives when the station asked to wait. A frame the pipeline cannot
//! take now gets `503` with `Retry-After`, never a `202`. The same checks and publish
//! serve a station's WebSocket (`GET /v1/stations/{station}/ws`, module `stream`):
//! frames in, each one's answer out as it completes, within a window of frames in
//! flight. The same again for gRPC (`visionq.v1.Detector`, module `grpc`), on the
//! same port. It also serves the synthetic self-test (`POST /v1/selftest`, admin only),
//! and describes its routes for the OpenAPI document ([`openapi`]).

mod admit;
mod api;
mod body;
pub mod grpc;
pub mod header;
pub mod jpeg;
pub mod limits;
mod open_streams;
pub mod openapi;
mod pipeline;
mod refusal;
pub mod selftest;
mod state;
mod stream;
mod waiters;

pub use api::{Queued, router};
pub use limits::RateLimiter;
pub use open_streams::OpenStreams;
pub use selftest::SELFTEST_STATION;
pub use state::IngestState;
pub use waiters::Waiters;
