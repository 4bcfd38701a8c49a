//! Alert rules at work (`[[rule]]`, [`visionq_contract::alert`]): per rule and
//! station, the last `of_last` frames' hits (the debounce), whether it is firing,
//! when it last fired (the cool-down) and when the station last sent a frame (the
//! silence). An alert fires when `frames` of the window count and the cool-down has
//! passed, and resolves when they no longer do (silence: when a frame comes; a
//! queue: when its depth is back at or under the line); each change is one [`Alert`]. The state is this process's: with several results
//! replicas each sees its share of the frames (docs/EVENTS.md).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use visionq_contract::FrameResult;
use visionq_contract::alert::{AlertRule, PIPELINE, RuleKind, Severity};

/// Alerts kept for the dashboard, newest last.
const RECENT: usize = 200;

/// Firing, or resolved.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One change of an alert: it fired, or it resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    pub station: String,
    pub severity: Severity,
    pub state: AlertState,
    /// When it started firing (the same on its resolution: the pair's key).
    pub since: DateTime<Utc>,
    /// When it reached this state.
    pub at: DateTime<Utc>,
    /// What the rule says, and what was seen.
    pub reason: String,
    /// The frame that made it fire or resolve, when a frame did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_id: Option<Uuid>,
}

/// One rule's state for one station.
#[derive(Debug)]
struct Watch {
    /// The last `of_last` frames: whether each counted.
    window: VecDeque<bool>,
    /// The alert firing now, if one is.
    firing: Option<Alert>,
    last_fired: Option<DateTime<Utc>>,
    last_frame: DateTime<Utc>,
    /// A queue rule: over its line since.
    over_since: Option<DateTime<Utc>>,
}

impl Watch {
    fn new(now: DateTime<Utc>) -> Watch {
        Watch { window: VecDeque::new(), firing: None, last_fired: None, last_frame: now, over_since: None }
    }

    fn cooled(&self, rule: &AlertRule, now: DateTime<Utc>) -> bool {
        self.last_fired.is_none_or(|t| (now - t).num_milliseconds() >= rule.cooldown_s as i64 * 1000)
    }
}

#[derive(Default)]
struct State {
    watches: HashMap<(usize, String), Watch>,
    /// Stations seen, and those configured: the ones a silent rule without
    /// `stations` watches.
    stations: HashSet<String>,
    recent: VecDeque<Alert>,
}

/// The rules and their state.
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    started: DateTime<Utc>,
    state: Mutex<State>,
}

impl AlertEngine {
    /// The rules, watching the `known` stations (the configured ones) from `now`.
    pub fn new(rules: Vec<AlertRule>, known: &[String], now: DateTime<Utc>) -> AlertEngine {
        let mut state = State::default();
        state.stations.extend(known.iter().cloned());
        for rule in &rules {
            state.stations.extend(rule.stations.iter().cloned());
        }
        AlertEngine { rules, started: now, state: Mutex::new(state) }
    }

    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Whether any rule waits on the clock (silence, a queue): something must call
    /// [`Self::tick`].
    pub fn needs_clock(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.kind, RuleKind::Silent | RuleKind::Queue))
    }

    /// Counts `results` (in order) towards every rule watching their stations; the
    /// alerts that fired or resolved.
    pub fn observe(&self, results: &[FrameResult]) -> Vec<Alert> {
        let mut out = Vec::new();
        let mut st = self.state.lock().expect("alerts lock");
        for r in results {
            st.stations.insert(r.station.clone());
            let at = r.completed_at;
            let counted = |rule: &&AlertRule| rule.kind != RuleKind::Queue && rule.watches(&r.station);
            for (i, rule) in self.rules.iter().enumerate().filter(|(_, rule)| counted(rule)) {
                let w = st.watches.entry((i, r.station.clone())).or_insert_with(|| Watch::new(self.started));
                w.last_frame = w.last_frame.max(at);
                if rule.kind == RuleKind::Silent {
                    if let Some(firing) = w.firing.take() {
                        out.push(alert(
                            rule,
                            &r.station,
                            AlertState::Resolved,
                            firing.since,
                            at,
                            "a frame came".into(),
                            Some(r.frame_id),
                        ));
                    }
                    continue;
                }
                w.window.push_back(rule.hit(r));
                while w.window.len() > rule.window() as usize {
                    w.window.pop_front();
                }
                let hits = w.window.iter().filter(|h| **h).count() as u32;
                let seen = format!("{hits} counted in the last {}", w.window.len());
                if hits >= rule.frames && w.firing.is_none() && w.cooled(rule, at) {
                    let fired = alert(rule, &r.station, AlertState::Firing, at, at, seen, Some(r.frame_id));
                    w.firing = Some(fired.clone());
                    w.last_fired = Some(at);
                    out.push(fired);
                } else if hits < rule.frames
                    && let Some(firing) = w.firing.take()
                {
                    out.push(alert(rule, &r.station, AlertState::Resolved, firing.since, at, seen, Some(r.frame_id)));
                }
            }
        }
        remember(&mut st, &out);
        out
    }

    /// The clock's rules at `now`: the stations silent long enough, and the queues
    /// whose `depth` (as last read) has been over their line long enough, or is back.
    pub fn tick(&self, now: DateTime<Utc>, depth: impl Fn(&str) -> Option<i64>) -> Vec<Alert> {
        let mut out = Vec::new();
        let mut st = self.state.lock().expect("alerts lock");
        let State { watches, stations, .. } = &mut *st;
        for (i, rule) in self.rules.iter().enumerate().filter(|(_, r)| r.kind == RuleKind::Queue) {
            let queue = rule.queue.as_deref().unwrap_or_default();
            let Some(n) = depth(queue) else { continue };
            let w = watches.entry((i, PIPELINE.to_string())).or_insert_with(|| Watch::new(self.started));
            let seen = format!("{queue} holds {n}");
            if n > rule.above as i64 {
                let since = *w.over_since.get_or_insert(now);
                let long_enough = (now - since).num_milliseconds() >= rule.for_s as i64 * 1000;
                if long_enough && w.firing.is_none() && w.cooled(rule, now) {
                    let fired = alert(rule, PIPELINE, AlertState::Firing, now, now, seen, None);
                    w.firing = Some(fired.clone());
                    w.last_fired = Some(now);
                    out.push(fired);
                }
            } else {
                w.over_since = None;
                if let Some(firing) = w.firing.take() {
                    out.push(alert(rule, PIPELINE, AlertState::Resolved, firing.since, now, seen, None));
                }
            }
        }
        for (i, rule) in self.rules.iter().enumerate().filter(|(_, r)| r.kind == RuleKind::Silent) {
            let watched: Vec<&String> =
                if rule.stations.is_empty() { stations.iter().collect() } else { rule.stations.iter().collect() };
            for station in watched {
                let w = watches.entry((i, station.clone())).or_insert_with(|| Watch::new(self.started));
                let quiet_ms = (now - w.last_frame).num_milliseconds();
                if quiet_ms >= rule.after_s as i64 * 1000 && w.firing.is_none() && w.cooled(rule, now) {
                    let seen = format!("no frame since {}", w.last_frame.format("%Y-%m-%dT%H:%M:%SZ"));
                    let fired = alert(rule, station, AlertState::Firing, now, now, seen, None);
                    w.firing = Some(fired.clone());
                    w.last_fired = Some(now);
                    out.push(fired);
                }
            }
        }
        remember(&mut st, &out);
        out
    }

    /// The alerts firing now, the most severe first, then the oldest.
    pub fn firing(&self) -> Vec<Alert> {
        let st = self.state.lock().expect("alerts lock");
        let mut firing: Vec<Alert> = st.watches.values().filter_map(|w| w.firing.clone()).collect();
        firing.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.since.cmp(&b.since)));
        firing
    }

    /// The last alerts (fired and resolved), newest first.
    pub fn recent(&self) -> Vec<Alert> {
        self.state.lock().expect("alerts lock").recent.iter().rev().cloned().collect()
    }
}

fn alert(
    rule: &AlertRule,
    station: &str,
    state: AlertState,
    since: DateTime<Utc>,
    at: DateTime<Utc>,
    seen: String,
    frame_id: Option<Uuid>,
) -> Alert {
    Alert {
        rule: rule.name.clone(),
        station: station.to_string(),
        severity: rule.severity,
        state,
        since,
        at,
        reason: format!("{}: {seen}", rule.describe()),
        frame_id,
    }
}

fn remember(st: &mut State, alerts: &[Alert]) {
    for a in alerts {
        tracing::info!(rule = a.rule, station = a.station, severity = a.severity.as_str(), state = ?a.state, reason = a.reason, "alert");
        st.recent.push_back(a.clone());
        if st.recent.len() > RECENT {
            st.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use visionq_contract::message::{Detection, ImageSize, ModelInfo};

    fn rule(text: &str) -> AlertRule {
        let r: AlertRule = toml::from_str(&format!("name = \"r\"\n{text}")).unwrap();
        assert_eq!(r.problem(), None);
        r
    }

    fn frame(station: &str, dog: Option<f32>, at: DateTime<Utc>) -> FrameResult {
        FrameResult {
            frame_id: Uuid::now_v7(),
            station: station.into(),
            status: visionq_contract::ResultStatus::Ok,
            error: None,
            image: ImageSize { width: 10, height: 10 },
            model: ModelInfo::default(),
            detections: dog
                .map(|s| Detection {
                    class_id: 16,
                    class_name: "dog".into(),
                    score: s,
                    bbox: [0.0; 4],
                    box_px: [0.0; 4],
                    track_id: None,
                    classification: None,
                    text: None,
                })
                .into_iter()
                .collect(),
            decision: None,
            review: None,
            timings_ms: Default::default(),
            batch_size: None,
            captured_at: None,
            received_at: at,
            completed_at: at,
        }
    }

    fn states(alerts: &[Alert]) -> Vec<(String, AlertState)> {
        alerts.iter().map(|a| (a.station.clone(), a.state)).collect()
    }

    #[test]
    fn fires_on_n_of_m_once_resolves_and_keeps_its_cooldown() {
        let t0 = Utc::now();
        let s = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let e = AlertEngine::new(
            vec![rule("kind = \"detections\"\nclasses = [\"dog\"]\nframes = 2\nof_last = 3\ncooldown_s = 60")],
            &[],
            t0,
        );
        // One dog is not enough; a second within three frames fires, once.
        assert!(e.observe(&[frame("a", Some(0.9), s(1)), frame("a", None, s(2))]).is_empty());
        let fired = e.observe(&[frame("a", Some(0.8), s(3))]);
        assert_eq!(states(&fired), [("a".into(), AlertState::Firing)]);
        assert!(fired[0].reason.contains("2 of the last 3"), "{}", fired[0].reason);
        assert!(e.observe(&[frame("a", Some(0.9), s(4)), frame("b", Some(0.3), s(4))]).is_empty(), "still firing: nothing new");
        assert_eq!(e.firing().len(), 1);
        // Two frames without: resolved, its `since` the firing's.
        let resolved = e.observe(&[frame("a", None, s(5)), frame("a", None, s(6))]);
        assert_eq!(states(&resolved), [("a".into(), AlertState::Resolved)]);
        assert_eq!(resolved[0].since, fired[0].since);
        assert!(e.firing().is_empty());
        // Dogs again within the cool-down: no alert; after it, one.
        assert!(e.observe(&[frame("a", Some(0.9), s(10)), frame("a", Some(0.9), s(11))]).is_empty());
        let again = e.observe(&[frame("a", Some(0.9), s(64))]);
        assert_eq!(states(&again), [("a".into(), AlertState::Firing)]);
        assert_eq!(e.recent().len(), 3);
    }

    #[test]
    fn a_silent_station_fires_and_its_next_frame_resolves() {
        let t0 = Utc::now();
        let s = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let e = AlertEngine::new(vec![rule("kind = \"silent\"\nafter_s = 10\ncooldown_s = 0")], &["gate".to_string()], t0);
        assert!(e.needs_clock());
        let none = |_: &str| None;
        assert!(e.tick(s(5), none).is_empty());
        e.observe(&[frame("cam", None, s(8))]);
        // The configured station was never heard from; `cam` was, at 8 s.
        assert_eq!(states(&e.tick(s(12), none)), [("gate".into(), AlertState::Firing)]);
        assert!(e.tick(s(13), none).is_empty(), "fires once");
        assert_eq!(states(&e.tick(s(18), none)), [("cam".into(), AlertState::Firing)]);
        let back = e.observe(&[frame("cam", Some(0.9), s(20))]);
        assert_eq!(states(&back), [("cam".into(), AlertState::Resolved)]);
        assert_eq!(e.firing().iter().map(|a| a.station.as_str()).collect::<Vec<_>>(), ["gate"]);
    }

    #[test]
    fn a_queue_over_its_line_for_long_enough_fires_and_resolves_under_it() {
        let t0 = Utc::now();
        let s = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let e = AlertEngine::new(vec![rule("kind = \"queue\"\nqueue = \"frames\"\nabove = 100\nfor_s = 5\ncooldown_s = 0")], &[], t0);
        let depth = |n: i64| move |q: &str| (q == "frames").then_some(n);
        assert!(e.tick(s(1), depth(500)).is_empty(), "over the line, not yet for 5 s");
        assert!(e.tick(s(3), depth(50)).is_empty(), "back under: the clock starts again");
        assert!(e.tick(s(4), depth(500)).is_empty());
        let fired = e.tick(s(9), depth(500));
        assert_eq!(states(&fired), [(PIPELINE.into(), AlertState::Firing)]);
        assert!(fired[0].reason.contains("frames holds 500"), "{}", fired[0].reason);
        assert!(e.observe(&[frame("cam", Some(0.9), s(9))]).is_empty(), "frames do not count for a queue rule");
        assert_eq!(states(&e.tick(s(10), depth(100))), [(PIPELINE.into(), AlertState::Resolved)]);
    }

    #[test]
    fn a_status_rule_counts_errors_and_expired_frames() {
        let t0 = Utc::now();
        let e =
            AlertEngine::new(vec![rule("kind = \"status\"\nstatuses = [\"error\", \"expired\"]\nframes = 2\nof_last = 4")], &[], t0);
        let mut bad = frame("cam", None, t0);
        bad.status = visionq_contract::ResultStatus::Error;
        assert!(e.observe(&[bad.clone(), frame("cam", None, t0)]).is_empty());
        assert_eq!(states(&e.observe(std::slice::from_ref(&bad))), [("cam".into(), AlertState::Firing)]);
    }
}
