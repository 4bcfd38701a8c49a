//! The self-test keeps the station allow-list and stays out of what operators watch;
//! a model with another input size works without configuration, and a configured
//! size the model does not take stops the process at start.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;

fn fall_model() -> String {
    let p = cache().join("models/fall-detection-yolov8.onnx");
    assert!(p.exists(), "{} missing: run `python3 tools/assets.py` first", p.display());
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_selftest_keeps_the_allow_list_and_stays_off_the_operators_views() {
    // An allow-list without the self-test's station: the self-test is refused, as any
    // unlisted station is.
    let data = scratch("selftest-list");
    let env = [("VISIONQ_DATA_DIR", data.display().to_string()), ("VISIONQ_STATIONS", "cam-a".to_string())];
    let server = Server::start(&["run"], &env).await;
    let c = reqwest::Client::new();
    let r = c.post(server.url("/v1/selftest")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unknown_station", "{v}");
    assert!(v["error"].as_str().unwrap().contains("selftest"), "{v}");
    server.stop().await;

    // Listed, it runs; no camera may post as it.
    let data = scratch("selftest-listed");
    let env = [("VISIONQ_DATA_DIR", data.display().to_string()), ("VISIONQ_STATIONS", "cam-a,selftest".to_string())];
    let server = Server::start(&["run"], &env).await;
    let (s, v) = post_jpeg(&c, &server.url("/v1/stations/selftest/frames"), photo_bytes("dog.jpg")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("reserved_station")), "{v}");

    // Operators watching every station see the cameras, not the self-test.
    let ws_url = format!("{}/v1/stream", server.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("the stream connects");
    let r = c.post(server.url("/v1/selftest")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let selftest: Value = r.json().await.unwrap();
    assert_eq!(selftest["status"], "ok", "{selftest}");
    let (s, cam) = post_jpeg(&c, &server.url("/v1/stations/cam-a/frames?wait_ms=30000"), photo_bytes("dog.jpg")).await;
    assert_eq!(s, 200, "{cam}");
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a result is pushed").unwrap().unwrap();
    let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(first["station"], "cam-a", "the self-test's result is not pushed to the all-stations stream: {first}");
    assert_eq!(first["frame_id"], cam["frame_id"]);

    // The dashboard shows no self-test tile (it would read STALLED forever).
    let mut shown = Vec::new();
    for _ in 0..50 {
        let v: Value = c.get(server.url("/v1/dashboard/stations")).send().await.unwrap().json().await.unwrap();
        shown = v["stations"].as_array().unwrap().iter().map(|s| s["station"].as_str().unwrap().to_string()).collect();
        if !shown.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown, vec!["cam-a".to_string()], "only the camera has a tile");

    // Its result is stored under its own, reserved station, out of every camera's history.
    let stored: Value = c.get(server.url("/v1/stations/cam-a/results")).send().await.unwrap().json().await.unwrap();
    let stations: Vec<&str> = stored["results"].as_array().unwrap().iter().map(|r| r["station"].as_str().unwrap()).collect();
    assert_eq!(stations, ["cam-a"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_input_size_comes_from_the_model_and_a_disagreeing_one_stops_the_start() {
    let data = scratch("fall-model");
    let env = [("VISIONQ_DATA_DIR", data.display().to_string()), ("VISIONQ_MODEL", fall_model())];
    let server = Server::start(&["run"], &env).await;
    let c = reqwest::Client::new();
    let (s, r) = post_jpeg(&c, &server.url("/v1/stations/cam-a/frames?wait_ms=30000"), photo_bytes("person.jpg")).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "ok", "a 640x640 model needs no input_size: {r}");
    let config: Value = c.get(server.url("/v1/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["input_size"], 640, "the configuration shows the size in effect");
    server.stop().await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env_remove("VISIONQ_AMQP_URL")
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_DATA_DIR", scratch("fall-model-416"))
        .env("VISIONQ_MODEL", fall_model())
        .env("VISIONQ_INPUT_SIZE", "416")
        .output()
        .expect("visionq runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a configured size the model does not take stops the start");
    assert!(stderr.contains("input_size is 416") && stderr.contains("640x640"), "the reason is given: {stderr}");
}
