//! Every Prometheus metric visionq exports, defined once. Names are in base units
//! (`_seconds`, `_bytes`), counters end in `_total`, and no label is unbounded
//! (never a frame id; classes are bounded by the model, stages and reasons by code).

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Stage durations, 1 ms .. 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 12.0, 16.0, 32.0];

pub struct Metrics {
    registry: Registry,
    /// Frames ingest accepted (published and confirmed).
    pub ingest_accepted_total: IntCounterVec,
    /// Requests ingest refused, by `reason` (not_jpeg, bad_header, too_large, unknown_station, unavailable, …).
    pub ingest_rejected_total: IntCounterVec,
    pub ingest_body_bytes: Histogram,
    /// Frames leaving a stage, by `stage` and `outcome` (ok, error, expired).
    pub stage_frames_total: IntCounterVec,
    /// Time spent per `stage`: decode, resize, queue_wait, inference, postprocess, db_write, end_to_end.
    pub stage_duration_seconds: HistogramVec,
    pub batch_size: Histogram,
    /// Work held by a `stage` right now.
    pub in_flight: IntGaugeVec,
    /// Messages ready in each pipeline `queue`, as last seen by this process.
    pub queue_depth: IntGaugeVec,
    /// Messages dead-lettered, by `queue` and `reason`.
    pub dead_lettered_total: IntCounterVec,
    /// Detections emitted, by `class`.
    pub detections_total: IntCounterVec,
    /// Confidence of emitted detections, by `model`; a falling mean is the first sign of drift.
    pub detection_score: HistogramVec,
    /// 1 for the model a worker serves, labelled with `name` and `version`.
    pub model_info: GaugeVec,
    pub results_persisted_total: IntCounterVec,
    pub websocket_clients: Gauge,
    /// Frame previews for the dashboard, by `outcome` at ingest (sent, superseded by a
    /// newer frame within the interval, rate_limited, too_large, failed) and at results
    /// (stored, rejected).
    pub dashboard_previews_total: IntCounterVec,
    /// Bytes of preview JPEGs the results role holds for the dashboard.
    pub dashboard_preview_store_bytes: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition is valid");
                registry.register(Box::new(m.clone())).expect("metric registered once");
                m
            }};
        }
        let hist = |name: &str, help: &str, buckets: &[f64]| {
            HistogramOpts::new(name, help).buckets(buckets.to_vec())
        };
        Metrics {
            ingest_accepted_total: reg!(IntCounterVec::new(
                Opts::new("visionq_ingest_accepted_total", "Frames accepted by ingest after the broker confirmed them."),
                &["mode"]
            )),
            ingest_rejected_total: reg!(IntCounterVec::new(
                Opts::new("visionq_ingest_rejected_total", "Requests refused by ingest, by reason."),
                &["reason"]
            )),
            ingest_body_bytes: reg!(Histogram::with_opts(hist(
                "visionq_ingest_body_bytes",
                "Size of accepted JPEG frames.",
                &[8e3, 16e3, 32e3, 64e3, 128e3, 256e3, 512e3, 1e6, 2e6, 4e6, 8e6]
            ))),
            stage_frames_total: reg!(IntCounterVec::new(
                Opts::new("visionq_stage_frames_total", "Frames that left a stage, by outcome."),
                &["stage", "outcome"]
            )),
            stage_duration_seconds: reg!(HistogramVec::new(
                hist("visionq_stage_duration_seconds", "Time spent per stage.", DURATION_BUCKETS),
                &["stage"]
            )),
            batch_size: reg!(Histogram::with_opts(hist(
                "visionq_infer_batch_size",
                "Frames per forward pass.",
                BATCH_BUCKETS
            ))),
            in_flight: reg!(IntGaugeVec::new(
                Opts::new("visionq_in_flight", "Work held by a stage right now."),
                &["stage"]
            )),
            queue_depth: reg!(IntGaugeVec::new(
                Opts::new("visionq_queue_depth", "Messages ready in a pipeline queue."),
                &["queue"]
            )),
            dead_lettered_total: reg!(IntCounterVec::new(
                Opts::new("visionq_dead_lettered_total", "Messages dead-lettered, by queue and reason."),
                &["queue", "reason"]
            )),
            detections_total: reg!(IntCounterVec::new(
                Opts::new("visionq_detections_total", "Detections emitted, by class."),
                &["class"]
            )),
            detection_score: reg!(HistogramVec::new(
                hist(
                    "visionq_detection_score",
                    "Confidence of emitted detections.",
                    &[0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.85, 0.9, 0.95]
                ),
                &["model"]
            )),
            model_info: reg!(GaugeVec::new(
                Opts::new("visionq_model_info", "The model a worker serves (value 1)."),
                &["name", "version"]
            )),
            results_persisted_total: reg!(IntCounterVec::new(
                Opts::new("visionq_results_persisted_total", "Results written to the store, by status."),
                &["status"]
            )),
            websocket_clients: reg!(Gauge::with_opts(Opts::new(
                "visionq_websocket_clients",
                "WebSocket subscribers connected."
            ))),
            dashboard_previews_total: reg!(IntCounterVec::new(
                Opts::new("visionq_dashboard_previews_total", "Frame previews for the dashboard, by outcome."),
                &["outcome"]
            )),
            dashboard_preview_store_bytes: reg!(Gauge::with_opts(Opts::new(
                "visionq_dashboard_preview_store_bytes",
                "Bytes of preview JPEGs held for the dashboard."
            ))),
            registry,
        }
    }

    pub fn observe_stage(&self, stage: &str, seconds: f64) {
        self.stage_duration_seconds.with_label_values(&[stage]).observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new();
        // Touch every vector so it shows up in the exposition.
        m.ingest_accepted_total.with_label_values(&["async"]).inc();
        m.ingest_rejected_total.with_label_values(&["x"]).inc();
        m.stage_frames_total.with_label_values(&["a", "ok"]).inc();
        m.observe_stage("decode", 0.01);
        m.in_flight.with_label_values(&["a"]).set(1);
        m.queue_depth.with_label_values(&["frames"]).set(1);
        m.dead_lettered_total.with_label_values(&["frames", "x"]).inc();
        m.detections_total.with_label_values(&["dog"]).inc();
        m.detection_score.with_label_values(&["m"]).observe(0.5);
        m.model_info.with_label_values(&["m", "1"]).set(1.0);
        m.results_persisted_total.with_label_values(&["ok"]).inc();
        m.dashboard_previews_total.with_label_values(&["sent"]).inc();
        let families = m.registry().gather();
        assert_eq!(families.len(), 16, "every metric is registered");
        for f in families {
            let name = f.name();
            assert!(name.starts_with("visionq_"), "{name}");
            match f.get_field_type() {
                prometheus::proto::MetricType::COUNTER => assert!(name.ends_with("_total"), "{name}"),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
            if name.contains("duration") {
                assert!(name.ends_with("_seconds"), "{name}");
            }
            for metric in f.get_metric() {
                for l in metric.get_label() {
                    assert!(!["frame_id", "frame"].contains(&l.name()), "unbounded label on {name}");
                }
            }
        }
    }
}
