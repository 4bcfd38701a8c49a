//! The dashboard: this crate owns what operators and SREs see in a browser. It
//! holds the web page itself (HTML, CSS and vanilla JavaScript built into the
//! binary: no CDN, no build step, nothing fetched at run time), the HTTP routes the
//! results role mounts for it (the page at `/`, its assets under `/dashboard/`, its
//! configuration, a coalesced live feed per station, the latest frame of each
//! station as JPEG, and the other roles' metrics for the pipeline view), the
//! station page (`/station/{station}`: a browser's camera streaming to that station
//! over ingest's WebSocket, with its answers drawn as the dashboard draws them), and the
//! frame previews behind the live view: [`PreviewTap`] samples frames where ingest
//! publishes them and [`Previews`] keeps the latest one per station, bounded, in the
//! results role. Everything here is read-only: the dashboard never changes the
//! pipeline. It also owns the read side's access check ([`access`]), which the
//! results role's history API shares. [`openapi`] describes its routes for the
//! OpenAPI document.
//!
//! # Where the frames on the dashboard come from
//!
//! Operators must see the frames the pipeline processed, with that frame's own
//! boxes. In distributed mode the results role never sees a JPEG, and the result
//! message is built by the infer-worker from the tensor, so the picture has to
//! reach results by another path. The choice made here:
//!
//! * ingest already holds the original JPEG, so the preview costs no decode and no
//!   re-encode anywhere (a thumbnail would cost a decode, a resize and an encode on
//!   the hot path of preprocess or the infer-worker, per frame);
//! * it is *sampled*: at most one frame per station per
//!   `dashboard_preview_interval_ms` (500 ms), and none above
//!   `dashboard_preview_max_bytes`, so the extra traffic is bounded by the number of
//!   stations, not by their frame rate (50 stations × 2/s × ~30 KB ≈ 3 MB/s), and
//!   the work messages (frames, tensors, results) stay exactly as small as before;
//! * it travels as a best-effort event on the existing events exchange
//!   (`preview.<station>`), which every results replica already subscribes to, so it
//!   works the same with the in-process queue (zero-copy, a shared `Bytes`) and
//!   with RabbitMQ, and losing one costs nothing but a skipped picture;
//! * results pairs each preview with its result by frame id and keeps the latest
//!   pair per station in memory ([`Previews`]), bounded in stations and bytes.
//!
//! The sampling is a decorator on ingest's broker handle ([`PreviewTap`]), so ingest
//! itself stays unaware of the dashboard; previews and results travel under their
//! own routing keys (`preview.<station>`, `result.<station>`), and each subscriber
//! takes the ones it wants.
//!
//! # Access
//!
//! With tokens configured (`tokens_file`), every route that shows the plant's data
//! needs an operator (or reviewer, or admin) token, checked by
//! `visionq_http::access::check` as a route layer; the page, its assets and its configuration stay open so that the page can
//! load and ask for a token. The page sends the token it keeps in the browser as
//! `Authorization: Bearer <token>`, and as `?token=` where a browser cannot set
//! headers (the WebSocket, `<img>`). Without tokens (allowed on a loopback listener
//! only) every route is open. docs/SECURITY.md has the scopes.

pub mod assets;
pub mod http;
pub mod openapi;
pub mod previews;
pub mod tap;

pub use http::{DashboardState, router};
pub use previews::Previews;
pub use tap::{PreviewTap, is_preview};
