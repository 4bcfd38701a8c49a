//! What a worker serves under one model name (a [`Slot`]), and which frames go
//! where ([`Routes`]). A slot has the active version's engine — switched in place by
//! an activation (see [`crate::swap`]) — and at most one candidate version beside it,
//! with its own engine (batcher and inference thread):
//!
//! - a **canary** takes a share of the frames (chosen by a hash of the frame id, so
//!   a redelivered frame goes the same way) or every frame of listed stations, and
//!   its results are the published ones, labelled with its version;
//! - a **shadow** also runs a sample of the frames the active version runs; its
//!   results are never published, only compared with the active version's
//!   ([`Agreement`]: IoU-matched precision and recall, and the score shift).
//!
//! A candidate is judged on its error rate, its pass time per frame against the
//! active version's over the same period, and (shadow) its agreement; crossing a
//! configured line ends it automatically, with the reason logged and counted.
//! Stations name the model they use (`[station.<id>] model`); every other station's
//! frames go to the worker's first model.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use visionq_contract::message::box_iou;
use visionq_contract::{Config, Detection, Metrics, ModelInfo, TensorMeta};
use visionq_queue::Delivery;

use crate::swap::Switch;

/// How a candidate version takes frames.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// `share` (0–1) of every station's frames, and all the frames of `stations`.
    Canary { share: f64, stations: Vec<String> },
    /// Also runs `sample` (0–1) of the frames, its results compared, never published.
    Shadow { sample: f64 },
}

/// Forward passes an engine ran: frames, failed frames and pass seconds, summed.
#[derive(Default)]
pub(crate) struct PassStats {
    frames: AtomicU64,
    errors: AtomicU64,
    /// Pass seconds, in microseconds.
    micros: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassTally {
    pub frames: u64,
    pub errors: u64,
    pub seconds: f64,
}

impl PassTally {
    /// Mean pass time per frame (seconds), when any ran.
    pub fn per_frame(&self) -> Option<f64> {
        (self.frames > 0).then(|| self.seconds / self.frames as f64)
    }

    fn since(&self, start: &PassTally) -> PassTally {
        PassTally { frames: self.frames - start.frames, errors: self.errors - start.errors, seconds: self.seconds - start.seconds }
    }
}

impl PassStats {
    pub fn add(&self, frames: usize, seconds: f64, ok: bool) {
        match ok {
            true => self.frames.fetch_add(frames as u64, Ordering::Relaxed),
            false => self.errors.fetch_add(frames as u64, Ordering::Relaxed),
        };
        self.micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn tally(&self) -> PassTally {
        PassTally {
            frames: self.frames.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            seconds: self.micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// The way into one engine: its batcher's queue and the input it takes.
pub(crate) struct EngineIn {
    pub tx: mpsc::Sender<Item>,
    pub input: (u32, u32),
    pub stats: Arc<PassStats>,
}

impl EngineIn {
    pub fn tensor_len(&self) -> usize {
        self.input.0 as usize * self.input.1 as usize * 3
    }
}

/// Starts an engine for a loaded candidate model (given by the running worker).
pub(crate) type Starter = Arc<dyn Fn(crate::model::Model) -> Arc<EngineIn> + Send + Sync>;

/// A shadow run's agreement with the active version, summed over the frames both ran.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Agreement {
    pub frames: u64,
    /// Boxes of the active version, of the candidate, and matched between them.
    pub active_boxes: u64,
    pub candidate_boxes: u64,
    pub matched: u64,
    /// Sum of (candidate − active) score over the matched boxes.
    pub score_shift_sum: f64,
}

/// IoU at or above which two boxes of the same class are the same object.
pub const MATCH_IOU: f32 = 0.5;

impl Agreement {
    /// Adds one frame: each candidate box, best score first, takes the unmatched
    /// active box of its class it overlaps most, when that IoU is at least [`MATCH_IOU`].
    pub fn add(&mut self, active: &[Detection], candidate: &[Detection]) {
        let mut order: Vec<&Detection> = candidate.iter().collect();
        order.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut taken = vec![false; active.len()];
        for c in order {
            let best = active
                .iter()
                .enumerate()
                .filter(|(i, a)| !taken[*i] && a.class_id == c.class_id)
                .map(|(i, a)| (i, box_iou(&a.bbox, &c.bbox)))
                .filter(|(_, iou)| *iou >= MATCH_IOU)
                .max_by(|x, y| x.1.total_cmp(&y.1));
            if let Some((i, _)) = best {
                taken[i] = true;
                self.matched += 1;
                self.score_shift_sum += (c.score - active[i].score) as f64;
            }
        }
        self.frames += 1;
        self.active_boxes += active.len() as u64;
        self.candidate_boxes += candidate.len() as u64;
    }

    /// Matched over the candidate's boxes (1 when it found none).
    pub fn precision(&self) -> f64 {
        if self.candidate_boxes == 0 { 1.0 } else { self.matched as f64 / self.candidate_boxes as f64 }
    }

    /// Matched over the active version's boxes (1 when it found none).
    pub fn recall(&self) -> f64 {
        if self.active_boxes == 0 { 1.0 } else { self.matched as f64 / self.active_boxes as f64 }
    }

    /// The harmonic mean of precision and recall: the line `candidate_min_agreement` is drawn on.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }

    /// Mean score change of the matched boxes.
    pub fn score_shift(&self) -> f64 {
        if self.matched == 0 { 0.0 } else { self.score_shift_sum / self.matched as f64 }
    }
}

/// Which side of a shadow pair a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Active,
    Candidate,
}

/// Frames whose one side finished, waiting for the other (by frame id).
#[derive(Default)]
struct Book {
    waiting: HashMap<Box<[u8]>, (Side, Vec<Detection>, std::time::Instant)>,
    agreement: Agreement,
    /// Sampled frames not shadowed because the candidate's queue was full.
    skipped: u64,
    /// The candidate ended: its last frames no longer set its gauges.
    ended: bool,
}

/// A half kept longer than this (its other side failed or was skipped) is dropped.
const PAIR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A candidate version running beside the active one.
pub struct Candidate {
    pub info: ModelInfo,
    pub plan: Plan,
    pub started_at: DateTime<Utc>,
    pub(crate) engine: Arc<EngineIn>,
    /// The active engine's passes when this started (its latency is compared over the same period).
    active_at_start: PassTally,
    book: Mutex<Book>,
}

/// What a candidate did, for `GET /v1/models`.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateReport {
    pub info: ModelInfo,
    pub plan: Plan,
    pub started_at: DateTime<Utc>,
    pub passes: PassTally,
    /// The active version's passes over the same period.
    pub active_passes: PassTally,
    /// Shadow only.
    pub agreement: Option<Agreement>,
    pub skipped: u64,
}

/// A candidate that ended, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub report: CandidateReport,
    pub ended_at: DateTime<Utc>,
    /// `error_rate`, `latency` or `agreement` (ended automatically), `promoted`,
    /// `replaced`, `cancelled` or `rolled_back`.
    pub reason: String,
    pub detail: String,
}

/// One model name in a worker.
pub struct Slot {
    pub name: String,
    pub(crate) switch: Arc<Switch>,
    active: RwLock<Option<Arc<EngineIn>>>,
    candidate: RwLock<Option<Arc<Candidate>>>,
    ended: Mutex<Option<Ended>>,
    /// Woken when a candidate ends (see [`Slot::candidate_ended`]).
    ended_wake: tokio::sync::Notify,
    starter: Mutex<Option<Starter>>,
}

impl Slot {
    pub fn new(name: impl Into<String>) -> Arc<Slot> {
        Arc::new(Slot {
            name: name.into(),
            switch: Arc::new(Switch::default()),
            active: RwLock::new(None),
            candidate: RwLock::new(None),
            ended: Mutex::new(None),
            ended_wake: tokio::sync::Notify::new(),
            starter: Mutex::new(None),
        })
    }

    pub fn switch(&self) -> Arc<Switch> {
        self.switch.clone()
    }

    /// The worker opened the slot: its active engine, and how to start a candidate's.
    pub(crate) fn open(&self, active: Arc<EngineIn>, starter: Starter) {
        *self.active.write().expect("slot lock") = Some(active);
        *self.starter.lock().expect("slot lock") = Some(starter);
    }

    /// The worker stops: no candidate any more, none can start.
    pub(crate) fn close(&self) {
        self.starter.lock().expect("slot lock").take();
        self.candidate.write().expect("slot lock").take();
        self.active.write().expect("slot lock").take();
    }

    pub(crate) fn active(&self) -> Option<Arc<EngineIn>> {
        self.active.read().expect("slot lock").clone()
    }

    pub fn candidate(&self) -> Option<Arc<Candidate>> {
        self.candidate.read().expect("slot lock").clone()
    }

    /// The last candidate that ended.
    pub fn ended(&self) -> Option<Ended> {
        self.ended.lock().expect("slot lock").clone()
    }

    /// Starts `model` as the candidate (replacing one running). `None` when the
    /// worker is not running.
    pub(crate) fn start_candidate(&self, model: crate::model::Model, plan: Plan, metrics: &Metrics) -> Option<Arc<Candidate>> {
        let starter = self.starter.lock().expect("slot lock").clone()?;
        let active = self.active()?;
        let info = model.info.clone();
        let engine = starter(model);
        let c = Arc::new(Candidate {
            info,
            plan,
            started_at: Utc::now(),
            engine,
            active_at_start: active.stats.tally(),
            book: Mutex::new(Book::default()),
        });
        let old = self.candidate.write().expect("slot lock").replace(c.clone());
        if let Some(old) = old {
            self.record_end(&old, "replaced", format!("{} became the candidate", label(&c.info)), metrics);
        }
        Some(c)
    }

    /// Ends the running candidate (if it is `version`, when given) for `reason`.
    pub fn end_candidate(&self, version: Option<&str>, reason: &str, detail: String, metrics: &Metrics) -> Option<Ended> {
        let c = {
            let mut slot = self.candidate.write().expect("slot lock");
            if version.is_some_and(|v| slot.as_ref().is_some_and(|c| c.info.version != v)) {
                return None;
            }
            slot.take()?
        };
        Some(self.record_end(&c, reason, detail, metrics))
    }

    fn record_end(&self, c: &Candidate, reason: &str, detail: String, metrics: &Metrics) -> Ended {
        let ended = Ended { report: self.report(c), ended_at: Utc::now(), reason: reason.into(), detail };
        // Under the book's lock, so a pair finishing now cannot set them again.
        let mut book = c.book.lock().expect("book lock");
        book.ended = true;
        for measure in ["precision", "recall", "score_shift", "frames"] {
            let _ = metrics.model_agreement.remove_label_values(&[&c.info.name, &c.info.version, measure]);
        }
        drop(book);
        tracing::info!(model = %label(&c.info), reason, detail = %ended.detail, "candidate ended");
        *self.ended.lock().expect("slot lock") = Some(ended.clone());
        self.ended_wake.notify_one();
        ended
    }

    /// Resolves when a candidate has ended (one ending while nobody waits is kept
    /// for the next wait).
    pub async fn candidate_ended(&self) {
        self.ended_wake.notified().await
    }

    pub fn report(&self, c: &Candidate) -> CandidateReport {
        let active = self.active().map(|a| a.stats.tally()).unwrap_or_default();
        let book = c.book.lock().expect("book lock");
        CandidateReport {
            info: c.info.clone(),
            plan: c.plan.clone(),
            started_at: c.started_at,
            passes: c.engine.stats.tally(),
            active_passes: active.since(&c.active_at_start),
            agreement: matches!(c.plan, Plan::Shadow { .. }).then_some(book.agreement),
            skipped: book.skipped,
        }
    }

    /// Judges the candidate against the configured lines; ends it when one is
    /// crossed (logged and counted), returning that end.
    pub(crate) fn judge(&self, c: &Arc<Candidate>, config: &Config, metrics: &Metrics) -> Option<Ended> {
        let r = self.report(c);
        let lines = &config.model;
        let ran = r.passes.frames + r.passes.errors;
        if ran < lines.candidate_min_frames {
            return None;
        }
        let error_rate = r.passes.errors as f64 / ran as f64;
        let verdict = if error_rate > lines.candidate_max_error_rate {
            Some(("error_rate", format!("{error_rate:.3} of its frames failed (line {})", lines.candidate_max_error_rate)))
        } else if let (Some(mine), Some(theirs)) = (r.passes.per_frame(), r.active_passes.per_frame())
            && r.active_passes.frames >= lines.candidate_min_frames.min(50)
            && mine > theirs * lines.candidate_max_latency_ratio
        {
            Some((
                "latency",
                format!(
                    "{:.2} ms per frame against the active version's {:.2} ms (line {}x)",
                    mine * 1e3,
                    theirs * 1e3,
                    lines.candidate_max_latency_ratio
                ),
            ))
        } else if let Some(a) = r.agreement
            && a.frames >= lines.candidate_min_frames
            && a.f1() < lines.candidate_min_agreement
        {
            Some((
                "agreement",
                format!(
                    "agreement {:.3} (precision {:.3}, recall {:.3}) over {} frames (line {})",
                    a.f1(),
                    a.precision(),
                    a.recall(),
                    a.frames,
                    lines.candidate_min_agreement
                ),
            ))
        } else {
            None
        };
        let (reason, detail) = verdict?;
        // Only the first judge to see the line crossed ends it.
        let ended = self.end_candidate(Some(&c.info.version), reason, detail, metrics)?;
        metrics.model_rollbacks_total.with_label_values(&[&self.name, reason]).inc();
        tracing::error!(model = %label(&c.info), reason, detail = %ended.detail, "candidate rolled back automatically");
        Some(ended)
    }
}

impl Candidate {
    /// One side of a shadow pair finished; when the other has too, the frame counts
    /// in the agreement (and its gauges).
    pub(crate) fn pair(&self, frame_id: &[u8], side: Side, detections: Vec<Detection>, metrics: &Metrics) {
        let mut book = self.book.lock().expect("book lock");
        match book.waiting.remove(frame_id) {
            Some((other, theirs, _)) if other != side => {
                let (active, candidate) = match side {
                    Side::Active => (&detections, &theirs),
                    Side::Candidate => (&theirs, &detections),
                };
                book.agreement.add(active, candidate);
                if book.ended {
                    return;
                }
                let a = book.agreement;
                let (n, v) = (&self.info.name, &self.info.version);
                metrics.model_agreement.with_label_values(&[n, v, "precision"]).set(a.precision());
                metrics.model_agreement.with_label_values(&[n, v, "recall"]).set(a.recall());
                metrics.model_agreement.with_label_values(&[n, v, "score_shift"]).set(a.score_shift());
                metrics.model_agreement.with_label_values(&[n, v, "frames"]).set(a.frames as f64);
            }
            _ => {
                if book.waiting.len() >= 4096 {
                    book.waiting.retain(|_, (_, _, at)| at.elapsed() < PAIR_TIMEOUT);
                }
                book.waiting.insert(frame_id.into(), (side, detections, std::time::Instant::now()));
            }
        }
    }

    /// A sampled frame the candidate could not take (its queue full): not shadowed.
    pub(crate) fn skipped(&self) {
        self.book.lock().expect("book lock").skipped += 1;
    }

    /// Whether this frame's result comes from the candidate (canary) or is also run
    /// on it (shadow sample).
    fn takes(&self, station: &str, frame_id: &[u8]) -> bool {
        match &self.plan {
            Plan::Canary { share, stations } => stations.iter().any(|s| s == station) || fraction(frame_id, 0) < *share,
            Plan::Shadow { sample } => fraction(frame_id, 1) < *sample,
        }
    }
}

/// A stable 0–1 value of a frame id (FNV-1a; `salt` makes the canary's and the
/// shadow's choices independent), so a redelivered frame is routed the same way.
pub fn fraction(frame_id: &[u8], salt: u8) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt as u64;
    for &b in frame_id {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // A final mix, so ids that differ only in their last characters spread evenly.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A frame on its way through an engine: its delivery, where it goes and its tensor.
pub(crate) struct Item {
    /// None for a shadow run's copy: the frame is settled by the active version's item.
    pub delivery: Option<Delivery>,
    /// The model name it runs under, and how a candidate version takes part.
    pub slot: Arc<Slot>,
    pub tag: Tag,
    pub meta: TensorMeta,
    pub tensor: Bytes,
    /// The frame's original image, where the tensor carried it on (evidence).
    pub original: Option<Bytes>,
    pub ready_at: Instant,
}

/// Where a frame goes.
pub(crate) enum Tag {
    /// The active version; no candidate is involved.
    Active,
    /// A canary frame: the candidate runs it and its result is published.
    Canary(Arc<Candidate>),
    /// The active version runs it and a copy runs on the shadow candidate.
    Paired(Arc<Candidate>),
    /// The shadow copy: compared, never published (its item has no delivery).
    Shadow(Arc<Candidate>),
}

impl Tag {
    pub fn route(&self) -> &'static str {
        match self {
            Tag::Active | Tag::Paired(_) => "active",
            Tag::Canary(_) => "canary",
            Tag::Shadow(_) => "shadow",
        }
    }
}

pub(crate) struct Routed {
    pub slot: Arc<Slot>,
    pub engine: Arc<EngineIn>,
    pub tag: Tag,
}

/// Which slot serves which station.
pub(crate) struct Routes {
    default: Arc<Slot>,
    by_station: HashMap<String, Arc<Slot>>,
}

impl Routes {
    /// `slots`' first is the default; stations name the others (`[station.<id>] model`).
    pub fn new(slots: &[Arc<Slot>], config: &Config) -> Routes {
        let default = slots[0].clone();
        let by_station = config
            .station
            .iter()
            .filter_map(|(station, s)| {
                let name = s.model.as_deref()?;
                let slot = slots.iter().find(|sl| sl.name == name)?;
                Some((station.clone(), slot.clone()))
            })
            .collect();
        Routes { default, by_station }
    }

    pub fn slot_for(&self, station: &str) -> &Arc<Slot> {
        self.by_station.get(station).unwrap_or(&self.default)
    }

    /// The engine a frame runs on, and how a candidate takes part. `None` when the
    /// slot has closed (shutdown).
    pub fn route(&self, station: &str, frame_id: &[u8]) -> Option<Routed> {
        let slot = self.slot_for(station).clone();
        let active = slot.active()?;
        let (engine, tag) = match slot.candidate() {
            Some(c) if c.takes(station, frame_id) => match c.plan {
                Plan::Canary { .. } => (c.engine.clone(), Tag::Canary(c)),
                Plan::Shadow { .. } => (active, Tag::Paired(c)),
            },
            _ => (active, Tag::Active),
        };
        Some(Routed { slot, engine, tag })
    }
}

pub(crate) fn label(info: &ModelInfo) -> String {
    format!("{}:{}", info.name, info.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: u32, score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            class_id,
            class_name: format!("c{class_id}"),
            score,
            bbox,
            box_px: bbox,
            track_id: None,
            classification: None,
            text: None,
        }
    }

    #[test]
    fn agreement_matches_boxes_of_one_class_by_iou_once_each() {
        let mut a = Agreement::default();
        let active = [det(0, 0.9, [0.1, 0.1, 0.3, 0.3]), det(1, 0.8, [0.5, 0.5, 0.9, 0.9]), det(0, 0.4, [0.6, 0.1, 0.7, 0.2])];
        let candidate = [
            // Same object, a little shifted: matched, score +0.05.
            det(0, 0.95, [0.11, 0.1, 0.31, 0.3]),
            // Same place, other class: not matched.
            det(0, 0.7, [0.5, 0.5, 0.9, 0.9]),
            // A second box on the first object: it is already taken.
            det(0, 0.5, [0.1, 0.1, 0.3, 0.3]),
        ];
        a.add(&active, &candidate);
        assert_eq!((a.frames, a.active_boxes, a.candidate_boxes, a.matched), (1, 3, 3, 1));
        assert!((a.precision() - 1.0 / 3.0).abs() < 1e-9 && (a.recall() - 1.0 / 3.0).abs() < 1e-9);
        assert!((a.score_shift() - 0.05).abs() < 1e-6, "{}", a.score_shift());
        // Identical results agree fully; two empty frames change nothing but the count.
        let mut same = Agreement::default();
        same.add(&active, &active);
        same.add(&[], &[]);
        assert_eq!((same.f1(), same.frames), (1.0, 2));
        let mut none = Agreement::default();
        none.add(&active, &[]);
        assert_eq!((none.precision(), none.recall(), none.f1()), (1.0, 0.0, 0.0));
    }

    #[test]
    fn the_fraction_of_a_frame_id_is_stable_and_spread_evenly() {
        assert_eq!(fraction(b"f-1", 0), fraction(b"f-1", 0));
        assert_ne!(fraction(b"f-1", 0), fraction(b"f-1", 1));
        let n = 20_000;
        let under = (0..n).filter(|i| fraction(format!("frame-{i}").as_bytes(), 0) < 0.2).count() as f64 / n as f64;
        // 20 % ± 4 standard deviations of a binomial share.
        assert!((under - 0.2).abs() < 4.0 * (0.2f64 * 0.8 / n as f64).sqrt(), "{under}");
    }

    fn engine() -> Arc<EngineIn> {
        let (tx, _rx) = mpsc::channel(1);
        Arc::new(EngineIn { tx, input: (32, 32), stats: Arc::default() })
    }

    fn candidate(slot: &Slot, version: &str) -> Arc<Candidate> {
        let c = Arc::new(Candidate {
            info: ModelInfo { name: "yolo".into(), version: version.into() },
            plan: Plan::Canary { share: 0.5, stations: Vec::new() },
            started_at: Utc::now(),
            engine: engine(),
            active_at_start: slot.active().unwrap().stats.tally(),
            book: Mutex::default(),
        });
        *slot.candidate.write().unwrap() = Some(c.clone());
        c
    }

    #[test]
    fn a_candidate_crossing_its_error_or_latency_line_is_ended_once_and_counted() {
        let metrics = Metrics::new();
        let mut config = Config::default();
        config.model.candidate_min_frames = 100;
        let slot = Slot::new("yolo");
        let active = engine();
        active.stats.add(1000, 1.0, true);
        *slot.active.write().unwrap() = Some(active.clone());

        // Errors: 5 of 100 frames is above the 2 % line, judged only from 100 frames on.
        let c = candidate(&slot, "2");
        c.engine.stats.add(5, 0.005, false);
        c.engine.stats.add(90, 0.09, true);
        assert!(slot.judge(&c, &config, &metrics).is_none(), "95 frames are too few to judge");
        c.engine.stats.add(5, 0.005, true);
        let ended = slot.judge(&c, &config, &metrics).expect("ended");
        assert_eq!((ended.reason.as_str(), ended.report.passes.errors), ("error_rate", 5));
        assert!(slot.candidate().is_none() && slot.judge(&c, &config, &metrics).is_none(), "ended once");
        assert_eq!(metrics.model_rollbacks_total.with_label_values(&["yolo", "error_rate"]).get(), 1);

        // Latency: 4 ms a frame against the active version's 1 ms over the same period,
        // above the 3x line (what the active version ran before the start is not compared).
        let c = candidate(&slot, "3");
        active.stats.add(100, 0.1, true);
        c.engine.stats.add(100, 0.25, true);
        assert!(slot.judge(&c, &config, &metrics).is_none(), "2.5x is within the line");
        c.engine.stats.add(100, 0.55, true);
        let ended = slot.judge(&c, &config, &metrics).expect("ended");
        assert_eq!(ended.reason, "latency", "{}", ended.detail);
        assert!(ended.detail.contains("4.00 ms") && ended.detail.contains("1.00 ms"), "{}", ended.detail);
        assert_eq!(slot.ended().unwrap().reason, "latency");
    }

    #[test]
    fn pass_tallies_give_the_time_per_frame_since_a_start() {
        let s = PassStats::default();
        s.add(8, 0.008, true);
        let start = s.tally();
        s.add(4, 0.008, true);
        s.add(2, 0.001, false);
        let since = s.tally().since(&start);
        assert_eq!((since.frames, since.errors), (4, 2));
        assert!((since.per_frame().unwrap() - 0.009 / 4.0).abs() < 1e-6);
    }
}
