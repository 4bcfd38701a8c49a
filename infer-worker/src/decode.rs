//! Decoding a YOLO output into detections: the three output layouts, the
//! confidence threshold and class-aware non-maximum suppression. Pure functions.

use visionq_contract::message::box_iou;

/// How a model lays its output out, per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[boxes, 5 + C]`: cx, cy, w, h, objectness, class scores (YOLOv3/v5).
    Yolov5,
    /// `[4 + C, anchors]`: cx, cy, w, h, class scores, channels first (YOLOv8/v11).
    Yolov8,
    /// `[K, 6]`: x1, y1, x2, y2, score, class, already suppressed (YOLOv10).
    Yolov10,
    /// `[boxes, 6]`: cx, cy, w, h, score, class, not suppressed: a YOLOv3/v5 output
    /// whose score (objectness × best class) and class were computed in the graph
    /// (`tools/u8_input.py --scored`), so far fewer bytes leave the device.
    Scored,
}

impl Layout {
    pub fn parse(s: &str) -> Option<Layout> {
        match s.to_ascii_lowercase().as_str() {
            "yolov3" | "yolov5" | "v5" => Some(Layout::Yolov5),
            "yolov8" | "yolov11" | "v8" => Some(Layout::Yolov8),
            "yolov10" | "v10" | "end2end" => Some(Layout::Yolov10),
            "scored" => Some(Layout::Scored),
            _ => None,
        }
    }

    /// Infers the layout from the per-image output shape `[a, b]` and, when known,
    /// the number of classes.
    pub fn infer(a: usize, b: usize, classes: Option<usize>) -> Option<Layout> {
        match classes {
            Some(c) if b == 5 + c => Some(Layout::Yolov5),
            Some(c) if a == 4 + c && a < b => Some(Layout::Yolov8),
            _ if b == 6 && a < 10_000 => Some(Layout::Yolov10),
            None if a < b && a > 4 => Some(Layout::Yolov8),
            None if b > 5 => Some(Layout::Yolov5),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Yolov5 => "yolov5",
            Layout::Yolov8 => "yolov8",
            Layout::Yolov10 => "yolov10",
            Layout::Scored => "scored",
        }
    }
}

/// A detection in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub class_id: u32,
    pub score: f32,
    pub bbox: [f32; 4],
}

fn corners(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

fn best(scores: impl Iterator<Item = f32>) -> (u32, f32) {
    scores.enumerate().fold((0, f32::MIN), |acc, (i, s)| if s > acc.1 { (i as u32, s) } else { acc })
}

/// Candidates above `conf` from one image's output of shape `[a, b]`.
pub fn candidates(layout: Layout, out: &[f32], a: usize, b: usize, conf: f32) -> Vec<Candidate> {
    debug_assert_eq!(out.len(), a * b);
    let mut found = Vec::new();
    match layout {
        Layout::Yolov5 => {
            for row in out.chunks_exact(b) {
                let objectness = row[4];
                if objectness < conf {
                    continue;
                }
                let (class_id, cls) = best(row[5..].iter().copied());
                let score = objectness * cls;
                if score >= conf {
                    found.push(Candidate { class_id, score, bbox: corners(row[0], row[1], row[2], row[3]) });
                }
            }
        }
        Layout::Yolov8 => {
            let anchors = b;
            for i in 0..anchors {
                let (class_id, score) = best((4..a).map(|k| out[k * anchors + i]));
                if score >= conf {
                    let v = |k: usize| out[k * anchors + i];
                    found.push(Candidate { class_id, score, bbox: corners(v(0), v(1), v(2), v(3)) });
                }
            }
        }
        // Rows of box, score, class: centre and size (scored) or corners (YOLOv10).
        Layout::Scored | Layout::Yolov10 => {
            for row in out.chunks_exact(b) {
                if row[4] >= conf {
                    let bbox = match layout {
                        Layout::Scored => corners(row[0], row[1], row[2], row[3]),
                        _ => [row[0], row[1], row[2], row[3]],
                    };
                    found.push(Candidate { class_id: row[5].max(0.0) as u32, score: row[4], bbox });
                }
            }
        }
    }
    found
}

/// Class-aware greedy NMS: highest score first; a box is dropped when it overlaps
/// a kept box of the same class by more than `iou_threshold`. At most `max` kept.
pub fn nms(mut c: Vec<Candidate>, iou_threshold: f32, max: usize) -> Vec<Candidate> {
    c.sort_by(|x, y| y.score.total_cmp(&x.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for cand in c {
        if kept.len() == max {
            break;
        }
        if kept.iter().all(|k| k.class_id != cand.class_id || box_iou(&k.bbox, &cand.bbox) <= iou_threshold) {
            kept.push(cand);
        }
    }
    kept
}

/// Class names from model metadata: a JSON object (`{"0": "person"}`), a JSON
/// array, or the Python dict text ultralytics writes (`{0: 'person', 1: 'bicycle'}`).
pub fn parse_names(s: &str) -> Option<Vec<String>> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
        return match v {
            serde_json::Value::Array(a) => a.into_iter().map(|x| x.as_str().map(String::from)).collect(),
            serde_json::Value::Object(o) => indexed(o.into_iter().map(|(k, v)| (k.parse().ok(), v.as_str().map(String::from)))),
            _ => None,
        };
    }
    // Python dict: {0: 'person', 1: "traffic light"}
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut pairs = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once(':')?;
        let after = after.trim_start();
        let quote = after.chars().next().filter(|q| *q == '\'' || *q == '"')?;
        let body = &after[1..];
        let end = body.find(quote)?;
        pairs.push((key.trim().parse().ok(), Some(body[..end].to_string())));
        rest = body[end + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    indexed(pairs.into_iter())
}

fn indexed(pairs: impl Iterator<Item = (Option<usize>, Option<String>)>) -> Option<Vec<String>> {
    let mut v: Vec<(usize, String)> = pairs.map(|(k, n)| Some((k?, n?))).collect::<Option<_>>()?;
    v.sort_by_key(|p| p.0);
    v.iter().enumerate().all(|(i, p)| p.0 == i).then(|| v.into_iter().map(|p| p.1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_recognised_from_shapes() {
        assert_eq!(Layout::infer(2535, 85, Some(80)), Some(Layout::Yolov5));
        assert_eq!(Layout::infer(84, 8400, Some(80)), Some(Layout::Yolov8));
        assert_eq!(Layout::infer(6, 8400, Some(2)), Some(Layout::Yolov8));
        assert_eq!(Layout::infer(300, 6, Some(80)), Some(Layout::Yolov10));
        assert_eq!(Layout::infer(25200, 6, Some(1)), Some(Layout::Yolov5));
        assert_eq!(Layout::infer(84, 8400, None), Some(Layout::Yolov8));
    }

    #[test]
    fn yolov5_scores_are_objectness_times_class() {
        // Two boxes, two classes: one above threshold, one below.
        let out = [
            100.0, 50.0, 20.0, 10.0, 0.9, 0.1, 0.8, //
            10.0, 10.0, 4.0, 4.0, 0.2, 0.9, 0.1,
        ];
        let c = candidates(Layout::Yolov5, &out, 2, 7, 0.25);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class_id, 1);
        assert!((c[0].score - 0.72).abs() < 1e-6);
        assert_eq!(c[0].bbox, [90.0, 45.0, 110.0, 55.0]);
    }

    #[test]
    fn scored_rows_give_the_same_candidates_as_the_yolov5_rows_they_came_from() {
        let raw = [
            100.0, 50.0, 20.0, 10.0, 0.9, 0.1, 0.8, //
            10.0, 10.0, 4.0, 4.0, 0.2, 0.9, 0.1, //
            60.0, 30.0, 8.0, 6.0, 0.5, 0.7, 0.7,
        ];
        // What the graph suffix computes: cx, cy, w, h, objectness x best class, first best class.
        let scored: Vec<f32> = raw
            .chunks_exact(7)
            .flat_map(|r| {
                let (class_id, cls) = best(r[5..].iter().copied());
                [r[0], r[1], r[2], r[3], r[4] * cls, class_id as f32]
            })
            .collect();
        assert_eq!(Layout::parse("scored"), Some(Layout::Scored));
        let a = candidates(Layout::Yolov5, &raw, 3, 7, 0.25);
        let b = candidates(Layout::Scored, &scored, 3, 6, 0.25);
        assert_eq!(a, b);
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].class_id, 0, "ties go to the first class, as ONNX ArgMax does");
    }

    #[test]
    fn yolov8_is_read_channels_first() {
        // [4 + 2 classes, 3 anchors]
        let out = [
            10.0, 20.0, 30.0, // cx
            10.0, 20.0, 30.0, // cy
            2.0, 2.0, 2.0, // w
            2.0, 2.0, 2.0, // h
            0.1, 0.9, 0.3, // class 0
            0.2, 0.1, 0.6, // class 1
        ];
        let c = candidates(Layout::Yolov8, &out, 6, 3, 0.5);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].class_id, c[0].bbox), (0, [19.0, 19.0, 21.0, 21.0]));
        assert_eq!(c[1].class_id, 1);
    }

    #[test]
    fn yolov10_rows_are_boxes() {
        let out = [1.0, 2.0, 3.0, 4.0, 0.8, 5.0, 0.0, 0.0, 1.0, 1.0, 0.1, 2.0];
        let c = candidates(Layout::Yolov10, &out, 2, 6, 0.25);
        assert_eq!(c, vec![Candidate { class_id: 5, score: 0.8, bbox: [1.0, 2.0, 3.0, 4.0] }]);
    }

    #[test]
    fn nms_is_class_aware() {
        let b = |class_id, score, x| Candidate { class_id, score, bbox: [x, 0.0, x + 10.0, 10.0] };
        let kept = nms(vec![b(0, 0.5, 1.0), b(0, 0.9, 0.0), b(1, 0.8, 0.0), b(0, 0.7, 50.0)], 0.45, 10);
        let ids: Vec<_> = kept.iter().map(|k| (k.class_id, k.score)).collect();
        assert_eq!(ids, vec![(0, 0.9), (1, 0.8), (0, 0.7)]);
        assert_eq!(nms(vec![b(0, 0.5, 0.0), b(0, 0.9, 100.0)], 0.45, 1).len(), 1);
    }

    #[test]
    fn names_parse_from_json_and_python_dicts() {
        assert_eq!(parse_names(r#"{"1": "b", "0": "a"}"#).unwrap(), vec!["a", "b"]);
        assert_eq!(parse_names(r#"["a", "b"]"#).unwrap(), vec!["a", "b"]);
        assert_eq!(parse_names("{0: 'Normal', 1: \"Fall, hard\"}").unwrap(), vec!["Normal", "Fall, hard"]);
        assert_eq!(parse_names("{0: 'a', 2: 'c'}"), None, "a gap is not a name list");
        assert_eq!(parse_names("nonsense"), None);
    }
}
