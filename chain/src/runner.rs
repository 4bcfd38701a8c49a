//! One chain's dynamic batching: frames hand in their crops, a batcher gathers crops
//! of several frames — up to `chain_max_batch_size` or `chain_max_batch_wait_ms` after
//! the first, whichever comes first — and the model's own thread runs them; each
//! frame gets its crops' outputs back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use visionq_contract::Metrics;
use visionq_contract::chain::ChainSpec;

use crate::ChainError;
use crate::model::{ChainModel, Output};
use crate::prep::CropImage;

/// One frame's crops for one chain.
struct Job {
    crops: Vec<CropImage>,
    reply: oneshot::Sender<Result<Vec<Output>, ChainError>>,
}

/// A running chain: hands crops to its batcher.
pub struct ChainRunner {
    pub spec: Arc<ChainSpec>,
    jobs: mpsc::Sender<Job>,
}

impl ChainRunner {
    /// Starts the batcher (a task: call inside the runtime) and the model's thread.
    pub fn start(model: ChainModel, max_batch: usize, wait: Duration, metrics: Arc<Metrics>) -> ChainRunner {
        let spec = model.spec.clone();
        let max_batch = model.max_batch(max_batch);
        let (jobs, job_rx) = mpsc::channel::<Job>(max_batch * 4);
        let (batch_tx, batch_rx) = mpsc::channel::<Vec<Job>>(1);
        tokio::spawn(gather(job_rx, batch_tx, max_batch, wait));
        let thread = std::thread::Builder::new().name(format!("visionq-chain-{}", spec.name));
        thread.spawn(move || run(model, batch_rx, max_batch, metrics)).expect("spawning a chain thread");
        ChainRunner { spec, jobs }
    }

    /// The outputs for `crops`, in order, once their batch ran.
    pub async fn run(&self, crops: Vec<CropImage>) -> Result<Vec<Output>, ChainError> {
        let gone = || ChainError::Run { chain: self.spec.name.clone(), message: "the chain's runner stopped".into() };
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { crops, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Gathers jobs into batches of about `max` crops (a frame's crops are never split).
async fn gather(mut jobs: mpsc::Receiver<Job>, batches: mpsc::Sender<Vec<Job>>, max: usize, wait: Duration) {
    while let Some(first) = jobs.recv().await {
        let deadline = tokio::time::Instant::now() + wait;
        let mut crops = first.crops.len();
        let mut batch = vec![first];
        while crops < max {
            tokio::select! {
                biased;
                job = jobs.recv() => match job {
                    Some(job) => {
                        crops += job.crops.len();
                        batch.push(job);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if batches.send(batch).await.is_err() {
            return;
        }
    }
}

/// The model's thread: one batch at a time, every frame answered (a failed pass
/// fails every frame of its batch, with the reason).
fn run(mut model: ChainModel, mut batches: mpsc::Receiver<Vec<Job>>, max_batch: usize, metrics: Arc<Metrics>) {
    let name = model.spec.name.clone();
    while let Some(jobs) = batches.blocking_recv() {
        let mut jobs = jobs;
        let counts: Vec<usize> = jobs.iter().map(|j| j.crops.len()).collect();
        let crops: Vec<CropImage> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.crops)).collect();
        let t0 = Instant::now();
        let outcome = model.run(&crops, max_batch);
        let seconds = t0.elapsed().as_secs_f64();
        metrics.chain_duration_seconds.with_label_values(&[&name]).observe(seconds);
        let ok = if outcome.is_ok() { "ok" } else { "error" };
        metrics.chain_crops_total.with_label_values(&[&name, ok]).inc_by(crops.len() as u64);
        tracing::debug!(chain = name, crops = crops.len(), frames = jobs.len(), ms = seconds * 1e3, "chain batch done");
        match outcome {
            Ok(outputs) => {
                let mut outputs = outputs.into_iter();
                for (job, n) in jobs.into_iter().zip(counts) {
                    let mine: Vec<Output> = outputs.by_ref().take(n).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::warn!(chain = name, error = %e, "chain pass failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
