//! Messages between stages and the result object stations script against.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Per-stage durations in milliseconds, keyed by stage (`queue_frames`, `decode`,
/// `resize`, `queue_tensors`, `batch_wait`, `inference`, `postprocess`, `persist`, …).
pub type Timings = BTreeMap<String, f64>;

/// What ingest knows about a frame; travels in the header of the frame message and
/// inside every later message about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FrameMeta {
    pub frame_id: Uuid,
    pub station: String,
    /// Size read from the image header at ingest, as the image is shown: after the
    /// `orientation` turn (width and height swapped for orientations 5–8).
    pub width: u32,
    pub height: u32,
    /// EXIF orientation (1–8) preprocessing applies to the decoded pixels before the
    /// letterbox; 1 (absent) takes them as stored. Ingest sets it from a JPEG's EXIF
    /// tag where the station applies it (`exif_orientation`).
    #[serde(default = "upright", skip_serializing_if = "is_upright")]
    pub orientation: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    /// When the frame left ingest (confirmed by the broker); queue waits are measured from here.
    pub published_at: DateTime<Utc>,
    /// Live frames only: past this instant the frame is not run any more but reported
    /// `expired` (a late detection is worth less than the next frame). None: audit or
    /// batch traffic, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    pub timings_ms: Timings,
}

/// How a frame was fitted into the model input: scaled by `scale`, then placed at
/// (`pad_x`, `pad_y`) inside an `input_width`×`input_height` canvas.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Letterbox {
    pub input_width: u32,
    pub input_height: u32,
    /// Input pixels per image pixel (horizontally, and vertically unless `scale_y`).
    pub scale: f32,
    /// Vertical scale when it differs from `scale` (a stretched, not letterboxed, input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_y: Option<f32>,
    pub pad_x: u32,
    pub pad_y: u32,
    /// Size of the scaled image inside the canvas.
    pub scaled_width: u32,
    pub scaled_height: u32,
}

impl Letterbox {
    /// Maps a box in model-input pixels back to original-image pixels, clipped to the image.
    pub fn to_image(&self, b: [f32; 4], image_width: u32, image_height: u32) -> [f32; 4] {
        let (w, h) = (image_width as f32, image_height as f32);
        let x = |v: f32| ((v - self.pad_x as f32) / self.scale).clamp(0.0, w);
        let sy = self.scale_y.unwrap_or(self.scale);
        let y = |v: f32| ((v - self.pad_y as f32) / sy).clamp(0.0, h);
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }
}

/// A preprocessed frame: the u8 tensor (HWC, RGB, `input_height`×`input_width`×3)
/// travels as the message body, this in its header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorMeta {
    pub frame: FrameMeta,
    pub letterbox: Letterbox,
    pub preprocessed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    Ok,
    Error,
    Expired,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Ok => "ok",
            ResultStatus::Error => "error",
            ResultStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(ResultStatus::Ok),
            "error" => Some(ResultStatus::Error),
            "expired" => Some(ResultStatus::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Detection {
    pub class_id: u32,
    pub class_name: String,
    pub score: f32,
    /// `[x1, y1, x2, y2]` normalised to 0–1 by the image size.
    #[serde(rename = "box")]
    #[schema(min_items = 4, max_items = 4)]
    pub bbox: [f32; 4],
    /// `[x1, y1, x2, y2]` in original-image pixels.
    #[schema(min_items = 4, max_items = 4)]
    pub box_px: [f32; 4],
    /// The object's track id, where the station's objects are tracked (a `[[line]]`
    /// or `[[zone]]` is drawn on it): the same id in every frame it is followed
    /// through (docs/EVENTS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    /// A chained classifier's output on the detection's crop (`[[chain]]`, kind
    /// `classifier`); absent where no classifier chain took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<crate::chain::Classification>,
    /// A chained text recogniser's reading of the detection's crop (kind `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<crate::chain::TextReading>,
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes (0 when they do not
/// overlap or are empty): NMS in the infer-worker, the tracker in events.
pub fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// The result of one frame, as stations, operators and the database see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FrameResult {
    pub frame_id: Uuid,
    pub station: String,
    pub status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub image: ImageSize,
    pub model: ModelInfo,
    pub detections: Vec<Detection>,
    /// What the detections mean under the station's rules (`rules_file`); absent
    /// where no decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::decision::Decision>,
    /// A reviewer's verdict on the decision, once one was given (the review queue).
    /// A result pushed again with `review` set is the frame's final word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<crate::decision::Review>,
    /// Milliseconds per stage (`decode`, `resize`, `batch_wait`, `inference`, …).
    #[schema(value_type = BTreeMap<String, f64>)]
    pub timings_ms: Timings,
    /// Frames in the forward pass that ran this frame (its `inference` time is the
    /// whole pass's); absent where the frame was not run (and in rows stored before
    /// the results schema's version 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
}

fn upright() -> u8 {
    1
}

fn is_upright(o: &u8) -> bool {
    *o == 1
}

impl FrameMeta {
    /// Milliseconds past the deadline at `now`, if it has one and it has passed.
    pub fn late_ms(&self, now: DateTime<Utc>) -> Option<f64> {
        let deadline = self.deadline?;
        (now > deadline).then(|| elapsed_ms(deadline, now))
    }
}

impl FrameResult {
    /// A result for a frame whose deadline passed before inference: not run, recorded.
    pub fn expired(frame: &FrameMeta, model: ModelInfo, late_ms: f64) -> Self {
        let mut r = FrameResult::failed(frame, model, format!("deadline passed {late_ms:.0} ms before inference; not run"));
        r.status = ResultStatus::Expired;
        r
    }

    /// The result of a frame that was run in a pass of `batch_size` frames: its
    /// detections and the timings of every stage it went through.
    pub fn detected(frame: &FrameMeta, model: ModelInfo, detections: Vec<Detection>, timings_ms: Timings, batch_size: u32) -> Self {
        FrameResult {
            status: ResultStatus::Ok,
            error: None,
            detections,
            timings_ms,
            batch_size: Some(batch_size),
            ..FrameResult::failed(frame, model, String::new())
        }
    }

    /// A result for a frame that can never be processed (corrupt image, bad tensor).
    pub fn failed(frame: &FrameMeta, model: ModelInfo, error: impl Into<String>) -> Self {
        FrameResult {
            frame_id: frame.frame_id,
            station: frame.station.clone(),
            status: ResultStatus::Error,
            error: Some(error.into()),
            image: ImageSize { width: frame.width, height: frame.height },
            model,
            detections: Vec::new(),
            decision: None,
            review: None,
            timings_ms: frame.timings_ms.clone(),
            batch_size: None,
            captured_at: frame.captured_at,
            received_at: frame.received_at,
            completed_at: Utc::now(),
        }
    }
}

/// Milliseconds between two instants, never negative (clocks of different pods drift).
pub fn elapsed_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_maps_back_and_clips() {
        // 1280x720 into 416x416: scale 0.325, scaled 416x234, pad_y 91.
        let lb = Letterbox {
            input_width: 416,
            input_height: 416,
            scale: 0.325,
            scale_y: None,
            pad_x: 0,
            pad_y: 91,
            scaled_width: 416,
            scaled_height: 234,
        };
        let b = lb.to_image([32.5, 91.0 + 32.5, 500.0, 10.0], 1280, 720);
        assert!((b[0] - 100.0).abs() < 1e-3);
        assert!((b[1] - 100.0).abs() < 1e-3);
        assert_eq!(b[2], 1280.0, "x beyond the canvas is clipped to the image");
        assert_eq!(b[3], 0.0, "y inside the top padding is clipped to 0");
    }

    #[test]
    fn result_json_uses_the_documented_field_names() {
        let meta = FrameMeta {
            frame_id: Uuid::nil(),
            station: "s1".into(),
            width: 10,
            height: 20,
            orientation: 1,
            captured_at: None,
            received_at: Utc::now(),
            published_at: Utc::now(),
            deadline: None,
            timings_ms: Timings::new(),
        };
        let mut r = FrameResult::failed(&meta, ModelInfo::default(), "corrupt");
        r.detections.push(Detection {
            class_id: 16,
            class_name: "dog".into(),
            score: 0.9,
            bbox: [0.1, 0.2, 0.3, 0.4],
            box_px: [1.0, 4.0, 3.0, 8.0],
            track_id: None,
            classification: None,
            text: None,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"], "corrupt");
        assert_eq!(v["image"]["height"], 20);
        assert_eq!(v["detections"][0]["box"][1], serde_json::json!(0.2f32));
        assert!(v.get("captured_at").is_none());
        let back: FrameResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
