//! Keeping frames for review and retraining (issue 15): a frame whose decision is
//! `needs_review` is written to the evidence store (`visionq-evidence`) — its
//! original image bytes and its decided result — once its result is persisted.
//!
//! Where the bytes come from: results only ever receive the result (JSON); the
//! image travels ingest → frames queue → preprocess (or an inline infer-worker) and
//! is not sent further. So a process that runs both ingest and results (embedded
//! `visionq run`, `demo`, `detect`, or an all-roles `visionq run` on RabbitMQ) puts
//! a [`FrameHold`] in front of ingest's broker: each frame published is held by id
//! (the same reference-counted bytes the in-process queue holds, no copy) until its
//! result comes through the consumer, which takes it back, keeping it only where the
//! decision asks for review. The hold is bounded by bytes ([`HOLD_MAX_BYTES`]): the
//! oldest frames leave it first. A results role without ingest in its process
//! (distributed mode) has no bytes to keep: it keeps no evidence and says so at
//! start; nor are frames replayed from the embedded journal after a restart kept
//! (their bytes were never published through the hold in this process).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;
use visionq_contract::decision::Outcome;
use visionq_contract::topology::META_HEADER;
use visionq_contract::{Config, FrameResult, Metrics};
use visionq_evidence::{Bounds, Evidence, EvidenceError, KeptFor, LocalDir, Review, SharedEvidence};
use visionq_queue::{Broker, Deliveries, Envelope, Events, QueueError, SharedBroker, WorkQueue};

/// Bytes of frames the hold keeps at most while their results are on the way.
pub const HOLD_MAX_BYTES: usize = 256 * 1024 * 1024;

/// What became of a frame meant for the evidence store (the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Kept,
    /// Its bytes are not in this process (see the module docs).
    Unavailable,
    /// The store could not write it.
    Failed,
    /// Deleted by the store's bounds.
    Pruned,
}

impl Kept {
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Kept => "kept",
            Kept::Unavailable => "unavailable",
            Kept::Failed => "failed",
            Kept::Pruned => "pruned",
        }
    }
}

#[derive(Default)]
struct Held {
    frames: HashMap<Uuid, Bytes>,
    /// Ids in the order they came (some already taken back).
    order: VecDeque<Uuid>,
    bytes: usize,
}

/// Frames published by this process's ingest, by id, until their results come.
pub struct FrameHold {
    max_bytes: usize,
    held: Mutex<Held>,
}

#[derive(serde::Deserialize)]
struct FrameId {
    frame_id: Uuid,
}

impl FrameHold {
    pub fn new(max_bytes: usize) -> Arc<FrameHold> {
        Arc::new(FrameHold { max_bytes, held: Mutex::new(Held::default()) })
    }

    fn hold(&self, id: Uuid, body: Bytes) {
        let mut h = self.held.lock().expect("frame hold lock");
        h.bytes += body.len();
        if let Some(old) = h.frames.insert(id, body) {
            h.bytes -= old.len();
        }
        h.order.push_back(id);
        while h.bytes > self.max_bytes {
            let Some(oldest) = h.order.pop_front() else { break };
            if let Some(b) = h.frames.remove(&oldest) {
                h.bytes -= b.len();
            }
        }
        // Taken ids stay in `order` until they reach its front; compact now and then.
        if h.order.len() > 2 * h.frames.len() + 1024 {
            let Held { frames, order, .. } = &mut *h;
            order.retain(|id| frames.contains_key(id));
        }
    }

    /// A frame's bytes, which leave the hold.
    pub fn take(&self, id: Uuid) -> Option<Bytes> {
        let mut h = self.held.lock().expect("frame hold lock");
        let b = h.frames.remove(&id)?;
        h.bytes -= b.len();
        Some(b)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.held.lock().expect("frame hold lock").bytes
    }

    /// `inner` with every frame published through it held here.
    pub fn tap(self: &Arc<Self>, inner: SharedBroker) -> SharedBroker {
        Arc::new(HoldTap { inner, hold: self.clone() })
    }
}

/// A [`Broker`] decorator: holds each frame before publishing it (so its result can
/// never come first), lets it go again when the publish is refused.
struct HoldTap {
    inner: SharedBroker,
    hold: Arc<FrameHold>,
}

#[async_trait::async_trait]
impl Broker for HoldTap {
    async fn publish(&self, queue: WorkQueue, message: Envelope) -> Result<(), QueueError> {
        let id = (queue == WorkQueue::Frames)
            .then(|| serde_json::from_str::<FrameId>(message.header(META_HEADER)?).ok())
            .flatten()
            .map(|m| m.frame_id);
        if let Some(id) = id {
            self.hold.hold(id, message.body.clone());
        }
        let r = self.inner.publish(queue, message).await;
        if let (Err(_), Some(id)) = (&r, id) {
            self.hold.take(id);
        }
        r
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

/// Decides which results are kept and writes them to the store.
pub struct Keeper {
    store: SharedEvidence,
    hold: Option<Arc<FrameHold>>,
    metrics: Arc<Metrics>,
}

impl Keeper {
    /// The keeper of `config`'s evidence store (a local directory), fed by `hold`;
    /// `None` when `evidence_max_bytes` is 0.
    pub fn open(config: &Config, metrics: Arc<Metrics>, hold: Option<Arc<FrameHold>>) -> Result<Option<Arc<Keeper>>, EvidenceError> {
        if config.evidence.evidence_max_bytes == 0 {
            return Ok(None);
        }
        let days = u64::from(config.evidence.evidence_max_days);
        let bounds =
            Bounds { max_bytes: config.evidence.evidence_max_bytes, max_age: (days > 0).then(|| Duration::from_secs(days * 86_400)) };
        let store = LocalDir::open(&config.evidence_dir(), bounds)?;
        tracing::info!(dir = %config.evidence_dir().display(), frames = store.len(), bytes_in_process = hold.is_some(), "evidence store open");
        Ok(Some(Arc::new(Keeper { store: Arc::new(store), hold, metrics })))
    }

    /// A keeper over any store (tests, another backend).
    pub fn with_store(store: SharedEvidence, hold: Option<Arc<FrameHold>>, metrics: Arc<Metrics>) -> Arc<Keeper> {
        Arc::new(Keeper { store, hold, metrics })
    }

    /// The bytes of a decided result's frame when it is to be kept: decided
    /// `needs_review`, or its best score in the review band (`in_review_band`, under
    /// the station's rules) whatever the decision. Every result takes its frame out
    /// of the hold, kept or not.
    pub fn claim(&self, result: &FrameResult, in_review_band: bool) -> Option<Bytes> {
        let bytes = self.hold.as_ref().and_then(|h| h.take(result.frame_id));
        let wanted = in_review_band || result.decision.as_ref().is_some_and(|d| d.outcome == Outcome::NeedsReview);
        if wanted && bytes.is_none() {
            self.count(Kept::Unavailable, 1);
        }
        bytes.filter(|_| wanted)
    }

    fn count(&self, outcome: Kept, n: u64) {
        self.metrics.evidence_frames_total.with_label_values(&[outcome.as_str()]).inc_by(n);
    }

    /// Writes a claimed frame to the store, then prunes it to its bounds.
    pub async fn keep(&self, result: FrameResult, image: Bytes) {
        let frame_id = result.frame_id;
        match self.store.put(Evidence::new(result, KeptFor::ReviewBand, Utc::now()), image).await {
            Ok(()) => self.count(Kept::Kept, 1),
            Err(e) => {
                self.count(Kept::Failed, 1);
                tracing::warn!(%frame_id, error = %e, "cannot keep a frame for review");
            }
        }
        self.prune().await;
    }

    /// A kept frame's image: its content type and bytes.
    pub async fn image(&self, frame_id: Uuid) -> Result<Option<(String, Bytes)>, EvidenceError> {
        Ok(self.store.get(frame_id).await?.map(|(e, bytes)| (e.image.content_type, bytes)))
    }

    /// Writes a stored review into the frame's sidecar, so the dataset export applies
    /// it; a frame not kept (its image never reached this process, or was pruned)
    /// has no sidecar to write to.
    pub async fn reviewed(&self, frame_id: Uuid, review: Review) {
        match visionq_evidence::record_review(self.store.as_ref(), frame_id, review).await {
            Ok(()) => {}
            Err(EvidenceError::NotFound(_)) => tracing::debug!(%frame_id, "a reviewed frame is not in the evidence store"),
            Err(e) => tracing::warn!(%frame_id, error = %e, "cannot write a review into the evidence store"),
        }
    }

    /// Deletes what is beyond the store's bounds (oldest first).
    pub async fn prune(&self) {
        match self.store.prune(Utc::now()).await {
            Ok(p) if p.frames > 0 => {
                self.count(Kept::Pruned, p.frames);
                tracing::debug!(frames = p.frames, bytes = p.bytes, "evidence pruned");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune the evidence store"),
        }
        self.metrics.evidence_store_bytes.set(self.store.bytes().await as i64);
    }

    /// Prunes every `interval` (the age bound passes with time, not only with
    /// writes) until `shutdown`.
    pub async fn run_pruning(self: Arc<Self>, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.prune().await;
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use visionq_queue::memory::MemoryBroker;

    fn frame(id: Uuid, body: &'static [u8]) -> Envelope {
        Envelope::new(Bytes::from_static(body)).with_header(META_HEADER, format!("{{\"frame_id\":\"{id}\"}}"))
    }

    #[tokio::test]
    async fn the_hold_keeps_published_frames_until_taken_within_its_bound() {
        let hold = FrameHold::new(10);
        let inner: SharedBroker = Arc::new(MemoryBroker::new(|_| 2, 5));
        let tap = hold.tap(inner.clone());
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        tap.publish(WorkQueue::Frames, frame(a, b"aaaa")).await.unwrap();
        tap.publish(WorkQueue::Frames, frame(b, b"bbbb")).await.unwrap();
        assert_eq!(inner.depth(WorkQueue::Frames).await.unwrap(), 2, "frames go through");
        assert_eq!(hold.take(a).as_deref(), Some(&b"aaaa"[..]));
        assert_eq!(hold.take(a), None, "taken once");
        // A refused publish (the queue is full) is not held.
        assert!(tap.publish(WorkQueue::Frames, frame(c, b"cccc")).await.is_err());
        assert_eq!((hold.take(c), hold.bytes()), (None, 4));
        // Beyond 10 bytes the oldest leave.
        let inner: SharedBroker = Arc::new(MemoryBroker::new(|_| 100, 5));
        let tap = hold.tap(inner);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            tap.publish(WorkQueue::Frames, frame(*id, b"xxxx")).await.unwrap();
        }
        assert_eq!(hold.bytes(), 8);
        assert_eq!((hold.take(b), hold.take(ids[0])), (None, None), "the two oldest left the hold");
        assert!(hold.take(ids[1]).is_some() && hold.take(ids[2]).is_some());
        // Other queues and frames without an id pass untouched.
        tap.publish(WorkQueue::Results, frame(Uuid::now_v7(), b"r")).await.unwrap();
        tap.publish(WorkQueue::Frames, Envelope::new(Bytes::from_static(b"no id"))).await.unwrap();
        assert_eq!(hold.bytes(), 0);
    }
}
