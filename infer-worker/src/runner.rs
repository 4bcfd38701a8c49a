//! The inference thread(s): batches in, forward passes, decoded detections out.
//! One stream overlaps each pass with decoding the previous batch and assembling the
//! next on a helper thread; several streams (`infer_streams`) each run their own
//! sessions on their own thread, so one's assembly and decoding overlap the other's
//! pass on the device.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use visionq_contract::{Metrics, TensorMeta};
use visionq_queue::Delivery;

use crate::decode::Candidate;
use crate::model::{InferError, Model};

pub(crate) struct Item {
    pub delivery: Delivery,
    pub meta: TensorMeta,
    pub tensor: Bytes,
    pub ready_at: Instant,
}

pub(crate) struct Batch {
    pub items: Vec<Item>,
    pub started_at: Instant,
}

impl Batch {
    /// The items' u8 tensors, in order.
    fn tensors(&self) -> Vec<&[u8]> {
        self.items.iter().map(|i| &i.tensor[..]).collect()
    }
}

pub(crate) struct Done {
    pub items: Vec<Item>,
    pub outcome: Result<Vec<Vec<Candidate>>, InferError>,
    pub inference_seconds: f64,
    pub batch_wait_seconds: Vec<f64>,
}

/// How many forward passes are running now (the batcher sends at once while a
/// stream is idle).
pub(crate) type Running = watch::Sender<usize>;

fn pass_started(running: &Running) {
    running.send_modify(|n| *n += 1);
}

fn pass_ended(running: &Running) {
    running.send_modify(|n| *n = n.saturating_sub(1));
}

/// The inference thread: runs each batch's forward pass while, on a helper thread,
/// the previous batch's output is decoded and the next batch assembled into the other
/// buffer set — so the device waits on neither.
pub(crate) fn run_batches(
    mut model: Model,
    mut batches: mpsc::Receiver<Batch>,
    done: mpsc::Sender<Done>,
    m: Arc<Metrics>,
    rt: tokio::runtime::Handle,
    running: Running,
) {
    let mut set = 0;
    // A batch already assembled into `set`: pass size, assembly seconds.
    let mut ready: Option<(Batch, usize, f64)> = None;
    // The batch whose pass ran last, in the other set, not decoded yet: pass size,
    // pass seconds, pass outcome. Decoded during the next pass.
    let mut pending: Option<(Batch, usize, f64, Result<(), InferError>)> = None;
    loop {
        let (batch, n, assemble_s) = match ready.take() {
            Some(r) => r,
            None => {
                let Some(batch) = batches.blocking_recv() else { break };
                let t0 = Instant::now();
                let views = batch.tensors();
                match model.assemble_in(set, &views) {
                    Ok(n) => (batch, n, t0.elapsed().as_secs_f64()),
                    Err(e) => {
                        if done.blocking_send(finished(batch, Err(e), 0.0, &m)).is_err() {
                            break;
                        }
                        continue;
                    }
                }
            }
        };
        m.observe_stage("assemble", assemble_s);
        let previous = pending.take();
        pass_started(&running);
        let (passed, pass_s, (decoded, next)) = model.run_overlapped(set, n, |assembler, pass_done| {
            // While the device runs: decode the previous pass, then take the next batch
            // if it comes before this pass ends.
            let decoded = previous.map(|(b, pn, ps, r)| {
                let out = r.and_then(|()| assembler.decode(pn, b.items.len()));
                (b, out, ps)
            });
            let next = rt.block_on(async {
                tokio::select! {
                    biased;
                    _ = pass_done.notified() => None,
                    b = batches.recv() => b,
                }
            });
            let next = next.map(|next| {
                let t0 = Instant::now();
                let views = next.tensors();
                let assembled = assembler.assemble(&views);
                (next, assembled, t0.elapsed().as_secs_f64())
            });
            (decoded, next)
        });
        pass_ended(&running);
        tracing::info!(
            batch = batch.items.len(),
            pass_size = n,
            pass_ms = (pass_s * 1e4).round() / 10.0,
            assemble_ms = (assemble_s * 1e4).round() / 10.0,
            "batch done"
        );
        if let Some((b, out, ps)) = decoded
            && done.blocking_send(finished(b, out, ps, &m)).is_err()
        {
            break;
        }
        match next {
            Some((next, Ok(next_n), secs)) => {
                // This pass is decoded during the next one.
                pending = Some((batch, n, pass_s, passed));
                set ^= 1;
                ready = Some((next, next_n, secs));
            }
            other => {
                // No next batch in the other set: decode this pass now.
                let outcome = passed.and_then(|()| model.decode_in(set, n, batch.items.len()));
                if done.blocking_send(finished(batch, outcome, pass_s, &m)).is_err() {
                    break;
                }
                // A batch came but had no buffer there yet: make one and use it.
                if let Some((next, Err(_), _)) = other {
                    let t0 = Instant::now();
                    let views = next.tensors();
                    match model.assemble_in(set ^ 1, &views) {
                        Ok(next_n) => {
                            set ^= 1;
                            ready = Some((next, next_n, t0.elapsed().as_secs_f64()));
                        }
                        Err(e) => {
                            if done.blocking_send(finished(next, Err(e), 0.0, &m)).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A batch whose pass is over (or never happened), for the publisher; counted in
/// flight until the publisher has settled it.
pub(crate) fn finished(batch: Batch, outcome: Result<Vec<Vec<Candidate>>, InferError>, secs: f64, m: &Metrics) -> Done {
    m.in_flight.with_label_values(&["infer"]).add(batch.items.len() as i64);
    let batch_wait_seconds = batch.items.iter().map(|i| (batch.started_at - i.ready_at).as_secs_f64()).collect();
    Done { items: batch.items, outcome, inference_seconds: secs, batch_wait_seconds }
}

/// One of several inference streams: its own model (sessions, buffers, CUDA stream)
/// on its own thread, taking batches from the queue the streams share. Assembly and
/// decoding run on this thread; the other streams keep the device busy meanwhile.
pub(crate) fn run_stream(
    mut model: Model,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
    done: mpsc::Sender<Done>,
    m: Arc<Metrics>,
    rt: tokio::runtime::Handle,
    running: Running,
) {
    loop {
        let Some(batch) = rt.block_on(async { batches.lock().await.recv().await }) else { break };
        let t0 = Instant::now();
        let views = batch.tensors();
        let outcome = model.assemble_in(0, &views);
        drop(views);
        let (outcome, pass_s) = match outcome {
            Ok(n) => {
                m.observe_stage("assemble", t0.elapsed().as_secs_f64());
                pass_started(&running);
                let t1 = Instant::now();
                let images = batch.items.len();
                let r = model.execute_in(0, n, |_, _| ());
                let pass_s = t1.elapsed().as_secs_f64();
                pass_ended(&running);
                (r.and_then(|()| model.decode_in(0, n, images)), pass_s)
            }
            Err(e) => (Err(e), 0.0),
        };
        if done.blocking_send(finished(batch, outcome, pass_s, &m)).is_err() {
            break;
        }
    }
}
