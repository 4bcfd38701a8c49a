//! The messages of a station's WebSocket (docs/STREAMING.md): what a station sends
//! — a frame's details as JSON text, then the frame as a binary message — and
//! everything it is answered, each a JSON text message with a `type`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use visionq_contract::FrameResult;
use visionq_contract::refusal::ErrorBody;

use crate::refusal::Refusal;

/// Longest client frame id taken, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 128;

/// A station's name for one of its frames, echoed in every answer about it as it
/// was given: its own text or whole number, or else the frame's sequence number
/// on the socket (the first binary message is 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum ClientId {
    Number(u64),
    Text(String),
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientId::Number(n) => write!(f, "{n}"),
            ClientId::Text(t) => write!(f, "`{t}`"),
        }
    }
}

/// How a socket treats a frame beyond its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Refused (`window_full`): the station sends again when a slot frees.
    Queue,
    /// Held for the next free slot, one frame at most: a newer frame replaces the
    /// one held, which is answered `skipped` (a live camera wants the latest view).
    Newest,
}

impl Mode {
    pub(crate) fn parse(text: &str) -> Option<Mode> {
        match text {
            "queue" => Some(Mode::Queue),
            "newest" => Some(Mode::Newest),
            _ => None,
        }
    }
}

/// The optional text message before a frame: the next binary message's details.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FrameInfo {
    pub id: Option<ClientId>,
    pub captured_at: Option<DateTime<Utc>>,
    pub deadline_ms: Option<u64>,
    /// The station's key for the frame: sent again under the same key, it is stored once.
    pub key: Option<String>,
}

/// What the text may hold; `captured_at` is read as text so a bad one is refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameInfoText {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[allow(dead_code)] // read before, by `id_of`, so that a refusal can carry it
    id: Option<serde_json::Value>,
    captured_at: Option<String>,
    deadline_ms: Option<u64>,
    key: Option<String>,
}

fn bad_message(message: impl Into<String>) -> Refusal {
    Refusal::new(axum::http::StatusCode::BAD_REQUEST, "bad_message", message)
}

/// The `id` of a text message, if it has a valid one.
fn id_of(value: &serde_json::Value) -> Result<Option<ClientId>, Refusal> {
    match value.get("id") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Ok(Some(ClientId::Text(s.clone()))),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(ClientId::Number(n))),
            None => Err(bad_message(format!("`id` must be text of 1-{MAX_ID_BYTES} bytes or a whole number, not {v}")).param("id")),
        },
    }
}

/// A text message refused, with the `id` it carried when that was valid.
pub(crate) type Refused = Box<(Option<ClientId>, Refusal)>;

impl FrameInfo {
    /// Reads a frame's details; a refusal carries the message's `id` when it has a
    /// valid one, so the station can tell which frame it was about.
    pub(crate) fn parse(text: &str) -> Result<FrameInfo, Refused> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Box::new((None, bad_message(format!("a text message must be a frame's details as JSON, such as {{\"id\": \"f1\"}}: {e}"))))
        })?;
        if !value.is_object() {
            return Err(Box::new((None, bad_message("a text message must be a JSON object, such as {\"id\": \"f1\"}"))));
        }
        let id = id_of(&value).map_err(|r| Box::new((None, r)))?;
        let fields: FrameInfoText = serde_json::from_value(value).map_err(|e| {
            let message = format!("a frame's details take `id`, `captured_at` (RFC 3339), `deadline_ms` and `key`: {e}");
            Box::new((id.clone(), bad_message(message)))
        })?;
        if let Some(kind) = fields.kind.as_deref().filter(|k| *k != "frame") {
            let message = format!("message type `{kind}` is not taken: a text message is a frame's details");
            return Err(Box::new((id, bad_message(message).param("type"))));
        }
        let captured_at =
            fields.captured_at.as_deref().map(crate::body::parse_time).transpose().map_err(|r| Box::new((id.clone(), r)))?;
        if let Some(key) = fields.key.as_deref().filter(|k| !crate::admit::valid_frame_key(k)) {
            let message = format!("`key` must be 1-128 printable ASCII characters, not {key:?}");
            return Err(Box::new((id, bad_message(message).param("key"))));
        }
        Ok(FrameInfo { id, captured_at, deadline_ms: fields.deadline_ms, key: fields.key })
    }
}

/// Everything the server sends, as JSON text.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The first message: what the socket grants.
    Hello {
        /// The protocol's version (this one is 1).
        protocol: u32,
        station: String,
        /// Frames that may be in flight at once.
        window: usize,
        mode: Mode,
        /// The largest frame taken, in bytes.
        max_frame_bytes: usize,
        /// How long a frame waits for its result before it is answered `timeout`.
        max_wait_ms: u64,
    },
    /// The frame is in the pipeline (the broker, or the embedded journal, holds it):
    /// it will complete and be stored, whatever happens to this socket.
    Accepted { id: ClientId, frame_id: Uuid },
    /// The frame's result, as `GET /v1/frames/{frame_id}` gives it.
    Result { id: ClientId, result: Box<FrameResult> },
    /// No result within `max_wait_ms`: the frame still completes, its slot is freed.
    Timeout { id: ClientId, frame_id: Uuid, error: String },
    /// A frame (or a text message) refused; the stream goes on.
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<ClientId>,
        #[serde(flatten)]
        body: ErrorBody,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_s: Option<u64>,
    },
    /// A frame held for the window (`mode=newest`) that a newer frame replaced
    /// before it entered the pipeline.
    Skipped { id: ClientId, code: &'static str, by: ClientId, error: String },
}

impl Reply {
    /// A refusal as every route renders it (`{error, code, param}`), tagged with the frame's id.
    pub(crate) fn refused(id: Option<ClientId>, refusal: Refusal) -> Reply {
        let e = visionq_http::ApiError::from(refusal);
        Reply::Error { id, body: *e.body, retry_after_s: e.retry_after_s }
    }

    pub(crate) fn to_text(&self) -> String {
        serde_json::to_string(self).expect("replies serialise")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_frames_details_are_read_strictly() {
        let info = FrameInfo::parse(r#"{"id": "cam-7", "captured_at": "2026-12-05T08:00:00Z", "deadline_ms": 500}"#).unwrap();
        assert_eq!(info.id, Some(ClientId::Text("cam-7".into())));
        assert_eq!(info.deadline_ms, Some(500));
        assert_eq!(info.captured_at.unwrap().to_rfc3339(), "2026-12-05T08:00:00+00:00");
        assert_eq!(FrameInfo::parse(r#"{"id": 42, "type": "frame"}"#).unwrap().id, Some(ClientId::Number(42)));
        assert_eq!(FrameInfo::parse("{}").unwrap(), FrameInfo::default());

        // Each refusal says why, and carries the id when it is valid.
        let refused = |text: &str| *FrameInfo::parse(text).unwrap_err();
        let (id, r) = refused(r#"{"id": "f1", "deadline": 5}"#);
        assert_eq!((id, r.code()), (Some(ClientId::Text("f1".into())), "bad_message"));
        let (id, r) = refused(r#"{"id": "f2", "captured_at": "yesterday"}"#);
        assert_eq!((id, r.code()), (Some(ClientId::Text("f2".into())), "bad_captured_at"));
        let reply = serde_json::to_value(Reply::refused(Some(ClientId::Text("f2".into())), r)).unwrap();
        assert_eq!(reply["param"], "captured_at", "the field at fault is named: {reply}");
        assert_eq!(refused("not json").0, None);
        assert_eq!(refused("[1]").0, None);
        assert_eq!(refused(r#"{"id": -1}"#).1.code(), "bad_message");
        assert_eq!(refused(&format!(r#"{{"id": "{}"}}"#, "x".repeat(MAX_ID_BYTES + 1))).0, None);
        assert_eq!(refused(r#"{"id": 3, "type": "ping"}"#).0, Some(ClientId::Number(3)));
        let info = FrameInfo::parse(r#"{"id": 3, "key": "cam7-000123"}"#).unwrap();
        assert_eq!(info.key.as_deref(), Some("cam7-000123"));
        let (id, r) = refused(r#"{"id": 4, "key": "has space"}"#);
        assert_eq!((id.clone(), r.code()), (Some(ClientId::Number(4)), "bad_message"));
        assert_eq!(serde_json::to_value(Reply::refused(id, r)).unwrap()["param"], "key");
    }

    #[test]
    fn replies_are_tagged_json() {
        let r = Reply::refused(Some(ClientId::Number(3)), crate::body::too_large(10));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.to_text()).unwrap(),
            json!({"type": "error", "id": 3, "code": "too_large", "error": "frame is larger than the limit of 10 bytes"})
        );
        let s =
            Reply::Skipped { id: ClientId::Text("a".into()), code: "superseded", by: ClientId::Text("b".into()), error: "x".into() };
        assert_eq!(serde_json::from_str::<serde_json::Value>(&s.to_text()).unwrap()["type"], "skipped");
    }
}
