//! End to end on the real RabbitMQ and PostgreSQL: real photos in over HTTP, the
//! expected COCO classes out over the sync reply, the WebSocket and the database.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;

/// Classes yolov3-tiny must find in each darknet photo (a subset of what it finds).
const EXPECTED: &[(&str, &[&str])] = &[
    ("dog.jpg", &["bicycle", "dog"]),
    ("person.jpg", &["dog", "horse", "person"]),
    ("horses.jpg", &["horse"]),
    ("giraffe.jpg", &["giraffe"]),
    ("eagle.jpg", &["bird"]),
    ("kite.jpg", &["kite", "person"]),
];

fn centre(d: &Value) -> (f64, f64) {
    let b = d["box"].as_array().unwrap();
    let v: Vec<f64> = b.iter().map(|x| x.as_f64().unwrap()).collect();
    ((v[0] + v[2]) / 2.0, (v[1] + v[3]) / 2.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn photos_come_back_over_the_reply_the_websocket_and_the_database() {
    let prefix = unique("e2e");
    let db = TestDb::new("e2e").await;
    let server = Server::start(&["run"], &amqp_env(&prefix, &db.url)).await;
    let client = reqwest::Client::new();

    let ws_url = server.url("/v1/stream").replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("websocket connects");

    let mut replies: HashMap<String, Value> = HashMap::new();
    for (photo_name, expected) in EXPECTED {
        let url = server.url("/v1/stations/line1-cam1/frames?wait_ms=30000");
        let (status, r) = post_jpeg(&client, &url, photo_bytes(photo_name)).await;
        assert_eq!(status, 200, "{photo_name}: {r}");
        assert_eq!(r["status"], "ok", "{photo_name}: {r}");
        let found = classes(&r);
        for class in *expected {
            assert!(found.iter().any(|c| c == class), "{photo_name}: expected {class} among {found:?}");
        }
        assert_eq!(r["model"]["name"], "yolov3-tiny");
        assert!(r["timings_ms"]["inference"].as_f64().unwrap() > 0.0, "{r}");
        replies.insert(r["frame_id"].as_str().unwrap().to_string(), r);
    }

    // dog.jpg: the dog lower left, the bicycle in the middle, a car or truck top right.
    let dog =
        replies.values().find(|r| classes(r).contains(&"dog".to_string()) && classes(r).contains(&"bicycle".to_string())).unwrap();
    let find = |names: &[&str]| {
        dog["detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| names.contains(&d["class_name"].as_str().unwrap()))
            .max_by(|a, b| a["score"].as_f64().partial_cmp(&b["score"].as_f64()).unwrap())
            .cloned()
            .unwrap()
    };
    let (dx, dy) = centre(&find(&["dog"]));
    assert!(dx < 0.45 && dy > 0.5, "dog centre ({dx:.2}, {dy:.2})");
    let (bx, by) = centre(&find(&["bicycle"]));
    assert!((0.25..0.75).contains(&bx) && (0.3..0.75).contains(&by), "bicycle centre ({bx:.2}, {by:.2})");
    let (tx, ty) = centre(&find(&["car", "truck"]));
    assert!(tx > 0.55 && ty < 0.35, "car/truck centre ({tx:.2}, {ty:.2})");
    let px = find(&["dog"])["box_px"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>();
    assert!(px[2] <= 768.0 && px[3] <= 576.0 && px[0] >= 0.0, "pixel box inside the 768x576 image: {px:?}");

    // The WebSocket pushed every result.
    let mut pushed: HashMap<String, usize> = HashMap::new();
    while pushed.len() < replies.len() {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a push per frame").unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            let id = v["frame_id"].as_str().unwrap().to_string();
            assert_eq!(classes(&v), classes(&replies[&id]), "pushed result equals the reply");
            *pushed.entry(id).or_default() += 1;
        }
    }
    assert!(pushed.values().all(|n| *n == 1));

    // The database holds exactly one row set per frame, equal to the reply.
    let pg = db.client().await;
    for (id, r) in &replies {
        let uuid: uuid::Uuid = id.parse().unwrap();
        let frames: i64 = pg.query_one("SELECT count(*) FROM frames WHERE frame_id = $1", &[&uuid]).await.unwrap().get(0);
        assert_eq!(frames, 1, "one frame row for {id}");
        let dets: i64 = pg.query_one("SELECT count(*) FROM detections WHERE frame_id = $1", &[&uuid]).await.unwrap().get(0);
        assert_eq!(dets as usize, r["detections"].as_array().unwrap().len(), "detections of {id}");
        let got: Value = client.get(server.url(&format!("/v1/frames/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(classes(&got), classes(r));
        assert_eq!(got["detections"][0]["box_px"], r["detections"][0]["box_px"]);
    }
    let total: i64 = pg.query_one("SELECT count(*) FROM frames", &[]).await.unwrap().get(0);
    assert_eq!(total as usize, EXPECTED.len());

    // History: newest first, filtered by class.
    let h: Value =
        client.get(server.url("/v1/stations/line1-cam1/results?class=dog&limit=10")).send().await.unwrap().json().await.unwrap();
    let hist = h["results"].as_array().unwrap();
    assert_eq!(hist.len(), 2, "dog.jpg and person.jpg have dogs");
    assert!(hist.iter().all(|r| r["detections"].as_array().unwrap().iter().all(|d| d["class_name"] == "dog")));

    server.stop().await;
    delete_topology(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_form_under_load_from_eight_stations() {
    let prefix = unique("batch");
    let db = TestDb::new("batch").await;
    // Roles in separate processes, as in a cluster.
    let env = amqp_env(&prefix, &db.url);
    let results = Server::start(&["results"], &env).await;
    let infer_env: Vec<_> = env.iter().cloned().chain([("VISIONQ_MAX_BATCH_WAIT_MS", "20".to_string())]).collect();
    let infer = Server::start(&["infer"], &infer_env).await;
    let preprocess = Server::start(&["preprocess"], &env).await;
    let ingest = Server::start(&["ingest"], &env).await;
    let client = reqwest::Client::new();
    let photos = ["dog.jpg", "horses.jpg", "person.jpg", "giraffe.jpg"];
    let mut tasks = Vec::new();
    for s in 0..8 {
        let (client, url) = (client.clone(), ingest.url(&format!("/v1/stations/station-{s}/frames?wait_ms=60000")));
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..6 {
                let (status, r) = post_jpeg(&client, &url, photo_bytes(photos[(s + i) % photos.len()])).await;
                assert_eq!(status, 200, "{r}");
                ok += 1;
            }
            ok
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await.unwrap();
    }
    assert_eq!(done, 48);
    let m = infer.metrics().await;
    let value = |name: &str| -> f64 {
        m.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().parse().unwrap()).unwrap_or_else(|| panic!("{name} in metrics"))
    };
    let (sum, count) = (value("visionq_infer_batch_size_sum"), value("visionq_infer_batch_size_count"));
    assert_eq!(sum, 48.0, "every frame went through a forward pass once");
    assert!(sum / count > 1.5, "mean batch size {} over {count} passes", sum / count);
    let pg = db.client().await;
    let rows: i64 = pg.query_one("SELECT count(*) FROM frames", &[]).await.unwrap().get(0);
    assert_eq!(rows, 48);
    for s in [ingest, preprocess, infer, results] {
        s.stop().await;
    }
    delete_topology(&prefix).await;
}
