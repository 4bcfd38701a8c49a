//! Images as cameras, phones and browsers write them: a JPEG whose EXIF Orientation
//! tag says how to turn it is detected as a viewer shows it (or as stored, where the
//! station says to ignore the tag). Test images are made here from dog.jpg. The real
//! binary, embedded mode.

mod common;

use common::*;
use serde_json::Value;

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

async fn post_as(client: &reqwest::Client, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = client.post(url).header("content-type", content_type).body(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn png_and_webp_frames_are_detected_as_the_same_jpeg() {
    let server = Server::start(&["run"], &[("VISIONQ_DATA_DIR", scratch("formats").display().to_string())]).await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/stations/cam-1/frames?wait_ms=30000");
    let ok = |(status, r): (u16, Value)| {
        assert_eq!((status, r["status"].as_str()), (200, Some("ok")), "{r}");
        r
    };
    let reference = ok(post_as(&client, &url, "image/jpeg", photo_bytes("dog.jpg")).await);
    // Lossless re-encodings of the decoded JPEG: the model sees the same pixels.
    let (rgb, w, h) = dog_rgb();
    for (content_type, body) in [("image/png", to_png(&rgb, w, h)), ("image/webp", to_webp(&rgb, w, h))] {
        let r = ok(post_as(&client, &url, content_type, body.clone()).await);
        assert_eq!(size(&r), (768, 576), "{r}");
        same_detections(&reference, &r, 0.99);
        let scores = |v: &Value| v["detections"].as_array().unwrap().iter().map(|d| d["score"].as_f64().unwrap()).collect::<Vec<_>>();
        for (a, b) in scores(&reference).iter().zip(scores(&r)) {
            assert!((a - b).abs() < 1e-3, "{content_type}: score {a} vs {b}");
        }
        // As a multipart part too.
        let part = reqwest::multipart::Part::bytes(body).file_name("dog").mime_str(content_type).unwrap();
        let resp = client.post(&url).multipart(reqwest::multipart::Form::new().part("image", part)).send().await.unwrap();
        let r = ok((resp.status().as_u16(), resp.json().await.unwrap()));
        same_detections(&reference, &r, 0.99);
    }

    // terrain2.png, a palette PNG with five labelled cars: its size from the PNG
    // header, and vehicles where the labels are (YOLOv3-tiny calls most of them trucks).
    let terrain = cache().join("photos/terrain2.png");
    if terrain.exists() {
        let r = ok(post_as(&client, &url, "image/png", std::fs::read(&terrain).unwrap()).await);
        assert_eq!(size(&r), (1024, 682), "{r}");
        let labels: Value = serde_json::from_slice(&std::fs::read(cache().join("photos/terrain2_coco.json")).unwrap()).unwrap();
        let cars: Vec<[f64; 4]> = r["detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| ["car", "truck", "bus"].contains(&d["class_name"].as_str().unwrap()))
            .map(box_of)
            .collect();
        let found = labels["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let b: Vec<f64> = a["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                [b[0], b[1], b[0] + b[2], b[1] + b[3]]
            })
            .filter(|label| cars.iter().any(|c| iou(*c, *label) >= 0.5))
            .count();
        assert!(found >= 1, "no labelled car found: {r}");
        println!("terrain2.png: {found} of 5 labelled cars found, {} vehicle boxes", cars.len());
    }
    server.stop().await;
}
