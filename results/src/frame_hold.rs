//! The frames' image bytes the results role can still keep: held by frame id from
//! ingest's publish (where ingest runs in this process, [`FrameHold::tap`]) until the
//! frame's result comes, and then — when the result did not ask for the frame to be
//! kept — for `evidence_recent_s` more ("recent" frames), so that a reviewer who
//! reviews a frame outside the review band by its id (the live dashboard) still has
//! its image kept. A results role without ingest puts the images the infer-workers
//! send on ([`FrameHold::finish`] with the bytes) among its recent frames the same way.
//!
//! Bounded by bytes ([`HOLD_MAX_BYTES`]) whatever the age: recent frames leave first
//! (oldest result first), then frames still waiting for their results (oldest first).
//! The held bytes are the same reference-counted bytes the in-process queue holds
//! (no copy).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;
use visionq_contract::topology::META_HEADER;
use visionq_queue::{Envelope, PublishTap, QueueError, SharedBroker, WorkQueue, tapped};

/// Bytes of frames the hold keeps at most (waiting for results, and recent).
pub const HOLD_MAX_BYTES: usize = 256 * 1024 * 1024;
/// The same for a results role without ingest, which holds only the recent images
/// sent on with results (a pod with a small memory limit).
pub const SENT_ON_MAX_BYTES: usize = 64 * 1024 * 1024;

struct Slot {
    bytes: Bytes,
    /// When its result came (a recent frame); `None` while it waits for it.
    done: Option<Instant>,
}

#[derive(Default)]
struct Held {
    frames: HashMap<Uuid, Slot>,
    /// Ids in the order they were published (some taken or done since).
    waiting: VecDeque<Uuid>,
    /// Ids and the instant their results came, in that order (some taken since).
    recent: VecDeque<(Uuid, Instant)>,
    bytes: usize,
}

impl Held {
    fn remove(&mut self, id: Uuid) -> Option<Bytes> {
        let slot = self.frames.remove(&id)?;
        self.bytes -= slot.bytes.len();
        Some(slot.bytes)
    }

    /// Lets go of recent frames past `linger`, then of whatever is oldest while the
    /// bytes are over `max`.
    fn trim(&mut self, now: Instant, linger: Duration, max: usize) {
        while let Some(&(id, at)) = self.recent.front() {
            let live = self.frames.get(&id).is_some_and(|s| s.done == Some(at));
            if live && now.saturating_duration_since(at) < linger && self.bytes <= max {
                break;
            }
            self.recent.pop_front();
            if live {
                self.remove(id);
            }
        }
        while self.bytes > max {
            let Some(id) = self.waiting.pop_front() else { break };
            if self.frames.get(&id).is_some_and(|s| s.done.is_none()) {
                self.remove(id);
            }
        }
        // Ids that left stay in the queues until they reach the front; compact now and then.
        if self.waiting.len() + self.recent.len() > 2 * self.frames.len() + 1024 {
            let Held { frames, waiting, recent, .. } = self;
            waiting.retain(|id| frames.get(id).is_some_and(|s| s.done.is_none()));
            recent.retain(|(id, at)| frames.get(id).is_some_and(|s| s.done == Some(*at)));
        }
    }
}

/// Frames' bytes by id: published by this process's ingest until their results
/// come, and recent ones for a while after.
pub struct FrameHold {
    max_bytes: usize,
    linger: Duration,
    held: Mutex<Held>,
}

#[derive(serde::Deserialize)]
struct FrameId {
    frame_id: Uuid,
}

impl FrameHold {
    /// A hold of at most `max_bytes`, keeping frames `linger` after their results.
    pub fn new(max_bytes: usize, linger: Duration) -> Arc<FrameHold> {
        Arc::new(FrameHold { max_bytes, linger, held: Mutex::new(Held::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("frame hold lock")
    }

    fn hold(&self, id: Uuid, body: Bytes) {
        let mut h = self.lock();
        h.remove(id);
        h.bytes += body.len();
        h.frames.insert(id, Slot { bytes: body, done: None });
        h.waiting.push_back(id);
        h.trim(Instant::now(), self.linger, self.max_bytes);
    }

    /// A frame's bytes, which leave the hold (its result asks for it to be kept, a
    /// reviewer reviewed it, or its publish was refused).
    pub fn take(&self, id: Uuid) -> Option<Bytes> {
        let mut h = self.lock();
        h.trim(Instant::now(), self.linger, self.max_bytes);
        h.remove(id)
    }

    /// A frame's result came and does not ask for it to be kept: it stays as a recent
    /// frame for the hold's linger time. `sent` is the image that came with the
    /// result (from an infer-worker), held when the hold does not have the frame.
    pub fn finish(&self, id: Uuid, sent: Option<Bytes>) {
        let mut h = self.lock();
        let now = Instant::now();
        if self.linger.is_zero() {
            h.remove(id);
            return;
        }
        match (h.frames.get_mut(&id), sent) {
            (Some(slot), _) => slot.done = Some(now),
            (None, Some(bytes)) => {
                h.bytes += bytes.len();
                h.frames.insert(id, Slot { bytes, done: Some(now) });
            }
            (None, None) => return,
        }
        h.recent.push_back((id, now));
        h.trim(now, self.linger, self.max_bytes);
    }

    /// Bytes held now (after letting go of what is past its time).
    pub fn bytes(&self) -> usize {
        let mut h = self.lock();
        h.trim(Instant::now(), self.linger, self.max_bytes);
        h.bytes
    }

    /// `inner` with every frame published through it held here.
    pub fn tap(self: &Arc<Self>, inner: SharedBroker) -> SharedBroker {
        tapped(inner, HoldTap { hold: self.clone() })
    }
}

/// A publish tap: holds each frame before publishing it (so its result can never
/// come first), lets it go again when the publish is refused.
struct HoldTap {
    hold: Arc<FrameHold>,
}

#[async_trait::async_trait]
impl PublishTap for HoldTap {
    async fn publish(&self, inner: &SharedBroker, queue: WorkQueue, message: Envelope) -> Result<(), QueueError> {
        let id = (queue == WorkQueue::Frames)
            .then(|| serde_json::from_str::<FrameId>(message.header(META_HEADER)?).ok())
            .flatten()
            .map(|m| m.frame_id);
        if let Some(id) = id {
            self.hold.hold(id, message.body.clone());
        }
        let r = inner.publish(queue, message).await;
        if let (Err(_), Some(id)) = (&r, id) {
            self.hold.take(id);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use visionq_queue::memory::MemoryBroker;

    fn frame(id: Uuid, body: &'static [u8]) -> Envelope {
        Envelope::new(Bytes::from_static(body)).with_header(META_HEADER, format!("{{\"frame_id\":\"{id}\"}}"))
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_hold_keeps_published_frames_until_taken_within_its_bound() {
        let hold = FrameHold::new(10, MINUTE);
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

    #[tokio::test]
    async fn a_frame_stays_for_its_linger_time_after_its_result_and_recent_frames_leave_first() {
        let inner: SharedBroker = Arc::new(MemoryBroker::new(|_| 100, 5));
        let linger = Duration::from_millis(300);
        let hold = FrameHold::new(12, linger);
        let tap = hold.tap(inner);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        tap.publish(WorkQueue::Frames, frame(a, b"aaaa")).await.unwrap();
        tap.publish(WorkQueue::Frames, frame(b, b"bbbb")).await.unwrap();
        // a's result came first: a is recent, b still waits.
        hold.finish(a, None);
        assert_eq!(hold.bytes(), 8, "a recent frame is still held");
        // Under byte pressure the recent frame leaves before the older waiting one.
        let c = Uuid::now_v7();
        tap.publish(WorkQueue::Frames, frame(c, b"cccccc")).await.unwrap();
        assert_eq!((hold.take(a), hold.bytes()), (None, 10), "a (recent) left for c; b (waiting) stayed");
        // A frame sent with its result (distributed mode) is held as recent too.
        let d = Uuid::now_v7();
        hold.finish(b, None);
        hold.finish(d, Some(Bytes::from_static(b"dd")));
        assert_eq!(hold.bytes(), 12);
        assert_eq!(hold.take(d).as_deref(), Some(&b"dd"[..]), "a review takes a recent frame's bytes");
        // Past the linger time a recent frame is gone; a waiting one is not.
        tokio::time::sleep(linger + Duration::from_millis(50)).await;
        assert_eq!((hold.take(b), hold.bytes()), (None, 6), "b's linger passed; c still waits for its result");
        assert_eq!(hold.take(c).as_deref(), Some(&b"cccccc"[..]));
        // Without a linger time a frame leaves with its result.
        let hold = FrameHold::new(100, Duration::ZERO);
        hold.tap(Arc::new(MemoryBroker::new(|_| 100, 5))).publish(WorkQueue::Frames, frame(a, b"aaaa")).await.unwrap();
        hold.finish(a, None);
        hold.finish(b, Some(Bytes::from_static(b"bb")));
        assert_eq!(hold.bytes(), 0);
    }
}
