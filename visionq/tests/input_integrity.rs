//! Input that lies never looks like a clean result: a frame (JPEG, PNG or WebP) whose
//! header is fine but whose data is cut off or garbage gets an `error` result with its
//! reason (and a dead letter), never `ok` with no detections. The real binary,
//! embedded mode.

mod common;

use common::*;
use serde_json::Value;

fn embedded_env(tag: &str) -> Vec<(&'static str, String)> {
    vec![("VISIONQ_DATA_DIR", scratch(tag).display().to_string())]
}

/// Sum of the samples of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(head, _)| {
            let (n, rest) = head.split_once('{').unwrap_or((head, ""));
            n == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncated_and_half_garbage_images_are_errors_not_empty_results() {
    let server = Server::start(&["run"], &embedded_env("integrity")).await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/stations/cam-1/frames?wait_ms=30000");
    let dog = photo_bytes("dog.jpg");

    // The intact photo: ok, with its dog.
    let (status, r) = post_jpeg(&client, &url, dog.clone()).await;
    assert_eq!((status, r["status"].as_str()), (200, Some("ok")), "{r}");
    assert!(classes(&r).contains(&"dog".to_string()), "{r}");

    let truncated = dog[..20 * 1024].to_vec();
    let mut half_garbage = dog.clone();
    let n = half_garbage.len();
    for (i, b) in half_garbage[n / 2..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    let mut results: Vec<Value> = Vec::new();
    for (what, body) in [("dog.jpg cut to 20 KB", truncated), ("dog.jpg, second half garbage", half_garbage)] {
        let (status, r) = post_jpeg(&client, &url, body).await;
        assert_eq!(status, 200, "{what}: accepted (its header is fine), then answered: {r}");
        assert_eq!(r["status"], "error", "{what}: {r}");
        let reason = r["error"].as_str().unwrap_or_default();
        assert!(reason.contains("JPEG") && reason.len() > 20, "{what}: the reason says what is wrong: {r}");
        assert!(r["detections"].as_array().is_none_or(|d| d.is_empty()), "{r}");
        results.push(r);
    }
    // The same for PNG and WebP: dog.jpg re-encoded, then cut, or its second half garbage.
    let (rgb, w, h) = dog_rgb();
    let garbage = |mut file: Vec<u8>| {
        let n = file.len();
        for (i, b) in file[n / 2..].iter_mut().enumerate() {
            *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
        }
        file
    };
    let png = to_png(&rgb, w, h);
    let webp = to_webp(&rgb, w, h);
    for (what, content_type, body, format) in [
        ("the PNG cut to 20 KB", "image/png", png[..20 * 1024].to_vec(), "PNG"),
        ("the PNG, second half garbage", "image/png", garbage(png.clone()), "PNG"),
        ("the WebP, second half garbage", "image/webp", garbage(webp.clone()), "WebP"),
    ] {
        let resp = client.post(&url).header("content-type", content_type).body(body).send().await.unwrap();
        let (status, r): (u16, Value) = (resp.status().as_u16(), resp.json().await.unwrap());
        assert_eq!((status, r["status"].as_str()), (200, Some("error")), "{what}: {r}");
        assert!(r["error"].as_str().unwrap_or_default().contains(format), "{what}: the reason names the format: {r}");
        results.push(r);
    }
    // A WebP says how long it is: one cut off is refused at the door.
    let resp = client.post(&url).header("content-type", "image/webp").body(webp[..20 * 1024].to_vec()).send().await.unwrap();
    let (status, r): (u16, Value) = (resp.status().as_u16(), resp.json().await.unwrap());
    assert_eq!((status, r["code"].as_str()), (400, Some("bad_header")), "{r}");

    // The same answer later from the history, and a dead letter each.
    for r in &results {
        let id = r["frame_id"].as_str().unwrap();
        let stored: Value = client.get(server.url(&format!("/v1/frames/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(stored["status"], "error", "{stored}");
    }
    let text = server.metrics().await;
    assert_eq!(metric(&text, "visionq_dead_lettered_total", &[("queue", "frames"), ("reason", "corrupt_image")]), 5.0);
    assert_eq!(metric(&text, "visionq_stage_frames_total", &[("stage", "preprocess"), ("outcome", "ok")]), 1.0);
    server.stop().await;
}
