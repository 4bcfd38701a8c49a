//! Requests waiting for their frame's result (`?wait_ms=`). Every completed result
//! is broadcast on the events exchange; this keeps the frame ids this process holds
//! requests for and hands each its result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::sync::oneshot;
use uuid::Uuid;
use visionq_contract::FrameResult;
use visionq_queue::{QueueError, SharedBroker};

#[derive(Default)]
pub struct Waiters {
    pending: Mutex<HashMap<Uuid, oneshot::Sender<FrameResult>>>,
}

/// Removes its frame from the waiters when the request ends, answered or not.
pub struct Waiting {
    waiters: Arc<Waiters>,
    frame_id: Uuid,
    pub rx: oneshot::Receiver<FrameResult>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters.pending.lock().expect("waiters lock").remove(&self.frame_id);
    }
}

impl Waiters {
    /// Starts listening for results; must be called before any frame is published.
    pub async fn start(broker: &SharedBroker) -> Result<Arc<Waiters>, QueueError> {
        let waiters = Arc::new(Waiters::default());
        let mut events = broker.subscribe_events(&[visionq_contract::topology::RESULT_EVENTS]).await?;
        let w = Arc::downgrade(&waiters);
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                let Some(w) = w.upgrade() else { return };
                match serde_json::from_slice::<FrameResult>(&e.body) {
                    Ok(r) => {
                        if let Some(tx) = w.pending.lock().expect("waiters lock").remove(&r.frame_id) {
                            let _ = tx.send(r);
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "unreadable result event"),
                }
            }
        });
        Ok(waiters)
    }

    pub fn wait_for(self: &Arc<Self>, frame_id: Uuid) -> Waiting {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("waiters lock").insert(frame_id, tx);
        Waiting { waiters: self.clone(), frame_id, rx }
    }

    pub fn len(&self) -> usize {
        self.pending.lock().expect("waiters lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
