//! Where a kept frame's image comes from (issue 15), with the real model on real
//! photos:
//! - distributed, on the real RabbitMQ and PostgreSQL, each role its own process:
//!   with `evidence_forward_min_score`, preprocess carries each frame's image after
//!   its tensor and the infer-worker after the result only when a detection reaches
//!   the floor (the bytes each queue carries are measured off the broker); two
//!   results replicas sharing one evidence directory both serve every kept image,
//!   and `visionq dataset export` writes them;
//! - embedded: a frame outside the review band reviewed by its id soon after its
//!   result has its image kept; once its linger time (`evidence_recent_s`) passed,
//!   the review is stored and the reply says the image is gone.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The tensor a 416×416 model takes: what a tensors message carries without an image.
const TENSOR_BYTES: usize = 416 * 416 * 3;
const ORIGINAL_HEADER: &str = "x-visionq-original";
const FLOOR: f64 = 0.3;

fn content_type(photo: &str) -> &'static str {
    if photo.ends_with(".png") { "image/png" } else { "image/jpeg" }
}

/// `visionq dataset export --format coco DIR` over `evidence`, read back by pycocotools.
fn export_coco(evidence: &Path, out: &Path) -> Value {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["dataset", "export", "--format", "coco", out.to_str().unwrap()])
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_EVIDENCE_DIR", evidence)
        .output()
        .unwrap();
    assert!(run.status.success(), "export: {}", String::from_utf8_lossy(&run.stderr));
    let read = std::process::Command::new(cache().join("venv/bin/python"))
        .arg(repo().join("tools/check_dataset.py"))
        .args(["coco", out.to_str().unwrap()])
        .output()
        .expect("the venv's python runs");
    assert!(read.status.success(), "the dataset does not read back: {}", String::from_utf8_lossy(&read.stderr));
    serde_json::from_slice(&read.stdout).unwrap()
}

/// Every message waiting in `queue`, looked at and left there: (headers, body).
async fn peek(queue: &str) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: false }).await.unwrap() {
        let mut headers = BTreeMap::new();
        for (k, v) in m.delivery.properties.headers().as_ref().map(|h| h.inner().clone()).unwrap_or_default() {
            if let lapin::types::AMQPValue::LongString(s) = v {
                headers.insert(k.to_string(), String::from_utf8_lossy(s.as_bytes()).into_owned());
            }
        }
        out.push((headers, m.delivery.data.clone()));
    }
    // Closing unacked hands every message back to the queue.
    let _ = conn.close(200, "looked".into()).await;
    out
}

async fn wait_queue(name: &str, n: u32) {
    let t0 = Instant::now();
    while queue_len(name).await < n {
        assert!(t0.elapsed() < Duration::from_secs(60), "{name}: {} of {n} messages", queue_len(name).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_roles_send_the_image_on_only_when_it_may_be_kept_and_replicas_share_the_kept_images() {
    let prefix = unique("evsrc");
    let db = TestDb::new("evsrc").await;
    let dir = scratch("evsrc");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, format!("thresholds = {{ review = {FLOOR}, accept = 0.97 }}\n")).unwrap();
    let shared = dir.join("evidence");
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_RULES_FILE", rules.display().to_string()));
    env.push(("VISIONQ_EVIDENCE_FORWARD_MIN_SCORE", FLOOR.to_string()));
    env.push(("VISIONQ_EVIDENCE_DIR", shared.display().to_string()));

    // Frames in, through ingest and preprocess only: every tensor waits on its queue.
    let ingest = Server::start(&["ingest"], &env).await;
    let preprocess = Server::start(&["preprocess"], &env).await;
    let photos = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "person.jpg", "terrain2.png", "scream.jpg"];
    let client = reqwest::Client::new();
    let mut photo_of = BTreeMap::new();
    for photo in photos {
        let r = client
            .post(ingest.url("/v1/stations/dock-1/frames"))
            .header("content-type", content_type(photo))
            .body(photo_bytes(photo))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        photo_of.insert(v["frame_id"].as_str().unwrap().to_string(), photo);
    }
    let n = photos.len() as u32;
    wait_queue(&format!("{prefix}.tensors"), n).await;
    let tensors = peek(&format!("{prefix}.tensors")).await;
    assert_eq!(tensors.len(), photos.len());
    let mut tensor_bytes = 0;
    for (headers, body) in &tensors {
        let meta: Value = serde_json::from_str(&headers["x-visionq-meta"]).unwrap();
        let photo = photo_of[meta["frame"]["frame_id"].as_str().unwrap()];
        let original = photo_bytes(photo);
        assert_eq!(headers.get(ORIGINAL_HEADER), Some(&original.len().to_string()), "{photo}");
        assert_eq!(body.len(), TENSOR_BYTES + original.len(), "{photo}: the tensor, then the image");
        assert_eq!(&body[TENSOR_BYTES..], &original[..], "{photo}: the bytes posted, untouched");
        tensor_bytes += body.len();
    }

    // Inference: each result carries the image on only where a detection reaches the floor.
    let infer = Server::start(&["infer"], &env).await;
    wait_queue(&format!("{prefix}.results"), n).await;
    let results = peek(&format!("{prefix}.results")).await;
    assert_eq!(results.len(), photos.len());
    let (mut sent_on, mut result_bytes, mut json_bytes) = (BTreeMap::new(), 0, 0);
    for (headers, body) in &results {
        let len: usize = headers.get(ORIGINAL_HEADER).map(|l| l.parse().unwrap()).unwrap_or(0);
        let result: Value = serde_json::from_slice(&body[..body.len() - len]).unwrap();
        let id = result["frame_id"].as_str().unwrap().to_string();
        let photo = photo_of[&id];
        let reaches = result["detections"].as_array().unwrap().iter().any(|d| d["score"].as_f64().unwrap() >= FLOOR);
        assert_eq!(len > 0, reaches, "{photo}: sent on exactly when a detection reaches {FLOOR}: {result}");
        if reaches {
            assert_eq!(&body[body.len() - len..], &photo_bytes(photo)[..], "{photo}");
            sent_on.insert(id, photo);
        }
        result_bytes += body.len();
        json_bytes += body.len() - len;
    }
    assert!(!sent_on.is_empty() && sent_on.len() < photos.len(), "some photos reach the floor, not all: {sent_on:?}");
    let images: usize = photos.iter().map(|p| photo_bytes(p).len()).sum();
    eprintln!(
        "queue bytes for {} frames ({} B of images): tensors {} B ({} B of tensors + the images), results {} B ({} B of JSON + {} images sent on)",
        photos.len(),
        images,
        tensor_bytes,
        TENSOR_BYTES * photos.len(),
        result_bytes,
        json_bytes,
        sent_on.len()
    );

    // Two results replicas, competing for the results, sharing one evidence directory.
    let a = Server::start(&["results"], &env).await;
    let b = Server::start(&["results"], &env).await;
    let mut stored = BTreeMap::new();
    let t0 = Instant::now();
    while stored.len() < photos.len() {
        assert!(t0.elapsed() < Duration::from_secs(30), "stored {} of {}", stored.len(), photos.len());
        for id in photo_of.keys() {
            let r = client.get(a.url(&format!("/v1/frames/{id}"))).send().await.unwrap();
            if r.status() == 200 {
                stored.insert(id.clone(), r.json::<Value>().await.unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let review: Vec<&String> = stored.keys().filter(|id| stored[*id]["decision"]["outcome"] == "needs_review").collect();
    assert!(review.len() >= 3, "most photos need review under these rules: {stored:?}");
    // Every replica serves every kept image, whichever replica kept it.
    let t0 = Instant::now();
    for id in &review {
        for replica in [&a, &b] {
            loop {
                let r = client.get(replica.url(&format!("/v1/review/{id}/image"))).send().await.unwrap();
                if r.status() == 200 {
                    assert_eq!(r.bytes().await.unwrap().as_ref(), &photo_bytes(photo_of[*id])[..], "{}", photo_of[*id]);
                    break;
                }
                let e: Value = r.json().await.unwrap();
                assert_eq!(e["code"], "not_kept", "{e}");
                assert!(t0.elapsed() < Duration::from_secs(20), "{} was never kept: {e}", photo_of[*id]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // What nothing reached the floor of was never sent on, so never kept.
    for (id, photo) in photo_of.iter().filter(|(id, _)| !sent_on.contains_key(*id)) {
        let r = client.get(a.url(&format!("/v1/review/{id}/image"))).send().await.unwrap();
        assert_eq!(r.status(), 404, "{photo}");
    }
    let mut kept = 0.0;
    for replica in [&a, &b] {
        let m = replica.metrics().await;
        let line = m.lines().find_map(|l| l.strip_prefix("visionq_evidence_frames_total{outcome=\"kept\"} "));
        kept += line.map_or(0.0, |v| v.parse::<f64>().unwrap());
    }
    assert_eq!(kept, review.len() as f64, "the two replicas kept each frame once between them");
    for s in [ingest, preprocess, infer, a, b] {
        s.stop().await;
    }

    let read = export_coco(&shared, &dir.join("export"));
    assert_eq!(read["images"], review.len(), "{read}");
    for id in &review {
        assert!(read["labels"].as_object().unwrap().keys().any(|name| name.contains(id.as_str())), "{id} exported: {read}");
    }
    delete_topology(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_frame_reviewed_by_its_id_keeps_its_image_and_a_late_review_says_the_image_is_gone() {
    let data = scratch("evrecent");
    let rules = data.join("rules.toml");
    // Most photos score above 0.5: accepted, outside the review band, not kept.
    std::fs::write(&rules, "thresholds = { review = 0.3, accept = 0.5 }\n").unwrap();
    let linger = 3;
    let env = [
        ("VISIONQ_DATA_DIR", data.display().to_string()),
        ("VISIONQ_RULES_FILE", rules.display().to_string()),
        ("VISIONQ_EVIDENCE_RECENT_S", linger.to_string()),
    ];
    let server = Server::start(&["run"], &env).await;
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for photo in ["dog.jpg", "horses.jpg", "giraffe.jpg", "person.jpg", "eagle.jpg"] {
        let r = client
            .post(server.url("/v1/stations/gate-2/frames?wait_ms=30000"))
            .header("content-type", "image/jpeg")
            .body(photo_bytes(photo))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        if v["decision"]["outcome"] == "accepted" {
            accepted.push((photo, v["frame_id"].as_str().unwrap().to_string()));
        }
        if accepted.len() == 2 {
            break;
        }
    }
    assert_eq!(accepted.len(), 2, "two photos are accepted under these rules");
    let ((fresh_photo, fresh), (_, late)) = (&accepted[0], &accepted[1]);
    let image = |id: &str| client.get(server.url(&format!("/v1/review/{id}/image"))).send();
    assert_eq!(image(fresh).await.unwrap().status(), 404, "an accepted frame is not kept for review");

    // Reviewed within its linger time: the image is kept with the review.
    let r = client.post(server.url(&format!("/v1/review/{fresh}"))).json(&json!({"verdict": "confirmed"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["evidence"]["kept"].as_bool(), v["evidence"]["code"].as_str()), (Some(true), Some("kept")), "{v}");
    assert_eq!(v["review"]["verdict"], "confirmed");
    let got = image(fresh).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &photo_bytes(fresh_photo)[..]);

    // Reviewed after it: stored, and the reply says the image is gone (no image kept).
    tokio::time::sleep(Duration::from_secs(linger + 1)).await;
    let r = client
        .post(server.url(&format!("/v1/review/{late}")))
        .json(&json!({"verdict": "corrected", "class_name": "cat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["evidence"]["kept"].as_bool(), v["evidence"]["code"].as_str()), (Some(false), Some("image_gone")), "{v}");
    assert!(v["evidence"]["message"].as_str().unwrap().contains("no longer available"), "{v}");
    let stored: Value = client.get(server.url(&format!("/v1/frames/{late}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(stored["review"]["verdict"], "corrected", "the review is stored all the same: {stored}");
    let e: Value = image(late).await.unwrap().json().await.unwrap();
    assert_eq!(e["code"], "not_kept", "{e}");
    server.stop().await;

    // The export has the frame reviewed in time, and only it.
    let read = export_coco(&data.join("evidence"), &data.join("export"));
    assert_eq!(read["images"], 1, "{read}");
    let labels = read["labels"].as_object().unwrap();
    assert!(labels.keys().all(|name| name.contains(fresh.as_str())), "{read}");
}
