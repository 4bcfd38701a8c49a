//! Messages between stages: the metadata header (`META_HEADER`, JSON) parsed once
//! per delivery, the body kept as it came, the trace context carried along.

use bytes::Bytes;
use visionq_contract::topology::{META_HEADER, TRACEPARENT_HEADER};
use visionq_contract::{FrameMeta, FrameResult, TensorMeta};
use visionq_queue::Envelope;

/// A message a stage cannot take: its metadata header missing or unreadable, or its
/// body not what the header says. The text is the whole reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub String);

impl BadMessage {
    /// The failure such a message ends with: dead-lettered as `bad_message`.
    pub fn failure(&self) -> crate::Failure {
        crate::Failure { reason: self.to_string(), label: "bad_message" }
    }
}

fn meta<T: serde::de::DeserializeOwned>(e: &Envelope) -> Result<T, BadMessage> {
    let bad = |why: String| BadMessage(format!("frame message has no valid metadata: {why}"));
    let raw = e.header(META_HEADER).ok_or_else(|| bad(format!("missing {META_HEADER}")))?;
    serde_json::from_str(raw).map_err(|err| bad(err.to_string()))
}

/// A camera frame on the frames queue: its metadata and the image as posted.
#[derive(Debug, Clone)]
pub struct FrameMessage {
    pub meta: FrameMeta,
    pub image: Bytes,
}

impl FrameMessage {
    pub fn from_envelope(e: &Envelope) -> Result<FrameMessage, BadMessage> {
        Ok(FrameMessage { meta: meta(e)?, image: e.body.clone() })
    }
}

/// A model-ready tensor on the tensors queue: the frame's metadata, where the image
/// sits in the input, and the `input_height × input_width × 3` u8 pixels; with
/// `evidence_forward_min_score` set, also the frame's original image (after the
/// tensor in the body, see [`crate::attach_original`]).
#[derive(Debug, Clone)]
pub struct TensorMessage {
    pub meta: TensorMeta,
    pub tensor: Bytes,
    pub original: Option<Bytes>,
}

impl TensorMessage {
    pub fn from_envelope(e: &Envelope) -> Result<TensorMessage, BadMessage> {
        let meta = meta(e)?;
        let (tensor, original) = crate::split_original(e)?;
        Ok(TensorMessage { meta, tensor, original })
    }

    /// The tensors-queue message, carrying on the headers of the frame message it
    /// was made from (trace context, and whatever ingest set).
    pub fn into_envelope(self, from: &Envelope) -> Envelope {
        let mut out = Envelope::new(self.tensor);
        out.headers = crate::original::without_original(from);
        out.headers.insert(META_HEADER.into(), serde_json::to_string(&self.meta).expect("meta serialises"));
        match &self.original {
            Some(original) => crate::attach_original(out, original),
            None => out,
        }
    }
}

/// The results-queue message for `result`, continuing the trace of `input`.
pub fn result_envelope(result: &FrameResult, input: &Envelope) -> Envelope {
    let mut out = Envelope::new(serde_json::to_vec(result).expect("result serialises"));
    if let Some(tp) = input.header(TRACEPARENT_HEADER) {
        out.headers.insert(TRACEPARENT_HEADER.into(), tp.to_string());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;
    use visionq_contract::{Letterbox, ModelInfo};

    pub fn frame() -> FrameMeta {
        let now = Utc::now();
        FrameMeta {
            frame_id: uuid::Uuid::now_v7(),
            station: "line-1".into(),
            width: 1280,
            height: 720,
            orientation: 1,
            captured_at: None,
            received_at: now,
            published_at: now,
            deadline: None,
            timings_ms: Default::default(),
        }
    }

    #[test]
    fn a_frame_message_reads_its_header_once_and_keeps_the_image() {
        let f = frame();
        let e = Envelope::new(&b"jpeg bytes"[..]).with_header(META_HEADER, serde_json::to_string(&f).unwrap());
        let m = FrameMessage::from_envelope(&e).unwrap();
        assert_eq!((m.meta.frame_id, &m.image[..]), (f.frame_id, &b"jpeg bytes"[..]));
        let missing = FrameMessage::from_envelope(&Envelope::new(&b"x"[..])).unwrap_err();
        assert_eq!(missing.to_string(), format!("frame message has no valid metadata: missing {META_HEADER}"));
        let garbled = Envelope::new(&b"x"[..]).with_header(META_HEADER, "{not json");
        assert!(FrameMessage::from_envelope(&garbled).is_err());
    }

    #[test]
    fn a_tensor_round_trips_with_the_frames_headers_and_results_keep_the_trace() {
        // A 64x32 image in a 32x32 input: half size, 8 grey rows above and below.
        let (input_width, input_height, scaled_width, scaled_height) = (32, 32, 32, 16);
        let lb = Letterbox { input_width, input_height, scale: 0.5, scale_y: None, pad_x: 0, pad_y: 8, scaled_width, scaled_height };
        let meta = TensorMeta { frame: frame(), letterbox: lb, preprocessed_at: Utc::now() };
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let input = Envelope::new(&b"jpeg"[..]).with_header(TRACEPARENT_HEADER, tp).with_header("x-other", "kept");
        let out = TensorMessage { meta: meta.clone(), tensor: Bytes::from(vec![7u8; 12]), original: None }.into_envelope(&input);
        assert_eq!((out.header(TRACEPARENT_HEADER), out.header("x-other")), (Some(tp), Some("kept")));
        let back = TensorMessage::from_envelope(&out).unwrap();
        assert_eq!((back.meta.frame.frame_id, back.meta.letterbox, back.tensor.len()), (meta.frame.frame_id, lb, 12));
        assert_eq!(back.original, None);
        // With the frame's original image after the tensor: both come back apart.
        let jpeg = Bytes::from_static(b"\xff\xd8 original jpeg");
        let with = TensorMessage { meta: meta.clone(), tensor: Bytes::from(vec![7u8; 12]), original: Some(jpeg.clone()) };
        let out = with.into_envelope(&input);
        assert_eq!(out.body.len(), 12 + jpeg.len());
        let back = TensorMessage::from_envelope(&out).unwrap();
        assert_eq!((back.tensor.len(), back.original), (12, Some(jpeg)));
        let result = FrameResult::failed(&meta.frame, ModelInfo::default(), "broken");
        let r = result_envelope(&result, &input);
        assert_eq!((r.header(TRACEPARENT_HEADER), r.header("x-other")), (Some(tp), None));
        let parsed: FrameResult = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(parsed.error.as_deref(), Some("broken"));
    }
}
