//! Keeping data for retraining (issue 15): the real model on real photos under rules
//! that send most frames to review; the frames needing review land in the evidence
//! store (the bytes posted, a sidecar with the result); `visionq dataset export`
//! writes them as COCO and YOLO datasets that pycocotools and a YOLO label check
//! (tools/check_dataset.py) read back, reviewers' corrections applied; a restart
//! with a smaller byte bound prunes the oldest frames.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

const PHOTOS: [&str; 8] = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "person.jpg", "bus.jpg", "zidane.jpg", "terrain2.png"];

async fn post(server: &Server, station: &str, photo: &str) -> Value {
    let content_type = if photo.ends_with(".png") { "image/png" } else { "image/jpeg" };
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v1/stations/{station}/frames?wait_ms=30000")))
        .header("content-type", content_type)
        .body(photo_bytes(photo))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Sidecars under the evidence folder, by frame id.
fn sidecars(root: &Path) -> BTreeMap<String, (PathBuf, Value)> {
    let mut out = BTreeMap::new();
    for path in files(root) {
        if path.extension().is_some_and(|e| e == "json") {
            // A file may be pruned between the listing and the read.
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            out.insert(v["result"]["frame_id"].as_str().unwrap().to_string(), (path, v));
        }
    }
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn bytes_on_disk(dir: &Path) -> u64 {
    files(dir).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// `visionq dataset export ARGS` against the data dir; (success, stdout + stderr).
fn export(data: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["dataset", "export"])
        .args(args)
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_DATA_DIR", data)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// tools/check_dataset.py FORMAT DIR: the dataset as pycocotools / the YOLO check read it.
fn read_back(format: &str, dir: &Path) -> Value {
    let out = std::process::Command::new(cache().join("venv/bin/python"))
        .arg(repo().join("tools/check_dataset.py"))
        .args([format, dir.to_str().unwrap()])
        .output()
        .expect("the venv's python runs");
    assert!(out.status.success(), "{format} dataset does not read back: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The boxes a result should have in a dataset: class name and pixel box.
fn boxes_of(result: &Value) -> Vec<(String, [f64; 4])> {
    result["detections"].as_array().unwrap().iter().map(|d| (d["class_name"].as_str().unwrap().to_string(), box_of(d))).collect()
}

/// Every image of a read-back dataset carries exactly `want`'s boxes (within `tol` px).
fn assert_labels(read: &Value, want: &BTreeMap<String, Vec<(String, [f64; 4])>>, tol: f64, what: &str) {
    let labels = read["labels"].as_object().unwrap();
    assert_eq!(labels.len(), want.len(), "{what}: images");
    for (frame_id, boxes) in want {
        let (_, got) =
            labels.iter().find(|(name, _)| name.contains(frame_id.as_str())).unwrap_or_else(|| panic!("{what}: {frame_id}"));
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), boxes.len(), "{what}: boxes of {frame_id}: {got:?}");
        for ((class, b), g) in boxes.iter().zip(got) {
            assert_eq!(g[0].as_str().unwrap(), class, "{what}: {frame_id}");
            for k in 0..4 {
                assert!((g[k + 1].as_f64().unwrap() - b[k]).abs() <= tol, "{what}: {frame_id} box {b:?} read back as {g}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_needing_review_are_kept_exported_as_coco_and_yolo_and_pruned_by_bytes() {
    let data = scratch("evidence");
    let rules = data.join("rules.toml");
    // Most detections fall between review and accept; gate-9's rules send none to review.
    std::fs::write(
        &rules,
        "thresholds = { review = 0.3, accept = 0.97 }\n[rules.strict]\nthresholds = { review = 0.98, accept = 0.99 }\n[station.gate-9]\nrules = \"strict\"\n",
    )
    .unwrap();
    let env = [("VISIONQ_DATA_DIR", data.display().to_string()), ("VISIONQ_RULES_FILE", rules.display().to_string())];
    let server = Server::start(&["run"], &env).await;
    let mut results = Vec::new();
    for photo in PHOTOS {
        results.push((photo, post(&server, "line-1", photo).await));
    }
    let gate = post(&server, "gate-9", "dog.jpg").await;
    assert_ne!(gate["decision"]["outcome"], "needs_review", "{}", gate["decision"]);
    let review: Vec<&(&str, Value)> = results.iter().filter(|(_, r)| r["decision"]["outcome"] == "needs_review").collect();
    assert!(review.len() >= 4, "most photos need review under these rules: {results:?}");

    // The frames needing review, and only they, are kept (written off the results' path).
    let root = data.join("evidence");
    let mut kept = BTreeMap::new();
    for _ in 0..100 {
        kept = sidecars(&root);
        if kept.len() >= review.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept.len(), review.len(), "{:?}", kept.keys());
    for (photo, r) in &review {
        let id = r["frame_id"].as_str().unwrap();
        let (path, sidecar) = &kept[id];
        let s = &sidecar["result"];
        assert_eq!((s["station"].clone(), s["received_at"].clone()), (r["station"].clone(), r["received_at"].clone()));
        assert_eq!(s["detections"], r["detections"], "{photo}: class names and boxes in original pixels");
        assert_eq!(s["decision"], r["decision"]);
        assert_eq!(sidecar["kept_for"], "review_band");
        let image = path.with_file_name(sidecar["image"]["file"].as_str().unwrap());
        assert_eq!(std::fs::read(&image).unwrap(), photo_bytes(photo), "{photo}: the bytes posted, untouched");
        let ext = if photo.ends_with(".png") { "png" } else { "jpg" };
        assert_eq!(image.extension().unwrap(), ext);
        assert!(path.starts_with(root.join("line-1")), "{}", path.display());
    }
    // The gauge is set after each write's pruning step: wait for the last one.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = server.metrics().await;
        if metric(&metrics, "visionq_evidence_store_bytes") == bytes_on_disk(&root) as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&metrics, "visionq_evidence_frames_total{outcome=\"kept\"}"), review.len() as f64, "{metrics}");
    assert_eq!(metric(&metrics, "visionq_evidence_store_bytes"), bytes_on_disk(&root) as f64);

    // A reviewer's verdicts through the review queue: the first frame's decided class
    // corrected, the second rejected; each lands in its frame's sidecar.
    let (first, second) = (review[0].1["frame_id"].as_str().unwrap(), review[1].1["frame_id"].as_str().unwrap());
    for (id, verdict) in [
        (first, serde_json::json!({"verdict": "corrected", "class_name": "zebra"})),
        (second, serde_json::json!({"verdict": "rejected"})),
    ] {
        let r = reqwest::Client::new().post(server.url(&format!("/v1/review/{id}"))).json(&verdict).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let sidecar: Value = serde_json::from_slice(&std::fs::read(&kept[id].0).unwrap()).unwrap();
        assert_eq!(sidecar["review"]["verdict"], verdict["verdict"], "{sidecar}");
        assert_eq!(sidecar["kept_for"], "reviewed");
    }
    server.stop().await;

    let mut want: BTreeMap<String, Vec<(String, [f64; 4])>> =
        review.iter().map(|(_, r)| (r["frame_id"].as_str().unwrap().to_string(), boxes_of(r))).collect();
    want.remove(second);
    let decided = review[0].1["decision"]["class_name"].as_str().unwrap();
    let boxes = want.get_mut(first).unwrap();
    let best = (0..boxes.len())
        .filter(|&i| boxes[i].0 == decided)
        .max_by(|&a, &b| {
            let score = |i: usize| review[0].1["detections"][i]["score"].as_f64().unwrap();
            score(a).total_cmp(&score(b))
        })
        .unwrap();
    boxes[best].0 = "zebra".into();
    let mut classes: Vec<String> = want.values().flatten().map(|(c, _)| c.clone()).collect();
    classes.sort();
    classes.dedup();

    // COCO, read back by pycocotools.
    let coco = data.join("export-coco");
    let (ok, out) = export(&data, &["--format", "coco", coco.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("1 frames left out"), "{out}");
    let read = read_back("coco", &coco);
    assert_eq!(read["images"], want.len());
    assert_eq!(read["boxes"], want.values().map(Vec::len).sum::<usize>());
    assert_eq!(read["classes"], serde_json::json!(classes));
    assert_labels(&read, &want, 1e-3, "coco");

    // YOLO: labels normalised to 6 decimals, so within a pixel.
    let yolo = data.join("export-yolo");
    let (ok, out) = export(&data, &["--format", "yolo", yolo.to_str().unwrap()]);
    assert!(ok, "{out}");
    let read = read_back("yolo", &yolo);
    assert_eq!(read["classes"], serde_json::json!(classes));
    assert_labels(&read, &want, 1.0, "yolo");

    // Filters: a station, and a time window (received_at, since inclusive).
    let since = review[3].1["received_at"].as_str().unwrap();
    let part = data.join("export-part");
    let (ok, out) = export(&data, &["--format", "coco", "--station", "line-1", "--since", since, part.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(read_back("coco", &part)["images"], review.len() - 3);
    let none = data.join("export-none");
    let (ok, out) = export(&data, &["--format", "coco", "--station", "gate-9", none.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(read_back("coco", &none)["images"], 0);
    // Refusals: a non-empty folder, a bad format, a bad instant.
    let (ok, out) = export(&data, &["--format", "coco", coco.to_str().unwrap()]);
    assert!(!ok && out.contains("not empty"), "{out}");
    let (ok, out) = export(&data, &["--format", "voc", data.join("x").to_str().unwrap()]);
    assert!(!ok && out.contains("unknown dataset format"), "{out}");
    let (ok, out) = export(&data, &["--since", "yesterday", data.join("y").to_str().unwrap()]);
    assert!(!ok && out.contains("RFC 3339"), "{out}");

    // A restart with room for half the bytes: the oldest frames go first.
    let total = bytes_on_disk(&root);
    let bound = total / 2;
    let env2 = [
        ("VISIONQ_DATA_DIR", data.display().to_string()),
        ("VISIONQ_RULES_FILE", rules.display().to_string()),
        ("VISIONQ_EVIDENCE_MAX_BYTES", bound.to_string()),
    ];
    let server = Server::start(&["run"], &env2).await;
    let mut left = kept.clone();
    for _ in 0..100 {
        left = sidecars(&root);
        if bytes_on_disk(&root) <= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bytes_on_disk(&root) <= bound, "{} bytes left, bound {bound}", bytes_on_disk(&root));
    assert!(!left.is_empty() && left.len() < kept.len(), "{} of {} left", left.len(), kept.len());
    // Posted one after the other, so received_at orders them as `review` does.
    let newest: Vec<&str> = review[review.len() - left.len()..].iter().map(|(_, r)| r["frame_id"].as_str().unwrap()).collect();
    for id in newest {
        assert!(left.contains_key(id), "the newest frames stay: {id} is gone");
    }
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "visionq_evidence_frames_total{outcome=\"pruned\"}"), (kept.len() - left.len()) as f64, "{metrics}");
    assert!(files(&root).iter().all(|p| p.extension().is_some_and(|e| e != "tmp")), "no half-written file is left");
    server.stop().await;
}

/// On RabbitMQ: an all-roles process keeps the frames it ingested (PostgreSQL for
/// the results); a results role on its own has no frame bytes and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_an_all_roles_process_keeps_evidence_and_a_results_role_alone_says_it_cannot() {
    let prefix = unique("evidence");
    let db = TestDb::new("evidence").await;
    let data = scratch("evidence-amqp");
    let rules = data.join("rules.toml");
    std::fs::write(&rules, "thresholds = { review = 0.3, accept = 0.97 }\n").unwrap();
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_DATA_DIR", data.display().to_string()));
    env.push(("VISIONQ_RULES_FILE", rules.display().to_string()));
    let server = Server::start(&["run"], &env).await;
    let r = post(&server, "dock-3", "dog.jpg").await;
    assert_eq!(r["decision"]["outcome"], "needs_review", "{}", r["decision"]);
    let id = r["frame_id"].as_str().unwrap().to_string();
    let root = data.join("evidence");
    let mut kept = BTreeMap::new();
    for _ in 0..100 {
        kept = sidecars(&root);
        if !kept.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept.keys().collect::<Vec<_>>(), [&id]);
    assert_eq!(kept[&id].1["result"]["detections"], r["detections"]);
    server.stop().await;

    let alone = Server::start(&["results"], &env).await;
    let log_file = alone.log.clone();
    alone.stop().await;
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("frames needing review are not kept by a results role without ingest"), "{log}");
    delete_topology(&prefix).await;
}
