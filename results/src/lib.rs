//! Results: this crate owns what happens to a finished frame. It persists results
//! idempotently (the frame id is the key; many results per transaction) behind a
//! narrow [`store::ResultStore`] trait (SQL Server, PostgreSQL — over TLS as its URL's
//! `sslmode` asks, [`pg_tls`] —, SQLite; one
//! schema, versioned migrations per dialect), prunes old results ([`retention`]), acks only after the
//! commit, then broadcasts each result so WebSocket subscribers and waiting ingest
//! requests get it; and it serves the read side: a frame's result, a station's
//! results (filtered, paginated), detections per class per interval, the stations seen, and the live stream
//! (described for the OpenAPI document by [`openapi`]); and it mounts the dashboard
//! (`visionq-dashboard`), feeding it the results and frame previews it receives.

pub mod api;
pub mod consumer;
pub mod mssql;
pub mod openapi;
pub mod pg_tls;
pub mod postgres;
pub mod retention;
pub mod sqlite;
pub mod store;

pub use consumer::run;
pub use store::{ClassCount, CountsQuery, Cursor, HistoryQuery, ResultStore, SharedStore, StationSummary, StoreError, open_store};
