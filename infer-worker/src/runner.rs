//! The inference thread(s): batches in, forward passes, decoded detections out.
//! One stream overlaps each pass with decoding the previous batch and assembling the
//! next on a helper thread; several streams (`infer_streams`) each run their own
//! sessions on their own thread, so one's assembly and decoding overlap the other's
//! pass on the device.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use visionq_contract::Metrics;
use visionq_contract::instrument::{InFlight, Stage};

use crate::decode::Candidate;
use crate::error::InferError;
use crate::model::Model;
use crate::serving::{Item, PassStats};
use crate::swap::{Lane, Served};

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
    /// The model that ran the batch: its results name it.
    pub served: Arc<Served>,
    pub outcome: Result<Vec<Vec<Candidate>>, InferError>,
    pub inference_seconds: f64,
    pub batch_wait_seconds: Vec<f64>,
    /// The batch's frames, counted in flight until the publisher is done with them.
    pub held: InFlight,
}

/// How many forward passes are running now (the batcher sends at once while a
/// stream is idle).
pub(crate) type Running = watch::Sender<usize>;

/// Where an inference thread reports: its finished batches, the metrics, the
/// passes running and its engine's pass figures.
#[derive(Clone)]
pub(crate) struct Out {
    pub done: mpsc::Sender<Done>,
    pub metrics: Arc<Metrics>,
    pub running: Running,
    pub stats: Arc<PassStats>,
}

fn pass_started(running: &Running) {
    running.send_modify(|n| *n += 1);
}

fn pass_ended(running: &Running) {
    running.send_modify(|n| *n = n.saturating_sub(1));
}

/// A batch assembled into a buffer set, ready for its pass.
struct Assembled {
    batch: Batch,
    /// Frames in the pass (the batch, padded up to its bucket).
    pass_size: usize,
    assemble_seconds: f64,
}

/// A batch whose pass ran, its output not decoded yet.
struct Ran {
    batch: Batch,
    pass_size: usize,
    pass_seconds: f64,
    outcome: Result<(), InferError>,
}

/// The batch that arrived while a pass ran, assembled into the other buffer set
/// (or not: that set has no buffer for its size yet).
struct Arrived {
    batch: Batch,
    assembled: Result<usize, InferError>,
    assemble_seconds: f64,
}

/// The inference thread: runs each batch's forward pass while, on a helper thread,
/// the previous batch's output is decoded and the next batch assembled into the other
/// buffer set — so the device waits on neither. A model handed over on `lane` is
/// taken when nothing is assembled or waiting to be decoded: once one is pending, no
/// further batch is taken during a pass, so the pipeline empties within a batch.
pub(crate) fn run_batches(
    mut model: Model,
    mut batches: mpsc::Receiver<Batch>,
    out: Out,
    rt: tokio::runtime::Handle,
    lane: Arc<Lane>,
) {
    let Out { done, metrics: m, running, stats } = out;
    let _closer = lane.closer();
    let mut served = Served::of(&model);
    let mut set = 0;
    // A batch already assembled into `set`.
    let mut ready: Option<Assembled> = None;
    // The batch whose pass ran last, in the other set: decoded during the next pass.
    let mut pending: Option<Ran> = None;
    loop {
        let Assembled { batch, pass_size: n, assemble_seconds } = match ready.take() {
            Some(r) => r,
            None => {
                // Nothing assembled, nothing left to decode: a new model may come in.
                if lane.take(&mut model) {
                    served = Served::of(&model);
                    set = 0;
                }
                let next = rt.block_on(async {
                    tokio::select! {
                        b = batches.recv() => Some(b),
                        _ = lane.woken() => None,
                    }
                });
                let batch = match next {
                    None => continue,
                    Some(None) => break,
                    Some(Some(b)) => b,
                };
                let t0 = Instant::now();
                let views = batch.tensors();
                match model.assemble_in(set, &views) {
                    Ok(n) => Assembled { batch, pass_size: n, assemble_seconds: t0.elapsed().as_secs_f64() },
                    Err(e) => {
                        if done.blocking_send(finished(batch, Err(e), 0.0, &m, &served, &stats)).is_err() {
                            break;
                        }
                        continue;
                    }
                }
            }
        };
        m.observe_stage(Stage::Assemble, assemble_seconds);
        let previous = pending.take();
        pass_started(&running);
        let (passed, pass_s, (decoded, arrived)) = model.run_overlapped(set, n, |assembler, pass_done| {
            // While the device runs: decode the previous pass, then take the next batch
            // if it comes before this pass ends.
            let decoded = previous.map(|r| {
                let out = r.outcome.and_then(|()| assembler.decode(r.pass_size, r.batch.items.len()));
                (r.batch, out, r.pass_seconds)
            });
            // A new model waits: take no batch it would have to run on the old one.
            let next = match lane.pending() {
                true => None,
                false => rt.block_on(async {
                    tokio::select! {
                        biased;
                        _ = pass_done.notified() => None,
                        b = batches.recv() => b,
                    }
                }),
            };
            let arrived = next.map(|batch| {
                let t0 = Instant::now();
                let views = batch.tensors();
                let assembled = assembler.assemble(&views);
                drop(views);
                Arrived { batch, assembled, assemble_seconds: t0.elapsed().as_secs_f64() }
            });
            (decoded, arrived)
        });
        pass_ended(&running);
        tracing::info!(
            batch = batch.items.len(),
            pass_size = n,
            pass_ms = (pass_s * 1e4).round() / 10.0,
            assemble_ms = (assemble_seconds * 1e4).round() / 10.0,
            "batch done"
        );
        if let Some((b, out, ps)) = decoded
            && done.blocking_send(finished(b, out, ps, &m, &served, &stats)).is_err()
        {
            break;
        }
        match arrived {
            Some(Arrived { batch: next, assembled: Ok(next_n), assemble_seconds }) => {
                // This pass is decoded during the next one.
                pending = Some(Ran { batch, pass_size: n, pass_seconds: pass_s, outcome: passed });
                set ^= 1;
                ready = Some(Assembled { batch: next, pass_size: next_n, assemble_seconds });
            }
            other => {
                // No next batch in the other set: decode this pass now.
                let outcome = passed.and_then(|()| model.decode_in(set, n, batch.items.len()));
                if done.blocking_send(finished(batch, outcome, pass_s, &m, &served, &stats)).is_err() {
                    break;
                }
                // A batch came but had no buffer there yet: make one and use it.
                if let Some(Arrived { batch: next, assembled: Err(_), .. }) = other {
                    let t0 = Instant::now();
                    let views = next.tensors();
                    match model.assemble_in(set ^ 1, &views) {
                        Ok(next_n) => {
                            set ^= 1;
                            ready = Some(Assembled { batch: next, pass_size: next_n, assemble_seconds: t0.elapsed().as_secs_f64() });
                        }
                        Err(e) => {
                            if done.blocking_send(finished(next, Err(e), 0.0, &m, &served, &stats)).is_err() {
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
pub(crate) fn finished(
    batch: Batch,
    outcome: Result<Vec<Vec<Candidate>>, InferError>,
    secs: f64,
    m: &Metrics,
    served: &Arc<Served>,
    stats: &PassStats,
) -> Done {
    // Shadow copies are not frames of the pipeline: not counted in flight.
    let frames = batch.items.iter().filter(|i| i.delivery.is_some()).count();
    stats.add(batch.items.len(), secs, outcome.is_ok());
    let held = InFlight::new(m, Stage::Infer, frames);
    let batch_wait_seconds = batch.items.iter().map(|i| (batch.started_at - i.ready_at).as_secs_f64()).collect();
    Done { items: batch.items, served: served.clone(), outcome, inference_seconds: secs, batch_wait_seconds, held }
}

/// One of several inference streams: its own model (sessions, buffers, CUDA stream)
/// on its own thread, taking batches from the queue the streams share. Assembly and
/// decoding run on this thread; the other streams keep the device busy meanwhile.
/// A model handed over on `lane` is taken between two batches.
pub(crate) fn run_stream(
    mut model: Model,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
    out: Out,
    rt: tokio::runtime::Handle,
    lane: Arc<Lane>,
) {
    let Out { done, metrics: m, running, stats } = out;
    let _closer = lane.closer();
    let mut served = Served::of(&model);
    loop {
        if lane.take(&mut model) {
            served = Served::of(&model);
        }
        let next = rt.block_on(async {
            tokio::select! {
                b = async { batches.lock().await.recv().await } => Some(b),
                _ = lane.woken() => None,
            }
        });
        let batch = match next {
            None => continue,
            Some(None) => break,
            Some(Some(b)) => b,
        };
        let t0 = Instant::now();
        let views = batch.tensors();
        let outcome = model.assemble_in(0, &views);
        drop(views);
        let (outcome, pass_s) = match outcome {
            Ok(n) => {
                m.observe_stage(Stage::Assemble, t0.elapsed().as_secs_f64());
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
        if done.blocking_send(finished(batch, outcome, pass_s, &m, &served, &stats)).is_err() {
            break;
        }
    }
}
