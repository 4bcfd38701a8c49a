//! The rules in use: loaded at start, swapped whole on reload. A reload that fails
//! keeps the rules in use and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use visionq_contract::FrameResult;
use visionq_contract::decision::Decision;

use crate::decision::decide;
use crate::rules::{RuleSet, RulesError};

pub struct Decider {
    path: Option<PathBuf>,
    classes: Option<Vec<String>>,
    rules: RwLock<Arc<RuleSet>>,
}

impl Decider {
    /// The rules of `path` (none: no decisions), checked against the model's
    /// `classes` when known.
    pub fn load(path: Option<&Path>, classes: Option<Vec<String>>) -> Result<Decider, RulesError> {
        let rules = match path {
            Some(p) => RuleSet::load(p, classes.as_deref())?,
            None => RuleSet::default(),
        };
        Ok(Decider { path: path.map(Path::to_path_buf), classes, rules: RwLock::new(Arc::new(rules)) })
    }

    /// Whether results get a decision (a rules file is configured).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Reads the rules file again; on an error the rules in use stay.
    pub fn reload(&self) -> Result<(), RulesError> {
        let Some(path) = &self.path else { return Ok(()) };
        let fresh = RuleSet::load(path, self.classes.as_deref())?;
        *self.rules.write().expect("rules lock") = Arc::new(fresh);
        Ok(())
    }

    /// The decision on `result` under its station's rules; `None` without a rules file.
    pub fn decide(&self, result: &FrameResult) -> Option<Decision> {
        if !self.enabled() {
            return None;
        }
        let rules = self.rules.read().expect("rules lock").clone();
        Some(decide(result.status, &result.detections, rules.for_station(&result.station), None))
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
        r.detections = vec![Detection { class_id: 16, class_name: "dog".into(), score, bbox: [0.0; 4], box_px: [0.0; 4] }];
        r
    }

    #[test]
    fn a_bad_reload_keeps_the_rules_in_use() {
        let dir = std::env::temp_dir().join(format!("vq-decider-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(&path, "thresholds = { review = 0.4, accept = 0.5 }\n").unwrap();
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
    fn without_a_rules_file_no_decision_is_made() {
        let d = Decider::load(None, None).unwrap();
        assert!(!d.enabled());
        assert!(d.decide(&result("cam", 0.9)).is_none());
    }
}
