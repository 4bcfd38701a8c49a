//! Every bad input gets its status code and a message; nothing accepted is lost.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

/// SOI + SOF0 header declaring `w`×`h` (no image data).
fn header_only(w: u16, h: u16) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
    v.extend(h.to_be_bytes());
    v.extend(w.to_be_bytes());
    v.extend([0x03, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    v
}

async fn post(client: &reqwest::Client, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value, Option<String>) {
    let r = client.post(url).header("content-type", content_type).body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_precisely_and_accepted_frames_complete() {
    let prefix = unique("bad");
    let db = TestDb::new("bad").await;
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_STATIONS", "cam-a,cam-b".into()));
    env.push(("VISIONQ_MAX_BODY_BYTES", "200000".into()));
    let server = Server::start(&["run"], &env).await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/stations/cam-a/frames");
    let dog = photo_bytes("dog.jpg");
    assert!(dog.len() < 200_000);

    let mut accepted = Vec::new();
    let (s, v, _) = post(&client, &url, "image/jpeg", dog.clone()).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "queued");
    accepted.push(v["frame_id"].as_str().unwrap().to_string());

    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let small_png = to_png(&[90u8; 64 * 48 * 3], 64, 48);
    let mut truncated_sof = header_only(640, 480);
    truncated_sof.truncate(9);
    let mut corrupt = header_only(640, 480);
    corrupt[3] = 0x12; // not a marker where one must be
    corrupt[2] = 0xFF;
    corrupt[4] = 0x00;
    let mut padded = dog.clone();
    padded.resize(300_000, 0);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("a PNG cut off in its IHDR", "image/png", png, 400, "bad_header"),
        ("a GIF", "image/jpeg", b"GIF89a\x01\0\x01\0".to_vec(), 415, "not_an_image"),
        ("a PNG declared as JPEG", "image/jpeg", small_png.clone(), 415, "type_mismatch"),
        ("a JPEG declared as WebP", "image/webp", dog.clone(), 415, "type_mismatch"),
        ("a JPEG as plain bytes", "application/octet-stream", dog.clone(), 415, "unsupported_media_type"),
        ("a JPEG as a form", "application/x-www-form-urlencoded", dog.clone(), 415, "unsupported_media_type"),
        ("plain text", "text/plain", b"hello".to_vec(), 415, "unsupported_media_type"),
        ("zero bytes", "image/jpeg", Vec::new(), 400, "empty"),
        ("only the SOI", "image/jpeg", vec![0xFF, 0xD8, 0xFF], 400, "bad_header"),
        ("truncated SOF", "image/jpeg", truncated_sof, 400, "bad_header"),
        ("first 40 bytes of a photo", "image/jpeg", dog[..40].to_vec(), 400, "bad_header"),
        (
            "corrupt segment",
            "image/jpeg",
            [vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0x12, 0x34], vec![0; 10]].concat(),
            400,
            "bad_header",
        ),
        ("over the byte limit", "image/jpeg", padded.clone(), 413, "too_large"),
        ("decompression bomb", "image/jpeg", header_only(16000, 16000), 413, "too_many_pixels"),
        ("over the side limit", "image/jpeg", header_only(20000, 100), 413, "too_many_pixels"),
        ("bad JSON", "application/json", b"{\"img\": 1}".to_vec(), 400, "bad_json"),
        ("bad base64", "application/json", br#"{"image": "%%%"}"#.to_vec(), 400, "bad_base64"),
    ];
    let _ = corrupt;
    for (what, ct, body, status, code) in cases {
        let (s, v, _) = post(&client, &url, ct, body).await;
        assert_eq!(s, status, "{what}: {v}");
        assert_eq!(v["code"], code, "{what}: {v}");
        assert!(v["error"].as_str().is_some_and(|m| m.len() > 10), "{what} explains itself: {v}");
    }
    // No Content-Type at all: refused, naming what is accepted.
    let r = client.post(&url).body(dog.clone()).send().await.unwrap();
    let (s, v): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
    assert_eq!((s, v["code"].as_str()), (415, Some("unsupported_media_type")), "{v}");
    for accepted in ["image/jpeg", "image/png", "image/webp", "multipart/form-data", "`image`", "application/json"] {
        assert!(v["error"].as_str().unwrap().contains(accepted), "the refusal names {accepted}: {v}");
    }
    // Multipart: the frame is the part `image` (alias `file`); other parts, a second
    // image, a part of another type, or one whose type is not its bytes are refused.
    let part = |name: &str, bytes: Vec<u8>, mime: &str| {
        reqwest::multipart::Form::new()
            .part(name.to_string(), reqwest::multipart::Part::bytes(bytes).file_name("f").mime_str(mime).unwrap())
    };
    let two = part("image", dog.clone(), "image/jpeg").part("file", reqwest::multipart::Part::bytes(dog.clone()).file_name("g"));
    for (what, form, status, code) in [
        ("a part named `photo`", part("photo", dog.clone(), "image/jpeg"), 400, "unknown_part"),
        ("a text part", part("image", b"hello".to_vec(), "text/plain"), 415, "unsupported_media_type"),
        ("a JPEG part typed PNG", part("image", dog.clone(), "image/png"), 415, "type_mismatch"),
        ("two image parts", two, 400, "duplicate_part"),
    ] {
        let r = client.post(&url).multipart(form).send().await.unwrap();
        let (s, v): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{what}: {v}");
    }
    // A data URL declares its type too.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&dog);
    let body = json!({ "image": format!("data:image/png;base64,{b64}") }).to_string().into_bytes();
    let (s, v, _) = post(&client, &url, "application/json", body).await;
    assert_eq!((s, v["code"].as_str()), (415, Some("type_mismatch")), "{v}");

    // Over the limit as base64 JSON too.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&padded);
    let (s, v, _) = post(&client, &url, "application/json", json!({ "image": b64 }).to_string().into_bytes()).await;
    assert_eq!(s, 413, "{v}");

    // Station identity.
    let (s, v, _) = post(&client, &server.url("/v1/stations/cam-z/frames"), "image/jpeg", dog.clone()).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("unknown_station")), "{v}");
    let (s, v, _) = post(&client, &server.url("/v1/stations/bad%20id/frames"), "image/jpeg", dog.clone()).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_station")), "{v}");

    // The other encodings are accepted.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&dog);
    let (s, v, _) = post(&client, &url, "application/json", json!({ "image": b64 }).to_string().into_bytes()).await;
    assert_eq!(s, 202, "{v}");
    accepted.push(v["frame_id"].as_str().unwrap().to_string());
    let data_url = format!("data:image/jpeg;base64,{b64}");
    let (s, v, _) = post(
        &client,
        &url,
        "application/json",
        json!({ "image": data_url, "captured_at": "2026-11-22T10:00:00Z" }).to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let with_capture = v["frame_id"].as_str().unwrap().to_string();
    accepted.push(with_capture.clone());
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(dog.clone()).file_name("dog.jpg").mime_str("image/jpeg").unwrap());
    let r = client.post(&url).multipart(form).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    accepted.push(v["frame_id"].as_str().unwrap().to_string());
    // `file`, the documented alias, without a part type: told by its bytes.
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(dog.clone()).file_name("dog.jpg"));
    let r = client.post(&url).multipart(form).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    accepted.push(v["frame_id"].as_str().unwrap().to_string());

    // A frame whose header is fine but whose data is not: an error result, and a dead letter.
    // Everything up to the end of the frame header (SOF0), then garbage instead of scans.
    let sof = dog.windows(2).position(|w| w == [0xFF, 0xC0]).expect("dog.jpg is baseline");
    let sof_len = u16::from_be_bytes([dog[sof + 2], dog[sof + 3]]) as usize;
    let mut broken = dog[..sof + 2 + sof_len].to_vec();
    broken.extend(std::iter::repeat_n(0x5Au8, 2000));
    let (s, v, _) = post(&client, &format!("{url}?wait_ms=20000"), "image/jpeg", broken).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "error", "{v}");
    assert!(v["error"].as_str().unwrap().contains("JPEG"), "{v}");
    let mut dead = 0;
    for _ in 0..50 {
        dead = queue_len(&format!("{prefix}.dead")).await;
        if dead > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead, 1, "the corrupt frame is dead-lettered");

    // Nothing accepted was lost: each has its result.
    for id in &accepted {
        let mut got = Value::Null;
        for _ in 0..100 {
            let r = client.get(server.url(&format!("/v1/frames/{id}"))).send().await.unwrap();
            if r.status() == 200 {
                got = r.json().await.unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got["status"], "ok", "frame {id}: {got}");
        assert!(classes(&got).contains(&"dog".to_string()));
        if *id == with_capture {
            assert_eq!(got["captured_at"], "2026-11-22T10:00:00Z");
        }
    }
    let r = client.get(server.url("/v1/frames/not-a-uuid")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = client.get(server.url(&format!("/v1/frames/{}", uuid::Uuid::now_v7()))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    server.stop().await;
    delete_topology(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_gets_503_with_retry_after_never_202() {
    let prefix = unique("full");
    let db = TestDb::new("full").await;
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_FRAMES_MAX_LENGTH", "2".into()));
    // Ingest alone: nothing drains the frames queue.
    let ingest = Server::start(&["ingest"], &env).await;
    let client = reqwest::Client::new();
    let url = ingest.url("/v1/stations/s1/frames");
    let dog = photo_bytes("dog.jpg");
    // Quorum queues apply the limit as messages are enqueued, so it can be passed by
    // one in flight; what must hold is that every 202 is queued and every refusal is a
    // 503 with Retry-After.
    let (mut accepted, mut refused) = (0u32, 0u32);
    for _ in 0..6 {
        let (s, v, retry) = post(&client, &url, "image/jpeg", dog.clone()).await;
        match s {
            202 => accepted += 1,
            503 => {
                refused += 1;
                assert_eq!(v["code"], "queue_full", "{v}");
                assert_eq!(retry.as_deref(), Some("2"), "503 carries Retry-After");
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(accepted >= 2, "the first frames fit");
    assert!(refused >= 3, "a full queue refuses: {accepted} accepted, {refused} refused");
    assert_eq!(queue_len(&format!("{prefix}.frames")).await, accepted, "every 202 is queued, no refused frame is");
    ingest.stop().await;
    delete_topology(&prefix).await;
}
