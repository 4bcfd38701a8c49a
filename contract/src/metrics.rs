//! Every Prometheus metric visionq exports, defined once. Names are in base units
//! (`_seconds`, `_bytes`), counters end in `_total`, and no label is unbounded
//! (never a frame id; classes are bounded by the model, stages and reasons by code).

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The values of the `stage` label (durations, frames out, work in flight): the
/// names of [`STAGES`] in this order (checked by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    IngestWait,
    QueueWaitFrames,
    Decode,
    Resize,
    QueueWaitTensors,
    Assemble,
    Inference,
    Postprocess,
    Preprocess,
    Infer,
    Results,
    DbWrite,
    EndToEnd,
    Selftest,
    /// Frames accepted on a WebSocket stream and not yet answered.
    IngestStream,
    /// Frames accepted on a gRPC stream and not yet answered.
    IngestGrpc,
}

impl Stage {
    pub const ALL: [Stage; 16] = [
        Stage::IngestWait,
        Stage::QueueWaitFrames,
        Stage::Decode,
        Stage::Resize,
        Stage::QueueWaitTensors,
        Stage::Assemble,
        Stage::Inference,
        Stage::Postprocess,
        Stage::Preprocess,
        Stage::Infer,
        Stage::Results,
        Stage::DbWrite,
        Stage::EndToEnd,
        Stage::Selftest,
        Stage::IngestStream,
        Stage::IngestGrpc,
    ];

    /// The label value, and the key of a result's `timings_ms` where the stage is one.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::IngestWait => "ingest_wait",
            Stage::QueueWaitFrames => "queue_wait_frames",
            Stage::Decode => "decode",
            Stage::Resize => "resize",
            Stage::QueueWaitTensors => "queue_wait_tensors",
            Stage::Assemble => "assemble",
            Stage::Inference => "inference",
            Stage::Postprocess => "postprocess",
            Stage::Preprocess => "preprocess",
            Stage::Infer => "infer",
            Stage::Results => "results",
            Stage::DbWrite => "db_write",
            Stage::EndToEnd => "end_to_end",
            Stage::Selftest => "selftest",
            Stage::IngestStream => "ingest_stream",
            Stage::IngestGrpc => "ingest_grpc",
        }
    }
}

/// What became of a frame leaving a stage (the `outcome` of `visionq_stage_frames_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Expired,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Expired => "expired",
        }
    }
}

/// The values of the `stage` label (durations, frames out, work in flight): bounded by
/// code, the names of [`Stage`] in its order.
pub const STAGES: &[&str] = &[
    "ingest_wait",
    "queue_wait_frames",
    "decode",
    "resize",
    "queue_wait_tensors",
    "assemble",
    "inference",
    "postprocess",
    "preprocess",
    "infer",
    "results",
    "db_write",
    "end_to_end",
    "selftest",
    "ingest_stream",
    "ingest_grpc",
];

/// Every label name a visionq metric may carry; each has a value set bounded by code,
/// by configuration, by the model (`class`, `model`, `name`, `version`) or by a cap
/// (`station`: [`MAX_STATION_LABELS`]; `sink`: the configured `[[sink]]` names;
/// `name` of a track event: the configured `[[line]]` and `[[zone]]` names).
pub const LABELS: &[&str] = &[
    "mode",
    "reason",
    "stage",
    "outcome",
    "queue",
    "class",
    "model",
    "name",
    "version",
    "status",
    "dependency",
    "station",
    "sink",
    "severity",
    "state",
    "kind",
    // The infer-worker's model figures: `route` (active, canary, shadow) and a shadow
    // run's agreement `measure`.
    "route",
    "measure",
];

/// Histograms whose quantity has no unit (a count, a probability).
const UNITLESS_HISTOGRAMS: &[&str] = &["visionq_infer_batch_size", "visionq_detection_score"];

/// Most series one metric family may have before it counts as unbounded.
const MAX_SERIES_PER_FAMILY: usize = 1_000;

/// Stage durations, 1 ms .. 30 s.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 12.0, 16.0, 32.0];

pub struct Metrics {
    registry: Registry,
    /// Frames ingest accepted (published and confirmed).
    pub ingest_accepted_total: IntCounterVec,
    /// Requests ingest refused, by `reason` (not_an_image, bad_header, too_large, unknown_station, unavailable, …).
    pub ingest_rejected_total: IntCounterVec,
    /// Frames ingest accepted, by `station` (the first [`MAX_STATION_LABELS`]
    /// stations seen by this process; any later one counts as `other`), so an alert
    /// can name the one station that went silent. Use [`Metrics::station_frame`].
    station_frames_total: IntCounterVec,
    station_labels: std::sync::Mutex<std::collections::HashSet<String>>,
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
    /// One pass of a chain's second model (`[[chain]]`), by `model` (the chain's name).
    pub chain_duration_seconds: HistogramVec,
    /// Crops a chain's model ran on, by `model` and `outcome` (ok, error).
    pub chain_crops_total: IntCounterVec,
    /// 1 for the model a worker serves, labelled with `name` and `version`.
    pub model_info: GaugeVec,
    /// Frames an infer-worker ran, by `model`, `version` and `route`: `active`, `canary`
    /// (a share or stations sent to a candidate version) or `shadow` (a candidate run
    /// on a sample beside the active version, its result not published).
    pub model_frames_total: IntCounterVec,
    /// From a frame's receipt to its result leaving the infer-worker, by `model` and
    /// `version` (published results only: not shadow runs).
    pub model_latency_seconds: HistogramVec,
    /// Candidates ended automatically, by `model` and `reason` (error_rate, latency,
    /// agreement).
    pub model_rollbacks_total: IntCounterVec,
    /// A shadow candidate's agreement with the active version, by `model`, `version`
    /// and `measure`: precision and recall of its boxes IoU-matched to the active
    /// version's, and the mean score shift of the matched ones.
    pub model_agreement: GaugeVec,
    pub results_persisted_total: IntCounterVec,
    /// Decisions made on results (with a rules file), by outcome.
    pub decisions_total: IntCounterVec,
    /// Stored results whose decision is `needs_review` and that no reviewer has
    /// reviewed yet (within the retention window), as last counted by the results role.
    pub review_backlog: IntGauge,
    /// Reviews stored (the review queue), by verdict (`outcome`: confirmed, corrected, rejected).
    pub reviews_total: IntCounterVec,
    /// Per `model`, `version` and `station` with a drift baseline: 1 while the
    /// rolling window has drifted from it, 0 while it holds (results role).
    pub model_drift: IntGaugeVec,
    /// The window's population stability index of detection scores against the baseline.
    pub model_drift_psi: GaugeVec,
    /// The window's detections per frame over the baseline's.
    pub model_drift_detections_ratio: GaugeVec,
    /// Frames for the evidence store, by `outcome`: kept, unavailable (their bytes
    /// are not in this process), failed (not written), pruned (deleted by the bounds).
    pub evidence_frames_total: IntCounterVec,
    /// Bytes the evidence store holds (images and sidecars).
    pub evidence_store_bytes: IntGauge,
    pub websocket_clients: Gauge,
    /// Frame previews for the dashboard, by `outcome` at ingest (sent as posted,
    /// downscaled (sent re-encoded smaller or turned), superseded by a newer frame within
    /// the interval, rate_limited, undecodable, failed) and at results
    /// (stored, rejected).
    pub dashboard_previews_total: IntCounterVec,
    /// Bytes of preview JPEGs the results role holds for the dashboard.
    pub dashboard_preview_store_bytes: Gauge,
    /// 1 while a `dependency` (broker, database, model) is usable, as last checked by `/readyz`.
    pub dependency_up: GaugeVec,
    /// Synthetic self-test runs (`POST /v1/selftest`), by `outcome` (ok, error, timeout, refused).
    pub selftest_runs_total: IntCounterVec,
    /// On CUDA: the share of the last sample period in which the GPU ran a kernel (NVML), 0–1.
    pub gpu_utilization_ratio: Gauge,
    /// On CUDA: device memory in use, all processes (NVML).
    pub gpu_memory_used_bytes: Gauge,
    /// HTTP connections open on this process's listener (each holds a file descriptor).
    pub http_connections: IntGauge,
    /// Events of a `sink`, by `outcome`: delivered (the receiver took it), failed
    /// (one attempt failed; it is retried), dead_lettered (out of attempts), replayed
    /// (taken out of the dead letters by an admin).
    pub sink_events_total: IntCounterVec,
    /// Events of a `sink` waiting in the outbox to be delivered (not the dead ones),
    /// as last counted by its delivery loop.
    pub sink_outbox_depth: IntGaugeVec,
    /// Events of a `sink` in its dead letters, as last counted.
    pub sink_dead_letters: IntGaugeVec,
    /// Alerts of the `[[rule]]`s, by `severity` and `state` (firing, resolved).
    pub alerts_total: IntCounterVec,
    /// Crossings of `[[line]]`s and visits of `[[zone]]`s, by line or zone `name`
    /// and `kind` (crossed, entered, left).
    pub track_events_total: IntCounterVec,
    /// Connections refused at accept because `http_max_connections` were open.
    pub http_connections_refused_total: IntCounter,
    /// Connections the listener closed for a client too slow or silent, by `reason`
    /// (header, body, idle, send).
    pub http_slow_clients_total: IntCounterVec,
    /// This process's resident memory, read from /proc at each scrape (Linux).
    pub process_resident_memory_bytes: IntGauge,
    /// This process's peak resident memory so far (VmHWM), read at each scrape (Linux).
    pub process_peak_resident_memory_bytes: IntGauge,
    /// File descriptors this process holds open, counted at each scrape (Linux).
    pub process_open_fds: IntGauge,
}

/// Station label values one process gives at most (a bound on the series count:
/// station ids come from the network).
pub const MAX_STATION_LABELS: usize = 256;

impl Metrics {
    /// Counts a frame accepted for `station`.
    pub fn station_frame(&self, station: &str) {
        let label = {
            let mut seen = self.station_labels.lock().expect("station labels lock");
            if seen.contains(station) || (seen.len() < MAX_STATION_LABELS && seen.insert(station.to_string())) {
                station
            } else {
                "other"
            }
        };
        self.station_frames_total.with_label_values(&[label]).inc();
    }

    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition is valid");
                registry.register(Box::new(m.clone())).expect("metric registered once");
                m
            }};
        }
        let hist = |name: &str, help: &str, buckets: &[f64]| HistogramOpts::new(name, help).buckets(buckets.to_vec());
        Metrics {
            ingest_accepted_total: reg!(IntCounterVec::new(
                Opts::new("visionq_ingest_accepted_total", "Frames accepted by ingest after the broker confirmed them."),
                &["mode"]
            )),
            ingest_rejected_total: reg!(IntCounterVec::new(
                Opts::new("visionq_ingest_rejected_total", "Requests refused by ingest, by reason."),
                &["reason"]
            )),
            station_frames_total: reg!(IntCounterVec::new(
                Opts::new("visionq_station_frames_total", "Frames accepted by ingest, by station (`other` beyond the first 256)."),
                &["station"]
            )),
            station_labels: Default::default(),
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
            batch_size: reg!(Histogram::with_opts(hist("visionq_infer_batch_size", "Frames per forward pass.", BATCH_BUCKETS))),
            in_flight: reg!(IntGaugeVec::new(Opts::new("visionq_in_flight", "Work held by a stage right now."), &["stage"])),
            queue_depth: reg!(IntGaugeVec::new(Opts::new("visionq_queue_depth", "Messages ready in a pipeline queue."), &["queue"])),
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
            chain_duration_seconds: reg!(HistogramVec::new(
                hist("visionq_chain_duration_seconds", "One pass of a model chain's second model, by chain.", DURATION_BUCKETS),
                &["model"]
            )),
            chain_crops_total: reg!(IntCounterVec::new(
                Opts::new("visionq_chain_crops_total", "Crops a model chain's second model ran on, by chain and outcome."),
                &["model", "outcome"]
            )),
            model_info: reg!(GaugeVec::new(
                Opts::new("visionq_model_info", "The model a worker serves (value 1)."),
                &["name", "version"]
            )),
            model_frames_total: reg!(IntCounterVec::new(
                Opts::new("visionq_model_frames_total", "Frames an infer-worker ran, by model, version and route."),
                &["model", "version", "route"]
            )),
            model_latency_seconds: reg!(HistogramVec::new(
                hist(
                    "visionq_model_latency_seconds",
                    "From a frame's receipt to its result leaving the infer-worker, by model and version.",
                    &[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
                ),
                &["model", "version"]
            )),
            model_rollbacks_total: reg!(IntCounterVec::new(
                Opts::new("visionq_model_rollbacks_total", "Candidate versions ended automatically, by model and reason."),
                &["model", "reason"]
            )),
            model_agreement: reg!(GaugeVec::new(
                Opts::new("visionq_model_agreement", "A shadow candidate's agreement with the active version."),
                &["model", "version", "measure"]
            )),
            results_persisted_total: reg!(IntCounterVec::new(
                Opts::new("visionq_results_persisted_total", "Results written to the store, by status."),
                &["status"]
            )),
            decisions_total: reg!(IntCounterVec::new(
                Opts::new("visionq_decisions_total", "Decisions made on results under the stations' rules, by outcome."),
                &["outcome"]
            )),
            review_backlog: reg!(IntGauge::with_opts(Opts::new(
                "visionq_review_backlog",
                "Stored results decided needs_review and not reviewed yet (within the retention window), as last counted."
            ))),
            model_drift: reg!(IntGaugeVec::new(
                Opts::new(
                    "visionq_model_drift",
                    "1 while a model version's recent results at a station drift from its baseline there, else 0."
                ),
                &["model", "version", "station"]
            )),
            model_drift_psi: reg!(GaugeVec::new(
                Opts::new(
                    "visionq_model_drift_psi",
                    "Population stability index of a model version's recent detection scores at a station against its baseline."
                ),
                &["model", "version", "station"]
            )),
            model_drift_detections_ratio: reg!(GaugeVec::new(
                Opts::new(
                    "visionq_model_drift_detections_ratio",
                    "A model version's recent detections per frame at a station over its baseline's."
                ),
                &["model", "version", "station"]
            )),
            reviews_total: reg!(IntCounterVec::new(
                Opts::new("visionq_reviews_total", "Reviews stored from the review queue, by verdict (outcome)."),
                &["outcome"]
            )),
            evidence_frames_total: reg!(IntCounterVec::new(
                Opts::new("visionq_evidence_frames_total", "Frames for the evidence store (review and retraining), by outcome."),
                &["outcome"]
            )),
            evidence_store_bytes: reg!(IntGauge::with_opts(Opts::new(
                "visionq_evidence_store_bytes",
                "Bytes the evidence store holds (images and sidecars)."
            ))),
            websocket_clients: reg!(Gauge::with_opts(Opts::new("visionq_websocket_clients", "WebSocket subscribers connected."))),
            dashboard_previews_total: reg!(IntCounterVec::new(
                Opts::new("visionq_dashboard_previews_total", "Frame previews for the dashboard, by outcome."),
                &["outcome"]
            )),
            dashboard_preview_store_bytes: reg!(Gauge::with_opts(Opts::new(
                "visionq_dashboard_preview_store_bytes",
                "Bytes of preview JPEGs held for the dashboard."
            ))),
            gpu_utilization_ratio: reg!(Gauge::with_opts(Opts::new(
                "visionq_gpu_utilization_ratio",
                "Share of the last NVML sample period in which the GPU ran a kernel (CUDA only)."
            ))),
            gpu_memory_used_bytes: reg!(Gauge::with_opts(Opts::new(
                "visionq_gpu_memory_used_bytes",
                "GPU memory in use, all processes (CUDA only)."
            ))),
            dependency_up: reg!(GaugeVec::new(
                Opts::new("visionq_dependency_up", "1 while a dependency (broker, database, model) is usable."),
                &["dependency"]
            )),
            selftest_runs_total: reg!(IntCounterVec::new(
                Opts::new("visionq_selftest_runs_total", "Synthetic self-test runs, by outcome."),
                &["outcome"]
            )),
            http_connections: reg!(IntGauge::with_opts(Opts::new(
                "visionq_http_connections",
                "HTTP connections open on this process's listener."
            ))),
            http_connections_refused_total: reg!(IntCounter::with_opts(Opts::new(
                "visionq_http_connections_refused_total",
                "Connections refused at accept: http_max_connections were open."
            ))),
            http_slow_clients_total: reg!(IntCounterVec::new(
                Opts::new("visionq_http_slow_clients_total", "Connections closed for a slow or silent client, by reason."),
                &["reason"]
            )),
            sink_events_total: reg!(IntCounterVec::new(
                Opts::new("visionq_sink_events_total", "Events of a sink, by outcome (delivered, failed, dead_lettered, replayed)."),
                &["sink", "outcome"]
            )),
            sink_outbox_depth: reg!(IntGaugeVec::new(
                Opts::new("visionq_sink_outbox_depth", "Events of a sink waiting in the outbox, as last counted."),
                &["sink"]
            )),
            sink_dead_letters: reg!(IntGaugeVec::new(
                Opts::new("visionq_sink_dead_letters", "Events of a sink in its dead letters, as last counted."),
                &["sink"]
            )),
            alerts_total: reg!(IntCounterVec::new(
                Opts::new("visionq_alerts_total", "Alerts of the alert rules, by severity and state (firing, resolved)."),
                &["severity", "state"]
            )),
            track_events_total: reg!(IntCounterVec::new(
                Opts::new("visionq_track_events_total", "Crossings of counting lines and visits of zones, by line or zone and kind."),
                &["name", "kind"]
            )),
            process_resident_memory_bytes: reg!(IntGauge::with_opts(Opts::new(
                "visionq_process_resident_memory_bytes",
                "Resident memory of this process (Linux, read at scrape)."
            ))),
            process_peak_resident_memory_bytes: reg!(IntGauge::with_opts(Opts::new(
                "visionq_process_peak_resident_memory_bytes",
                "Peak resident memory of this process so far (VmHWM; Linux, read at scrape)."
            ))),
            process_open_fds: reg!(IntGauge::with_opts(Opts::new(
                "visionq_process_open_fds",
                "Open file descriptors of this process (Linux, counted at scrape)."
            ))),
            registry,
        }
    }

    /// Reads this process's memory and open descriptors from /proc into their
    /// gauges (left as they are where /proc is not Linux's).
    pub fn sample_process(&self) {
        if let Some((rss, peak)) = process_memory() {
            self.process_resident_memory_bytes.set(rss as i64);
            self.process_peak_resident_memory_bytes.set(peak as i64);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            self.process_open_fds.set(fds.count().saturating_sub(1) as i64);
        }
    }

    /// Records a stage's duration.
    pub fn observe_stage(&self, stage: Stage, seconds: f64) {
        self.stage_duration_seconds.with_label_values(&[stage.as_str()]).observe(seconds);
    }

    /// The Prometheus text exposition of every metric (the process gauges sampled first).
    pub fn render(&self) -> String {
        self.sample_process();
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// (VmRSS, VmHWM) in bytes from /proc/self/status.
fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_memory(&status)
}

fn parse_status_memory(status: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What in a Prometheus text exposition breaks visionq's naming conventions (see the
/// module doc): one line per problem, empty when all is well. Tests run it on the
/// registry and on a live `/metrics`.
pub fn convention_violations(exposition: &str) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut problems = Vec::new();
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            kinds.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..line.rfind('}').unwrap_or(line.len())]),
            None => (line.split_whitespace().next().unwrap_or(""), ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| kinds.get(*f).is_some_and(|k| k == "histogram")))
            .unwrap_or(name);
        let mut key = Vec::new();
        for (label, value) in parse_labels(labels) {
            if label == "le" {
                continue;
            }
            if !LABELS.contains(&label.as_str()) {
                problems.push(format!("{family}: label `{label}` is not one of metrics::LABELS"));
            }
            if label == "stage" && !STAGES.contains(&value.as_str()) {
                problems.push(format!("{family}: stage `{value}` is not one of metrics::STAGES"));
            }
            if label == "queue" && !["frames", "tensors", "results", "dead"].contains(&value.as_str()) {
                problems.push(format!("{family}: queue `{value}` is not a pipeline queue"));
            }
            key.push(format!("{label}={value}"));
        }
        series.entry(family.to_string()).or_default().insert(key.join(","));
    }
    for (name, kind) in &kinds {
        if !name.starts_with("visionq_") {
            problems.push(format!("{name}: no `visionq_` prefix"));
        }
        if (kind == "counter") != name.ends_with("_total") {
            problems.push(format!("{name}: a {kind}; counters, and only counters, end in `_total`"));
        }
        for bad in ["_ms", "_milliseconds", "_microseconds", "_minutes", "_kb", "_kilobytes", "_mb", "_megabytes"] {
            if name.ends_with(bad) || name.contains(&format!("{bad}_")) {
                problems.push(format!("{name}: not in base units (`{bad}`)"));
            }
        }
        let timed = ["duration", "latency", "elapsed", "_time", "_wait", "_age"].iter().any(|w| name.contains(w));
        if timed && !name.ends_with("_seconds") && !name.ends_with("_timestamp_seconds") {
            problems.push(format!("{name}: a time must be in `_seconds`"));
        }
        if kind == "histogram"
            && !name.ends_with("_seconds")
            && !name.ends_with("_bytes")
            && !UNITLESS_HISTOGRAMS.contains(&name.as_str())
        {
            problems.push(format!("{name}: a histogram of time ends in `_seconds`, of size in `_bytes`"));
        }
        let n = series.get(name).map_or(0, |s| s.len());
        if n > MAX_SERIES_PER_FAMILY {
            problems.push(format!("{name}: {n} series; a label is unbounded"));
        }
    }
    problems
}

/// `a="x",b="y\"z"` → [(a, x), (b, y"z)].
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches every vector (every stage) so the whole registry shows in the exposition.
    fn exercised() -> Metrics {
        let m = Metrics::new();
        m.ingest_accepted_total.with_label_values(&["async"]).inc();
        m.ingest_rejected_total.with_label_values(&["not_an_image"]).inc();
        m.ingest_body_bytes.observe(30e3);
        for stage in Stage::ALL {
            m.stage_frames_total.with_label_values(&[stage.as_str(), "ok"]).inc();
            m.observe_stage(stage, 0.01);
            m.in_flight.with_label_values(&[stage.as_str()]).set(1);
        }
        m.batch_size.observe(4.0);
        m.queue_depth.with_label_values(&["frames"]).set(1);
        m.dead_lettered_total.with_label_values(&["frames", "corrupt_image"]).inc();
        m.detections_total.with_label_values(&["dog"]).inc();
        m.detection_score.with_label_values(&["yolov3-tiny"]).observe(0.5);
        m.model_info.with_label_values(&["yolov3-tiny", "1"]).set(1.0);
        m.model_frames_total.with_label_values(&["yolov3-tiny", "1", "active"]).inc();
        m.model_latency_seconds.with_label_values(&["yolov3-tiny", "1"]).observe(0.02);
        m.model_rollbacks_total.with_label_values(&["yolov3-tiny", "agreement"]).inc();
        m.model_agreement.with_label_values(&["yolov3-tiny", "2", "recall"]).set(0.9);
        m.chain_duration_seconds.with_label_values(&["ocr"]).observe(0.004);
        m.chain_crops_total.with_label_values(&["ocr", "ok"]).inc();
        m.results_persisted_total.with_label_values(&["ok"]).inc();
        m.decisions_total.with_label_values(&["accepted"]).inc();
        m.review_backlog.set(3);
        m.reviews_total.with_label_values(&["confirmed"]).inc();
        m.evidence_frames_total.with_label_values(&["kept"]).inc();
        m.evidence_store_bytes.set(1);
        m.websocket_clients.set(1.0);
        m.dashboard_previews_total.with_label_values(&["sent"]).inc();
        m.dashboard_preview_store_bytes.set(1.0);
        m.dependency_up.with_label_values(&["broker"]).set(1.0);
        m.selftest_runs_total.with_label_values(&["ok"]).inc();
        m.gpu_utilization_ratio.set(0.5);
        m.gpu_memory_used_bytes.set(1e9);
        m.http_connections.set(1);
        m.http_connections_refused_total.inc();
        m.http_slow_clients_total.with_label_values(&["header"]).inc();
        m.sink_events_total.with_label_values(&["plant", "delivered"]).inc();
        m.sink_outbox_depth.with_label_values(&["plant"]).set(1);
        m.sink_dead_letters.with_label_values(&["plant"]).set(1);
        m.alerts_total.with_label_values(&["warning", "firing"]).inc();
        m.track_events_total.with_label_values(&["door", "crossed"]).inc();
        m
    }

    #[test]
    fn the_process_gauges_read_proc() {
        assert_eq!(parse_status_memory("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"), Some((1024 * 1024, 2048 * 1024)));
        assert_eq!(parse_status_memory("Name:\tx\n"), None);
        let m = Metrics::new();
        let text = m.render();
        let value = |text: &str, name: &str| -> i64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let rss = value(&text, "visionq_process_resident_memory_bytes");
        assert!(rss > 1024 * 1024, "a test process holds more than 1 MiB: {rss}");
        assert!(value(&text, "visionq_process_peak_resident_memory_bytes") >= rss);
        let fds = value(&text, "visionq_process_open_fds");
        let held: Vec<_> = (0..20).map(|_| std::fs::File::open("/proc/self/status").unwrap()).collect();
        let more = value(&m.render(), "visionq_process_open_fds");
        // Other tests of this binary open and close files meanwhile: only a lower bound holds.
        assert!(more >= fds + 20 - 10, "20 more files open: {fds} -> {more}");
        drop(held);
    }

    #[test]
    fn station_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_STATION_LABELS + 10 {
            m.station_frame(&format!("cam-{i}"));
        }
        m.station_frame("cam-0");
        let text = m.render();
        assert!(text.contains("visionq_station_frames_total{station=\"cam-0\"} 2"), "{text}");
        assert!(text.contains("visionq_station_frames_total{station=\"other\"} 10"));
        let series = text.lines().filter(|l| l.starts_with("visionq_station_frames_total{")).count();
        assert_eq!(series, MAX_STATION_LABELS + 1);
    }

    #[test]
    fn every_registered_name_follows_the_conventions() {
        let m = exercised();
        let text = m.render();
        let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        assert_eq!(families.len(), m.registry().gather().len(), "every family is rendered");
        assert_eq!(families.len(), 42, "every metric is registered: {families:#?}");
        let problems = convention_violations(&text);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_checker_catches_what_breaks_the_conventions() {
        let bad = "\
# TYPE http_requests_total counter
http_requests_total 1
# TYPE visionq_frames counter
visionq_frames 1
# TYPE visionq_decode_ms histogram
visionq_decode_ms_bucket{le=\"+Inf\"} 1
visionq_decode_ms_sum 1
visionq_decode_ms_count 1
# TYPE visionq_queue_wait gauge
visionq_queue_wait 1
# TYPE visionq_in_flight_total gauge
visionq_in_flight_total 1
# TYPE visionq_stage_frames_total counter
visionq_stage_frames_total{stage=\"teleport\",frame_id=\"0190\"} 1
";
        let problems = convention_violations(bad);
        for expected in [
            "http_requests_total: no `visionq_` prefix",
            "visionq_frames: a counter",
            "visionq_decode_ms: not in base units",
            "visionq_decode_ms: a histogram of time",
            "visionq_queue_wait: a time must be in `_seconds`",
            "visionq_in_flight_total: a gauge",
            "visionq_stage_frames_total: label `frame_id`",
            "visionq_stage_frames_total: stage `teleport`",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(expected)), "missed `{expected}` in {problems:#?}");
        }
    }

    #[test]
    fn labels_parse_with_escapes() {
        let l = parse_labels(r#"class="hot dog",model="a\"b",le="0.5""#);
        assert_eq!(l[0], ("class".into(), "hot dog".into()));
        assert_eq!(l[1], ("model".into(), "a\"b".into()));
        assert_eq!(l[2].0, "le");
    }
}
