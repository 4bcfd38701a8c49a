//! The preprocess role: frames in, tensors out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use visionq_contract::message::elapsed_ms;
use visionq_contract::topology::{META_HEADER, TRACEPARENT_HEADER};
use visionq_contract::{Config, FrameMeta, FrameResult, Metrics, ModelInfo, TensorMeta};
use visionq_queue::{Delivery, Envelope, Fate, QueueError, SharedBroker, WorkQueue, publish_when_room};

use crate::{PreprocessError, PreprocessOptions, PreprocessPool, Preprocessor};

/// Why a frame message cannot be turned into a tensor.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame message has no valid metadata: {0}")]
    Meta(String),
    #[error(transparent)]
    Image(#[from] PreprocessError),
}

/// Reads a frame message: metadata from its header, JPEG from its body.
pub fn frame_from_envelope(e: &Envelope) -> Result<FrameMeta, FrameError> {
    let raw = e.header(META_HEADER).ok_or_else(|| FrameError::Meta(format!("missing {META_HEADER}")))?;
    serde_json::from_str(raw).map_err(|err| FrameError::Meta(err.to_string()))
}

/// Preprocesses one frame on a blocking thread; returns the tensor message. The
/// error carries the frame's metadata to its error result (made once per failed
/// frame, so its size does not matter).
#[allow(clippy::result_large_err)]
fn prepare(pre: &mut Preprocessor, e: &Envelope, metrics: &Metrics) -> Result<Envelope, (Option<FrameMeta>, FrameError)> {
    let mut frame = frame_from_envelope(e).map_err(|err| (None, err))?;
    // From the publish to the start of the decode: the queue and the wait for a
    // pool thread, nothing of the work itself.
    let waited_ms = elapsed_ms(frame.published_at, Utc::now());
    metrics.observe_stage("queue_wait_frames", waited_ms / 1e3);
    frame.timings_ms.insert("queue_wait_frames".into(), waited_ms);
    let p = pre.prepare_oriented(&e.body, frame.orientation).map_err(|err| (Some(frame.clone()), err.into()))?;
    metrics.observe_stage("decode", p.decode_seconds);
    metrics.observe_stage("resize", p.resize_seconds);
    frame.timings_ms.insert("decode".into(), p.decode_seconds * 1e3);
    frame.timings_ms.insert("resize".into(), p.resize_seconds * 1e3);
    let meta = TensorMeta { frame, letterbox: p.letterbox, preprocessed_at: Utc::now() };
    let mut out = Envelope::new(p.tensor);
    out.headers = e.headers.clone();
    out.headers.insert(META_HEADER.into(), serde_json::to_string(&meta).expect("meta serialises"));
    Ok(out)
}

/// Turns a frame that can never be decoded into an error result for its station.
/// Returns the fate of the frame message: dead-letter once the result is confirmed.
/// `input` is the message that failed (its queue labels the dead-letter count; its
/// trace context goes on with the error result).
pub async fn fail_frame(
    broker: &SharedBroker,
    metrics: &Metrics,
    input: (WorkQueue, &Envelope),
    frame: Option<FrameMeta>,
    error: &FrameError,
) -> Fate {
    let reason = error.to_string();
    if let Some(frame) = frame {
        tracing::debug!(frame_id = %frame.frame_id, station = frame.station, error = reason, "frame failed");
        let result = FrameResult::failed(&frame, ModelInfo::default(), reason.clone());
        let body = serde_json::to_vec(&result).expect("result serialises");
        let mut out = Envelope::new(body);
        if let Some(tp) = input.1.header(TRACEPARENT_HEADER) {
            out.headers.insert(TRACEPARENT_HEADER.into(), tp.to_string());
        }
        if let Err(e) = publish_when_room(&**broker, WorkQueue::Results, out).await {
            tracing::warn!(error = %e, "cannot publish the error result; requeueing the frame");
            return Fate::Requeue;
        }
    }
    metrics.stage_frames_total.with_label_values(&["preprocess", "error"]).inc();
    metrics.dead_lettered_total.with_label_values(&[input.0.label(), failure_label(error)]).inc();
    Fate::DeadLetter(reason)
}

/// A frame past its deadline: its `expired` result is published (the station learns
/// it was not run) and the frame message is acked. Requeued if the result cannot be
/// published.
pub async fn expire_frame(
    broker: &SharedBroker,
    metrics: &Metrics,
    stage: &str,
    input: &Envelope,
    frame: &FrameMeta,
    late_ms: f64,
) -> Fate {
    let result = FrameResult::expired(frame, ModelInfo::default(), late_ms);
    let mut out = Envelope::new(serde_json::to_vec(&result).expect("result serialises"));
    if let Some(tp) = input.header(TRACEPARENT_HEADER) {
        out.headers.insert(TRACEPARENT_HEADER.into(), tp.to_string());
    }
    if let Err(e) = publish_when_room(&**broker, WorkQueue::Results, out).await {
        tracing::warn!(error = %e, "cannot publish the expired result; requeueing the frame");
        return Fate::Requeue;
    }
    tracing::debug!(frame_id = %frame.frame_id, station = frame.station, late_ms, "frame expired before inference");
    metrics.stage_frames_total.with_label_values(&[stage, "expired"]).inc();
    Fate::Ack
}

fn failure_label(e: &FrameError) -> &'static str {
    match e {
        FrameError::Meta(_) => "bad_message",
        FrameError::Image(PreprocessError::Decode(_)) => "corrupt_image",
        FrameError::Image(PreprocessError::TooLarge { .. }) => "too_large",
        FrameError::Image(PreprocessError::Resize(_)) => "resize_failed",
    }
}

#[allow(clippy::result_large_err)] // prepare()'s error, moved once per failed frame
async fn handle(broker: SharedBroker, metrics: Arc<Metrics>, pool: Arc<PreprocessPool>, d: Delivery) {
    metrics.in_flight.with_label_values(&["preprocess"]).inc();
    // A live frame already past its deadline is not decoded at all.
    if let Ok(frame) = frame_from_envelope(&d.envelope)
        && let Some(late_ms) = frame.late_ms(Utc::now())
    {
        let fate = expire_frame(&broker, &metrics, "preprocess", &d.envelope, &frame, late_ms).await;
        d.settle(fate).await;
        metrics.in_flight.with_label_values(&["preprocess"]).dec();
        return;
    }
    let frame_id = frame_from_envelope(&d.envelope).ok().map(|f| f.frame_id);
    let env = d.envelope.clone();
    let m = metrics.clone();
    let prepared = pool.run(move |pre| prepare(pre, &env, &m)).await;
    let fate = match prepared {
        Ok(tensor) => match publish_when_room(&*broker, WorkQueue::Tensors, tensor).await {
            Ok(()) => {
                tracing::debug!(
                    frame_id = frame_id.map(tracing::field::display),
                    trace_id = d.envelope.header(TRACEPARENT_HEADER).and_then(visionq_contract::telemetry::trace_id),
                    "frame preprocessed"
                );
                metrics.stage_frames_total.with_label_values(&["preprocess", "ok"]).inc();
                Fate::Ack
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish tensor; requeueing the frame");
                Fate::Requeue
            }
        },
        Err((frame, err)) => fail_frame(&broker, &metrics, (WorkQueue::Frames, &d.envelope), frame, &err).await,
    };
    d.settle(fate).await;
    metrics.in_flight.with_label_values(&["preprocess"]).dec();
}

/// Consumes frames until `shutdown`, then finishes what is in flight.
pub async fn run(
    broker: SharedBroker,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    let concurrency = config.preprocess_concurrency;
    let mut deliveries = broker.consume(WorkQueue::Frames, (concurrency * 2).min(u16::MAX as usize) as u16).await?;
    let slots = Arc::new(Semaphore::new(concurrency));
    let (size, options) = (config.input_size, PreprocessOptions::from_config(&config));
    let pool = Arc::new(
        PreprocessPool::new(concurrency, move || Preprocessor::with_options(size, size, options))
            .expect("spawning the preprocessing threads"),
    );
    let mut tasks = JoinSet::new();
    tracing::info!(concurrency, input_size = config.input_size, "preprocess consuming frames");
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
        let (b, m, p) = (broker.clone(), metrics.clone(), pool.clone());
        tasks.spawn(async move {
            handle(b, m, p, delivery).await;
            drop(permit);
        });
    }
    visionq_queue::drain_in_flight(&mut tasks, Duration::from_millis(config.shutdown_timeout_ms), "preprocess").await;
    Ok(())
}
