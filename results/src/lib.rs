//! Results: this crate owns what happens to a finished frame. It persists results
//! idempotently (the frame id is the key; many results per transaction) behind a
//! narrow [`store::ResultStore`] trait (PostgreSQL, SQLite), acks only after the
//! commit, then broadcasts each result so WebSocket subscribers and waiting ingest
//! requests get it; and it serves the read side: a frame's result, a station's
//! recent results, and the live stream; and it mounts the dashboard
//! (`visionq-dashboard`), feeding it the results and frame previews it receives.

pub mod api;
pub mod consumer;
pub mod postgres;
pub mod sqlite;
pub mod store;

pub use consumer::run;
pub use store::{open_store, HistoryQuery, ResultStore, StoreError};
