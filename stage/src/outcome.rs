//! What becomes of a frame that is not run: a result for its station first, then the
//! input settled — so nothing accepted ends without a result, and a result that
//! cannot be published leaves the input to be delivered again.

use bytes::Bytes;
use visionq_contract::instrument::{Emit, FrameExpired, FrameFailed, Stage};
use visionq_contract::{FrameMeta, FrameResult, Metrics, ModelInfo};
use visionq_queue::{Envelope, Fate, QueueError, SharedBroker, WorkQueue, publish_when_room};

use crate::codec::result_envelope;

/// Why a frame can never be run, with the dead-letter label that counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What the station reads in its error result and the dead letter carries.
    pub reason: String,
    /// `bad_message`, `corrupt_image`, `too_large`, `resize_failed`, …
    pub label: &'static str,
}

/// Publishes `result` on the results queue, continuing `input`'s trace; with the
/// frame's `original` image after it where one is sent on for the evidence store.
pub async fn publish_result(
    broker: &SharedBroker,
    result: &FrameResult,
    input: &Envelope,
    original: Option<&Bytes>,
) -> Result<(), QueueError> {
    let envelope = result_envelope(result, input);
    let envelope = match original {
        Some(o) => crate::attach_original(envelope, o),
        None => envelope,
    };
    publish_when_room(&**broker, WorkQueue::Results, envelope).await
}

/// A frame that can never be run: its error result is published (when the frame's
/// metadata could be read; a message without it has no station to answer), then
/// the input is dead-lettered with the reason ([`FrameFailed`] logs and counts it).
/// `stage` labels the frame count;
/// `input` is the queue and message that failed. Requeued if the result cannot be
/// published.
pub async fn fail(
    broker: &SharedBroker,
    metrics: &Metrics,
    stage: Stage,
    input: (WorkQueue, &Envelope),
    frame: Option<&FrameMeta>,
    failure: Failure,
) -> Fate {
    if let Some(frame) = frame {
        let result = FrameResult::failed(frame, ModelInfo::default(), failure.reason.clone());
        if let Err(e) = publish_result(broker, &result, input.1, None).await {
            tracing::warn!(error = %e, "cannot publish the error result; requeueing the frame");
            return Fate::Requeue;
        }
    }
    FrameFailed { stage, queue: input.0.label(), label: failure.label, reason: &failure.reason }.emit(metrics);
    Fate::DeadLetter(failure.reason)
}

/// A frame past its deadline: its `expired` result is published (the station learns
/// it was not run) and the input is acked. Requeued if the result cannot be
/// published.
pub async fn expire(
    broker: &SharedBroker,
    metrics: &Metrics,
    stage: Stage,
    input: &Envelope,
    frame: &FrameMeta,
    late_ms: f64,
) -> Fate {
    let result = FrameResult::expired(frame, ModelInfo::default(), late_ms);
    if let Err(e) = publish_result(broker, &result, input, None).await {
        tracing::warn!(error = %e, "cannot publish the expired result; requeueing the frame");
        return Fate::Requeue;
    }
    FrameExpired { stage, late_ms }.emit(metrics);
    Fate::Ack
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use visionq_contract::ResultStatus;
    use visionq_queue::memory::MemoryBroker;

    use super::*;
    use crate::codec::tests::frame;

    fn broker(results_limit: usize) -> SharedBroker {
        Arc::new(MemoryBroker::new(move |q| if q == WorkQueue::Results { results_limit } else { 100 }, 5))
    }

    async fn next_result(b: &SharedBroker) -> FrameResult {
        let mut results = b.consume(WorkQueue::Results, 1).await.unwrap();
        let d = results.next().await.expect("a result");
        serde_json::from_slice(&d.envelope.body).unwrap()
    }

    #[tokio::test]
    async fn a_failed_frame_gets_its_error_result_then_a_dead_letter_counted_by_its_label() {
        let (b, m, f) = (broker(10), Metrics::new(), frame());
        let input = Envelope::new(&b"jpeg"[..]);
        let failure = Failure { reason: "cannot decode JPEG: bad Huffman code".into(), label: "corrupt_image" };
        let fate = fail(&b, &m, Stage::Preprocess, (WorkQueue::Frames, &input), Some(&f), failure.clone()).await;
        assert!(matches!(&fate, Fate::DeadLetter(r) if *r == failure.reason), "{fate:?}");
        let r = next_result(&b).await;
        assert_eq!((r.frame_id, r.status, r.error.as_deref()), (f.frame_id, ResultStatus::Error, Some(&failure.reason[..])));
        assert_eq!(m.dead_lettered_total.with_label_values(&["frames", "corrupt_image"]).get(), 1);
        assert_eq!(m.stage_frames_total.with_label_values(&["preprocess", "error"]).get(), 1);
        // A message without metadata has no station to answer: dead letter only.
        let fate = fail(&b, &m, Stage::Preprocess, (WorkQueue::Frames, &input), None, failure).await;
        assert!(matches!(fate, Fate::DeadLetter(_)));
    }

    #[tokio::test]
    async fn an_expired_frame_is_reported_to_its_station_and_acked() {
        let (b, m, f) = (broker(10), Metrics::new(), frame());
        let input = Envelope::new(&b"jpeg"[..]);
        assert!(matches!(expire(&b, &m, Stage::Infer, &input, &f, 120.0).await, Fate::Ack));
        let r = next_result(&b).await;
        assert_eq!((r.frame_id, r.status), (f.frame_id, ResultStatus::Expired));
        assert_eq!(m.stage_frames_total.with_label_values(&["infer", "expired"]).get(), 1);
    }
}
