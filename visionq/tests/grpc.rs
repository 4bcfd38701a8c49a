//! The gRPC front door (`visionq.v1.Detector`, ingest/proto) on the real binary, model
//! and photos, driven by a client that did not come from this code: Python's grpcio
//! running the README's example (docs/examples/grpc_client.py), its messages built
//! from the `.proto` by protoc. Unary and stream results equal the HTTP path's; a
//! refusal names its code (a status and `visionq-code` on a unary call, a `refused`
//! reply on a stream that goes on); the standard health service answers; on RabbitMQ
//! with no consumer, a call's deadline is answered by the server before it passes
//! (naming the frame, which still completes) and a stream's window holds: no more
//! frames read than `stream_window` in flight, the rest read once answers free it.
//! Over TLS (h2 by ALPN on the same port) the client verifies the server by its CA.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The example client, run with `args` (and the token, if any).
fn client(args: &[&str], token: Option<&str>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(cache().join("venv/bin/python"));
    cmd.arg(repo().join("docs/examples/grpc_client.py")).args(args).env_remove("VISIONQ_TOKEN");
    if let Some(t) = token {
        cmd.env("VISIONQ_TOKEN", t);
    }
    cmd
}

/// Runs the client to its end: whether it succeeded, and its JSON lines.
async fn run_client(args: &[&str], token: Option<&str>) -> (bool, Vec<Value>) {
    let out = client(args, token).output().await.expect("the venv's python runs (python3 tools/assets.py makes it)");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", String::from_utf8_lossy(&out.stderr))))
        .collect();
    (out.status.success(), lines)
}

fn target(server: &Server) -> String {
    server.url("").trim_start_matches("http://").trim_end_matches('/').to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const PHOTOS: &[&str] = &["dog.jpg", "horses.jpg", "person.jpg"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_results_match_the_http_path_and_refusals_name_their_code() {
    let dir = scratch("grpc");
    let tokens = dir.join("tokens.toml");
    let cam1 = new_token(&tokens, &["--scope", "station", "--station", "l1-cam1"]);
    let cam2 = new_token(&tokens, &["--scope", "station", "--station", "l1-cam2"]);
    let server = Server::start(
        &["run"],
        &[("VISIONQ_TOKENS_FILE", tokens.display().to_string()), ("VISIONQ_DATA_DIR", dir.display().to_string())],
    )
    .await;
    let to = target(&server);
    let photos: Vec<String> = PHOTOS.iter().map(|p| path(&photo(p)).to_string()).collect();
    let junk = dir.join("notes.txt");
    std::fs::write(&junk, "these bytes are no image at all").unwrap();

    // The health service: the server and the detector serve.
    let (ok, lines) = run_client(&["health", &to], None).await;
    assert!(ok, "{lines:?}");
    assert_eq!(lines[0], serde_json::json!({"": "SERVING", "visionq.v1.Detector": "SERVING"}));

    // The HTTP path's results, the yardstick.
    let c = reqwest::Client::new();
    let mut http = HashMap::new();
    for (name, file) in PHOTOS.iter().zip(&photos) {
        let url = server.url("/v1/stations/l1-cam1/frames?wait_ms=60000");
        let r = c.post(url).bearer_auth(&cam1).header("content-type", "image/jpeg").body(photo_bytes(name)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}");
        http.insert(file.clone(), r.json::<Value>().await.unwrap());
    }

    // Unary: one call a photo, each its result; the typed fields agree with the JSON.
    let mut args = vec!["detect", to.as_str(), "l1-cam1"];
    args.extend(photos.iter().map(String::as_str));
    let (ok, lines) = run_client(&args, Some(&cam1)).await;
    assert!(ok, "{lines:?}");
    assert_eq!(lines.len(), PHOTOS.len(), "{lines:?}");
    for line in &lines {
        let file = line["file"].as_str().unwrap();
        let typed = &line["result"];
        let whole = &typed["json"];
        assert_eq!((typed["station"].as_str(), typed["status"].as_str()), (Some("l1-cam1"), Some("ok")), "{typed}");
        assert_eq!(typed["frame_id"], whole["frame_id"]);
        assert!(!typed["model_name"].as_str().unwrap().is_empty(), "{typed}");
        assert_eq!(typed["detections"].as_array().unwrap().len(), whole["detections"].as_array().unwrap().len(), "{typed}");
        let first = &typed["detections"][0];
        assert_eq!(first["class_name"], whole["detections"][0]["class_name"], "{typed}");
        let x1 = first["box_px"]["x1"].as_f64().unwrap_or(0.0);
        assert!((x1 - whole["detections"][0]["box_px"][0].as_f64().unwrap()).abs() < 0.01, "{typed}");
        same_detections(whole, &http[file], &format!("{file} by gRPC"));
    }

    // Unary refusals: a gRPC status each, visionq's code in the trailer.
    let refused = |lines: &[Value], status: &str, code: &str| {
        let e = &lines[0]["error"];
        assert_eq!((e["grpc_status"].as_str(), e["trailers"]["visionq-code"].as_str()), (Some(status), Some(code)), "{lines:?}");
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
    };
    let dog = photos[0].as_str();
    let (ok, lines) = run_client(&["detect", &to, "l1-cam1", dog], None).await;
    assert!(!ok);
    refused(&lines, "UNAUTHENTICATED", "unauthenticated");
    let (_, lines) = run_client(&["detect", &to, "l1-cam1", dog], Some(&cam2)).await;
    refused(&lines, "PERMISSION_DENIED", "forbidden");
    let (_, lines) = run_client(&["detect", &to, "l1-cam1", path(&junk)], Some(&cam1)).await;
    refused(&lines, "INVALID_ARGUMENT", "not_an_image");
    let (_, lines) = run_client(&["detect", &to, "no such cam", dog], Some(&cam1)).await;
    refused(&lines, "INVALID_ARGUMENT", "bad_station");

    // A stream: the photos with junk among them. Each photo accepted then answered,
    // the junk refused with its code, and the stream goes on after it.
    let (a, b) = (photos[1].as_str(), photos[2].as_str());
    let (ok, lines) = run_client(&["stream", &to, "l1-cam1", dog, path(&junk), a, b], Some(&cam1)).await;
    assert!(!ok, "the junk got no result: {lines:?}");
    let of = |id: &str, kind: &str| lines.iter().filter(|l| l["client_id"] == id && l.get(kind).is_some()).collect::<Vec<_>>();
    let no = of(path(&junk), "refused");
    assert_eq!(no.len(), 1, "{lines:?}");
    assert_eq!((no[0]["refused"]["code"].as_str(), no[0]["refused"]["http_status"].as_u64()), (Some("not_an_image"), Some(415)));
    for file in [dog, a, b] {
        let (accepted, results) = (of(file, "accepted"), of(file, "result"));
        assert_eq!((accepted.len(), results.len()), (1, 1), "{file}: accepted once, answered once: {lines:?}");
        let result = &results[0]["result"];
        assert_eq!(accepted[0]["accepted"], result["frame_id"], "the id it was accepted under");
        same_detections(&result["json"], &http[file], &format!("{file} on a gRPC stream"));
    }
    let first_accepted = |file: &str| lines.iter().position(|l| l["client_id"] == file && l.get("accepted").is_some()).unwrap();
    assert!(first_accepted(dog) < first_accepted(a) && first_accepted(a) < first_accepted(b), "accepted in the order sent");

    // A stream for a station its token is not for ends before any frame is taken.
    let (ok, lines) = run_client(&["stream", &to, "l1-cam1", dog], Some(&cam2)).await;
    assert!(!ok);
    assert_eq!(lines[0]["error"]["grpc_status"], "PERMISSION_DENIED", "{lines:?}");

    // Six frames taken by gRPC (three calls, three on the stream), none left in flight.
    let metrics = server.metrics().await;
    for line in [r#"visionq_ingest_accepted_total{mode="grpc"} 6"#, r#"visionq_in_flight{stage="ingest_grpc"} 0"#] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_is_answered_in_time_and_the_stream_window_holds() {
    let prefix = unique("grpcwin");
    let db = TestDb::new("grpcwin").await;
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_STREAM_WINDOW", "2".into()));
    // Ingest alone: nothing consumes the frames, so no result comes by itself.
    let ingest = Server::start(&["ingest"], &env).await;
    let to = target(&ingest);
    let dog = path(&photo("dog.jpg")).to_string();

    // The call's deadline (1.5 s) bounds the wait: the server answers before it
    // passes (its trailer names the frame; the client's own expiry would carry none).
    let (ok, lines) = run_client(&["detect", &to, "l3-cam1", &dog, "--timeout", "1.5"], None).await;
    assert!(!ok);
    let e = &lines[0]["error"];
    assert_eq!(e["grpc_status"], "DEADLINE_EXCEEDED", "{lines:?}");
    let unary = e["trailers"]["visionq-frame-id"].as_str().unwrap_or_else(|| panic!("the server's answer: {e}")).to_string();
    assert!(e["message"].as_str().unwrap().contains(&unary), "{e}");
    let took = lines[0]["seconds"].as_f64().unwrap();
    assert!((1.2..1.5).contains(&took), "answered near the deadline, before it: {took} s");

    // A stream of five photos with a window of two: two accepted, and no more read.
    let names = ["dog.jpg", "horses.jpg", "person.jpg", "giraffe.jpg", "eagle.jpg"];
    let files: Vec<String> = names.iter().map(|n| path(&photo(n)).to_string()).collect();
    let mut args = vec!["stream", to.as_str(), "l3-cam2", "--timeout", "120"];
    args.extend(files.iter().map(String::as_str));
    let mut child = client(&args, None).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut replies: Vec<Value> = Vec::new();
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Ok(Some(l))) = tokio::time::timeout_at(quiet_until, out.next_line()).await {
        replies.push(serde_json::from_str(&l).unwrap());
    }
    let accepted: Vec<&Value> = replies.iter().filter(|r| r.get("accepted").is_some()).collect();
    assert_eq!(accepted.len(), 2, "the window's two frames and no more: {replies:?}");
    assert_eq!(
        (accepted[0]["client_id"].as_str(), accepted[1]["client_id"].as_str()),
        (Some(files[0].as_str()), Some(files[1].as_str()))
    );
    assert_eq!(queue_len(&format!("{prefix}.frames")).await, 3, "the unary call's frame and the window's two");
    let metrics = ingest.metrics().await;
    assert!(metrics.lines().any(|l| l == r#"visionq_in_flight{stage="ingest_grpc"} 2"#), "{metrics}");

    // The pipeline comes up: answers free the window, the other three are read, and
    // every frame accepted is stored once, the unary call's too.
    let results = Server::start(&["results"], &env).await;
    let infer = Server::start(&["infer"], &env).await;
    let preprocess = Server::start(&["preprocess"], &env).await;
    while let Ok(Ok(Some(l))) = tokio::time::timeout(Duration::from_secs(120), out.next_line()).await {
        replies.push(serde_json::from_str(&l).unwrap());
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "every frame of the stream answered: {replies:?}");
    let mut ids = vec![unary];
    for file in &files {
        let result = replies
            .iter()
            .find(|r| r["client_id"] == file.as_str() && r.get("result").is_some())
            .unwrap_or_else(|| panic!("{file}: {replies:?}"));
        assert_eq!(result["result"]["status"], "ok", "{result}");
        ids.push(result["result"]["frame_id"].as_str().unwrap().to_string());
    }
    let c = reqwest::Client::new();
    let pg = db.client().await;
    for id in &ids {
        let url = results.url(&format!("/v1/frames/{id}"));
        tokio::time::timeout(Duration::from_secs(90), async {
            while c.get(&url).send().await.unwrap().status() != 200 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id} stored"));
        let uuid: uuid::Uuid = id.parse().unwrap();
        let rows: i64 = pg.query_one("SELECT count(*) FROM frames WHERE frame_id = $1", &[&uuid]).await.unwrap().get(0);
        assert_eq!(rows, 1, "{id} stored once");
    }
    for s in [preprocess, infer, results, ingest] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_shares_the_https_port() {
    let (server, ca) = https_server("grpc-tls").await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    // The certificate names localhost: the client checks it against the test CA.
    let to = format!("localhost:{port}");
    let ca = ca.display().to_string();
    let (ok, lines) = run_client(&["health", &to, "--ca-file", &ca], None).await;
    assert!(ok, "{lines:?}");
    let dog = path(&photo("dog.jpg")).to_string();
    let (ok, lines) = run_client(&["detect", &to, "tls-cam", &dog, "--ca-file", &ca], None).await;
    assert!(ok, "{lines:?}");
    assert_eq!(lines[0]["result"]["status"], "ok", "{lines:?}");
    assert!(lines[0]["result"]["detections"].as_array().unwrap().iter().any(|d| d["class_name"] == "dog"), "{lines:?}");
    // A client that does not know the CA is refused by its own TLS check.
    let (ok, lines) = run_client(&["health", &to, "--tls", "--timeout", "5"], None).await;
    assert!(!ok, "{lines:?}");
    server.stop().await;
}
