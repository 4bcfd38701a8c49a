//! The queue between visionq's stages. This crate owns the one narrow trait every
//! role talks to — publish with a confirm, consume with manual settlement (ack,
//! requeue, dead-letter with a reason), broadcast completed results, read queue
//! depth — and its two implementations: RabbitMQ through lapin ([`amqp`]) and a
//! bounded in-process queue with the same semantics for the embedded mode
//! ([`memory`]), which keeps the frames queue in a SQLite journal ([`journal`]) so
//! that an accepted frame survives a crash. It knows nothing of frames or tensors:
//! messages are bytes plus headers (the embedded composition says how to find a
//! frame's id in them).

pub mod amqp;
pub mod journal;
pub mod memory;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
pub use visionq_contract::topology::WorkQueue;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue is at its length limit; the publish was refused (try again later).
    #[error("queue {0} is full")]
    Full(&'static str),
    /// The broker cannot be reached or the channel failed.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// Settling a delivery failed (its channel is gone; the broker will redeliver it).
    #[error("could not settle delivery: {0}")]
    Settle(String),
    /// The embedded frames journal could not store or read a frame (a full disk).
    #[error("{0}")]
    Journal(String),
}

/// A message: headers (small strings: metadata JSON, trace context) and a body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

impl Envelope {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Envelope { headers: BTreeMap::new(), body: body.into() }
    }

    pub fn with_header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.insert(k.to_string(), v.into());
        self
    }

    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).map(String::as_str)
    }
}

/// How a delivery is settled; each implementation provides its own.
#[async_trait::async_trait]
pub trait Settle: Send + Sync {
    async fn ack(&self) -> Result<(), QueueError>;
    async fn requeue(&self) -> Result<(), QueueError>;
    /// Moves the message to the dead-letter queue with `reason`, then removes it here.
    async fn dead_letter(&self, envelope: &Envelope, reason: &str) -> Result<(), QueueError>;
}

/// A message taken from a work queue; it stays owned by this consumer until settled.
pub struct Delivery {
    pub envelope: Envelope,
    /// The broker delivered it before (a consumer died or requeued it).
    pub redelivered: bool,
    /// How many times it was delivered, this one included (1 when unknown).
    pub delivery_count: u32,
    settle: Box<dyn Settle>,
}

impl Delivery {
    pub fn new(envelope: Envelope, redelivered: bool, delivery_count: u32, settle: Box<dyn Settle>) -> Self {
        Delivery { envelope, redelivered, delivery_count, settle }
    }

    pub async fn ack(self) -> Result<(), QueueError> {
        self.settle.ack().await
    }

    pub async fn requeue(self) -> Result<(), QueueError> {
        self.settle.requeue().await
    }

    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        self.settle.dead_letter(&self.envelope, reason).await
    }
}

pub type Deliveries = BoxStream<'static, Delivery>;
pub type Events = BoxStream<'static, Envelope>;

/// The queue as every role sees it.
#[async_trait::async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes to a work queue and returns once the broker confirmed it (or refused it).
    async fn publish(&self, queue: WorkQueue, message: Envelope) -> Result<(), QueueError>;
    /// Consumes a work queue with at most `prefetch` unsettled deliveries. The stream
    /// outlives broker restarts (it reconnects by itself) and ends only when dropped.
    async fn consume(&self, queue: WorkQueue, prefetch: u16) -> Result<Deliveries, QueueError>;
    /// Broadcasts an event — a completed result, a frame preview — under its routing
    /// key (best effort: the store is the record).
    async fn publish_event(&self, routing_key: &str, message: Envelope) -> Result<(), QueueError>;
    /// Every event published from now on, by any process, whose routing key matches
    /// one of `topics` (topic patterns: `contract::topology::RESULT_EVENTS`, …).
    async fn subscribe_events(&self, topics: &[&str]) -> Result<Events, QueueError>;
    /// Messages a work queue still holds (ready; in process, also those unsettled).
    async fn depth(&self, queue: WorkQueue) -> Result<u64, QueueError>;
    /// Whether the broker is reachable right now (for readiness).
    async fn is_ready(&self) -> bool;
}

pub type SharedBroker = Arc<dyn Broker>;

/// What a broker decorator does around the messages published through it; every
/// other call passes through to the broker underneath ([`tapped`]).
#[async_trait::async_trait]
pub trait PublishTap: Send + Sync + 'static {
    /// Publishes `message` to `queue` on `inner`, with the tap's own work around it.
    async fn publish(&self, inner: &SharedBroker, queue: WorkQueue, message: Envelope) -> Result<(), QueueError>;
}

/// `inner` with `tap` around its publishes.
pub fn tapped(inner: SharedBroker, tap: impl PublishTap) -> SharedBroker {
    Arc::new(Tapped { inner, tap })
}

struct Tapped<T> {
    inner: SharedBroker,
    tap: T,
}

#[async_trait::async_trait]
impl<T: PublishTap> Broker for Tapped<T> {
    async fn publish(&self, queue: WorkQueue, message: Envelope) -> Result<(), QueueError> {
        self.tap.publish(&self.inner, queue, message).await
    }

    async fn consume(&self, queue: WorkQueue, prefetch: u16) -> Result<Deliveries, QueueError> {
        self.inner.consume(queue, prefetch).await
    }

    async fn publish_event(&self, routing_key: &str, message: Envelope) -> Result<(), QueueError> {
        self.inner.publish_event(routing_key, message).await
    }

    async fn subscribe_events(&self, topics: &[&str]) -> Result<Events, QueueError> {
        self.inner.subscribe_events(topics).await
    }

    async fn depth(&self, queue: WorkQueue) -> Result<u64, QueueError> {
        self.inner.depth(queue).await
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }
}

/// What becomes of a delivery once its handler is done; decided in one place per stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Done, and the next hop confirmed what it needed.
    Ack,
    /// Could not be handled now (next hop unavailable); try again later.
    Requeue,
    /// Can never succeed; keep it with the reason.
    DeadLetter(String),
}

impl Delivery {
    /// Settles the delivery as `fate` says. A failure to settle is logged, not fatal:
    /// an unsettled message is redelivered by the broker.
    pub async fn settle(self, fate: Fate) {
        let result = match &fate {
            Fate::Ack => self.ack().await,
            Fate::Requeue => self.requeue().await,
            Fate::DeadLetter(reason) => self.dead_letter(reason).await,
        };
        if let Err(e) = result {
            tracing::warn!(?fate, error = %e, "could not settle a delivery; it will be redelivered");
        }
    }
}

/// Publishes the next hop of a delivery in hand, waiting out a full queue instead of
/// giving up. The delivery stays unsettled meanwhile, so the stage stops taking work,
/// the queue before it fills up, and ingest answers 503: backpressure travels up the
/// pipeline. Requeueing instead would count a delivery each time against the
/// delivery limit, and a good message would be dead-lettered after a few tries.
/// Any other failure (the broker unreachable) is returned at once.
pub async fn publish_when_room(broker: &dyn Broker, queue: WorkQueue, message: Envelope) -> Result<(), QueueError> {
    let mut backoff = std::time::Duration::from_millis(50);
    let mut waited = false;
    loop {
        match broker.publish(queue, message.clone()).await {
            Err(QueueError::Full(q)) => {
                if !waited {
                    tracing::warn!(queue = q, "next queue is full; holding the delivery until there is room");
                    waited = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// On shutdown: waits for the work still in flight, up to `deadline`, logging what
/// is left (unsettled deliveries go back to the queue when the consumer closes).
pub async fn drain_in_flight(tasks: &mut tokio::task::JoinSet<()>, deadline: std::time::Duration, role: &str) {
    if tasks.is_empty() {
        return;
    }
    tracing::info!(role, in_flight = tasks.len(), "shutting down: finishing work in flight");
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(deadline, all).await.is_err() {
        tracing::warn!(role, still_pending = tasks.len(), "shutdown deadline passed; unsettled work will be redelivered");
        tasks.abort_all();
    }
}
