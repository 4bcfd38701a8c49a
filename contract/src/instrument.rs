//! Instrumentation as typed events. What a stage reports about a frame is one value
//! ([`FrameDone`], [`FrameFailed`], [`FrameExpired`]) whose [`emit`](Emit::emit)
//! writes its log line and bumps its metrics together, so the two cannot drift
//! apart; label values come from enums ([`Stage`], [`Outcome`]), never from strings
//! typed at the call site. A role opens one [`frame_span`] per delivery, so every log
//! line about that frame carries its `frame_id`, `station` and `trace_id` without
//! repeating them.
//!
//! It imports only this crate's metrics and messages.

use crate::message::FrameMeta;
use crate::metrics::Metrics;

pub use crate::metrics::{Outcome, Stage};

/// The log target of every per-frame line (`RUST_LOG=info,visionq::frames=debug`
/// shows them, whichever role writes them).
pub const FRAMES_TARGET: &str = "visionq::frames";

/// An event that logs and counts itself.
pub trait Emit {
    fn emit(self, metrics: &Metrics);
}

/// A frame a stage finished and handed on.
#[derive(Debug, Clone, Copy)]
pub struct FrameDone {
    pub stage: Stage,
    /// Detections found (the inference stage), for the log line.
    pub detections: Option<usize>,
}

impl Emit for FrameDone {
    fn emit(self, metrics: &Metrics) {
        let message = match self.stage {
            Stage::Preprocess => "frame preprocessed",
            Stage::Infer => "frame inferred",
            _ => "frame done",
        };
        tracing::debug!(target: FRAMES_TARGET, detections = self.detections, "{message}");
        metrics.stage_frames_total.with_label_values(&[self.stage.as_str(), Outcome::Ok.as_str()]).inc();
    }
}

/// A frame that can never be run: counted as the stage's error and as a dead letter
/// of `queue` with `label` (`bad_message`, `corrupt_image`, `too_large`, …).
#[derive(Debug, Clone, Copy)]
pub struct FrameFailed<'a> {
    pub stage: Stage,
    /// The queue the message came from (its topology label).
    pub queue: &'static str,
    pub label: &'static str,
    pub reason: &'a str,
}

impl Emit for FrameFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::debug!(target: FRAMES_TARGET, stage = self.stage.as_str(), queue = self.queue, label = self.label, error = self.reason, "frame failed");
        metrics.stage_frames_total.with_label_values(&[self.stage.as_str(), Outcome::Error.as_str()]).inc();
        metrics.dead_lettered_total.with_label_values(&[self.queue, self.label]).inc();
    }
}

/// A frame whose deadline passed before the stage ran it.
#[derive(Debug, Clone, Copy)]
pub struct FrameExpired {
    pub stage: Stage,
    pub late_ms: f64,
}

impl Emit for FrameExpired {
    fn emit(self, metrics: &Metrics) {
        tracing::debug!(target: FRAMES_TARGET, stage = self.stage.as_str(), late_ms = self.late_ms, "frame expired before inference");
        metrics.stage_frames_total.with_label_values(&[self.stage.as_str(), Outcome::Expired.as_str()]).inc();
    }
}

/// A message on the results queue that is not a result: dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct NotAResult<'a> {
    pub error: &'a str,
}

impl Emit for NotAResult<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(target: FRAMES_TARGET, error = self.error, "a message on the results queue is not a result: dead-lettered");
        metrics.dead_lettered_total.with_label_values(&["results", "bad_message"]).inc();
    }
}

/// Work a stage holds while this guard lives: added to the stage's `in_flight`
/// gauge when made, taken off when dropped, whichever way the work ends.
#[must_use = "the work counts as in flight only while the guard lives"]
pub struct InFlight {
    gauge: prometheus::IntGauge,
    n: i64,
}

impl InFlight {
    pub fn new(metrics: &Metrics, stage: Stage, n: usize) -> InFlight {
        let gauge = metrics.in_flight.with_label_values(&[stage.as_str()]);
        let n = n as i64;
        gauge.add(n);
        InFlight { gauge, n }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.sub(self.n);
    }
}

/// The span of one delivery: every log line while a frame is handled carries its
/// id, station and trace id (the fields are recorded once the message is parsed;
/// `trace_id` from the W3C `traceparent` it travelled with). At debug, under
/// [`FRAMES_TARGET`] like the per-frame lines: on the hot path it costs nothing
/// unless those lines are asked for.
pub fn frame_span(stage: Stage) -> tracing::Span {
    tracing::debug_span!(
        target: FRAMES_TARGET,
        "frame",
        stage = stage.as_str(),
        frame_id = tracing::field::Empty,
        station = tracing::field::Empty,
        trace_id = tracing::field::Empty
    )
}

/// Records `frame` (and the trace id of `traceparent`) on a [`frame_span`]: `span`,
/// or the current one inside a future instrumented with it.
pub fn record_frame(span: &tracing::Span, frame: &FrameMeta, traceparent: Option<&str>) {
    span.record("frame_id", tracing::field::display(frame.frame_id));
    span.record("station", frame.station.as_str());
    if let Some(trace) = traceparent.and_then(crate::telemetry::trace_id) {
        span.record("trace_id", trace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_enum_is_the_metrics_stage_list() {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, crate::metrics::STAGES);
    }

    #[test]
    fn each_event_counts_what_it_logs() {
        let m = Metrics::new();
        FrameDone { stage: Stage::Preprocess, detections: None }.emit(&m);
        FrameFailed { stage: Stage::Preprocess, queue: "frames", label: "corrupt_image", reason: "bad Huffman code" }.emit(&m);
        FrameExpired { stage: Stage::Infer, late_ms: 12.0 }.emit(&m);
        NotAResult { error: "expected value" }.emit(&m);
        let frames = |stage, outcome| m.stage_frames_total.with_label_values(&[stage, outcome]).get();
        assert_eq!((frames("preprocess", "ok"), frames("preprocess", "error"), frames("infer", "expired")), (1, 1, 1));
        assert_eq!(m.dead_lettered_total.with_label_values(&["frames", "corrupt_image"]).get(), 1);
        assert_eq!(m.dead_lettered_total.with_label_values(&["results", "bad_message"]).get(), 1);
    }

    /// Captures what a fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_inside_the_frame_span_names_the_frame_station_and_trace() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let frame: FrameMeta = serde_json::from_value(serde_json::json!({
            "frame_id": "6f1c1f62-8a3e-4a55-9a57-6f4f7e1f0c11",
            "station": "dock-4",
            "received_at": "2026-12-05T20:00:00Z",
            "published_at": "2026-12-05T20:00:00Z",
            "width": 0,
            "height": 0,
            "timings_ms": {}
        }))
        .expect("a frame's metadata");
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        tracing::subscriber::with_default(subscriber, || {
            let span = frame_span(Stage::Preprocess);
            record_frame(&span, &frame, Some(traceparent));
            let _in = span.enter();
            tracing::warn!("cannot publish tensor; requeueing the frame");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for part in [
            "stage=\"preprocess\"",
            "frame_id=6f1c1f62-8a3e-4a55-9a57-6f4f7e1f0c11",
            "station=\"dock-4\"",
            "trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"",
            "cannot publish tensor",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }

    #[test]
    fn in_flight_is_given_back_however_the_work_ends() {
        let m = Metrics::new();
        let gauge = || m.in_flight.with_label_values(&["infer"]).get();
        {
            let _a = InFlight::new(&m, Stage::Infer, 3);
            let _b = InFlight::new(&m, Stage::Infer, 1);
            assert_eq!(gauge(), 4);
        }
        assert_eq!(gauge(), 0);
        fn fails_while_holding(m: &Metrics) -> Result<(), ()> {
            let _held = InFlight::new(m, Stage::Infer, 2);
            Err(())
        }
        assert!(fails_while_holding(&m).is_err());
        assert_eq!(gauge(), 0);
    }
}
