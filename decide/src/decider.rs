//! The rules in use: loaded at start, swapped whole on reload. A reload that fails
//! keeps the rules in use and says why. Beside the rules, each station's
//! expectation (set over the API, kept by the caller wherever it persists them):
//! a reload of the rules leaves the expectations as they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use visionq_contract::FrameResult;
use visionq_contract::decision::{Decision, Expectation};

use crate::decision::decide;
use crate::rules::{RuleSet, RulesError};

pub struct Decider {
    path: Option<PathBuf>,
    classes: Option<Vec<String>>,
    rules: RwLock<Arc<RuleSet>>,
    expectations: RwLock<HashMap<String, Arc<Expectation>>>,
}

impl Decider {
    /// The rules of `path` (none: no decisions), checked against the model's
    /// `classes` when known.
    pub fn load(path: Option<&Path>, classes: Option<Vec<String>>) -> Result<Decider, RulesError> {
        let rules = match path {
            Some(p) => RuleSet::load(p, classes.as_deref())?,
            None => RuleSet::default(),
        };
        Ok(Decider {
            path: path.map(Path::to_path_buf),
            classes,
            rules: RwLock::new(Arc::new(rules)),
            expectations: RwLock::new(HashMap::new()),
        })
    }

    /// Whether results get a decision (a rules file is configured).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// The lowest `review` threshold of the rules in use (see
    /// [`RuleSet::lowest_review`]); `None` without a rules file.
    pub fn lowest_review(&self) -> Option<f32> {
        self.enabled().then(|| self.rules.read().expect("rules lock").lowest_review())
    }

    /// Reads the rules file again; on an error the rules in use stay.
    pub fn reload(&self) -> Result<(), RulesError> {
        let Some(path) = &self.path else { return Ok(()) };
        let fresh = RuleSet::load(path, self.classes.as_deref())?;
        *self.rules.write().expect("rules lock") = Arc::new(fresh);
        Ok(())
    }

    /// Sets what `station` should see (None: clears it); later decisions of the
    /// station compare what was seen against it.
    pub fn set_expectation(&self, station: &str, expectation: Option<Expectation>) {
        let mut all = self.expectations.write().expect("expectations lock");
        match expectation {
            Some(e) => all.insert(station.to_string(), Arc::new(e)),
            None => all.remove(station),
        };
    }

    /// What `station` is told to expect, if anything.
    pub fn expectation(&self, station: &str) -> Option<Arc<Expectation>> {
        self.expectations.read().expect("expectations lock").get(station).cloned()
    }

    /// The business code `class_name` maps to under `station`'s rules (a reviewer's
    /// correction of the class); `None` without rules, or where the catalogue has no
    /// code close enough.
    pub fn code_for(&self, station: &str, class_name: &str) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        let rules = self.rules.read().expect("rules lock").clone();
        crate::decision::code_of(rules.for_station(station), class_name).ok().map(|(code, _, _)| code)
    }

    /// The decision on `result` under its station's rules and expectation; `None`
    /// without a rules file.
    pub fn decide(&self, result: &FrameResult) -> Option<Decision> {
        if !self.enabled() {
            return None;
        }
        let rules = self.rules.read().expect("rules lock").clone();
        let expectation = self.expectation(&result.station);
        Some(decide(result.status, &result.detections, rules.for_station(&result.station), expectation.as_deref()))
    }

    /// Whether `result`'s best reading (its best detection, or the best chain output
    /// the rules decide on) scores in its class's review band (at or
    /// above `review`, under `accept`) under its station's rules: such a frame is
    /// kept for retraining whatever the decision (a mismatch, a code the catalogue
    /// refused). False without a rules file.
    pub fn in_review_band(&self, result: &FrameResult) -> bool {
        if !self.enabled() {
            return false;
        }
        let rules = self.rules.read().expect("rules lock").clone();
        let station = rules.for_station(&result.station);
        crate::decision::best_reading(station, &result.detections).is_some_and(|(d, _, score)| {
            let t = station.thresholds_for(&d.class_name);
            score >= t.review && score < t.accept
        })
    }

    /// Drops from `result` the detections under their class's `show` threshold in
    /// its station's rules: a detection that is not shown is not returned, pushed or
    /// stored either. Returns how many were dropped; none without a rules file.
    pub fn retain_shown(&self, result: &mut FrameResult) -> usize {
        if !self.enabled() {
            return 0;
        }
        let rules = self.rules.read().expect("rules lock").clone();
        let station = rules.for_station(&result.station);
        let before = result.detections.len();
        result.detections.retain(|d| station.shows(d));
        before - result.detections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use visionq_contract::decision::Outcome;
    use visionq_contract::{Detection, FrameMeta, ModelInfo, ResultStatus, Timings};

    fn result(station: &str, score: f32) -> FrameResult {
        let now = chrono::Utc::now();
        let meta = FrameMeta {
            frame_id: uuid::Uuid::nil(),
            station: station.into(),
            width: 100,
            height: 100,
            orientation: 1,
            captured_at: None,
            received_at: now,
            published_at: now,
            deadline: None,
            timings_ms: Timings::new(),
        };
        let mut r = FrameResult::failed(&meta, ModelInfo::default(), "x");
        r.status = ResultStatus::Ok;
        r.error = None;
        r.detections = vec![Detection {
            class_id: 16,
            class_name: "dog".into(),
            score,
            bbox: [0.0; 4],
            box_px: [0.0; 4],
            track_id: None,
            classification: None,
            text: None,
        }];
        r
    }

    /// A rules file of `text` in a scratch folder of its own (`tag`).
    fn rules_file(tag: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vq-decider-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_bad_reload_keeps_the_rules_in_use() {
        let path = rules_file("reload", "thresholds = { review = 0.4, accept = 0.5 }\n");
        let classes = Some(vec!["dog".to_string()]);
        let d = Decider::load(Some(&path), classes).unwrap();
        assert_eq!(d.decide(&result("cam", 0.6)).unwrap().outcome, Outcome::Accepted);
        std::fs::write(&path, "thresholds = { review = 0.4, accept = 0.7 }\n").unwrap();
        d.reload().unwrap();
        assert_eq!(d.decide(&result("cam", 0.6)).unwrap().outcome, Outcome::NeedsReview);
        std::fs::write(&path, "[rules.a]\nclass.unicorn = { accept = 0.1 }\n").unwrap();
        let e = d.reload().unwrap_err();
        assert!(e.reason.contains("unicorn"), "{e}");
        assert_eq!(d.decide(&result("cam", 0.6)).unwrap().outcome, Outcome::NeedsReview, "the rules in use stay");
    }

    #[test]
    fn a_stations_expectation_applies_to_its_results_only_until_cleared() {
        let path = rules_file("exp", "thresholds = { review = 0.4, accept = 0.5 }\n");
        let d = Decider::load(Some(&path), None).unwrap();
        let note = Expectation {
            reference: "DN-7".into(),
            codes: vec![visionq_contract::decision::Expected { code: "cat".into(), quantity: None }],
        };
        d.set_expectation("cam", Some(note.clone()));
        assert_eq!(d.expectation("cam").as_deref(), Some(&note));
        let x = d.decide(&result("cam", 0.9)).unwrap();
        assert_eq!((x.outcome, x.expectation_ref.as_deref()), (Outcome::Mismatch, Some("DN-7")), "{x:?}");
        let other = d.decide(&result("gate", 0.9)).unwrap();
        assert_eq!((other.outcome, other.expectation_ref), (Outcome::Accepted, None), "another station is not bound by it");
        d.reload().unwrap();
        assert_eq!(d.decide(&result("cam", 0.9)).unwrap().outcome, Outcome::Mismatch, "a reload of the rules keeps it");
        d.set_expectation("cam", None);
        assert!(d.expectation("cam").is_none());
        assert_eq!(d.decide(&result("cam", 0.9)).unwrap().outcome, Outcome::Accepted);
    }

    #[test]
    fn detections_under_their_stations_show_threshold_are_dropped() {
        let rules = "thresholds = { show = 0.3, review = 0.6, accept = 0.8 }\n\
                     [rules.strict]\nclass.dog = { show = 0.5 }\n[station.cam]\nrules = \"strict\"\n";
        let path = rules_file("show", rules);
        let d = Decider::load(Some(&path), Some(vec!["dog".into(), "cat".into()])).unwrap();
        let two = |station: &str| {
            let mut r = result(station, 0.4);
            r.detections.push(Detection {
                class_id: 15,
                class_name: "cat".into(),
                score: 0.2,
                bbox: [0.0; 4],
                box_px: [0.0; 4],
                track_id: None,
                classification: None,
                text: None,
            });
            r
        };
        let mut cam = two("cam");
        assert_eq!(d.retain_shown(&mut cam), 2, "dog 0.4 under cam's 0.5, cat 0.2 under 0.3");
        assert!(cam.detections.is_empty());
        let mut gate = two("gate");
        assert_eq!(d.retain_shown(&mut gate), 1, "gate has the global show 0.3: the dog stays");
        assert_eq!(gate.detections[0].class_name, "dog");
        let mut plain = two("gate");
        assert_eq!(Decider::load(None, None).unwrap().retain_shown(&mut plain), 0, "no rules file: nothing dropped");
    }

    #[test]
    fn the_review_band_is_the_best_detections_classs_review_to_accept() {
        let path = rules_file("band", "thresholds = { show = 0.3, review = 0.6, accept = 0.8 }\n");
        let d = Decider::load(Some(&path), None).unwrap();
        for (score, band) in [(0.59, false), (0.6, true), (0.79, true), (0.8, false), (0.2, false)] {
            assert_eq!(d.in_review_band(&result("cam", score)), band, "{score}");
        }
        assert!(!Decider::load(None, None).unwrap().in_review_band(&result("cam", 0.7)), "no rules file: no band");
    }

    #[test]
    fn without_a_rules_file_no_decision_is_made() {
        let d = Decider::load(None, None).unwrap();
        assert!(!d.enabled());
        assert!(d.decide(&result("cam", 0.9)).is_none());
    }
}
