//! Several models at once, canaries and shadow runs (issue 16, parts 3 and 4), with
//! the real models on real photos in embedded mode:
//!
//! - a station that names another model (`[station.<id>] model`) runs on it — the
//!   YOLOv8 fall detector at 640×640, batch 1 — while the others run on YOLOv3-tiny
//!   at 416×416, each batched on its own, in both input modes;
//! - a canary takes its share of the frames (within a binomial tolerance) and every
//!   frame of its stations, and ends over the API;
//! - a shadow run of the same weights agrees fully and publishes nothing; one with a
//!   raised score threshold disagrees and is rolled back automatically, counted.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A repository with YOLOv3-tiny as `yolo` 1 (active) and 2 (the same weights),
/// 3 (the same weights with `conf_threshold = 0.9`), and the fall detector as `fall` 1.
fn repository(tag: &str) -> PathBuf {
    let repo = scratch(tag).join("models");
    let yolo = model();
    let y = yolo.to_str().unwrap();
    succeeded(model_cli(&["model", "add", y, "--name", "yolo", "--version", "1"], &repo));
    succeeded(model_cli(&["model", "add", y, "--name", "yolo", "--version", "2"], &repo));
    let strict = repo.parent().unwrap().join("strict.toml");
    std::fs::write(&strict, "conf_threshold = 0.9\n").unwrap();
    let m = strict.to_str().unwrap();
    succeeded(model_cli(&["model", "add", y, "--name", "yolo", "--version", "3", "--manifest", m], &repo));
    let fall = cache().join("models/fall-detection-yolov8.onnx");
    succeeded(model_cli(&["model", "add", fall.to_str().unwrap(), "--name", "fall", "--version", "1"], &repo));
    repo
}

type Admin = ApiClient;

impl ApiClient {
    /// `name`'s entry in `GET /v1/models`.
    async fn entry(&self, name: &str) -> Value {
        let (status, list) = self.call(reqwest::Method::GET, "/v1/models", None).await;
        assert_eq!(status, 200, "{list}");
        list["models"].as_array().unwrap().iter().find(|m| m["name"] == name).cloned().unwrap_or_else(|| panic!("{list}"))
    }

    /// Posts `n` photos from `station`, 8 at a time, and returns each reply's model
    /// version by frame id (each must be an `ok` result of `model`).
    async fn post(&self, station: &str, n: usize, model: &str) -> BTreeMap<String, String> {
        let photos = ["dog.jpg", "horses.jpg", "person.jpg", "eagle.jpg", "giraffe.jpg", "kite.jpg"];
        let mut out = BTreeMap::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
            let posts = chunk.iter().map(|i| {
                let url = format!("{}/v1/stations/{station}/frames?wait_ms=60000", self.base);
                let req = self.client.post(url).bearer_auth(&self.token).header("content-type", "image/jpeg");
                req.body(photo_bytes(photos[i % photos.len()])).send()
            });
            for r in futures_util::future::join_all(posts).await {
                let r = r.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let v: Value = r.json().await.unwrap();
                assert_eq!((v["status"].as_str(), v["model"]["name"].as_str()), (Some("ok"), Some(model)), "{v}");
                out.insert(v["frame_id"].as_str().unwrap().to_string(), v["model"]["version"].as_str().unwrap().to_string());
            }
        }
        out
    }
}

async fn start(tag: &str, repo: &Path, config: &str, extra: &[(&str, &str)]) -> (Server, Admin, PathBuf) {
    let data = scratch(&format!("{tag}-data"));
    let cfg = data.join("visionq.toml");
    std::fs::write(&cfg, config).unwrap();
    let tokens = data.join("tokens");
    let token = new_token(&tokens, &["--scope", "admin"]);
    let mut env = vec![
        ("VISIONQ_DATA_DIR", data.display().to_string()),
        ("VISIONQ_MODEL_REPOSITORY", repo.display().to_string()),
        ("VISIONQ_MODEL_NAME", "yolo".to_string()),
        ("VISIONQ_TOKENS_FILE", tokens.display().to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &env).await;
    let admin = Admin { client: reqwest::Client::new(), base: server.base.clone(), token };
    (server, admin, data)
}

/// The value of the first `/metrics` line starting with `prefix`.
fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_station_that_names_another_model_runs_on_it_batched_on_its_own_in_both_input_modes() {
    let repo = repository("several-models");
    for infer_input in ["tensors", "frames"] {
        let config = "[station.ward-1]\nmodel = \"fall\"\n";
        let (server, admin, _) =
            start(&format!("several-models-{infer_input}"), &repo, config, &[("VISIONQ_INFER_INPUT", infer_input)]).await;
        // Both stations at once, so both engines have frames in flight together.
        let (yolo, fall) = tokio::join!(admin.post("line-1", 24, "yolo"), admin.post("ward-1", 24, "fall"));
        assert_eq!((yolo.len(), fall.len()), (24, 24), "{infer_input}");
        assert!(fall.values().all(|v| v == "1") && yolo.values().all(|v| v == "1"));
        // A fall-detector frame was letterboxed at 640: the detector's own view of the
        // photo, compared with a result from the station.
        let r = admin
            .client
            .post(format!("{}/v1/stations/ward-1/frames?wait_ms=60000", admin.base))
            .bearer_auth(&admin.token)
            .header("content-type", "image/jpeg")
            .body(photo_bytes("person.jpg"))
            .send()
            .await
            .unwrap();
        let via_station: Value = r.json().await.unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
            .args(["detect", photo("person.jpg").to_str().unwrap()])
            .env_remove("VISIONQ_AMQP_URL")
            .env("VISIONQ_CACHE_DIR", cache())
            .env("VISIONQ_DATA_DIR", scratch("several-models-detect"))
            .env("VISIONQ_MODEL", cache().join("models/fall-detection-yolov8.onnx"))
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string).unwrap_or_default();
        let direct: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        same_detections(&via_station, &direct, "fall detector via its station");

        // Each model its own engine and its own figures.
        let metrics = server.metrics().await;
        for (model, at_least) in [("fall", 25.0), ("yolo", 24.0)] {
            let frames = metric(&metrics, &format!("visionq_model_frames_total{{model=\"{model}\",route=\"active\",version=\"1\"}}"));
            assert!(frames.is_some_and(|f| f >= at_least), "{model}: {frames:?}\n{metrics}");
            let latency = metric(&metrics, &format!("visionq_model_latency_seconds_count{{model=\"{model}\",version=\"1\"}}"));
            assert!(latency.is_some_and(|f| f >= at_least), "{model}: {latency:?}");
        }
        let entry = admin.entry("fall").await;
        assert_eq!(entry["serving"], "1", "{entry}");
        assert_eq!(admin.entry("yolo").await["serving"], "1");
        // The fall detector can be activated and rolled back on its own name.
        let (status, body) = admin.call(reqwest::Method::POST, "/v1/models/fall/rollback", None).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("no_previous_version")), "{body}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_takes_its_share_and_its_stations_and_ends_over_the_api() {
    let repo = repository("canary");
    let (server, admin, data) = start("canary", &repo, "", &[]).await;
    // Refusals, as {error, code}.
    for (body, want) in [
        (json!({"version": "1", "mode": "canary", "share": 0.5}), (409, "candidate_is_active")),
        (json!({"version": "9", "mode": "canary", "share": 0.5}), (404, "unknown_version")),
        (json!({"version": "2", "mode": "canary"}), (400, "bad_parameter")),
        (json!({"version": "2", "mode": "canary", "share": 1.5}), (400, "bad_parameter")),
        (json!({"version": "2", "mode": "blue-green", "share": 0.5}), (400, "bad_parameter")),
        (json!({"version": "2", "mode": "shadow", "share": 0.5}), (400, "bad_parameter")),
    ] {
        let (status, got) = admin.call(reqwest::Method::POST, "/v1/models/yolo/candidate", Some(body.clone())).await;
        assert_eq!((status, got["code"].as_str().unwrap_or_default()), want, "{body}: {got}");
        assert!(got["error"].as_str().is_some_and(|e| !e.is_empty()), "{got}");
    }
    let (status, got) = admin.call(reqwest::Method::DELETE, "/v1/models/yolo/candidate", None).await;
    assert_eq!((status, got["code"].as_str()), (409, Some("no_candidate")), "{got}");

    let (status, c) = admin
        .call(
            reqwest::Method::POST,
            "/v1/models/yolo/candidate",
            Some(json!({"version": "2", "mode": "canary", "share": 0.25, "stations": ["canary-cam"]})),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!((c["version"].as_str(), c["mode"].as_str(), c["share"].as_f64()), (Some("2"), Some("canary"), Some(0.25)), "{c}");
    let n = 240;
    let replies = admin.post("line-1", n, "yolo").await;
    let on_canary = replies.values().filter(|v| *v == "2").count();
    assert!(replies.values().all(|v| v == "1" || v == "2"));
    // 25 % of 240 is 60; four binomial standard deviations (6.7 each) either way.
    let sd = (n as f64 * 0.25 * 0.75).sqrt();
    assert!((on_canary as f64 - 60.0).abs() <= 4.0 * sd, "{on_canary} of {n} frames on the canary");
    let listed = admin.post("canary-cam", 16, "yolo").await;
    assert!(listed.values().all(|v| v == "2"), "every frame of a listed station: {listed:?}");
    let entry = admin.entry("yolo").await;
    let c = &entry["candidate"];
    assert_eq!(c["frames"].as_u64(), Some(on_canary as u64 + 16), "{entry}");
    assert_eq!((c["errors"].as_u64(), entry["serving"].as_str()), (Some(0), Some("1")), "{entry}");
    let metrics = server.metrics().await;
    let counted = metric(&metrics, "visionq_model_frames_total{model=\"yolo\",route=\"canary\",version=\"2\"}");
    assert_eq!(counted, Some((on_canary + 16) as f64), "{metrics}");

    let (status, ended) = admin.call(reqwest::Method::DELETE, "/v1/models/yolo/candidate", None).await;
    assert_eq!((status, ended["reason"].as_str()), (200, Some("cancelled")), "{ended}");
    let after = admin.post("canary-cam", 8, "yolo").await;
    assert!(after.values().all(|v| v == "1"), "after the canary ended: {after:?}");
    let entry = admin.entry("yolo").await;
    assert!(entry["candidate"].is_null() && entry["last_candidate"]["reason"] == "cancelled", "{entry}");

    // Activating the canary's version promotes it.
    let (status, _) = admin
        .call(reqwest::Method::POST, "/v1/models/yolo/candidate", Some(json!({"version": "2", "mode": "canary", "share": 0.5})))
        .await;
    assert_eq!(status, 200);
    let (status, a) = admin.call(reqwest::Method::POST, "/v1/models/yolo/activate", Some(json!({"version": "2"}))).await;
    assert_eq!(status, 200, "{a}");
    let entry = admin.entry("yolo").await;
    assert_eq!((entry["serving"].as_str(), entry["last_candidate"]["reason"].as_str()), (Some("2"), Some("promoted")), "{entry}");
    assert!(admin.post("line-1", 8, "yolo").await.values().all(|v| v == "2"));
    server.stop().await;

    // Nothing lost or doubled: one stored row per answered frame, with its version.
    let db = rusqlite::Connection::open(data.join("visionq.db")).unwrap();
    let stored: BTreeMap<String, String> = db
        .prepare("SELECT frame_id, model_version FROM frames WHERE station = 'line-1'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, v) in &replies {
        assert_eq!(stored.get(id), Some(v), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shadow_run_records_agreement_publishes_nothing_and_one_that_disagrees_is_rolled_back() {
    let repo = repository("shadow");
    let (server, admin, _) = start("shadow", &repo, "", &[("VISIONQ_CANDIDATE_MIN_FRAMES", "20")]).await;
    let (status, c) =
        admin.call(reqwest::Method::POST, "/v1/models/yolo/candidate", Some(json!({"version": "2", "mode": "shadow"}))).await;
    assert_eq!((status, c["mode"].as_str(), c["sample"].as_f64()), (200, Some("shadow"), Some(1.0)), "{c}");
    let replies = admin.post("line-1", 32, "yolo").await;
    assert!(replies.values().all(|v| v == "1"), "a shadow run's results are never the published ones");
    // The same weights: every box matched, no score shift.
    let mut agreement = Value::Null;
    for _ in 0..100 {
        agreement = admin.entry("yolo").await["candidate"]["agreement"].clone();
        if agreement["frames"].as_u64() >= Some(32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(agreement["frames"].as_u64(), Some(32), "{agreement}");
    let state = std::fs::read_to_string(repo.join("active.toml")).unwrap();
    assert!(state.contains("[models.yolo.candidate]") && state.contains("mode = \"shadow\""), "recorded: {state}");
    assert_eq!((agreement["precision"].as_f64(), agreement["recall"].as_f64()), (Some(1.0), Some(1.0)), "{agreement}");
    assert!(agreement["score_shift"].as_f64().is_some_and(|s| s.abs() < 1e-6), "{agreement}");
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "visionq_model_agreement{measure=\"recall\",model=\"yolo\",version=\"2\"}"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "visionq_model_frames_total{model=\"yolo\",route=\"shadow\",version=\"2\"}"), Some(32.0));

    // Version 3 keeps only boxes scoring 0.9: most of the active version's are missed.
    let (status, _) =
        admin.call(reqwest::Method::POST, "/v1/models/yolo/candidate", Some(json!({"version": "3", "mode": "shadow"}))).await;
    assert_eq!(status, 200);
    assert_eq!(admin.entry("yolo").await["last_candidate"]["reason"], "replaced");
    admin.post("line-1", 40, "yolo").await;
    let mut entry = Value::Null;
    for _ in 0..100 {
        entry = admin.entry("yolo").await;
        if entry["candidate"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(entry["candidate"].is_null(), "rolled back: {entry}");
    let last = &entry["last_candidate"];
    assert_eq!((last["reason"].as_str(), last["candidate"]["version"].as_str()), (Some("agreement"), Some("3")), "{entry}");
    let recall = last["candidate"]["agreement"]["recall"].as_f64().unwrap();
    assert!(recall < 0.5 && last["detail"].as_str().unwrap().contains("agreement"), "{entry}");
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "visionq_model_rollbacks_total{model=\"yolo\",reason=\"agreement\"}"), Some(1.0), "{metrics}");
    assert!(!metrics.contains("visionq_model_agreement{measure=\"recall\",model=\"yolo\",version=\"3\"}"));
    // Its record is withdrawn, so no other worker (and no restart) runs it again.
    let mut state = String::new();
    for _ in 0..100 {
        state = std::fs::read_to_string(repo.join("active.toml")).unwrap();
        if !state.contains("candidate") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!state.contains("candidate"), "{state}");
    // Production never changed: the active version answered throughout.
    assert_eq!(entry["serving"], "1");
    assert!(admin.post("line-1", 8, "yolo").await.values().all(|v| v == "1"));
    server.stop().await;
}
