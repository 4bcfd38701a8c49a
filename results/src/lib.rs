//! Results: this crate owns what happens to a finished frame. It persists results
//! idempotently (the frame id is the key; many results per transaction), each with
//! its decision in the same transaction, behind a narrow [`store::ResultStore`] trait
//! (SQL Server, PostgreSQL — over TLS as its URL's `sslmode` asks, [`pg_tls`] —,
//! SQLite; one schema, versioned migrations per dialect applied by one runner,
//! `migrate`), prunes old results
//! ([`retention`]), counts the review backlog ([`review`]), acks only after the
//! commit — and, with sinks configured, after the results' events are in the outbox
//! (`visionq-events`) —, then broadcasts each result so WebSocket subscribers and waiting ingest
//! requests get it; and it serves the read side: a frame's result, a station's
//! results (filtered, paginated), detections per class per interval, the stations
//! seen, and the live stream (described for the OpenAPI document by [`openapi`]), and
//! a station's expectation ([`expectations`]: set over HTTP, handed to the Decider,
//! stored). It keeps the frames whose decision asks for
//! review in the evidence store (`visionq-evidence`; [`evidence`] says where their
//! bytes come from: the frames held from this process's ingest, recent ones a while
//! after their results — `frame_hold` —, or the image an infer-worker sent on after
//! the result), and serves the review queue ([`reviews`]): the frames to review,
//! their images, and the reviews, stored and pushed as the frames' final word; and
//! the admins' reload of the rules file ([`rules_api`]); it follows each model
//! version's drift at each station against the baseline it set there ([`drift`],
//! read at `GET /v1/drift`); [`routes`] puts them all behind one read gate.
//!
//! It imports the contract, the queue, the stages' message codec (`visionq-stage`:
//! an image carried after a result), the HTTP access check and error
//! (`visionq-http`), the decider, the evidence store and the events outbox; it must not import the
//! dashboard (which follows the same events on its own) or another role.

pub mod api;
pub mod consumer;
pub mod drift;
mod drift_api;
pub mod evidence;
pub mod expectations;
mod frame_hold;
mod migrate;
pub mod mssql;
pub mod open;
pub mod openapi;
pub mod pg_tls;
pub mod postgres;
pub mod retention;
pub mod review;
pub mod reviews;
pub mod routes;
pub mod rules_api;
pub mod sqlite;
pub mod store;

pub use consumer::{Outlets, run};
pub use open::open_store;
pub use store::{ClassCount, CountsQuery, Cursor, HistoryQuery, ResultStore, ReviewQuery, SharedStore, StationSummary, StoreError};
