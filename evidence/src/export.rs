//! Kept frames as a labelled dataset, reviewers' corrections applied
//! ([`Evidence::labelled_boxes`]):
//! - **YOLO**: `images/<name>`, `labels/<name>.txt` (one `class cx cy w h` line per
//!   box, normalised to 0–1 by the image size), `data.yaml` (`path`, `train`, `val`,
//!   `nc`, `names`);
//! - **COCO**: `images/<name>` and `annotations.json` (`images`, `annotations` with
//!   `bbox` `[x, y, w, h]` in pixels, `area`, `iscrowd` 0, `categories` numbered from 1).
//!
//! Classes are the class names of the exported boxes, sorted (a corrected class is
//! one of them). Boxes are in the image as stations see it: after the EXIF turn, as
//! the result's `image` size says. Frames rejected by a reviewer are left out.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;

use crate::{Evidence, EvidenceError, EvidenceStore, LabelledBox, Query};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yolo,
    Coco,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "yolo" => Ok(Format::Yolo),
            "coco" => Ok(Format::Coco),
            other => Err(format!("unknown dataset format `{other}` (yolo or coco)")),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub images: usize,
    pub boxes: usize,
    /// Frames left out: rejected by a reviewer (or reviewed about a detection they lack).
    pub rejected: usize,
    pub classes: Vec<String>,
}

/// One exported image: its file name in `images/`, size and boxes.
struct Item {
    name: String,
    width: u32,
    height: u32,
    boxes: Vec<LabelledBox>,
}

/// A box with some area, clipped to the image; `None` for one with none.
fn clipped(b: &LabelledBox, w: u32, h: u32) -> Option<[f64; 4]> {
    let (w, h) = (w as f64, h as f64);
    let [x1, y1, x2, y2] = b.box_px.map(f64::from);
    let (x1, x2) = (x1.clamp(0.0, w), x2.clamp(0.0, w));
    let (y1, y2) = (y1.clamp(0.0, h), y2.clamp(0.0, h));
    (x2 > x1 && y2 > y1).then_some([x1, y1, x2, y2])
}

/// Writes the frames `query` selects from `store` as a `format` dataset into `dir`
/// (created; it must be empty if it exists).
pub async fn export(store: &dyn EvidenceStore, query: &Query, format: Format, dir: &Path) -> Result<Summary, EvidenceError> {
    if std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(EvidenceError::Invalid(format!("{} is not empty: export into a new folder", dir.display())));
    }
    let images = dir.join("images");
    std::fs::create_dir_all(&images).map_err(EvidenceError::io(&images))?;
    let mut summary = Summary::default();
    let mut items = Vec::new();
    for listed in store.list(query).await? {
        // Read again with its bytes: the sidecar may have changed since the listing.
        let Some((evidence, bytes)) = store.get(listed.frame_id()).await? else { continue };
        let Some(boxes) = evidence.labelled_boxes() else {
            summary.rejected += 1;
            continue;
        };
        let name = file_name(&evidence);
        let path = images.join(&name);
        std::fs::write(&path, &bytes).map_err(EvidenceError::io(&path))?;
        let (width, height) = (evidence.result.image.width, evidence.result.image.height);
        items.push(Item { name, width, height, boxes });
    }
    let classes: Vec<String> =
        items.iter().flat_map(|i| i.boxes.iter().map(|b| b.class_name.clone())).collect::<BTreeSet<_>>().into_iter().collect();
    let class_id = |name: &str| classes.iter().position(|c| c == name).expect("every class is listed");
    match format {
        Format::Yolo => {
            let labels = dir.join("labels");
            std::fs::create_dir_all(&labels).map_err(EvidenceError::io(&labels))?;
            for item in &items {
                let mut text = String::new();
                for b in &item.boxes {
                    let Some([x1, y1, x2, y2]) = clipped(b, item.width, item.height) else { continue };
                    let (w, h) = (item.width as f64, item.height as f64);
                    text.push_str(&format!(
                        "{} {:.6} {:.6} {:.6} {:.6}\n",
                        class_id(&b.class_name),
                        (x1 + x2) / 2.0 / w,
                        (y1 + y2) / 2.0 / h,
                        (x2 - x1) / w,
                        (y2 - y1) / h
                    ));
                    summary.boxes += 1;
                }
                let stem = item.name.rsplit_once('.').map_or(item.name.as_str(), |(s, _)| s);
                let path = labels.join(format!("{stem}.txt"));
                std::fs::write(&path, text).map_err(EvidenceError::io(&path))?;
            }
            // JSON strings are valid YAML scalars: names with any character stay intact.
            let absolute = std::path::absolute(dir).map_err(EvidenceError::io(dir))?;
            let names: Vec<String> = classes.iter().enumerate().map(|(i, c)| format!("  {i}: {}\n", json!(c))).collect();
            let yaml = format!(
                "# visionq dataset export: {} images from the evidence store\npath: {}\ntrain: images\nval: images\nnc: {}\nnames:\n{}",
                items.len(),
                json!(absolute.to_string_lossy()),
                classes.len(),
                names.concat()
            );
            let path = dir.join("data.yaml");
            std::fs::write(&path, yaml).map_err(EvidenceError::io(&path))?;
        }
        Format::Coco => {
            let mut annotations = Vec::new();
            for (n, item) in items.iter().enumerate() {
                for b in &item.boxes {
                    let Some([x1, y1, x2, y2]) = clipped(b, item.width, item.height) else { continue };
                    let (w, h) = (x2 - x1, y2 - y1);
                    annotations.push(json!({
                        "id": annotations.len() + 1,
                        "image_id": n + 1,
                        "category_id": class_id(&b.class_name) + 1,
                        "bbox": [x1, y1, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }));
                }
            }
            summary.boxes = annotations.len();
            let doc = json!({
                "info": {"description": "visionq dataset export from the evidence store", "date_created": chrono::Utc::now()},
                "images": items.iter().enumerate().map(|(n, i)| json!({
                    "id": n + 1, "file_name": i.name, "width": i.width, "height": i.height,
                })).collect::<Vec<_>>(),
                "annotations": annotations,
                "categories": classes.iter().enumerate().map(|(n, c)| json!({"id": n + 1, "name": c})).collect::<Vec<_>>(),
            });
            let path = dir.join("annotations.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&doc).expect("serialises")).map_err(EvidenceError::io(&path))?;
        }
    }
    summary.images = items.len();
    summary.classes = classes;
    Ok(summary)
}

/// `<station>_<frame id>.<ext>`: unique, and says where the frame came from.
fn file_name(e: &Evidence) -> String {
    let ext = e.image.file.rsplit_once('.').map_or("jpg", |(_, x)| x);
    format!("{}_{}.{ext}", e.result.station.trim_start_matches('.'), e.frame_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{det, result};
    use crate::{Bounds, KeptFor, LocalDir, Review, Verdict};
    use bytes::Bytes;
    use chrono::Utc;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0];

    #[tokio::test]
    async fn yolo_and_coco_carry_the_boxes_with_the_reviews_applied() {
        let root = std::env::temp_dir().join(format!("visionq-export-{}", uuid::Uuid::now_v7()));
        let store = LocalDir::open(&root.join("store"), Bounds { max_bytes: u64::MAX, max_age: None }).unwrap();
        let t = Utc::now();
        // 640x480 images (see `result`).
        let a =
            result("cam", t, vec![det("dog", 0.5, [64.0, 48.0, 320.0, 240.0]), det("cat", 0.7, [0.0, 0.0, 700.0, 10.0])], Some("dog"));
        let b = result("cam", t + chrono::Duration::seconds(1), vec![det("dog", 0.6, [1.0, 1.0, 2.0, 2.0])], Some("dog"));
        let c = result("yard", t + chrono::Duration::seconds(2), vec![det("car", 0.6, [10.0, 10.0, 20.0, 20.0])], Some("car"));
        let review = |verdict, class: Option<&str>| Review {
            verdict,
            detection: None,
            class_name: class.map(String::from),
            code: None,
            reviewer: None,
            reviewed_at: None,
        };
        let mut ea = Evidence::new(a, KeptFor::Reviewed, t);
        ea.review = Some(review(Verdict::Corrected, Some("wolf")));
        let mut eb = Evidence::new(b, KeptFor::Reviewed, t);
        eb.review = Some(review(Verdict::Rejected, None));
        let ec = Evidence::new(c, KeptFor::ReviewBand, t);
        for e in [&ea, &eb, &ec] {
            store.put(e.clone(), Bytes::from_static(JPEG)).await.unwrap();
        }

        let yolo = root.join("yolo");
        let s = export(&store, &Query::default(), Format::Yolo, &yolo).await.unwrap();
        assert_eq!((s.images, s.boxes, s.rejected), (2, 3, 1));
        assert_eq!(s.classes, ["car", "cat", "wolf"], "the corrected class replaces the model's");
        let label = std::fs::read_to_string(yolo.join(format!("labels/cam_{}.txt", ea.frame_id()))).unwrap();
        assert_eq!(label, "2 0.300000 0.300000 0.400000 0.400000\n1 0.500000 0.010417 1.000000 0.020833\n");
        assert!(yolo.join(format!("images/cam_{}.jpg", ea.frame_id())).is_file());
        assert!(!yolo.join(format!("images/cam_{}.jpg", eb.frame_id())).exists(), "the rejected frame is left out");
        let yaml = std::fs::read_to_string(yolo.join("data.yaml")).unwrap();
        assert!(yaml.contains("nc: 3\nnames:\n  0: \"car\"\n  1: \"cat\"\n  2: \"wolf\"\n"), "{yaml}");
        assert!(export(&store, &Query::default(), Format::Yolo, &yolo).await.is_err(), "a non-empty folder is refused");

        let coco = root.join("coco");
        let q = Query { station: Some("cam".into()), ..Default::default() };
        let s = export(&store, &q, Format::Coco, &coco).await.unwrap();
        assert_eq!((s.images, s.boxes), (1, 2));
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(coco.join("annotations.json")).unwrap()).unwrap();
        assert_eq!(doc["categories"], json!([{"id": 1, "name": "cat"}, {"id": 2, "name": "wolf"}]));
        let wolf = &doc["annotations"][0];
        assert_eq!((wolf["category_id"].clone(), wolf["bbox"].clone()), (json!(2), json!([64.0, 48.0, 256.0, 192.0])));
        assert_eq!(wolf["area"], json!(256.0 * 192.0));
        assert_eq!(doc["annotations"][1]["bbox"], json!([0.0, 0.0, 640.0, 10.0]), "clipped to the image");
        assert_eq!(doc["images"][0]["width"], 640);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
