//! Model drift (issue 16): for each model version at each station, the detection
//! scores and detections per frame of its recent results against the baseline that
//! version set there.
//!
//! A version's first `drift_baseline_frames` answered frames at a station set its
//! baseline: the distribution of its detection scores in ten bins of 0.1 and its
//! detections per frame. The baseline is stored in the results database (the first
//! replica to finish one stores it, the others adopt that one), so a restart or a
//! second results replica compares against the same baseline instead of learning a
//! new one from frames that may already have drifted. After that, the station's last
//! `drift_window_frames` frames are compared with it: the population stability
//! index (PSI) of the scores, and the ratio of detections per frame. Either crossing
//! its configured line marks the pair as drifting, on `/metrics`
//! (`visionq_model_drift{model,version,station}` and the two measures), on
//! `GET /v1/drift` and the dashboard.
//!
//! Only answered frames (`ok`) count; errors and expired frames say nothing about
//! the model's view of the scene. The number of pairs followed is bounded
//! ([`MAX_TRACKS`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use visionq_contract::config::DriftConfig;
use visionq_contract::{FrameResult, Metrics, ResultStatus};

use crate::store::{SharedStore, StoredBaseline};

/// Score bins (of 0.1 each, over 0..=1).
pub const BINS: usize = 10;
/// Model version × station pairs followed at most (a bound on memory and series).
pub const MAX_TRACKS: usize = 1024;
/// PSI is computed only when both sides hold at least this many detections: fewer
/// say little about a distribution.
pub const MIN_DETECTIONS_FOR_PSI: u64 = 30;
/// Detections per frame below this count as this, so that "0.00 against 0.01" is
/// not a drift.
const DETECTIONS_FLOOR: f64 = 0.05;

/// The scores and detections of a run of frames.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub frames: u64,
    pub detections: u64,
    /// Detections per score bin.
    pub bins: [u64; BINS],
    pub score_sum: f64,
}

/// One frame's share of a profile.
#[derive(Debug, Clone, Default)]
struct FrameStat {
    bins: [u16; BINS],
    detections: u32,
    score_sum: f64,
}

fn bin(score: f32) -> usize {
    ((score.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1)
}

impl FrameStat {
    fn of(r: &FrameResult) -> FrameStat {
        let mut f = FrameStat::default();
        for d in &r.detections {
            f.bins[bin(d.score)] = f.bins[bin(d.score)].saturating_add(1);
            f.detections += 1;
            f.score_sum += d.score as f64;
        }
        f
    }
}

impl Profile {
    fn add(&mut self, f: &FrameStat) {
        self.frames += 1;
        self.detections += f.detections as u64;
        self.score_sum += f.score_sum;
        for (b, n) in self.bins.iter_mut().zip(f.bins) {
            *b += n as u64;
        }
    }

    fn remove(&mut self, f: &FrameStat) {
        self.frames -= 1;
        self.detections -= f.detections as u64;
        self.score_sum -= f.score_sum;
        for (b, n) in self.bins.iter_mut().zip(f.bins) {
            *b -= n as u64;
        }
    }

    pub fn detections_per_frame(&self) -> f64 {
        if self.frames == 0 { 0.0 } else { self.detections as f64 / self.frames as f64 }
    }

    pub fn mean_score(&self) -> Option<f64> {
        (self.detections > 0).then(|| self.score_sum / self.detections as f64)
    }
}

/// The population stability index of `now`'s score bins against `base`'s (each bin
/// smoothed by half a detection), or None when either holds fewer than
/// [`MIN_DETECTIONS_FOR_PSI`] detections.
pub fn psi(base: &Profile, now: &Profile) -> Option<f64> {
    if base.detections < MIN_DETECTIONS_FOR_PSI || now.detections < MIN_DETECTIONS_FOR_PSI {
        return None;
    }
    let share = |p: &Profile, i: usize| (p.bins[i] as f64 + 0.5) / (p.detections as f64 + 0.5 * BINS as f64);
    Some((0..BINS).map(|i| (share(now, i) - share(base, i)) * (share(now, i) / share(base, i)).ln()).sum())
}

/// `now`'s detections per frame over `base`'s (each at least [`DETECTIONS_FLOOR`]).
pub fn detections_ratio(base: &Profile, now: &Profile) -> f64 {
    now.detections_per_frame().max(DETECTIONS_FLOOR) / base.detections_per_frame().max(DETECTIONS_FLOOR)
}

/// Where a model version stands at a station.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// Its baseline is still being set.
    Learning,
    /// Baseline set; the window is not full yet.
    Filling,
    /// The window holds to the baseline.
    Steady,
    /// The window crossed a line (`reasons` says which).
    Drifting,
}

/// One model version at one station (`GET /v1/drift`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DriftRow {
    pub model: String,
    pub version: String,
    pub station: String,
    pub state: DriftState,
    /// Why it is drifting (empty otherwise).
    pub reasons: Vec<String>,
    /// Frames in the baseline (or counted towards it while learning).
    pub baseline_frames: u64,
    pub baseline_detections_per_frame: f64,
    pub baseline_mean_score: Option<f64>,
    /// When the baseline was set (stored); None while learning.
    pub baseline_set_at: Option<DateTime<Utc>>,
    pub window_frames: u64,
    pub window_detections_per_frame: f64,
    pub window_mean_score: Option<f64>,
    /// The window's score PSI against the baseline (None: too few detections).
    pub psi: Option<f64>,
    pub detections_ratio: Option<f64>,
}

#[derive(Debug, Default)]
struct Track {
    /// Set once learnt (or read back from the store).
    baseline: Option<(Profile, DateTime<Utc>)>,
    /// The frames counted towards the baseline while learning.
    learning: Profile,
    /// Whether a store write of this track's baseline is under way.
    storing: bool,
    window: VecDeque<FrameStat>,
    now: Profile,
    /// Frames since the gauges were last set.
    unexported: u32,
}

/// The gauges of a pair are set every this many frames (and when its window fills):
/// the measures move slowly, and the results consumer is on every frame's path.
const EXPORT_EVERY: u32 = 25;

type Key = (String, String, String);

/// The drift monitor of a results process.
pub struct Drift {
    config: DriftConfig,
    metrics: Arc<Metrics>,
    store: SharedStore,
    tracks: Mutex<HashMap<Key, Track>>,
}

impl Drift {
    /// A monitor holding the baselines already stored.
    pub async fn start(config: DriftConfig, metrics: Arc<Metrics>, store: SharedStore) -> Arc<Drift> {
        let drift = Arc::new(Drift { config, metrics, store: store.clone(), tracks: Mutex::new(HashMap::new()) });
        match store.drift_baselines().await {
            Ok(stored) => {
                let n = stored.len();
                for b in stored {
                    drift.adopt(b);
                }
                tracing::info!(baselines = n, "drift baselines read from the store");
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the drift baselines; they are learnt again"),
        }
        drift
    }

    /// Takes a stored baseline as its pair's (dropping what was being learnt).
    fn adopt(&self, b: StoredBaseline) {
        let profile: Profile = match serde_json::from_str(&b.profile) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(model = %b.model, version = %b.version, station = %b.station, error = %e, "a stored drift baseline is not readable; learning it again");
                return;
            }
        };
        let mut tracks = self.tracks.lock().expect("drift lock");
        if tracks.len() >= MAX_TRACKS && !tracks.contains_key(&(b.model.clone(), b.version.clone(), b.station.clone())) {
            return;
        }
        let t = tracks.entry((b.model, b.version, b.station)).or_default();
        t.baseline = Some((profile, b.set_at));
        t.learning = Profile::default();
        t.storing = false;
    }

    /// Counts one result; when it completes a baseline, stores that (off this path).
    pub fn observe(self: &Arc<Self>, r: &FrameResult) {
        if r.status != ResultStatus::Ok {
            return;
        }
        let key: Key = (r.model.name.clone(), r.model.version.clone(), r.station.clone());
        let stat = FrameStat::of(r);
        let mut tracks = self.tracks.lock().expect("drift lock");
        if tracks.len() >= MAX_TRACKS && !tracks.contains_key(&key) {
            return;
        }
        let t = tracks.entry(key.clone()).or_default();
        if t.baseline.is_none() {
            t.learning.add(&stat);
            if t.learning.frames >= self.config.drift_baseline_frames as u64 && !t.storing {
                t.storing = true;
                let b = StoredBaseline {
                    model: key.0.clone(),
                    version: key.1.clone(),
                    station: key.2.clone(),
                    profile: serde_json::to_string(&t.learning).expect("a profile serialises"),
                    set_at: Utc::now(),
                };
                let me = self.clone();
                tokio::spawn(async move { me.store_baseline(b).await });
            }
            return;
        }
        let was_full = t.window.len() >= self.config.drift_window_frames;
        t.now.add(&stat);
        t.window.push_back(stat);
        while t.window.len() > self.config.drift_window_frames {
            let old = t.window.pop_front().expect("not empty");
            t.now.remove(&old);
        }
        t.unexported += 1;
        let just_filled = !was_full && t.window.len() == self.config.drift_window_frames;
        if t.unexported < EXPORT_EVERY && !just_filled {
            return;
        }
        t.unexported = 0;
        let row = self.row(&key, t);
        drop(tracks);
        self.export(&row);
    }

    async fn store_baseline(self: Arc<Self>, b: StoredBaseline) {
        let (model, version, station) = (b.model.clone(), b.version.clone(), b.station.clone());
        match self.store.put_drift_baseline(&b).await {
            Ok(stored) => {
                tracing::info!(%model, %version, %station, ours = (stored.set_at == b.set_at), "drift baseline set");
                self.adopt(stored);
            }
            Err(e) => {
                // Kept in memory; stored again when the next frame comes.
                tracing::warn!(%model, %version, %station, error = %e, "cannot store a drift baseline; trying again with the next frame");
                if let Some(t) = self.tracks.lock().expect("drift lock").get_mut(&(model, version, station)) {
                    t.storing = false;
                }
            }
        }
    }

    fn row(&self, key: &Key, t: &Track) -> DriftRow {
        let (model, version, station) = key.clone();
        let Some((base, set_at)) = &t.baseline else {
            return DriftRow {
                model,
                version,
                station,
                state: DriftState::Learning,
                reasons: Vec::new(),
                baseline_frames: t.learning.frames,
                baseline_detections_per_frame: t.learning.detections_per_frame(),
                baseline_mean_score: t.learning.mean_score(),
                baseline_set_at: None,
                window_frames: 0,
                window_detections_per_frame: 0.0,
                window_mean_score: None,
                psi: None,
                detections_ratio: None,
            };
        };
        let full = t.now.frames >= self.config.drift_window_frames as u64;
        let psi = psi(base, &t.now);
        let ratio = detections_ratio(base, &t.now);
        let mut reasons = Vec::new();
        if full {
            if let Some(p) = psi.filter(|p| *p >= self.config.drift_max_psi) {
                reasons.push(format!("score PSI {p:.3} >= {}", self.config.drift_max_psi));
            }
            let max = self.config.drift_max_detections_ratio;
            if ratio >= max || ratio <= 1.0 / max {
                reasons.push(format!(
                    "detections per frame {:.2} against {:.2} at the baseline ({ratio:.2}x, the line is {max}x either way)",
                    t.now.detections_per_frame(),
                    base.detections_per_frame()
                ));
            }
        }
        DriftRow {
            model,
            version,
            station,
            state: match (full, reasons.is_empty()) {
                (false, _) => DriftState::Filling,
                (true, true) => DriftState::Steady,
                (true, false) => DriftState::Drifting,
            },
            reasons,
            baseline_frames: base.frames,
            baseline_detections_per_frame: base.detections_per_frame(),
            baseline_mean_score: base.mean_score(),
            baseline_set_at: Some(*set_at),
            window_frames: t.now.frames,
            window_detections_per_frame: t.now.detections_per_frame(),
            window_mean_score: t.now.mean_score(),
            psi,
            detections_ratio: Some(ratio),
        }
    }

    /// The gauges of a pair whose window is full.
    fn export(&self, row: &DriftRow) {
        if !matches!(row.state, DriftState::Steady | DriftState::Drifting) {
            return;
        }
        let labels = [row.model.as_str(), row.version.as_str(), row.station.as_str()];
        let m = &self.metrics;
        m.model_drift.with_label_values(&labels).set(i64::from(row.state == DriftState::Drifting));
        if let Some(p) = row.psi {
            m.model_drift_psi.with_label_values(&labels).set(p);
        }
        if let Some(r) = row.detections_ratio {
            m.model_drift_detections_ratio.with_label_values(&labels).set(r);
        }
    }

    /// Every pair followed, by model, version and station.
    pub fn rows(&self) -> Vec<DriftRow> {
        let tracks = self.tracks.lock().expect("drift lock");
        let mut rows: Vec<DriftRow> = tracks.iter().map(|(k, t)| self.row(k, t)).collect();
        rows.sort_by(|a, b| (&a.model, &a.version, &a.station).cmp(&(&b.model, &b.version, &b.station)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(frames: u64, scores: &[(f32, u64)]) -> Profile {
        let mut p = Profile { frames, ..Default::default() };
        for &(s, n) in scores {
            p.bins[bin(s)] += n;
            p.detections += n;
            p.score_sum += s as f64 * n as f64;
        }
        p
    }

    #[test]
    fn scores_fall_in_bins_of_a_tenth() {
        assert_eq!([bin(0.0), bin(0.09), bin(0.1), bin(0.55), bin(0.99), bin(1.0), bin(1.7), bin(-1.0)], [0, 0, 1, 5, 9, 9, 9, 0]);
    }

    #[test]
    fn psi_is_small_for_the_same_distribution_and_large_for_a_shift() {
        let base = profile(100, &[(0.35, 40), (0.65, 40), (0.85, 20)]);
        assert!(psi(&base, &base).unwrap() < 1e-9);
        let alike = profile(100, &[(0.35, 38), (0.65, 42), (0.85, 20)]);
        assert!(psi(&base, &alike).unwrap() < 0.01, "{:?}", psi(&base, &alike));
        let lower = profile(100, &[(0.15, 50), (0.35, 40), (0.65, 10)]);
        assert!(psi(&base, &lower).unwrap() > 1.0, "{:?}", psi(&base, &lower));
        assert_eq!(psi(&base, &profile(100, &[(0.5, 29)])), None, "too few detections");
    }

    #[test]
    fn the_detections_ratio_has_a_floor() {
        let base = profile(100, &[(0.5, 200)]);
        assert!((detections_ratio(&base, &profile(100, &[(0.5, 300)])) - 1.5).abs() < 1e-9);
        assert!((detections_ratio(&base, &profile(100, &[])) - 0.025).abs() < 1e-9);
        assert_eq!(detections_ratio(&profile(100, &[]), &profile(100, &[(0.5, 1)])), 1.0, "0 against 0.01 is no drift");
    }

    #[test]
    fn a_frame_stat_adds_and_removes_exactly() {
        let mut p = profile(3, &[(0.5, 4)]);
        let before = p.clone();
        let f = FrameStat { bins: [0, 1, 0, 0, 0, 0, 0, 2, 0, 0], detections: 3, score_sum: 1.6 };
        p.add(&f);
        assert_eq!((p.frames, p.detections, p.bins[7]), (4, 7, 2));
        p.remove(&f);
        assert_eq!(p.frames, before.frames);
        assert_eq!((p.detections, p.bins), (before.detections, before.bins));
        assert!((p.score_sum - before.score_sum).abs() < 1e-9);
    }
}
