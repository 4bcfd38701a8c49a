//! An event: what a sink receives for one result, and its stable id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use visionq_contract::FrameResult;

/// What happened. Only results for now; the kind is the last level of an MQTT topic
/// and part of every event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A frame's result, with its decision when the station has rules.
    Result,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Result => "result",
        }
    }
}

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
    pub frame_id: Uuid,
    /// When the result was made (`completed_at`).
    pub occurred_at: DateTime<Utc>,
    pub result: FrameResult,
}

/// The id of the event of `kind` about `frame_id` for `sink`: 32 hex digits of
/// SHA-256 over the three, so a result delivered twice makes the same id.
pub fn event_id(frame_id: Uuid, sink: &str, kind: EventKind) -> String {
    let digest = Sha256::digest(format!("{}/{sink}/{}", frame_id.simple(), kind.as_str()));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Event {
    pub fn of_result(sink: &str, r: &FrameResult) -> Event {
        Event {
            event_id: event_id(r.frame_id, sink, EventKind::Result),
            kind: EventKind::Result,
            sink: sink.to_string(),
            station: r.station.clone(),
            frame_id: r.frame_id,
            occurred_at: r.completed_at,
            result: r.clone(),
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
