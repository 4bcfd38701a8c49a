//! Model drift (issue 16), on the real model and real photos in embedded mode: a
//! station's first frames set the model version's baseline there; the same photos
//! again hold to it (`steady`); frames with nothing in them move detections per
//! frame off it (`drifting`, with the reason, on `/v1/drift` and `/metrics`); the
//! baselines are stored and read back after a restart instead of being learnt again.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const PHOTOS: [&str; 6] = ["dog.jpg", "eagle.jpg", "horses.jpg", "person.jpg", "scream.jpg", "bus.jpg"];
const FRAMES: usize = 12;

async fn post(http: &reqwest::Client, server: &Server, station: &str, body: Vec<u8>, content_type: &str) {
    let url = server.url(&format!("/v1/stations/{station}/frames?wait_ms=30000"));
    let r = http.post(url).header("content-type", content_type).body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

async fn photos(http: &reqwest::Client, server: &Server, station: &str) {
    for i in 0..FRAMES {
        post(http, server, station, photo_bytes(PHOTOS[i % PHOTOS.len()]), "image/jpeg").await;
    }
}

async fn drift(server: &Server) -> Value {
    let r = reqwest::get(server.url("/v1/drift")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

fn row<'a>(list: &'a Value, station: &str) -> &'a Value {
    list["drift"].as_array().unwrap().iter().find(|r| r["station"] == station).unwrap_or_else(|| panic!("no {station} in {list}"))
}

/// Waits until `station`'s baseline is stored (it is written off the results path).
async fn baseline_set(server: &Server, station: &str) -> Value {
    for _ in 0..100 {
        let list = drift(server).await;
        if list["drift"].as_array().unwrap().iter().any(|r| r["station"] == station && !r["baseline_set_at"].is_null()) {
            return row(&list, station).clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{station}'s drift baseline was not set: {}", drift(server).await);
}

#[tokio::test]
async fn a_station_s_baseline_holds_for_the_same_scene_and_drifts_when_it_empties() {
    let data = scratch("drift-data");
    let env = vec![
        ("VISIONQ_DATA_DIR", data.display().to_string()),
        ("VISIONQ_DRIFT_BASELINE_FRAMES", FRAMES.to_string()),
        ("VISIONQ_DRIFT_WINDOW_FRAMES", FRAMES.to_string()),
    ];
    let server = Server::start(&["run"], &env).await;
    let http = reqwest::Client::new();

    // Learning: the first frames count towards the baseline.
    post(&http, &server, "line-a", photo_bytes("dog.jpg"), "image/jpeg").await;
    let list = drift(&server).await;
    assert_eq!((list["baseline_frames"].as_u64(), list["window_frames"].as_u64()), (Some(12), Some(12)));
    let a = row(&list, "line-a");
    assert_eq!((a["state"].as_str(), a["baseline_frames"].as_u64()), (Some("learning"), Some(1)), "{a}");
    photos(&http, &server, "line-a").await;
    let a = baseline_set(&server, "line-a").await;
    assert_eq!(a["baseline_frames"].as_u64(), Some(FRAMES as u64), "the baseline is its first frames: {a}");
    assert!(a["baseline_detections_per_frame"].as_f64().unwrap() > 1.0, "{a}");
    assert!(a["model"].as_str().unwrap().contains("yolov3"), "{a}");

    // The same scene again: steady.
    photos(&http, &server, "line-a").await;
    let a = row(&drift(&server).await, "line-a").clone();
    assert_eq!(a["state"], "steady", "{a}");
    assert_eq!(a["window_frames"].as_u64(), Some(FRAMES as u64));
    let ratio = a["detections_ratio"].as_f64().unwrap();
    assert!((0.8..1.25).contains(&ratio), "{a}");
    if let Some(psi) = a["psi"].as_f64() {
        assert!(psi < 0.1, "{a}");
    }

    // Another station: the photos set its baseline, then empty frames (a flat grey
    // picture: nothing to find) fill its window.
    photos(&http, &server, "line-b").await;
    baseline_set(&server, "line-b").await;
    let grey = to_png(&vec![128u8; 320 * 240 * 3], 320, 240);
    for _ in 0..FRAMES {
        post(&http, &server, "line-b", grey.clone(), "image/png").await;
    }
    let b = row(&drift(&server).await, "line-b").clone();
    assert_eq!(b["state"], "drifting", "{b}");
    assert_eq!(b["window_detections_per_frame"].as_f64(), Some(0.0), "{b}");
    let reasons = b["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r.as_str().unwrap().starts_with("detections per frame 0.00")), "{b}");
    let metrics = server.metrics().await;
    let gauge = |station: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("visionq_model_drift{") && l.contains(&format!("station=\"{station}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!((gauge("line-a").as_deref(), gauge("line-b").as_deref()), (Some("0"), Some("1")), "{metrics}");
    assert!(metrics.contains("visionq_model_drift_detections_ratio{"), "{metrics}");

    // A query parameter this route does not take is refused.
    let r = reqwest::get(server.url("/v1/drift?station=line-a")).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let set_at = (a["baseline_set_at"].clone(), b["baseline_set_at"].clone());
    server.stop().await;

    // After a restart the stored baselines are read back: no learning again.
    let server = Server::start(&["run"], &env).await;
    let list = drift(&server).await;
    let (a, b) = (row(&list, "line-a"), row(&list, "line-b"));
    assert_eq!((a["state"].as_str(), b["state"].as_str()), (Some("filling"), Some("filling")), "{list}");
    assert_eq!((a["baseline_set_at"].clone(), b["baseline_set_at"].clone()), set_at);
    assert_eq!(a["baseline_frames"].as_u64(), Some(FRAMES as u64));
    server.stop().await;
}
