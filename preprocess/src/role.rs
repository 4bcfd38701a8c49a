//! The preprocess role: frames in, tensors out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, Span};
use visionq_contract::instrument::{Emit, FrameDone, InFlight, Stage, frame_span, record_frame};
use visionq_contract::message::elapsed_ms;
use visionq_contract::topology::TRACEPARENT_HEADER;
use visionq_contract::{Config, FrameMeta, Metrics, TensorMeta};
use visionq_queue::{Delivery, Fate, QueueError, SharedBroker, WorkQueue, publish_when_room};
use visionq_stage::{Failure, FrameMessage, TensorMessage, expire, fail};

use crate::{PreprocessError, PreprocessOptions, PreprocessPool, Preprocessor};

impl PreprocessError {
    /// The failure a frame that cannot be preprocessed ends with: the reason its
    /// station reads, and the dead-letter label that counts it.
    pub fn failure(&self) -> Failure {
        let label = match self {
            PreprocessError::Decode(_) => "corrupt_image",
            PreprocessError::TooLarge { .. } => "too_large",
            PreprocessError::Resize(_) => "resize_failed",
        };
        Failure { reason: self.to_string(), label }
    }
}

/// Decodes and letterboxes one frame on the calling (pool) thread into its tensor
/// message, timing the wait before it and each step into the frame's timings. The
/// one preprocessing step of both the preprocess role and the infer-worker's inline
/// input. With `keep_original` (`evidence_forward_min_score` set, or a model
/// chain configured) the tensor carries the frame's original image on for the
/// evidence store or the chain's crops. `input` is the
/// model input the frame's model takes. The error keeps the frame's metadata for
/// its error result.
#[allow(clippy::result_large_err)] // moved once per failed frame
pub fn prepare_frame(
    pre: &mut Preprocessor,
    msg: FrameMessage,
    metrics: &Metrics,
    keep_original: bool,
    input: (u32, u32),
) -> Result<TensorMessage, (FrameMeta, PreprocessError)> {
    pre.set_input_size(input);
    let mut frame = msg.meta;
    // From the publish to the start of the decode: the queue and the wait for a
    // pool thread, nothing of the work itself.
    let waited_ms = elapsed_ms(frame.published_at, Utc::now());
    metrics.observe_stage(Stage::QueueWaitFrames, waited_ms / 1e3);
    frame.timings_ms.insert("queue_wait_frames".into(), waited_ms);
    let p = match pre.prepare_oriented(&msg.image, frame.orientation) {
        Ok(p) => p,
        Err(e) => return Err((frame, e)),
    };
    metrics.observe_stage(Stage::Decode, p.decode_seconds);
    metrics.observe_stage(Stage::Resize, p.resize_seconds);
    frame.timings_ms.insert("decode".into(), p.decode_seconds * 1e3);
    frame.timings_ms.insert("resize".into(), p.resize_seconds * 1e3);
    let meta = TensorMeta { frame, letterbox: p.letterbox, preprocessed_at: Utc::now() };
    Ok(TensorMessage { meta, tensor: p.tensor.into(), original: keep_original.then_some(msg.image) })
}

/// One delivery, in its own [`frame_span`]: every log line about the frame carries
/// its id, station and trace id.
async fn handle(broker: SharedBroker, metrics: Arc<Metrics>, pool: Arc<PreprocessPool>, inputs: Arc<Inputs>, d: Delivery) {
    handle_in_span(broker, metrics, pool, inputs, d).instrument(frame_span(Stage::Preprocess)).await
}

/// The model input of each station's frames, and whether originals go on.
pub struct Inputs {
    /// `input_size`: the input of every station that names no model of its own.
    pub default: (u32, u32),
    /// Stations whose model (`[station.<id>] model`) takes another input.
    pub stations: HashMap<String, (u32, u32)>,
    keep_original: bool,
}

impl Inputs {
    /// Every station at `input_size`, apart from `stations`.
    pub fn new(config: &Config, stations: HashMap<String, (u32, u32)>) -> Inputs {
        let size = config.preprocess.input_size;
        // Every frame's image goes on with its tensor: which frames the results role
        // keeps is only known after inference (the infer-worker drops the rest); a
        // model chain crops from it.
        Inputs {
            default: (size, size),
            stations,
            keep_original: config.evidence.evidence_forward_min_score.is_some() || !config.chain.chain.is_empty(),
        }
    }

    fn of(&self, station: &str) -> (u32, u32) {
        self.stations.get(station).copied().unwrap_or(self.default)
    }
}

#[allow(clippy::result_large_err)] // prepare_frame's error, moved once per failed frame
async fn handle_in_span(broker: SharedBroker, metrics: Arc<Metrics>, pool: Arc<PreprocessPool>, inputs: Arc<Inputs>, d: Delivery) {
    let _held = InFlight::new(&metrics, Stage::Preprocess, 1);
    let parsed = FrameMessage::from_envelope(&d.envelope);
    if let Ok(msg) = &parsed {
        record_frame(&Span::current(), &msg.meta, d.envelope.header(TRACEPARENT_HEADER));
    }
    let late = parsed.as_ref().ok().and_then(|m| m.meta.late_ms(Utc::now()));
    let fate = match (parsed, late) {
        (Err(bad), _) => fail(&broker, &metrics, Stage::Preprocess, (WorkQueue::Frames, &d.envelope), None, bad.failure()).await,
        // A live frame already past its deadline is not decoded at all.
        (Ok(msg), Some(late_ms)) => expire(&broker, &metrics, Stage::Preprocess, &d.envelope, &msg.meta, late_ms).await,
        (Ok(msg), None) => {
            let m = metrics.clone();
            let (input, keep_original) = (inputs.of(&msg.meta.station), inputs.keep_original);
            match pool.run(move |pre| prepare_frame(pre, msg, &m, keep_original, input)).await {
                Ok(tensor) => match publish_when_room(&*broker, WorkQueue::Tensors, tensor.into_envelope(&d.envelope)).await {
                    Ok(()) => {
                        FrameDone { stage: Stage::Preprocess, detections: None }.emit(&metrics);
                        Fate::Ack
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot publish tensor; requeueing the frame");
                        Fate::Requeue
                    }
                },
                Err((frame, err)) => {
                    fail(&broker, &metrics, Stage::Preprocess, (WorkQueue::Frames, &d.envelope), Some(&frame), err.failure()).await
                }
            }
        }
    };
    d.settle(fate).await;
}

/// Consumes frames until `shutdown`, then finishes what is in flight; each
/// station's frames are letterboxed at its model's input (`inputs`).
pub async fn run(
    broker: SharedBroker,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    inputs: Inputs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    let concurrency = config.preprocess.preprocess_concurrency;
    let mut deliveries = broker.consume(WorkQueue::Frames, (concurrency * 2).min(u16::MAX as usize) as u16).await?;
    let slots = Arc::new(Semaphore::new(concurrency));
    let (size, options) = (config.preprocess.input_size, PreprocessOptions::from_config(&config));
    let pool = Arc::new(
        PreprocessPool::new(concurrency, move || Preprocessor::with_options(size, size, options))
            .expect("spawning the preprocessing threads"),
    );
    let mut tasks = JoinSet::new();
    let inputs = Arc::new(inputs);
    tracing::info!(
        concurrency,
        input_size = config.preprocess.input_size,
        stations_with_their_own = inputs.stations.len(),
        keep_original = inputs.keep_original,
        "preprocess consuming frames"
    );
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let delivery = tokio::select! {
            _ = &mut shutdown => break,
            d = deliveries.next() => match d { Some(d) => d, None => break },
        };
        while tasks.try_join_next().is_some() {}
        let (b, m, p, i) = (broker.clone(), metrics.clone(), pool.clone(), inputs.clone());
        tasks.spawn(async move {
            handle(b, m, p, i, delivery).await;
            drop(permit);
        });
    }
    visionq_queue::drain_in_flight(&mut tasks, Duration::from_millis(config.shutdown_timeout_ms), "preprocess").await;
    Ok(())
}
