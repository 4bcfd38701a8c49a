//! Stale frames: a live frame whose deadline passes before inference is not run but
//! recorded and reported `expired`; frames without a deadline (audit, batch) are
//! never dropped. The workers start late on purpose so the deadlines pass in the queue.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

async fn result_of(client: &reqwest::Client, results: &Server, id: &str) -> Value {
    for _ in 0..300 {
        let r = client.get(results.url(&format!("/v1/frames/{id}"))).send().await.unwrap();
        if r.status() == 200 {
            return r.json().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no result for {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_past_their_deadline_are_reported_expired_and_others_complete() {
    let prefix = unique("deadline");
    let db = TestDb::new("deadline").await;
    let env = amqp_env(&prefix, &db.url);
    let results = Server::start(&["results"], &env).await;
    let ingest = Server::start(&["ingest"], &env).await;
    let client = reqwest::Client::new();
    let dog = photo_bytes("dog.jpg");
    let post = |q: &'static str| {
        let (client, url, body) = (client.clone(), ingest.url(&format!("/v1/stations/line1-cam1/frames{q}")), dog.clone());
        async move {
            let (s, v) = post_jpeg(&client, &url, body).await;
            assert_eq!(s, 202, "{v}");
            v["frame_id"].as_str().unwrap().to_string()
        }
    };
    let live = post("?deadline_ms=300").await;
    let audit = post("").await;
    let patient = post("?deadline_ms=120000").await;
    // No worker yet: the live frame's deadline passes while it waits in the queue.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let preprocess = Server::start(&["preprocess"], &env).await;
    let infer = Server::start(&["infer"], &env).await;

    let expired = result_of(&client, &results, &live).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert!(expired["error"].as_str().unwrap().contains("deadline passed"), "{expired}");
    assert!(expired["detections"].as_array().unwrap().is_empty());
    for id in [&audit, &patient] {
        let r = result_of(&client, &results, id).await;
        assert_eq!(r["status"], "ok", "{r}");
        assert!(classes(&r).contains(&"dog".to_string()));
    }
    let pg = db.client().await;
    let rows: Vec<(String, i64)> = pg
        .query("SELECT status, count(*) FROM frames GROUP BY status ORDER BY status", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("expired".to_string(), 1), ("ok".to_string(), 2)], "recorded, once each");
    let m = preprocess.metrics().await;
    assert!(m.contains("visionq_stage_frames_total{outcome=\"expired\",stage=\"preprocess\"} 1"), "{m}");
    for s in [ingest, preprocess, infer, results] {
        s.stop().await;
    }
    delete_topology(&prefix).await;
}
