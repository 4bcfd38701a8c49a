//! The model repository and hot swap (issue 16), with the real model on real
//! photos: versions added with `visionq model add`, activated and rolled back over
//! the admin API while stations keep posting. Nothing accepted is lost or doubled,
//! every stored result names the version it ran on, a version that does not load
//! is refused with the old one serving, and a restarted process serves the version
//! activated while it was down.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

use common::{model_cli as visionq, succeeded as ok};

/// A repository with the real model as versions 1 and 2 (the same weights under two
/// versions), 1 active.
fn repository(tag: &str) -> std::path::PathBuf {
    let repo = scratch(tag).join("models");
    let model = model();
    let m = model.to_str().unwrap();
    let out = ok(visionq(&["model", "add", m, "--name", "yolo", "--version", "1"], &repo));
    assert!(out.contains("added yolo:1") && out.contains("it is active"), "{out}");
    let out = ok(visionq(&["model", "add", m, "--name", "yolo", "--version", "2"], &repo));
    assert!(!out.contains("it is active"), "a later version is not activated by adding it: {out}");
    let manifest = std::fs::read_to_string(repo.join("yolo/2/model.toml")).unwrap();
    assert!(manifest.contains("input_size = [416, 416]") && manifest.contains("layout = \"yolov5\""), "{manifest}");
    repo
}

type Api = ApiClient;

impl ApiClient {
    async fn serving(&self) -> String {
        let (status, list) = self.call(reqwest::Method::GET, "/v1/models", None).await;
        assert_eq!(status, 200, "{list}");
        list["models"][0]["serving"].as_str().unwrap().to_string()
    }
}

/// One reply: the version its result names, and the test's phase when its post
/// began and when its result came back.
#[derive(Debug, Clone)]
struct Reply {
    version: String,
    posted: usize,
    answered: usize,
}

/// What the stations got back, by frame id.
type Replies = Arc<Mutex<BTreeMap<String, Reply>>>;

/// The test's phase: moved on just before each model change is asked for, and again
/// once it is answered.
type Phase = Arc<AtomicUsize>;

/// A station posting photos one after another (waiting for each result) until told to stop.
async fn station(api: Arc<Api>, name: String, replies: Replies, phase: Phase, stop: Arc<AtomicBool>) -> usize {
    let photos = ["dog.jpg", "horses.jpg", "person.jpg", "eagle.jpg"];
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let posted = phase.load(Ordering::SeqCst);
        let url = format!("{}/v1/stations/{name}/frames?wait_ms=60000", api.base);
        let r = api
            .client
            .post(url)
            .bearer_auth(&api.token)
            .header("content-type", "image/jpeg")
            .body(photo_bytes(photos[n % photos.len()]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "every frame is answered with its result");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "ok", "{v}");
        assert_eq!(v["model"]["name"], "yolo", "{v}");
        let reply =
            Reply { version: v["model"]["version"].as_str().unwrap().to_string(), posted, answered: phase.load(Ordering::SeqCst) };
        replies.lock().unwrap().insert(v["frame_id"].as_str().unwrap().to_string(), reply);
        n += 1;
    }
    n
}

/// Versions of the frames posted in phase `from` or later and answered by phase `to`.
fn versions_within(replies: &Replies, from: usize, to: usize) -> BTreeSet<String> {
    let r = replies.lock().unwrap();
    let v: BTreeSet<String> = r.values().filter(|r| r.posted >= from && r.answered <= to).map(|r| r.version.clone()).collect();
    assert!(!v.is_empty(), "frames were posted and answered between phases {from} and {to}");
    v
}

/// Moves the phase on.
fn next(phase: &Phase) {
    phase.fetch_add(1, Ordering::SeqCst);
}

async fn wait_for_more(replies: &Replies, n: usize) {
    let start = replies.lock().unwrap().len();
    for _ in 0..600 {
        if replies.lock().unwrap().len() >= start + n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stations got no results");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activation_under_load_loses_nothing_and_results_name_their_version_a_broken_one_is_refused_and_rollback_restores() {
    swap_under_load("models-swap", &[]).await;
}

/// The same with two inference streams: each takes the new version at its own
/// batch boundary, and an activation answers once both did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_inference_streams_every_stream_switches() {
    swap_under_load("models-swap-streams", &[("VISIONQ_INFER_STREAMS", "2".to_string())]).await;
}

async fn swap_under_load(tag: &str, extra: &[(&str, String)]) {
    let repo = repository(tag);
    let data = scratch(&format!("{tag}-data"));
    // A version whose file is broken on the volume (truncated): refused when activated.
    let broken = repo.join("yolo/3-truncated");
    std::fs::create_dir_all(&broken).unwrap();
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(broken.join("model.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    let tokens = data.join("tokens");
    let admin = new_token(&tokens, &["--scope", "admin"]);
    let operator = new_token(&tokens, &["--scope", "operator"]);
    let mut env = vec![
        ("VISIONQ_DATA_DIR", data.display().to_string()),
        ("VISIONQ_MODEL_REPOSITORY", repo.display().to_string()),
        ("VISIONQ_TOKENS_FILE", tokens.display().to_string()),
    ];
    env.extend_from_slice(extra);
    let server = Server::start(&["run"], &env).await;
    let api = Arc::new(Api { client: reqwest::Client::new(), base: server.base.clone(), token: admin.clone() });
    assert_eq!(api.serving().await, "1");

    // Admin scope only, refusals as {error, code}.
    let operator_api = Api { client: reqwest::Client::new(), base: server.base.clone(), token: operator };
    let (status, body) = operator_api.call(reqwest::Method::POST, "/v1/models/yolo/activate", Some(json!({"version": "2"}))).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = operator_api.call(reqwest::Method::GET, "/v1/models", None).await;
    assert_eq!(status, 403, "{body}");
    for (path, body, want) in [
        ("/v1/models/yolo/activate", json!({"version": "9"}), (404, "unknown_version")),
        ("/v1/models/other/activate", json!({"version": "1"}), (409, "not_served")),
        ("/v1/models/yolo/activate", json!({"release": "2"}), (400, "bad_parameter")),
        ("/v1/models/yolo/activate", json!({"version": "../../etc"}), (400, "bad_parameter")),
        ("/v1/models/yolo/rollback", Value::Null, (409, "no_previous_version")),
    ] {
        let (status, got) = api.call(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!((status, got["code"].as_str().unwrap_or_default()), want, "{path}: {got}");
        assert!(got["error"].as_str().is_some_and(|e| !e.is_empty()), "{got}");
    }

    // Stations post continuously through every change.
    let replies: Replies = Default::default();
    let phase: Phase = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let stations: Vec<_> = (0..3)
        .map(|i| tokio::spawn(station(api.clone(), format!("line-{i}"), replies.clone(), phase.clone(), stop.clone())))
        .collect();
    wait_for_more(&replies, 6).await;

    // Phase 0 → 1 → 2: the activation asked for, then answered.
    next(&phase);
    let (status, a) = api.call(reqwest::Method::POST, "/v1/models/yolo/activate", Some(json!({"version": "2"}))).await;
    next(&phase);
    assert_eq!(status, 200, "{a}");
    assert_eq!((a["version"].as_str(), a["previous"].as_str(), a["switched"].as_bool()), (Some("2"), Some("1"), Some(true)), "{a}");
    wait_for_more(&replies, 6).await;

    // 2 → 3 → 4: the broken version is refused with the reason, and 2 keeps serving.
    next(&phase);
    let (status, r) = api.call(reqwest::Method::POST, "/v1/models/yolo/activate", Some(json!({"version": "3-truncated"}))).await;
    next(&phase);
    assert_eq!((status, r["code"].as_str()), (422, Some("model_refused")), "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("yolo:3-truncated") && error.contains("yolo:2 keeps serving"), "{r}");
    wait_for_more(&replies, 6).await;
    assert_eq!(api.serving().await, "2");

    // 4 → 5 → 6: rollback goes back to 1.
    next(&phase);
    let (status, r) = api.call(reqwest::Method::POST, "/v1/models/yolo/rollback", None).await;
    next(&phase);
    assert_eq!(status, 200, "{r}");
    assert_eq!((r["version"].as_str(), r["previous"].as_str()), (Some("1"), Some("2")), "{r}");
    wait_for_more(&replies, 6).await;
    stop.store(true, Ordering::SeqCst);

    // Answered before the activation was asked for: 1. Posted after it was answered
    // and answered before the rollback was asked for (the refusal in between): 2.
    // Posted after the rollback was answered: 1.
    let one = BTreeSet::from(["1".to_string()]);
    assert_eq!(versions_within(&replies, 0, 0), one);
    assert_eq!(versions_within(&replies, 2, 4), BTreeSet::from(["2".to_string()]));
    assert_eq!(versions_within(&replies, 6, 6), one);
    let mut posted = 0;
    for s in stations {
        posted += s.await.unwrap();
    }
    let (status, list) = api.call(reqwest::Method::GET, "/v1/models", None).await;
    assert_eq!(status, 200);
    let entry = &list["models"][0];
    assert_eq!(
        (entry["name"].as_str(), entry["active"].as_str(), entry["serving"].as_str()),
        (Some("yolo"), Some("1"), Some("1")),
        "{list}"
    );
    assert_eq!(entry["versions"], json!(["1", "2", "3-truncated"]), "{list}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("visionq_model_info{name=\"yolo\",version=\"1\"} 1"), "{metrics}");
    assert!(
        !metrics.contains("visionq_model_info{name=\"yolo\",version=\"2\"}"),
        "the version no longer served is not exported: {metrics}"
    );
    // What each version ran stays counted.
    for v in ["1", "2"] {
        assert!(
            metrics.contains(&format!("visionq_model_frames_total{{model=\"yolo\",route=\"active\",version=\"{v}\"}}")),
            "{metrics}"
        );
    }
    server.stop().await;

    // In the database: every answered frame once, with the version its reply named.
    let replies: BTreeMap<String, String> = replies.lock().unwrap().iter().map(|(id, r)| (id.clone(), r.version.clone())).collect();
    assert_eq!(replies.len(), posted);
    let db = rusqlite::Connection::open(data.join("visionq.db")).unwrap();
    let mut stmt = db.prepare("SELECT frame_id, model_name, model_version FROM frames WHERE station LIKE 'line-%'").unwrap();
    let rows: Vec<(String, String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(rows.len(), posted, "one row per frame posted: none lost, none doubled");
    let stored: BTreeMap<String, String> = rows.iter().map(|(id, _, v)| (id.clone(), v.clone())).collect();
    assert_eq!(stored, replies, "each stored result names the version its reply named");
    assert!(rows.iter().all(|(_, name, _)| name == "yolo"));
    let versions: BTreeSet<&str> = rows.iter().map(|(_, _, v)| v.as_str()).collect();
    assert_eq!(versions, BTreeSet::from(["1", "2"]), "both versions served while the stations posted");

    // Activated while the process is down (from the command line): a restart serves it.
    let out = ok(visionq(&["model", "activate", "yolo", "2"], &repo));
    assert!(out.contains("yolo:2 is active"), "{out}");
    let out = visionq(&["model", "activate", "yolo", "3-truncated"], &repo);
    assert!(!out.status.success(), "the command line refuses a broken version too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not load"), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = ok(visionq(&["model", "list"], &repo));
    assert!(listed.contains("* 2") && listed.contains("rollback goes to 1"), "{listed}");
    let server = Server::start(&["run"], &env).await;
    let api = Api { client: reqwest::Client::new(), base: server.base.clone(), token: admin };
    assert_eq!(api.serving().await, "2");
    let r = api
        .client
        .post(format!("{}/v1/stations/after-restart/frames?wait_ms=60000", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "image/jpeg")
        .body(photo_bytes("dog.jpg"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["model"]["name"].as_str(), v["model"]["version"].as_str()), (Some("yolo"), Some("2")), "{v}");
    server.stop().await;
}

#[test]
fn a_file_that_does_not_load_never_enters_the_repository() {
    let repo = scratch("models-add-bad").join("models");
    let dir = repo.parent().unwrap().to_path_buf();
    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"this is not an ONNX model").unwrap();
    let out = visionq(&["model", "add", garbage.to_str().unwrap(), "--name", "yolo", "--version", "1"], &repo);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not load"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!repo.join("yolo/1").exists(), "nothing was added");
    let m = model();
    let out = visionq(&["model", "add", m.to_str().unwrap(), "--name", "../x", "--version", "1"], &repo);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a valid model name"));
    // A manifest that disagrees with the file is refused.
    let manifest = dir.join("wrong.toml");
    std::fs::write(&manifest, "input_size = [640, 640]\n").unwrap();
    let out = visionq(
        &["model", "add", m.to_str().unwrap(), "--name", "yolo", "--version", "1", "--manifest", manifest.to_str().unwrap()],
        &repo,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("input_size [640, 640]"), "{}", String::from_utf8_lossy(&out.stderr));
    // Class names from the manifest win over the file's.
    let names: Vec<String> = (0..80).map(|i| format!("part-{i}")).collect();
    std::fs::write(&manifest, format!("names = {names:?}\n")).unwrap();
    ok(visionq(
        &["model", "add", m.to_str().unwrap(), "--name", "yolo", "--version", "1", "--manifest", manifest.to_str().unwrap()],
        &repo,
    ));
    let info = ok(visionq(&["model", "info", "yolo:1"], &repo));
    assert!(
        info.contains("name      yolo") && info.contains("version   1") && info.contains("classes   80 (part-0, part-1"),
        "{info}"
    );
}

/// An infer process serving a repository has admin routes: on a network address it
/// does not start without tokens (one serving a plain model file still does).
#[test]
fn an_infer_process_with_a_repository_needs_tokens_off_loopback() {
    let repo = scratch("models-open").join("models");
    let m = model();
    ok(visionq(&["model", "add", m.to_str().unwrap(), "--name", "yolo", "--version", "1"], &repo));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["infer", "--listen", "0.0.0.0:0"])
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_MODEL_REPOSITORY", &repo)
        .env("VISIONQ_AMQP_URL", AMQP_URL)
        .env("VISIONQ_QUEUE_PREFIX", unique("models-open"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("authentication may only be off on a loopback address"), "{err}");
}
