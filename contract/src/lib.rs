//! The contract between visionq's roles. This crate owns what every stage must agree
//! on and nothing else: the messages that travel between ingest, preprocess,
//! infer-worker and results (and the result object stations receive, with what a
//! model chain adds to a detection, [`chain`]), the names of
//! the broker topology, the configuration every role reads (with the event sinks and
//! their filters, [`sink`], and the alert rules, [`alert`]), who may call what
//! (tokens and scopes), how the HTTP API's query parameters are read ([`params`]),
//! the one shape of its refusals ([`refusal`]), what the HTTP listener tells a
//! handler about a slow body ([`http`]), how an outgoing TLS connection verifies its
//! server ([`tls`]), and the telemetry (metric names, defined once, the typed events
//! that log and count together ([`instrument`]), and log set-up).
//! It does no I/O beyond reading the config file, CA files and this process's own
//! figures in /proc.

pub mod alert;
pub mod auth;
pub mod chain;
pub mod config;
pub mod decision;
pub mod http;
pub mod instrument;
pub mod message;
pub mod metrics;
pub mod names;
pub mod params;
pub mod refusal;
pub mod sink;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod track;

pub use config::{Config, ConfigError};
pub use message::{Detection, FrameMeta, FrameResult, Letterbox, ModelInfo, ResultStatus, TensorMeta, Timings};
pub use metrics::Metrics;
