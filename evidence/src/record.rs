//! The sidecar kept beside each frame's image, and how a review changes its labels.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use visionq_contract::FrameResult;
pub use visionq_contract::decision::{Review, Verdict};

/// Sidecar format; a reader refuses a newer one rather than misread it.
pub const SIDECAR_VERSION: u32 = 1;

/// Why a frame was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeptFor {
    /// Its best score fell in the review band (decision `needs_review`).
    ReviewBand,
    /// A reviewer looked at it (the hook for the review queue).
    Reviewed,
}

/// The image file beside the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFile {
    /// Its name in the same folder as the sidecar.
    pub file: String,
    pub content_type: String,
    pub bytes: u64,
}

/// One kept frame: the sidecar's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub version: u32,
    pub kept_for: KeptFor,
    pub kept_at: DateTime<Utc>,
    /// Filled in by the store on `put`.
    pub image: ImageFile,
    /// The result as stations got it: frame id, station, times, image size, model,
    /// detections (`box_px` in original-image pixels, class names) and the decision.
    pub result: FrameResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
}

impl Evidence {
    /// A frame kept for `why`, at `now`; the store fills in `image`.
    pub fn new(result: FrameResult, why: KeptFor, now: DateTime<Utc>) -> Self {
        Evidence {
            version: SIDECAR_VERSION,
            kept_for: why,
            kept_at: now,
            image: ImageFile { file: String::new(), content_type: String::new(), bytes: 0 },
            result,
            review: None,
        }
    }

    pub fn frame_id(&self) -> Uuid {
        self.result.frame_id
    }

    /// The detection a review without an index is about: the best-scoring one of the
    /// decision's class, else the best-scoring one.
    fn decided_detection(&self) -> Option<usize> {
        let dets = &self.result.detections;
        let class = self.result.decision.as_ref().and_then(|d| d.class_name.as_deref());
        let best = |want: Option<&str>| {
            dets.iter()
                .enumerate()
                .filter(|(_, d)| want.is_none_or(|c| d.class_name == c))
                .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
                .map(|(i, _)| i)
        };
        best(class).or_else(|| best(None))
    }

    /// The boxes to train on, with the review applied: `None` when the frame is to be
    /// left out (rejected as a whole, or a review about a detection it does not have).
    pub fn labelled_boxes(&self) -> Option<Vec<LabelledBox>> {
        let mut boxes: Vec<Option<LabelledBox>> =
            self.result.detections.iter().map(|d| Some(LabelledBox { class_name: d.class_name.clone(), box_px: d.box_px })).collect();
        if let Some(review) = &self.review {
            let target = match review.detection {
                Some(i) if i < boxes.len() => Some(i),
                Some(_) => return None,
                None => self.decided_detection(),
            };
            match review.verdict {
                Verdict::Confirmed => {}
                Verdict::Rejected => match (review.detection, target) {
                    (Some(_), Some(i)) => boxes[i] = None,
                    _ => return None,
                },
                Verdict::Corrected => {
                    let (Some(i), Some(class)) = (target, &review.class_name) else {
                        // A corrected code alone leaves the class as the model said.
                        return Some(boxes.into_iter().flatten().collect());
                    };
                    if let Some(b) = &mut boxes[i] {
                        b.class_name = class.clone();
                    }
                }
            }
        }
        Some(boxes.into_iter().flatten().collect())
    }
}

/// A box as a dataset labels it: class name, `[x1, y1, x2, y2]` in image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledBox {
    pub class_name: String,
    pub box_px: [f32; 4],
}

/// The file extension and content type of an image, by its first bytes.
pub fn image_type(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(("jpg", "image/jpeg"))
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(("png", "image/png"))
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(("webp", "image/webp"))
    } else {
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use visionq_contract::decision::{Decision, Outcome};
    use visionq_contract::message::ImageSize;
    use visionq_contract::{Detection, ModelInfo, ResultStatus};

    pub fn det(class: &str, score: f32, b: [f32; 4]) -> Detection {
        Detection {
            class_id: 0,
            class_name: class.into(),
            score,
            bbox: [b[0] / 640.0, b[1] / 480.0, b[2] / 640.0, b[3] / 480.0],
            box_px: b,
            track_id: None,
            classification: None,
            text: None,
        }
    }

    pub fn result(station: &str, at: DateTime<Utc>, dets: Vec<Detection>, decided: Option<&str>) -> FrameResult {
        FrameResult {
            frame_id: Uuid::now_v7(),
            station: station.into(),
            status: ResultStatus::Ok,
            error: None,
            image: ImageSize { width: 640, height: 480 },
            model: ModelInfo { name: "m".into(), version: "1".into() },
            detections: dets,
            decision: decided.map(|c| Decision {
                outcome: Outcome::NeedsReview,
                code: Some(c.to_uppercase()),
                class_name: Some(c.into()),
                score: Some(0.5),
                similarity: None,
                expectation_ref: None,
                rule: "r:normalised".into(),
                reason: "in the review band".into(),
            }),
            review: None,
            timings_ms: Default::default(),
            batch_size: None,
            captured_at: None,
            received_at: at,
            completed_at: at,
        }
    }

    fn classes(e: &Evidence) -> Option<Vec<String>> {
        e.labelled_boxes().map(|b| b.into_iter().map(|b| b.class_name).collect())
    }

    #[test]
    fn reviews_change_the_labels_as_they_say() {
        let dets = vec![det("dog", 0.5, [1.0, 2.0, 30.0, 40.0]), det("cat", 0.6, [50.0, 50.0, 90.0, 99.0]), det("dog", 0.4, [0.0; 4])];
        let mut e = Evidence::new(result("s", Utc::now(), dets, Some("dog")), KeptFor::ReviewBand, Utc::now());
        assert_eq!(classes(&e).unwrap(), ["dog", "cat", "dog"], "no review: the model's labels");

        let review = |verdict, detection, class: Option<&str>| Review {
            verdict,
            detection,
            class_name: class.map(String::from),
            code: None,
            reviewer: Some("ana".into()),
            reviewed_at: Some(Utc::now()),
        };
        e.review = Some(review(Verdict::Confirmed, None, None));
        assert_eq!(classes(&e).unwrap(), ["dog", "cat", "dog"]);
        // A correction without an index is about the decided detection: the best dog,
        // not the better-scoring cat.
        e.review = Some(review(Verdict::Corrected, None, Some("wolf")));
        assert_eq!(classes(&e).unwrap(), ["wolf", "cat", "dog"]);
        e.review = Some(review(Verdict::Corrected, Some(1), Some("lynx")));
        assert_eq!(classes(&e).unwrap(), ["dog", "lynx", "dog"]);
        assert_eq!(e.labelled_boxes().unwrap()[1].box_px, [50.0, 50.0, 90.0, 99.0], "the box stays");
        // A rejection of one detection drops its box; of the frame, leaves the frame out.
        e.review = Some(review(Verdict::Rejected, Some(2), None));
        assert_eq!(classes(&e).unwrap(), ["dog", "cat"]);
        e.review = Some(review(Verdict::Rejected, None, None));
        assert_eq!(classes(&e), None);
        // A review of a detection the frame does not have: the frame is left out.
        e.review = Some(review(Verdict::Corrected, Some(7), Some("x")));
        assert_eq!(classes(&e), None);

        // The sidecar round-trips with its review.
        e.review = Some(review(Verdict::Corrected, None, Some("wolf")));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["review"]["verdict"], "corrected");
        assert_eq!(json["kept_for"], "review_band");
        assert_eq!(serde_json::from_value::<Evidence>(json).unwrap(), e);
    }

    #[test]
    fn image_types_by_magic() {
        assert_eq!(image_type(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(("jpg", "image/jpeg")));
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n...."), Some(("png", "image/png")));
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), Some(("webp", "image/webp")));
        assert_eq!(image_type(b"GIF89a"), None);
    }
}
