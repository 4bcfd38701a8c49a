//! The in-process queue of the embedded mode: bounded work queues with the same
//! semantics as the RabbitMQ topology — a publish beyond the length limit is
//! refused, deliveries are owned until settled, an unsettled delivery that is
//! dropped goes back to the queue, a message delivered `max_deliveries` times is
//! dead-lettered — and a broadcast channel for completed results.
//!
//! Durable ([`MemoryBroker::durable`]): frames are also written to a [`Journal`]
//! before a publish returns, and a frame leaves the journal only when the result
//! that completes it is acked on the results queue (persisted). Tensors and results
//! stay in memory: after a crash the journal's frames are simply done again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast};

use visionq_contract::topology::topic_matches;

use crate::journal::{Journal, Recovered};
use crate::{Broker, Deliveries, Delivery, Envelope, Events, QueueError, Settle, WorkQueue};

/// Dead letters kept for inspection; older ones are dropped (and logged when dead-lettered).
const DEAD_LETTERS_KEPT: usize = 10_000;

struct Item {
    envelope: Envelope,
    deliveries: u32,
}

struct MemQueue {
    name: &'static str,
    max_length: usize,
    ready: Mutex<VecDeque<Item>>,
    /// Delivered and not yet settled.
    unsettled: AtomicUsize,
    notify: Notify,
}

impl MemQueue {
    fn pop(&self) -> Option<Item> {
        self.ready.lock().expect("queue lock").pop_front()
    }

    fn put_back(&self, item: Item) {
        self.ready.lock().expect("queue lock").push_front(item);
        self.notify.notify_one();
    }
}

type DeadLetters = Arc<Mutex<VecDeque<(Envelope, String)>>>;

/// Finds the key (the frame id) of a message: in a frame, and in a result.
pub type KeyFn = Arc<dyn Fn(&Envelope) -> Option<String> + Send + Sync>;

/// The journal with the two ways to find a frame's key.
pub struct Durable {
    pub journal: Journal,
    /// The key of a message published to the frames queue.
    pub frame_key: KeyFn,
    /// The key of the frame a message on the results queue completes.
    pub result_key: KeyFn,
}

impl Durable {
    /// A result was persisted: its frame is done.
    fn completed(&self, result: &Envelope) {
        if let Some(key) = (self.result_key)(result) {
            self.journal.remove(key);
        }
    }
}

pub struct MemoryBroker {
    queues: HashMap<WorkQueue, Arc<MemQueue>>,
    dead: DeadLetters,
    /// Events with their routing keys.
    events: broadcast::Sender<(Arc<str>, Envelope)>,
    max_deliveries: u32,
    durable: Option<Arc<Durable>>,
}

impl MemoryBroker {
    /// `limits` gives each work queue's length limit.
    pub fn new(limits: impl Fn(WorkQueue) -> usize, max_deliveries: u32) -> Self {
        let queues = WorkQueue::ALL
            .into_iter()
            .map(|q| {
                let mq = MemQueue {
                    name: q.label(),
                    max_length: limits(q),
                    ready: Mutex::new(VecDeque::new()),
                    unsettled: AtomicUsize::new(0),
                    notify: Notify::new(),
                };
                (q, Arc::new(mq))
            })
            .collect();
        MemoryBroker {
            queues,
            dead: Arc::new(Mutex::new(VecDeque::new())),
            events: broadcast::channel(4096).0,
            max_deliveries: max_deliveries.max(1),
            durable: None,
        }
    }

    /// Journals frames in `durable` and queues what a previous run left there
    /// (`recovered`, oldest first, marked as redelivered; above the length limit
    /// if need be: they were accepted).
    pub fn durable(limits: impl Fn(WorkQueue) -> usize, max_deliveries: u32, durable: Durable, recovered: Recovered) -> Self {
        let mut b = Self::new(limits, max_deliveries);
        let frames = b.queue(WorkQueue::Frames);
        {
            let mut ready = frames.ready.lock().expect("queue lock");
            ready.extend(recovered.frames.into_iter().map(|(_, envelope)| Item { envelope, deliveries: 1 }));
        }
        frames.notify.notify_one();
        b.durable = Some(Arc::new(durable));
        b
    }

    /// Frames journaled and not yet completed (durable only).
    pub fn journaled(&self) -> Option<u64> {
        self.durable.as_ref().map(|d| d.journal.rows())
    }

    /// Dead-lettered messages with their reasons, oldest first.
    pub fn dead_letters(&self) -> Vec<(Envelope, String)> {
        self.dead.lock().expect("dead lock").iter().cloned().collect()
    }

    fn queue(&self, q: WorkQueue) -> &Arc<MemQueue> {
        &self.queues[&q]
    }
}

fn push_dead(dead: &DeadLetters, queue: &str, envelope: Envelope, reason: &str) {
    tracing::warn!(queue, reason, "message dead-lettered");
    let mut d = dead.lock().expect("dead lock");
    if d.len() == DEAD_LETTERS_KEPT {
        d.pop_front();
    }
    d.push_back((envelope, reason.to_string()));
}

struct MemSettle {
    queue: Arc<MemQueue>,
    dead: DeadLetters,
    max_deliveries: u32,
    /// On the results queue of a durable broker: an ack completes a journaled frame.
    completes: Option<Arc<Durable>>,
    /// The message while unsettled; taken by the first settlement.
    item: Mutex<Option<Item>>,
    _permit: OwnedSemaphorePermit,
}

impl MemSettle {
    fn take(&self) -> Option<Item> {
        let item = self.item.lock().expect("settle lock").take();
        if item.is_some() {
            self.queue.unsettled.fetch_sub(1, Ordering::Relaxed);
        }
        item
    }

    fn give_back(&self, item: Item) {
        if item.deliveries >= self.max_deliveries {
            let reason = format!("delivery limit: delivered {} times without success", item.deliveries);
            push_dead(&self.dead, self.queue.name, item.envelope, &reason);
        } else {
            self.queue.put_back(item);
        }
    }
}

#[async_trait::async_trait]
impl Settle for MemSettle {
    async fn ack(&self) -> Result<(), QueueError> {
        if let (Some(item), Some(d)) = (self.take(), &self.completes) {
            d.completed(&item.envelope);
        }
        Ok(())
    }

    async fn requeue(&self) -> Result<(), QueueError> {
        if let Some(item) = self.take() {
            self.give_back(item);
        }
        Ok(())
    }

    async fn dead_letter(&self, envelope: &Envelope, reason: &str) -> Result<(), QueueError> {
        if self.take().is_some() {
            push_dead(&self.dead, self.queue.name, envelope.clone(), reason);
        }
        Ok(())
    }
}

impl Drop for MemSettle {
    /// A delivery dropped unsettled (its consumer failed) goes back, as when an AMQP channel closes.
    fn drop(&mut self) {
        if let Some(item) = self.take() {
            self.give_back(item);
        }
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, queue: WorkQueue, message: Envelope) -> Result<(), QueueError> {
        let q = self.queue(queue);
        match &self.durable {
            Some(d) if queue == WorkQueue::Frames => {
                // The limit is checked before the write (a refused frame is never
                // written), so concurrent publishes may pass it by a few.
                if q.ready.lock().expect("queue lock").len() >= q.max_length {
                    return Err(QueueError::Full(q.name));
                }
                let key =
                    (d.frame_key)(&message).ok_or_else(|| QueueError::Journal("a frame without an id cannot be journaled".into()))?;
                // The frame is queued while its commit runs, so the work on it
                // overlaps the fsync; the publish (and so the station's 202) still
                // returns only once it is committed.
                let pending = d.journal.submit(key.clone(), &message)?;
                q.ready.lock().expect("queue lock").push_back(Item { envelope: message, deliveries: 0 });
                q.notify.notify_one();
                if let Err(e) = pending.committed().await {
                    // Not kept, so not accepted: taken back unless a consumer already
                    // has it (then its result is stored without a 202, as after a lost
                    // broker confirm in RabbitMQ mode; never lost, never doubled).
                    q.ready.lock().expect("queue lock").retain(|i| (d.frame_key)(&i.envelope).as_deref() != Some(key.as_str()));
                    return Err(e);
                }
                return Ok(());
            }
            _ => {
                let mut ready = q.ready.lock().expect("queue lock");
                if ready.len() >= q.max_length {
                    return Err(QueueError::Full(q.name));
                }
                ready.push_back(Item { envelope: message, deliveries: 0 });
            }
        }
        q.notify.notify_one();
        Ok(())
    }

    async fn consume(&self, queue: WorkQueue, prefetch: u16) -> Result<Deliveries, QueueError> {
        let q = self.queue(queue).clone();
        let permits = Arc::new(Semaphore::new(prefetch.max(1) as usize));
        let dead = self.dead.clone();
        let max_deliveries = self.max_deliveries;
        let completes = self.durable.clone().filter(|_| queue == WorkQueue::Results);
        let stream = futures_util::stream::unfold((), move |()| {
            let (q, permits, dead, completes) = (q.clone(), permits.clone(), dead.clone(), completes.clone());
            async move {
                let permit = permits.acquire_owned().await.expect("semaphore never closed");
                let mut item = loop {
                    let notified = q.notify.notified();
                    if let Some(item) = q.pop() {
                        break item;
                    }
                    notified.await;
                };
                // Pass the wake-up on if more is waiting, so other consumers start too.
                if !q.ready.lock().expect("queue lock").is_empty() {
                    q.notify.notify_one();
                }
                item.deliveries += 1;
                q.unsettled.fetch_add(1, Ordering::Relaxed);
                let envelope = item.envelope.clone();
                let (redelivered, count) = (item.deliveries > 1, item.deliveries);
                let settle =
                    MemSettle { queue: q.clone(), dead, max_deliveries, completes, item: Mutex::new(Some(item)), _permit: permit };
                Some((Delivery::new(envelope, redelivered, count, Box::new(settle)), ()))
            }
        });
        Ok(stream.boxed())
    }

    async fn publish_event(&self, routing_key: &str, message: Envelope) -> Result<(), QueueError> {
        // No subscriber is not an error: events are best effort.
        let _ = self.events.send((routing_key.into(), message));
        Ok(())
    }

    async fn subscribe_events(&self, topics: &[&str]) -> Result<Events, QueueError> {
        let rx = self.events.subscribe();
        let topics: Arc<[String]> = topics.iter().map(|t| t.to_string()).collect();
        let stream = futures_util::stream::unfold(rx, move |mut rx| {
            let topics = topics.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok((key, e)) if topics.iter().any(|t| topic_matches(t, &key)) => return Some((e, rx)),
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "event subscriber lagged")
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    /// Ready plus delivered-but-unsettled: everything this queue still owes.
    async fn depth(&self, queue: WorkQueue) -> Result<u64, QueueError> {
        let q = self.queue(queue);
        let ready = q.ready.lock().expect("queue lock").len();
        Ok((ready + q.unsettled.load(Ordering::Relaxed)) as u64)
    }

    async fn is_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn broker(limit: usize) -> MemoryBroker {
        MemoryBroker::new(|_| limit, 3)
    }

    async fn next(d: &mut Deliveries) -> Delivery {
        tokio::time::timeout(Duration::from_secs(2), d.next()).await.expect("a delivery").unwrap()
    }

    #[tokio::test]
    async fn publish_beyond_the_limit_is_refused() {
        let b = broker(2);
        b.publish(WorkQueue::Frames, Envelope::new("a")).await.unwrap();
        b.publish(WorkQueue::Frames, Envelope::new("b")).await.unwrap();
        let e = b.publish(WorkQueue::Frames, Envelope::new("c")).await.unwrap_err();
        assert!(matches!(e, QueueError::Full("frames")), "{e}");
        assert_eq!(b.depth(WorkQueue::Frames).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn unsettled_deliveries_come_back_and_prefetch_bounds_them() {
        let b = broker(100);
        for i in 0..3 {
            b.publish(WorkQueue::Tensors, Envelope::new(vec![i])).await.unwrap();
        }
        let mut c = b.consume(WorkQueue::Tensors, 2).await.unwrap();
        let d1 = next(&mut c).await;
        let d2 = next(&mut c).await;
        assert_eq!((&d1.envelope.body[..], &d2.envelope.body[..]), (&[0u8][..], &[1u8][..]));
        // Prefetch 2: the third waits until one is settled.
        assert!(tokio::time::timeout(Duration::from_millis(100), c.next()).await.is_err());
        d1.ack().await.unwrap();
        drop(d2); // unsettled: back to the front of the queue
        let d = next(&mut c).await;
        assert_eq!(&d.envelope.body[..], &[1u8][..]);
        assert!(d.redelivered);
        assert_eq!(d.delivery_count, 2);
        d.ack().await.unwrap();
        next(&mut c).await.ack().await.unwrap();
        assert_eq!(b.depth(WorkQueue::Tensors).await.unwrap(), 0, "nothing ready or unsettled");
    }

    #[tokio::test]
    async fn poison_is_dead_lettered_after_the_delivery_limit() {
        let b = broker(100);
        b.publish(WorkQueue::Results, Envelope::new("poison")).await.unwrap();
        let mut c = b.consume(WorkQueue::Results, 1).await.unwrap();
        for _ in 0..3 {
            next(&mut c).await.requeue().await.unwrap();
        }
        let dead = b.dead_letters();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].1.contains("delivered 3 times"), "{}", dead[0].1);
        assert!(tokio::time::timeout(Duration::from_millis(50), c.next()).await.is_err());
    }

    #[tokio::test]
    async fn dead_letter_keeps_the_reason_and_events_reach_every_subscriber_of_their_topic() {
        let b = broker(100);
        let mut s1 = b.subscribe_events(&["result.#"]).await.unwrap();
        let mut s2 = b.subscribe_events(&["preview.#", "result.#"]).await.unwrap();
        let mut previews = b.subscribe_events(&["preview.#"]).await.unwrap();
        b.publish(WorkQueue::Frames, Envelope::new("x")).await.unwrap();
        let mut c = b.consume(WorkQueue::Frames, 1).await.unwrap();
        next(&mut c).await.dead_letter("not a JPEG").await.unwrap();
        assert_eq!(b.dead_letters()[0].1, "not a JPEG");
        b.publish_event("preview.s", Envelope::new("jpeg")).await.unwrap();
        b.publish_event("result.s", Envelope::new("done")).await.unwrap();
        assert_eq!(&s1.next().await.unwrap().body[..], b"done", "a preview is not a result");
        assert_eq!(&s2.next().await.unwrap().body[..], b"jpeg");
        assert_eq!(&s2.next().await.unwrap().body[..], b"done");
        assert_eq!(&previews.next().await.unwrap().body[..], b"jpeg");
        assert!(tokio::time::timeout(Duration::from_millis(50), previews.next()).await.is_err(), "nor a result a preview");
    }
}
