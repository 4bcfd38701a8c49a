//! The results role's history API over a real PostgreSQL: pages by `next`/`before`,
//! counts per class per interval, refusals of bad parameters, and the retention
//! task deleting old frames (in chunks) while recent ones stay.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use common::{Server, TestDb};
use serde_json::Value;
use uuid::Uuid;
use visionq_contract::message::{ImageSize, Timings};
use visionq_contract::{Detection, FrameResult, ModelInfo, ResultStatus};

fn result(station: &str, t: DateTime<Utc>, class: (u32, &str)) -> FrameResult {
    FrameResult {
        frame_id: Uuid::now_v7(),
        station: station.into(),
        status: ResultStatus::Ok,
        error: None,
        image: ImageSize { width: 768, height: 576 },
        model: ModelInfo { name: "yolov3-tiny".into(), version: "test".into() },
        detections: vec![Detection {
            class_id: class.0,
            class_name: class.1.into(),
            score: 0.8,
            bbox: [0.1, 0.1, 0.5, 0.5],
            box_px: [76.8, 57.6, 384.0, 288.0],
            track_id: None,
            classification: None,
            text: None,
        }],
        decision: None,
        review: None,
        timings_ms: Timings::new(),
        batch_size: None,
        captured_at: None,
        received_at: t,
        completed_at: t,
    }
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_counts_and_retention_over_http() {
    let db = TestDb::new("storesapi").await;
    let now = Utc::now().trunc_subsecs(6);
    let hour0 = DateTime::from_timestamp((now.timestamp() / 3600 - 3) * 3600, 0).unwrap();
    // 25 recent frames over three whole hours: dogs in the first hour, cats after.
    let recent: Vec<FrameResult> = (0..25)
        .map(|i| {
            let t = hour0 + chrono::Duration::seconds(i * 400);
            result("cam-a", t, if i * 400 < 3600 { (16, "dog") } else { (15, "cat") })
        })
        .collect();
    let old: Vec<FrameResult> = (0..10).map(|i| result("cam-a", now - chrono::Duration::days(400 + i), (16, "dog"))).collect();
    {
        let store = visionq_results::open_store(&db.url).await.unwrap();
        store.write_batch(&recent).await.unwrap();
        store.write_batch(&old).await.unwrap();
    }

    let env = vec![
        ("VISIONQ_DATABASE_URL", db.url.clone()),
        ("VISIONQ_RETENTION_DAYS", "30".to_string()),
        ("VISIONQ_RETENTION_CHUNK", "3".to_string()),
        ("VISIONQ_RETENTION_INTERVAL_S", "1".to_string()),
    ];
    let server = Server::start(&["results"], &env).await;

    // Retention removes the old frames (10, in chunks of 3) and keeps the recent ones.
    let t0 = std::time::Instant::now();
    loop {
        let (status, _) = get(&server.url(&format!("/v1/frames/{}", old[0].frame_id))).await;
        let (last, _) = get(&server.url(&format!("/v1/frames/{}", old[9].frame_id))).await;
        if status == 404 && last == 404 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "retention did not delete the old frames");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for r in &recent {
        let (status, body) = get(&server.url(&format!("/v1/frames/{}", r.frame_id))).await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_value::<FrameResult>(body).unwrap(), *r);
    }
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("retention deleted old frames"), "retention logs what it deleted");

    // The stations seen: cam-a, with the frames retention left and its latest one.
    let (status, body) = get(&server.url("/v1/stations")).await;
    assert_eq!(status, 200, "{body}");
    let newest = recent.last().unwrap();
    assert_eq!(
        body["stations"],
        serde_json::json!([{"station": "cam-a", "last_frame_at": newest.received_at, "frames": 25, "last_status": "ok"}])
    );

    // Pages of 10 by `next` → `before`.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = server.url("/v1/stations/cam-a/results?limit=10");
        if let Some(n) = &next {
            url.push_str(&format!("&before={n}"));
        }
        let (status, body) = get(&url).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        seen.extend(body["results"].as_array().unwrap().iter().map(|r| r["frame_id"].as_str().unwrap().to_string()));
        match body["next"].as_str() {
            Some(n) => next = Some(n.to_string()),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25, "no frame on two pages");
    let newest_first: Vec<String> = recent.iter().rev().map(|r| r.frame_id.to_string()).collect();
    assert_eq!(seen, newest_first);

    // Counts per class per hour.
    let since = hour0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (hour0 + chrono::Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, body) = get(&server.url(&format!("/v1/stations/cam-a/counts?interval=1h&since={since}&until={until}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["interval_s"], 3600);
    let counts: Vec<(String, String, u64)> = body["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (c["bucket"].as_str().unwrap().to_string(), c["class_name"].as_str().unwrap().to_string(), c["count"].as_u64().unwrap())
        })
        .collect();
    let h = |k: i64| (hour0 + chrono::Duration::hours(k)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Frames every 400 s: 0..3600 holds 9 (dogs), 3600..7200 holds 9, 7200..10000 holds 7.
    assert_eq!(counts, vec![(h(0), "dog".into(), 9), (h(1), "cat".into(), 9), (h(2), "cat".into(), 7)]);

    // Bad parameters are refused with a reason.
    let (status, body) = get(&server.url("/v1/stations/cam-a/results?before=yesterday")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(&server.url("/v1/stations/cam-a/counts?interval=5x")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(&server.url("/v1/stations/cam-a/counts?interval=1s&since=2020-01-01T00:00:00Z")).await;
    assert_eq!(status, 400, "too many buckets");

    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    server.stop().await;
}
