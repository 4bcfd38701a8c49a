//! HTTP: what every route of every role shares, so a new route does not write it a
//! fifth time. This crate owns
//! - [`access`]: the access check mounted as a route layer ([`access::Gate`]: a bearer
//!   token, from `Authorization` or `?token=`, checked against a scope), and who
//!   passed it ([`access::Caller`]);
//! - [`ApiError`]: the one refusal every route answers with — status, the
//!   contract's `{error, code}` body (with `param`, `served_by`), and what the client
//!   needs to act on it: `Retry-After`, the `WWW-Authenticate` challenge, and
//!   `Connection: close` where the body was not read;
//! - [`doc`]: the access check's refusals as OpenAPI response sets, named in each
//!   route's `responses(...)`.
//!
//! It imports only the contract (for tokens, scopes and the error body), axum and
//! utoipa; it must not import a role crate, the queue, or the dashboard — they
//! import it.

pub mod access;
mod api_error;
pub mod doc;

pub use api_error::ApiError;
