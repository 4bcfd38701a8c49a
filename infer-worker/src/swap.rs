//! Switching a running worker to another model between two batches. Each inference
//! stream has a [`Lane`]: a new model is handed to it, and the stream's thread takes
//! it at its next batch boundary — after the batch it is running (and the one it
//! has already assembled) finished on the old model — and hands the old one back.
//! A batch is run, decoded and labelled by one model from start to end.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};
use visionq_contract::ModelInfo;

use crate::error::InferError;
use crate::model::Model;

/// What a batch's results are labelled with: the model that ran it.
pub(crate) struct Served {
    pub info: ModelInfo,
    pub names: Vec<String>,
}

impl Served {
    pub fn of(model: &Model) -> Arc<Served> {
        Arc::new(Served { info: model.info.clone(), names: model.names.clone() })
    }

    pub fn class_name(&self, id: u32) -> String {
        self.names.get(id as usize).cloned().unwrap_or_else(|| format!("class_{id}"))
    }
}

struct Handover {
    model: Model,
    old: oneshot::Sender<Model>,
}

#[derive(Default)]
struct LaneState {
    next: Option<Handover>,
    closed: bool,
}

/// One inference stream's way to receive a new model.
#[derive(Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
    wake: Notify,
}

impl Lane {
    /// Whether a model waits to be taken (the stream then starts no further batch on the old one).
    pub fn pending(&self) -> bool {
        self.state.lock().expect("lane lock").next.is_some()
    }

    /// On the stream's thread, between batches: puts a waiting model in place of
    /// `current` and hands the old one back. True when it did.
    pub fn take(&self, current: &mut Model) -> bool {
        let Some(h) = self.state.lock().expect("lane lock").next.take() else { return false };
        let old = std::mem::replace(current, h.model);
        tracing::info!(from = %label(&old.info), to = %label(&current.info), "inference stream switched model between batches");
        // The switch waits for the old model; if it gave up, the old one is dropped here.
        let _ = h.old.send(old);
        true
    }

    /// Resolves when a model is handed over (for a stream waiting for its next batch).
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    fn hand(&self, model: Model) -> Result<oneshot::Receiver<Model>, InferError> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.state.lock().expect("lane lock");
        if s.closed {
            return Err(InferError::Run("the inference stream has stopped".into()));
        }
        s.next = Some(Handover { model, old: tx });
        drop(s);
        self.wake.notify_one();
        Ok(rx)
    }

    /// The stream stops: a model handed over now is refused, one waiting is dropped.
    fn close(&self) {
        let mut s = self.state.lock().expect("lane lock");
        s.closed = true;
        s.next = None;
    }

    /// Closes the lane when dropped (whichever way the stream's thread ends).
    pub fn closer(self: &Arc<Self>) -> impl Drop {
        struct Closer(Arc<Lane>);
        impl Drop for Closer {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        Closer(self.clone())
    }
}

fn label(info: &ModelInfo) -> String {
    format!("{}:{}", info.name, info.version)
}

/// The lanes of a running worker, one per inference stream.
#[derive(Default)]
pub struct Switch {
    lanes: Mutex<Vec<Arc<Lane>>>,
}

impl Switch {
    /// A lane per stream, for the worker that starts them.
    pub(crate) fn open(&self, streams: usize) -> Vec<Arc<Lane>> {
        let lanes: Vec<Arc<Lane>> = (0..streams).map(|_| Arc::new(Lane::default())).collect();
        *self.lanes.lock().expect("switch lock") = lanes.clone();
        lanes
    }

    /// Inference streams running (0 before the worker started); each needs a model of its own.
    pub fn streams(&self) -> usize {
        self.lanes.lock().expect("switch lock").len()
    }

    /// Hands one model to each stream and waits until every stream took its own
    /// (each at its next batch boundary); returns the models they were running.
    pub async fn hand_over(&self, models: Vec<Model>) -> Result<Vec<Model>, InferError> {
        let lanes = self.lanes.lock().expect("switch lock").clone();
        if lanes.is_empty() || lanes.len() != models.len() {
            return Err(InferError::Run(format!("{} models for {} inference streams", models.len(), lanes.len())));
        }
        let waits = lanes.iter().zip(models).map(|(lane, m)| lane.hand(m)).collect::<Result<Vec<_>, _>>()?;
        let mut old = Vec::with_capacity(waits.len());
        for w in waits {
            old.push(w.await.map_err(|_| InferError::Run("the worker stopped before it switched".into()))?);
        }
        Ok(old)
    }
}
