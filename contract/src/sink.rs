//! Where events go (`[[sink]]` tables in the config file, issue 18): a sink is a
//! webhook or an MQTT broker, with a filter saying which results become its events
//! and how hard delivery tries. The `events` crate delivers; this is only the shape
//! of the configuration and the filter, which is pure.

use serde::{Deserialize, Serialize};

use crate::FrameResult;
use crate::decision::Outcome;
use crate::names::listed;

/// What a sink delivers to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// An HTTP POST of each event as JSON to `url`, signed with `secret`.
    Webhook,
    /// A publish of each event (QoS 1) to `<topic_prefix>/<station>/<kind>` on the
    /// MQTT broker at `host`:`port`, and of the station's last state, retained.
    Mqtt,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Mqtt => "mqtt",
        }
    }
}

/// What happened: the last level of an MQTT topic and part of every event id.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A frame's result, with its decision when the station has rules.
    Result,
    /// An alert rule's alert about a station, firing or resolved (`[[rule]]`).
    Alert,
    /// A tracked object crossing a `[[line]]`, or entering or leaving a `[[zone]]`.
    Track,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Result => "result",
            EventKind::Alert => "alert",
            EventKind::Track => "track",
        }
    }
}

fn default_events() -> Vec<EventKind> {
    vec![EventKind::Result]
}

/// One `[[sink]]` table.
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink's name: 1-64 of `[A-Za-z0-9._-]`, unique. It names the sink in the
    /// admin routes (`/v1/sinks/{name}/dead`), in metrics (`sink` label) and in
    /// every event id, so renaming a sink makes new ids.
    pub name: String,
    /// `webhook` or `mqtt`.
    pub kind: SinkKind,
    /// Webhook: the `http://` or `https://` URL events are POSTed to.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook over HTTPS, or MQTT with `tls`: a PEM bundle of the CAs that sign the
    /// receiver's (the broker's) certificate (unset: the system's roots). The name
    /// in the certificate must match the URL's host (the broker's `host`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Webhook: the key of the `HMAC-SHA256` signature of each POST (see
    /// docs/EVENTS.md); unset: POSTs are not signed. Never logged or shown.
    #[serde(default)]
    pub secret: Option<String>,
    /// Webhook: how long one POST may take before it counts as failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// MQTT: the broker's host name or address.
    #[serde(default)]
    pub host: Option<String>,
    /// MQTT: the broker's port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT: connect over TLS (MQTTS, usually port 8883), verifying the broker's
    /// certificate against `ca_file` or the system's roots.
    #[serde(default)]
    pub tls: bool,
    /// MQTT: the first level of every topic (`<topic_prefix>/<station>/<kind>`).
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// MQTT: the client id visionq connects with (default `visionq-<name>`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// MQTT: the user name visionq connects as (unset: anonymous).
    #[serde(default)]
    pub username: Option<String>,
    /// MQTT: that user's password. Never logged or shown.
    #[serde(default)]
    pub password: Option<String>,
    /// The kinds of events this sink takes: `result` (the results that pass the
    /// filters below) and/or `alert` (every alert of the `[[rule]]`s, firing and
    /// resolved, of `stations` when set). Default: results only.
    #[serde(default = "default_events")]
    pub events: Vec<EventKind>,
    /// Only events of these stations (empty: every station).
    #[serde(default)]
    pub stations: Vec<String>,
    /// Only results with a detection of one of these classes (empty: any result,
    /// with or without detections).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Only results whose decision has one of these outcomes (`accepted`,
    /// `needs_review`, `mismatch`, `nothing`, `expired`, `error`); a result without a
    /// decision then never passes. Empty: any result.
    #[serde(default)]
    pub outcomes: Vec<Outcome>,
    /// Only results with a detection scoring at least this (of one of `classes`
    /// when they are set); 0: no bound.
    #[serde(default)]
    pub min_score: f32,
    /// Attempts at delivering one event before it is dead-lettered (an admin can list
    /// and replay dead events).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles per attempt (with jitter) up
    /// to `max_backoff_ms`.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// The longest wait between two attempts.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Events of this sink in flight at once (webhook POSTs, MQTT publishes awaiting
    /// their acknowledgement).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_timeout_ms() -> u64 {
    5_000
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_topic_prefix() -> String {
    "visionq".into()
}
fn default_max_attempts() -> u32 {
    10
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    60_000
}
fn default_concurrency() -> usize {
    4
}

/// Debug output never shows the secret.
impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("topic_prefix", &self.topic_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl SinkConfig {
    /// Whether `r` becomes an event of this sink.
    pub fn accepts(&self, r: &FrameResult) -> bool {
        if !self.events.contains(&EventKind::Result) || !listed(&self.stations, &r.station) {
            return false;
        }
        if !self.outcomes.is_empty() && !r.decision.as_ref().is_some_and(|d| self.outcomes.contains(&d.outcome)) {
            return false;
        }
        if self.classes.is_empty() && self.min_score <= 0.0 {
            return true;
        }
        r.detections.iter().any(|d| listed(&self.classes, &d.class_name) && d.score >= self.min_score)
    }

    /// Whether an alert about `station` becomes an event of this sink.
    pub fn accepts_alert(&self, station: &str) -> bool {
        self.takes(EventKind::Alert, station)
    }

    /// Whether a crossing or a zone visit at `station` becomes an event of this sink.
    pub fn accepts_track(&self, station: &str) -> bool {
        self.takes(EventKind::Track, station)
    }

    fn takes(&self, kind: EventKind, station: &str) -> bool {
        self.events.contains(&kind) && listed(&self.stations, station)
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        self.client_id.clone().unwrap_or_else(|| format!("visionq-{}", self.name))
    }

    /// This sink with its secret hidden (for `visionq config` and `/v1/config`).
    pub fn redacted(&self) -> SinkConfig {
        let mut s = self.clone();
        s.secret = s.secret.map(|_| "***".into());
        s.password = s.password.map(|_| "***".into());
        s
    }

    /// Why this sink cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let name = &self.name;
        if !crate::names::valid_station_id(name) {
            return Some(format!("sink name `{name}` is not valid: use 1-64 of A-Z a-z 0-9 . _ -"));
        }
        match self.kind {
            SinkKind::Webhook => {
                let url = self.url.as_deref().unwrap_or("");
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Some(format!("sink `{name}`: a webhook needs `url` = \"http(s)://…\""));
                }
                if self.host.is_some() || self.username.is_some() || self.password.is_some() || self.tls {
                    return Some(format!(
                        "sink `{name}`: `host`, `username`, `password` and `tls` are for mqtt sinks (a webhook's TLS is its https:// URL)"
                    ));
                }
            }
            SinkKind::Mqtt => {
                if self.host.as_deref().is_none_or(str::is_empty) {
                    return Some(format!("sink `{name}`: an mqtt sink needs `host`"));
                }
                if self.url.is_some() || self.secret.is_some() {
                    return Some(format!("sink `{name}`: `url` and `secret` are for webhook sinks"));
                }
                if self.ca_file.is_some() && !self.tls {
                    return Some(format!("sink `{name}`: `ca_file` verifies a TLS broker: set `tls = true` too"));
                }
                if self.password.is_some() && self.username.is_none() {
                    return Some(format!("sink `{name}`: a `password` needs its `username`"));
                }
                let bad = |c: char| matches!(c, '+' | '#' | '\0');
                if self.topic_prefix.is_empty() || self.topic_prefix.contains(bad) {
                    return Some(format!("sink `{name}`: topic_prefix must be a topic without wildcards"));
                }
            }
        }
        if self.events.is_empty() {
            return Some(format!("sink `{name}`: `events` must name at least one kind (`result`, `alert`)"));
        }
        if self.max_attempts == 0 || self.concurrency == 0 || self.timeout_ms == 0 {
            return Some(format!("sink `{name}`: max_attempts, concurrency and timeout_ms must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            return Some(format!("sink `{name}`: min_score must be within 0..1"));
        }
        if self.backoff_ms == 0 || self.max_backoff_ms < self.backoff_ms {
            return Some(format!("sink `{name}`: backoff_ms must be at least 1 and at most max_backoff_ms"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Detection, ImageSize, ModelInfo};
    use crate::{FrameResult, ResultStatus};

    fn sink(extra: &str) -> SinkConfig {
        toml::from_str(&format!("name = \"s\"\nkind = \"webhook\"\nurl = \"http://h/\"\n{extra}")).unwrap()
    }

    fn result(station: &str, classes: &[(&str, f32)]) -> FrameResult {
        FrameResult {
            frame_id: uuid::Uuid::now_v7(),
            station: station.into(),
            status: ResultStatus::Ok,
            error: None,
            image: ImageSize { width: 10, height: 10 },
            model: ModelInfo { name: "m".into(), version: "1".into() },
            detections: classes
                .iter()
                .map(|(c, s)| Detection {
                    class_id: 0,
                    class_name: (*c).into(),
                    score: *s,
                    bbox: [0.0; 4],
                    box_px: [0.0; 4],
                    track_id: None,
                    classification: None,
                    text: None,
                })
                .collect(),
            decision: None,
            review: None,
            timings_ms: Default::default(),
            batch_size: None,
            captured_at: None,
            received_at: chrono::Utc::now(),
            completed_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn filters_take_stations_classes_scores_and_outcomes() {
        let any = sink("");
        assert!(any.accepts(&result("a", &[])));
        let s = sink("stations = [\"a\"]\nclasses = [\"dog\"]\nmin_score = 0.5");
        assert!(s.accepts(&result("a", &[("cat", 0.9), ("dog", 0.6)])));
        assert!(!s.accepts(&result("b", &[("dog", 0.6)])));
        assert!(!s.accepts(&result("a", &[("dog", 0.4), ("cat", 0.9)])));
        let alerts = sink("events = [\"alert\"]\nstations = [\"a\"]");
        assert!(!alerts.accepts(&result("a", &[])), "an alerts-only sink takes no result");
        assert!(alerts.accepts_alert("a") && !alerts.accepts_alert("b") && !any.accepts_alert("a"));
        let o = sink("outcomes = [\"mismatch\"]");
        assert!(!o.accepts(&result("a", &[])), "no decision: no outcome to match");
        assert_eq!(
            sink("max_attempts = 0").problem().unwrap(),
            "sink `s`: max_attempts, concurrency and timeout_ms must be at least 1"
        );
        assert!(sink("").problem().is_none());
        assert!(!format!("{:?}", sink("secret = \"hunter2\"")).contains("hunter2"));
        assert!(sink("username = \"u\"").problem().unwrap().contains("are for mqtt sinks"));
        assert!(sink("tls = true").problem().unwrap().contains("are for mqtt sinks"));
        let mqtt =
            |extra: &str| -> SinkConfig { toml::from_str(&format!("name = \"m\"\nkind = \"mqtt\"\nhost = \"b\"\n{extra}")).unwrap() };
        assert_eq!(mqtt("tls = true\nca_file = \"ca.pem\"").problem(), None);
        assert!(mqtt("ca_file = \"ca.pem\"").problem().unwrap().contains("set `tls = true`"));
        let mqtt: SinkConfig = toml::from_str("name = \"m\"\nkind = \"mqtt\"\nhost = \"h\"\npassword = \"p\"").unwrap();
        assert_eq!(mqtt.problem().unwrap(), "sink `m`: a `password` needs its `username`");
        assert_eq!(mqtt.redacted().password.as_deref(), Some("***"));
    }
}
