//! An event: what a sink receives for one result or one alert, and its stable id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use visionq_contract::FrameResult;
pub use visionq_contract::sink::EventKind;
use visionq_contract::track::TrackEvent;

use crate::alerts::Alert;

/// The JSON body a sink receives.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// The same for every delivery of this event (a retry, a redelivered result, a
    /// replay): receivers de-duplicate by it.
    pub event_id: String,
    pub kind: EventKind,
    /// The sink it was made for.
    pub sink: String,
    pub station: String,
    /// The frame it is about: a result's, or the frame that made an alert fire or
    /// resolve (none for a silent station's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_id: Option<Uuid>,
    /// When it happened: the result made (`completed_at`), the alert's change.
    pub occurred_at: DateTime<Utc>,
    /// `result` events: the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<FrameResult>,
    /// `alert` events: the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
    /// `track` events: the crossing, entry or exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackEvent>,
}

/// The id of the event of `kind` about `frame_id` for `sink`: 32 hex digits of
/// SHA-256 over the three, so a result delivered twice makes the same id.
pub fn event_id(frame_id: Uuid, sink: &str, kind: EventKind) -> String {
    let digest = Sha256::digest(format!("{}/{sink}/{}", frame_id.simple(), kind.as_str()));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of an alert's event for `sink`: 32 hex digits of SHA-256 over the rule,
/// the station, when it started firing and its state, so each change of an alert
/// has one id whatever retries it takes.
pub fn alert_event_id(a: &Alert, sink: &str) -> String {
    let digest = Sha256::digest(format!("alert/{}/{}/{}/{}/{sink}", a.rule, a.station, a.since.timestamp_micros(), a.state.as_str()));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of a track event's event for `sink`: 32 hex digits of SHA-256 over the
/// station, the line or zone, the track, what happened and the frame (or the time,
/// for a lost track let go), so a redelivered result makes the same id.
pub fn track_event_id(t: &TrackEvent, sink: &str) -> String {
    let when = t.frame_id.map(|f| f.simple().to_string()).unwrap_or_else(|| t.at.timestamp_micros().to_string());
    let digest = Sha256::digest(format!("track/{}/{}/{}/{}/{when}/{sink}", t.station, t.name, t.track_id, t.kind.as_str()));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Event {
    pub fn of_result(sink: &str, r: &FrameResult) -> Event {
        Event {
            event_id: event_id(r.frame_id, sink, EventKind::Result),
            kind: EventKind::Result,
            sink: sink.to_string(),
            station: r.station.clone(),
            frame_id: Some(r.frame_id),
            occurred_at: r.completed_at,
            result: Some(r.clone()),
            alert: None,
            track: None,
        }
    }

    pub fn of_alert(sink: &str, a: &Alert) -> Event {
        Event {
            event_id: alert_event_id(a, sink),
            kind: EventKind::Alert,
            sink: sink.to_string(),
            station: a.station.clone(),
            frame_id: a.frame_id,
            occurred_at: a.at,
            result: None,
            alert: Some(a.clone()),
            track: None,
        }
    }

    pub fn of_track(sink: &str, t: &TrackEvent) -> Event {
        Event {
            event_id: track_event_id(t, sink),
            kind: EventKind::Track,
            sink: sink.to_string(),
            station: t.station.clone(),
            frame_id: t.frame_id,
            occurred_at: t.at,
            result: None,
            alert: None,
            track: Some(t.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_differ_per_sink() {
        let f = Uuid::now_v7();
        assert_eq!(event_id(f, "a", EventKind::Result), event_id(f, "a", EventKind::Result));
        assert_ne!(event_id(f, "a", EventKind::Result), event_id(f, "b", EventKind::Result));
        assert_eq!(event_id(f, "a", EventKind::Result).len(), 32);
    }
}
