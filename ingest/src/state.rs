//! Ingest's state, shared by every route, stream and the self-test: the broker, the
//! waiters for results, the limits and who may post. Its own module so that the
//! refusals, the admission checks and the streams import it without importing the
//! pipeline or each other.

use std::sync::Arc;

use visionq_contract::auth::Auth;
use visionq_contract::{Config, Metrics};
use visionq_queue::SharedBroker;

use crate::limits::RateLimiter;
use crate::open_streams::OpenStreams;
use crate::waiters::Waiters;

pub struct IngestState {
    pub broker: SharedBroker,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub waiters: Arc<Waiters>,
    /// Who may post for which station (and run the self-test).
    pub auth: Arc<Auth>,
    pub limiter: RateLimiter,
    /// Turns true when the process stops taking frames: requests still held for a
    /// result are then answered `202 queued` (the frame is safe in the queue) instead
    /// of being cut when the process exits.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The station sockets open: a stopping process waits for them to close.
    pub streams: OpenStreams,
}
