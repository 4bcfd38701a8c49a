//! Alert rules (`[[rule]]` tables in the config file, issue 18): what in a station's
//! results, decisions or silence raises an alert, how loud, and how often. The
//! `events` crate evaluates them and sends alerts to the sinks that take them; this
//! is only the shape of a rule and what counts as a hit, which is pure.

use serde::{Deserialize, Serialize};

use crate::decision::Outcome;
use crate::{FrameResult, ResultStatus};

/// What a rule watches.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A detection of one of `classes` scoring at least `min_score` in `frames` of
    /// the station's last `of_last` frames.
    Detections,
    /// A decision with one of `outcomes` in `frames` of the last `of_last` frames.
    Decision,
    /// No frame from the station for `after_s` seconds.
    Silent,
    /// A result with one of `statuses` (`error`, `expired`) in `frames` of the last
    /// `of_last` frames: a station's error rate over a line.
    Status,
    /// A pipeline `queue` (`frames`, `tensors`, `results`) holding more than `above`
    /// messages for `for_s` seconds: not a station's, its alerts name the station
    /// [`PIPELINE`].
    Queue,
}

/// The station an alert about the whole pipeline (a queue) names.
pub const PIPELINE: &str = "_pipeline";

/// The queues a `queue` rule may watch.
pub const QUEUES: [&str; 3] = ["frames", "tensors", "results"];

/// How loud an alert is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One `[[rule]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The rule's name: 1-64 of `[A-Za-z0-9._-]`, unique; it names the alert.
    pub name: String,
    /// `detections`, `decision` or `silent`.
    pub kind: RuleKind,
    /// The stations it watches (empty: every station).
    #[serde(default)]
    pub stations: Vec<String>,
    /// `detections`: the classes that count (empty: any class).
    #[serde(default)]
    pub classes: Vec<String>,
    /// `detections`: the score a detection must reach to count.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// `decision`: the outcomes that count (`mismatch`, `needs_review`, …).
    #[serde(default)]
    pub outcomes: Vec<Outcome>,
    /// `status`: the result statuses that count (`error`, `expired`).
    #[serde(default)]
    pub statuses: Vec<ResultStatus>,
    /// `queue`: the queue watched (`frames`, `tensors` or `results`).
    #[serde(default)]
    pub queue: Option<String>,
    /// `queue`: the depth it must stay above.
    #[serde(default)]
    pub above: u64,
    /// `queue`: for this many seconds (0: as soon as a reading is above).
    #[serde(default)]
    pub for_s: u64,
    /// `detections`, `decision`: how many of the last `of_last` frames must count
    /// (the debounce: one odd frame does not raise an alert).
    #[serde(default = "one")]
    pub frames: u32,
    /// `detections`, `decision`: the window, in frames (default: `frames`).
    #[serde(default)]
    pub of_last: Option<u32>,
    /// `silent`: seconds without a frame.
    #[serde(default)]
    pub after_s: u64,
    /// `info`, `warning` (the default) or `critical`.
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// After an alert of this rule for a station, no new one for it within this many
    /// seconds, even if the first resolved meanwhile.
    #[serde(default = "default_cooldown_s")]
    pub cooldown_s: u64,
}

fn default_min_score() -> f32 {
    0.5
}
fn one() -> u32 {
    1
}
fn default_severity() -> Severity {
    Severity::Warning
}
fn default_cooldown_s() -> u64 {
    60
}

/// The longest window a rule may keep per station.
pub const MAX_WINDOW: u32 = 1000;

impl AlertRule {
    /// The window of frames the rule counts in.
    pub fn window(&self) -> u32 {
        self.of_last.unwrap_or(self.frames)
    }

    /// Whether the rule watches `station`.
    pub fn watches(&self, station: &str) -> bool {
        crate::names::listed(&self.stations, station)
    }

    /// Whether `r` counts towards the rule (never, for `silent`).
    pub fn hit(&self, r: &FrameResult) -> bool {
        match self.kind {
            RuleKind::Detections => {
                r.detections.iter().any(|d| crate::names::listed(&self.classes, &d.class_name) && d.score >= self.min_score)
            }
            RuleKind::Decision => r.decision.as_ref().is_some_and(|d| self.outcomes.contains(&d.outcome)),
            RuleKind::Status => self.statuses.contains(&r.status),
            RuleKind::Silent | RuleKind::Queue => false,
        }
    }

    /// What the rule says, in words (an alert's `reason`).
    pub fn describe(&self) -> String {
        let window = match (self.frames, self.window()) {
            (1, 1) => "a frame".to_string(),
            (n, m) => format!("{n} of the last {m} frames"),
        };
        match self.kind {
            RuleKind::Detections => {
                let what = if self.classes.is_empty() { "a detection".to_string() } else { self.classes.join(" or ") };
                format!("{what} scoring at least {} in {window}", self.min_score)
            }
            RuleKind::Decision => {
                let outcomes: Vec<&str> = self.outcomes.iter().map(|o| o.as_str()).collect();
                format!("decision {} in {window}", outcomes.join(" or "))
            }
            RuleKind::Status => {
                let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
                format!("status {} in {window}", statuses.join(" or "))
            }
            RuleKind::Silent => format!("no frame for {} s", self.after_s),
            RuleKind::Queue => {
                format!("queue {} above {} for {} s", self.queue.as_deref().unwrap_or("?"), self.above, self.for_s)
            }
        }
    }

    /// Why this rule cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let name = &self.name;
        if let Some(p) = crate::names::named_table_problem("rule", name, &self.stations) {
            return Some(p);
        }
        let counted = !self.classes.is_empty()
            || !self.outcomes.is_empty()
            || !self.statuses.is_empty()
            || self.frames != 1
            || self.of_last.is_some();
        let queued = self.queue.is_some() || self.above != 0 || self.for_s != 0;
        if self.kind != RuleKind::Queue && queued {
            return Some(format!("rule `{name}`: `queue`, `above` and `for_s` are for queue rules"));
        }
        match self.kind {
            RuleKind::Queue => {
                if !self.queue.as_deref().is_some_and(|q| QUEUES.contains(&q)) {
                    return Some(format!("rule `{name}`: a queue rule needs `queue` = one of {QUEUES:?}"));
                }
                if counted || self.after_s != 0 || !self.stations.is_empty() {
                    return Some(format!("rule `{name}`: a queue rule takes `queue`, `above` and `for_s` only"));
                }
                return None;
            }
            RuleKind::Status if self.statuses.is_empty() => {
                return Some(format!("rule `{name}`: a status rule needs `statuses` (e.g. [\"error\", \"expired\"])"));
            }
            RuleKind::Status if !self.classes.is_empty() || !self.outcomes.is_empty() => {
                return Some(format!("rule `{name}`: `classes` and `outcomes` are not for status rules"));
            }
            RuleKind::Silent => {
                if self.after_s == 0 {
                    return Some(format!("rule `{name}`: a silent rule needs `after_s` (seconds without a frame, at least 1)"));
                }
                if counted {
                    return Some(format!("rule `{name}`: `classes`, `outcomes`, `frames` and `of_last` are not for silent rules"));
                }
                return None;
            }
            RuleKind::Detections | RuleKind::Decision if !self.statuses.is_empty() => {
                return Some(format!("rule `{name}`: `statuses` are for status rules"));
            }
            RuleKind::Detections if !self.outcomes.is_empty() => {
                return Some(format!("rule `{name}`: `outcomes` are for decision rules"));
            }
            RuleKind::Decision if self.outcomes.is_empty() => {
                return Some(format!("rule `{name}`: a decision rule needs `outcomes` (e.g. [\"mismatch\"])"));
            }
            RuleKind::Decision if !self.classes.is_empty() => {
                return Some(format!("rule `{name}`: `classes` are for detections rules"));
            }
            _ => {}
        }
        if self.after_s != 0 {
            return Some(format!("rule `{name}`: `after_s` is for silent rules"));
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            return Some(format!("rule `{name}`: min_score must be within 0..1"));
        }
        if self.frames == 0 || self.window() < self.frames || self.window() > MAX_WINDOW {
            return Some(format!("rule `{name}`: frames must be at least 1 and at most of_last, of_last at most {MAX_WINDOW}"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> AlertRule {
        toml::from_str(&format!("name = \"r\"\n{toml_text}")).unwrap()
    }

    #[test]
    fn defaults_and_problems() {
        let r = rule("kind = \"detections\"\nclasses = [\"person\"]");
        assert_eq!((r.frames, r.window(), r.min_score, r.severity, r.cooldown_s), (1, 1, 0.5, Severity::Warning, 60));
        assert_eq!(r.problem(), None);
        assert_eq!(r.describe(), "person scoring at least 0.5 in a frame");
        let r = rule("kind = \"detections\"\nframes = 3\nof_last = 5");
        assert_eq!(r.describe(), "a detection scoring at least 0.5 in 3 of the last 5 frames");
        for (text, why) in [
            ("kind = \"detections\"\nframes = 4\nof_last = 3", "at most of_last"),
            ("kind = \"detections\"\nframes = 0", "at least 1"),
            ("kind = \"decision\"", "needs `outcomes`"),
            ("kind = \"decision\"\noutcomes = [\"mismatch\"]\nclasses = [\"dog\"]", "for detections rules"),
            ("kind = \"silent\"", "needs `after_s`"),
            ("kind = \"silent\"\nafter_s = 5\nframes = 2", "not for silent rules"),
            ("kind = \"detections\"\nafter_s = 5", "for silent rules"),
            ("kind = \"detections\"\nmin_score = 1.5", "within 0..1"),
            ("kind = \"detections\"\nstations = [\"no spaces\"]", "not a station id"),
            ("kind = \"status\"", "needs `statuses`"),
            ("kind = \"queue\"\nabove = 5", "needs `queue`"),
            ("kind = \"queue\"\nqueue = \"frames\"\nstations = [\"a\"]", "takes `queue`, `above` and `for_s` only"),
            ("kind = \"detections\"\nabove = 5", "for queue rules"),
        ] {
            let p = rule(text).problem().unwrap_or_default();
            assert!(p.contains(why), "{text}: {p}");
        }
        assert!(toml::from_str::<AlertRule>("name = \"r\"\nkind = \"silent\"\nafter_s = 5\nseverity = \"loud\"").is_err());
        let r = rule("kind = \"status\"\nstatuses = [\"error\", \"expired\"]\nframes = 3\nof_last = 10");
        assert_eq!((r.problem(), r.describe()), (None, "status error or expired in 3 of the last 10 frames".to_string()));
        let r = rule("kind = \"queue\"\nqueue = \"frames\"\nabove = 1000\nfor_s = 10");
        assert_eq!((r.problem(), r.describe()), (None, "queue frames above 1000 for 10 s".to_string()));
    }
}
