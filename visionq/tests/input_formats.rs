//! Images as cameras, phones and browsers write them: a JPEG whose EXIF Orientation
//! tag says how to turn it is detected as a viewer shows it (or as stored, where the
//! station says to ignore the tag). Test images are made here from dog.jpg. The real
//! binary, embedded mode.

mod common;

use common::*;
use serde_json::Value;

/// dog.jpg decoded to RGB: (pixels, width, height).
fn dog_rgb() -> (Vec<u8>, u32, u32) {
    let mut pre = visionq_preprocess::Preprocessor::new(416, 416, 40_000_000);
    pre.decode(&photo_bytes("dog.jpg")).expect("dog.jpg decodes")
}

/// `rgb` turned a quarter: counter-clockwise (`clockwise` false) or clockwise.
fn quarter_turn(rgb: &[u8], w: usize, h: usize, clockwise: bool) -> Vec<u8> {
    let mut out = vec![0u8; rgb.len()];
    for y in 0..h {
        for x in 0..w {
            // The turned image is `h` wide and `w` high.
            let (tx, ty) = if clockwise { (h - 1 - y, x) } else { (y, w - 1 - x) };
            out[(ty * h + tx) * 3..][..3].copy_from_slice(&rgb[(y * w + x) * 3..][..3]);
        }
    }
    out
}

/// An APP1 payload: `Exif\0\0`, a big-endian TIFF header and IFD0 with one entry,
/// Orientation (0x0112, SHORT) = `orientation`.
fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut v = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    v.extend(1u16.to_be_bytes());
    v.extend([0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]);
    v.extend(orientation.to_be_bytes());
    v.extend([0, 0, 0, 0, 0, 0]);
    v
}

/// A JPEG of `rgb` (quality 95), with an EXIF orientation tag when one is given.
fn jpeg(rgb: &[u8], w: u32, h: u32, orientation: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 95);
    if let Some(o) = orientation {
        enc.add_app_segment(1, exif_orientation(o)).unwrap();
    }
    enc.encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

fn size(r: &Value) -> (u64, u64) {
    (r["image"]["width"].as_u64().unwrap(), r["image"]["height"].as_u64().unwrap())
}

/// Every detection of `want` has one of the same class in `got` whose box overlaps it
/// by IoU ≥ `min_iou` (boxes in the same image coordinates).
fn same_detections(want: &Value, got: &Value, min_iou: f64) {
    assert_eq!(classes(want), classes(got), "classes differ:\nwant {want}\ngot {got}");
    for d in want["detections"].as_array().unwrap() {
        let best = got["detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["class_name"] == d["class_name"])
            .map(|g| iou(box_of(d), box_of(g)))
            .fold(0.0, f64::max);
        assert!(best >= min_iou, "{} {:?}: best IoU {best:.3}\nwant {want}\ngot {got}", d["class_name"], box_of(d));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exif_orientation_is_applied_or_ignored_per_station() {
    let dir = scratch("exif");
    let cfg = dir.join("visionq.toml");
    std::fs::write(&cfg, "[station.sideways-cam]\nexif_orientation = \"ignore\"\n").unwrap();
    let env = [("VISIONQ_DATA_DIR", dir.display().to_string())];
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &env).await;
    let client = reqwest::Client::new();
    let post = |station: &str, body: Vec<u8>| {
        let (client, url) = (client.clone(), server.url(&format!("/v1/stations/{station}/frames?wait_ms=30000")));
        async move {
            let (status, r) = post_jpeg(&client, &url, body).await;
            assert_eq!((status, r["status"].as_str()), (200, Some("ok")), "{r}");
            r
        }
    };

    let reference = post("phone", photo_bytes("dog.jpg")).await;
    assert_eq!(size(&reference), (768, 576));
    for c in ["bicycle", "dog"] {
        assert!(classes(&reference).contains(&c.to_string()), "{reference}");
    }

    // A phone held sideways stores the scene turned a quarter and tags how to turn it
    // back: 6 (turn clockwise to show) for pixels turned counter-clockwise, 8 for the other way.
    let (rgb, w, h) = dog_rgb();
    for (orientation, clockwise) in [(6u16, false), (8, true)] {
        let stored = quarter_turn(&rgb, w as usize, h as usize, clockwise);
        let tagged = jpeg(&stored, h, w, Some(orientation));
        let r = post("phone", tagged.clone()).await;
        assert_eq!(size(&r), (768, 576), "orientation {orientation}: the size as shown: {r}");
        same_detections(&reference, &r, 0.9);

        // Where the station ignores the tag, the frame is the pixels as stored: the same
        // result as the same pixels without a tag, in the stored image's coordinates.
        let ignored = post("sideways-cam", tagged).await;
        let untagged = post("phone", jpeg(&stored, h, w, None)).await;
        assert_eq!(size(&ignored), (576, 768), "{ignored}");
        assert_eq!(ignored["detections"], untagged["detections"], "ignore = the pixels as stored");
    }

    // Orientation 1 written out changes nothing.
    let upright = post("phone", jpeg(&rgb, w, h, Some(1))).await;
    same_detections(&reference, &upright, 0.9);
    server.stop().await;
}
