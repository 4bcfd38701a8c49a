//! A station's WebSocket (`/v1/stations/{station}/ws`, docs/STREAMING.md) on the real
//! binary, model and photos: the photos' results over the socket equal the HTTP
//! path's, tagged with the client's ids; refusals (a bad frame, bad details, a frame
//! too large, the rate limit) each name their frame and the stream goes on; the
//! caller is checked before the upgrade; a client not from this code (Python's
//! websocket-client) gets the same result; and, on RabbitMQ with no consumer, the
//! window holds (the excess refused, nothing buffered), `newest` mode skips the
//! frames a newer one replaced, and the frames accepted on a socket that then
//! closed are stored exactly once when the pipeline comes up.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `url` with `token` as a bearer header; the hello, or the refusal's status and body.
async fn open(url: &str, token: Option<&str>) -> Result<(Ws, Value), (u16, Value)> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            let hello = next(&mut ws).await;
            assert_eq!(hello["type"], "hello", "{hello}");
            Ok((ws, hello))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r.body().as_deref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            Err((r.status().as_u16(), body))
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The next text message, as JSON.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(90), ws.next())
            .await
            .expect("a message within 90 s")
            .expect("the socket is open")
            .expect("a readable message");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

async fn send_frame(ws: &mut Ws, details: Option<Value>, image: Vec<u8>) {
    if let Some(d) = details {
        ws.send(Message::text(d.to_string())).await.unwrap();
    }
    ws.send(Message::binary(image)).await.unwrap();
}

fn ws_url(server: &Server, path: &str) -> String {
    server.url(path).replacen("http://", "ws://", 1)
}

/// The photos the model finds things in.
const PHOTOS: &[&str] = &["dog.jpg", "person.jpg", "horses.jpg", "giraffe.jpg", "eagle.jpg", "zidane.jpg"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn photos_over_the_socket_match_the_http_path_and_refusals_leave_it_open() {
    let dir = scratch("streams");
    let tokens = dir.join("tokens.toml");
    let cam1 = new_token(&tokens, &["--scope", "station", "--station", "l1-cam1", "--station", "slow"]);
    let cam2 = new_token(&tokens, &["--scope", "station", "--station", "l1-cam2"]);
    let operator = new_token(&tokens, &["--scope", "operator", "--name", "control-room"]);
    let cfg = dir.join("visionq.toml");
    // kite.jpg (1.4 MB) is over this frame limit; `slow` takes one frame, then one a minute.
    std::fs::write(&cfg, "max_body_bytes = 1200000\n[station.slow]\nrate_limit_fps = 0.0167\nrate_limit_burst = 1\n").unwrap();
    let server = Server::start(
        &["--config", cfg.to_str().unwrap(), "run"],
        &[("VISIONQ_TOKENS_FILE", tokens.display().to_string()), ("VISIONQ_DATA_DIR", dir.display().to_string())],
    )
    .await;
    let c = reqwest::Client::new();
    let stream = ws_url(&server, "/v1/stations/l1-cam1/ws");

    // The caller is checked before the upgrade, each refusal in the one error shape.
    let refused = |r: Result<(Ws, Value), (u16, Value)>| r.map(|_| ()).expect_err("refused before the upgrade");
    let (status, body) = refused(open(&stream, None).await);
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    let (status, body) = refused(open(&stream, Some(&cam2)).await);
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "another station's token: {body}");
    let (status, body) = refused(open(&stream, Some(&operator)).await);
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "an operator token does not post: {body}");
    let (status, body) = refused(open(&format!("{stream}?token=vq_wrong"), None).await);
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "{body}");
    let (status, body) = refused(open(&format!("{stream}?windw=3"), Some(&cam1)).await);
    assert_eq!((status, body["param"].as_str()), (400, Some("windw")), "{body}");
    let (status, body) = refused(open(&format!("{stream}?window=9"), Some(&cam1)).await);
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_parameter")), "over stream_window (8): {body}");
    let (status, body) = refused(open(&format!("{stream}?mode=oldest"), Some(&cam1)).await);
    assert_eq!((status, body["param"].as_str()), (400, Some("mode")), "{body}");
    let (status, body) = refused(open(&ws_url(&server, "/v1/stations/nowhere%20cam/ws"), Some(&cam1)).await);
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_station")), "{body}");
    let plain = c.get(server.url("/v1/stations/l1-cam1/ws")).bearer_auth(&cam1).send().await.unwrap();
    assert!(plain.status().is_client_error(), "a plain GET is no upgrade: {}", plain.status());
    assert_eq!(plain.json::<Value>().await.unwrap()["code"], "not_a_websocket");

    // The HTTP path's results, the yardstick.
    let mut http = HashMap::new();
    for name in PHOTOS {
        let url = server.url("/v1/stations/l1-cam1/frames?wait_ms=60000");
        let r = c.post(url).bearer_auth(&cam1).header("content-type", "image/jpeg").body(photo_bytes(name)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let r: Value = r.json().await.unwrap();
        assert_eq!(r["status"], "ok", "{name}: {r}");
        http.insert(*name, r);
    }

    // The same photos over the socket, with refused frames and details among them.
    let (mut ws, hello) = open(&stream, Some(&cam1)).await.unwrap();
    assert_eq!(hello["station"], "l1-cam1");
    assert_eq!(hello["window"], 8, "stream_window by default: {hello}");
    assert_eq!(hello["mode"], "queue");
    assert_eq!(hello["max_frame_bytes"], 1_200_000);
    for name in PHOTOS {
        send_frame(&mut ws, Some(json!({"id": name, "captured_at": "2026-12-05T08:00:00Z"})), photo_bytes(name)).await;
    }
    send_frame(&mut ws, Some(json!({"id": "junk"})), b"these bytes are no image at all".to_vec()).await;
    ws.send(Message::text(r#"{"id": "typo", "captured": "2026-12-05T08:00:00Z"}"#)).await.unwrap();
    send_frame(&mut ws, Some(json!({"id": "kite.jpg"})), photo_bytes("kite.jpg")).await;
    // No details: the frame is named by its number on the socket (the 9th binary message).
    send_frame(&mut ws, None, corrupt_jpeg()).await;
    send_frame(&mut ws, Some(json!({"id": 77, "deadline_ms": 60000})), photo_bytes("person.jpg")).await;

    let sent: Vec<Value> = PHOTOS.iter().map(|p| json!(p)).chain([json!(9), json!(77)]).collect();
    let (mut accepted, mut results, mut errors) = (Vec::new(), HashMap::new(), HashMap::new());
    while results.len() < sent.len() || errors.len() < 3 {
        let m = next(&mut ws).await;
        let id = m["id"].to_string();
        match m["type"].as_str().unwrap() {
            "accepted" => accepted.push((m["id"].clone(), m["frame_id"].as_str().unwrap().to_string())),
            "result" => assert!(results.insert(id, m["result"].clone()).is_none(), "one result per frame: {m}"),
            "error" => assert!(errors.insert(id, m).is_none(), "one error per refused message"),
            _ => panic!("unexpected {m}"),
        }
    }
    // Accepted in the order sent, ids in the pipeline's (time) order too.
    assert_eq!(accepted.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), sent);
    let frame_ids: Vec<&String> = accepted.iter().map(|(_, f)| f).collect();
    assert!(frame_ids.windows(2).all(|w| w[0] < w[1]), "frame ids rise in the order sent: {frame_ids:?}");
    for name in PHOTOS {
        let r = &results[&json!(name).to_string()];
        assert_eq!(r["status"], "ok", "{name}: {r}");
        assert_eq!(r["captured_at"], "2026-12-05T08:00:00Z", "{name}: the details' captured_at");
        assert_eq!(classes(r), classes(&http[name]), "{name}: same classes as over HTTP");
        same_detections(r, &http[name], name);
    }
    let corrupt = &results["9"];
    assert_eq!(corrupt["status"], "error", "a frame whose data is broken still gets its result: {corrupt}");
    same_detections(&results["77"], &http["person.jpg"], "person.jpg, after the refusals");
    assert_eq!(errors[r#""junk""#]["code"], "not_an_image");
    assert_eq!(errors[r#""typo""#]["code"], "bad_message", "{}", errors[r#""typo""#]);
    assert_eq!(errors[r#""kite.jpg""#]["code"], "too_large");
    // What the socket answered is what is stored.
    let dog_id = &accepted[0].1;
    let stored: Value =
        c.get(server.url(&format!("/v1/frames/{dog_id}"))).bearer_auth(&operator).send().await.unwrap().json().await.unwrap();
    assert_eq!(stored["frame_id"], results[r#""dog.jpg""#]["frame_id"]);
    same_detections(&stored, &results[r#""dog.jpg""#], "dog.jpg stored");
    ws.close(None).await.unwrap();

    // The station's rate limit holds on the socket: one frame, then a refusal that says when.
    // (The token in the query, as a browser sends it.)
    let (mut slow, _) = open(&format!("{}?token={cam1}", ws_url(&server, "/v1/stations/slow/ws")), None).await.unwrap();
    send_frame(&mut slow, Some(json!({"id": "s1"})), photo_bytes("person.jpg")).await;
    send_frame(&mut slow, Some(json!({"id": "s2"})), photo_bytes("person.jpg")).await;
    let mut got = HashMap::new();
    while got.len() < 3 {
        let m = next(&mut slow).await;
        got.insert(format!("{}:{}", m["type"].as_str().unwrap(), m["id"].as_str().unwrap()), m);
    }
    assert!(got.contains_key("accepted:s1") && got.contains_key("result:s1"), "{got:?}");
    let limited = &got["error:s2"];
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    assert!(limited["retry_after_s"].as_u64().unwrap() >= 1, "{limited}");

    // A client that did not come from this code: Python's websocket-client, running
    // the README's example (docs/examples/stream_client.py) on two photos.
    let out = tokio::process::Command::new(cache().join("venv/bin/python"))
        .arg(repo().join("docs/examples/stream_client.py"))
        .arg(ws_url(&server, "/v1/stations/l1-cam2/ws"))
        .args([photo("dog.jpg"), photo("horses.jpg")])
        .env("VISIONQ_TOKEN", &cam2)
        .output()
        .await
        .expect("the venv's python runs (python3 tools/assets.py makes it)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for name in ["dog.jpg", "horses.jpg"] {
        // The example names each frame by its path.
        let line = lines.iter().find(|l| l["id"] == photo(name).to_str().unwrap()).unwrap_or_else(|| panic!("{name}: {lines:?}"));
        assert_eq!(line["result"]["station"], "l1-cam2");
        same_detections(&line["result"], &http[name], &format!("{name} from Python"));
    }

    // Eleven frames taken over sockets (eight, `s1`, Python's two), none left in
    // flight, none refused for the window.
    let metrics = server.metrics().await;
    for line in [r#"visionq_ingest_accepted_total{mode="stream"} 11"#, r#"visionq_in_flight{stage="ingest_stream"} 0"#] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(!metrics.contains(r#"reason="window_full""#), "nothing refused for the window here");
    for reason in ["not_an_image", "bad_message", "too_large", "rate_limited"] {
        assert!(metrics.contains(&format!("visionq_ingest_rejected_total{{reason=\"{reason}\"}}")), "{reason} counted");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_holds_and_frames_accepted_outlive_their_socket() {
    let prefix = unique("wswin");
    let db = TestDb::new("wswin").await;
    let env = amqp_env(&prefix, &db.url);
    // Ingest alone: nothing consumes the frames, so no slot frees by itself.
    let ingest = Server::start(&["ingest"], &env).await;
    let person = photo_bytes("person.jpg");

    // Queue mode, a window of 3, five frames sent without reading.
    let (mut q, hello) = open(&ws_url(&ingest, "/v1/stations/l2-cam1/ws?window=3"), None).await.unwrap();
    assert_eq!((hello["window"].as_u64(), hello["mode"].as_str()), (Some(3), Some("queue")), "{hello}");
    for i in 1..=5 {
        send_frame(&mut q, Some(json!({"id": format!("q{i}")})), person.clone()).await;
    }
    let mut q_frames = Vec::new();
    for i in 1..=5 {
        let m = next(&mut q).await;
        assert_eq!(m["id"], format!("q{i}"), "answered in the order sent: {m}");
        if i <= 3 {
            assert_eq!(m["type"], "accepted", "{m}");
            q_frames.push(m["frame_id"].as_str().unwrap().to_string());
        } else {
            assert_eq!((m["type"].as_str(), m["code"].as_str()), (Some("error"), Some("window_full")), "{m}");
            assert!(m["error"].as_str().unwrap().contains("window"), "{m}");
        }
    }
    assert_eq!(queue_len(&format!("{prefix}.frames")).await, 3, "the window's frames and no more");

    // Newest mode, a window of 1: the frames waiting for the slot give way to newer ones.
    let (mut n, hello) = open(&ws_url(&ingest, "/v1/stations/l2-cam2/ws?window=1&mode=newest"), None).await.unwrap();
    assert_eq!(hello["mode"], "newest");
    for i in 1..=4 {
        send_frame(&mut n, Some(json!({"id": format!("n{i}")})), person.clone()).await;
    }
    let m = next(&mut n).await;
    assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("accepted"), Some("n1")), "{m}");
    let n1 = m["frame_id"].as_str().unwrap().to_string();
    for (skipped, by) in [("n2", "n3"), ("n3", "n4")] {
        let m = next(&mut n).await;
        assert_eq!((m["type"].as_str(), m["id"].as_str(), m["by"].as_str()), (Some("skipped"), Some(skipped), Some(by)), "{m}");
        assert_eq!(m["code"], "superseded");
    }
    assert_eq!(queue_len(&format!("{prefix}.frames")).await, 4, "n4 waits on the socket, not in the queue");

    // The queue-mode socket goes away with its three frames accepted.
    q.close(None).await.unwrap();
    drop(q);
    let metrics = ingest.metrics().await;
    for line in [
        r#"visionq_ingest_rejected_total{reason="window_full"} 2"#,
        r#"visionq_ingest_rejected_total{reason="superseded"} 2"#,
        r#"visionq_ingest_accepted_total{mode="stream"} 4"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // The pipeline comes up: n1's result frees the slot for n4, and every frame accepted is stored once.
    let results = Server::start(&["results"], &env).await;
    let infer = Server::start(&["infer"], &env).await;
    let preprocess = Server::start(&["preprocess"], &env).await;
    let mut seen = Vec::new();
    let mut n4 = None;
    while seen.len() < 3 {
        let m = next(&mut n).await;
        seen.push(format!("{}:{}", m["type"].as_str().unwrap(), m["id"].as_str().unwrap()));
        match m["type"].as_str() {
            Some("result") => {
                assert_eq!(m["result"]["status"], "ok", "{m}");
                assert!(classes(&m["result"]).contains(&"person".to_string()), "{m}");
            }
            Some("accepted") => n4 = Some(m["frame_id"].as_str().unwrap().to_string()),
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(seen, ["result:n1", "accepted:n4", "result:n4"]);
    n.close(None).await.unwrap();

    let c = reqwest::Client::new();
    let pg = db.client().await;
    for id in q_frames.iter().chain([&n1, n4.as_ref().unwrap()]) {
        let url = results.url(&format!("/v1/frames/{id}"));
        let stored = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                let r = c.get(&url).send().await.unwrap();
                if r.status() == 200 {
                    return r.json::<Value>().await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id} stored"));
        assert_eq!(stored["status"], "ok", "{stored}");
        assert!(classes(&stored).contains(&"person".to_string()), "{stored}");
        let uuid: uuid::Uuid = id.parse().unwrap();
        let rows: i64 = pg.query_one("SELECT count(*) FROM frames WHERE frame_id = $1", &[&uuid]).await.unwrap().get(0);
        assert_eq!(rows, 1, "{id} stored once");
    }
    let total: i64 = pg.query_one("SELECT count(*) FROM frames", &[]).await.unwrap().get(0);
    assert_eq!(total, 5, "q1-q3, n1 and n4; nothing refused or skipped was run");
    // A socket still open when ingest stops is told so (1001), and does not hold the exit up.
    let (mut open_at_stop, _) = open(&ws_url(&ingest, "/v1/stations/l2-cam3/ws"), None).await.unwrap();
    ingest.stop().await;
    match tokio::time::timeout(Duration::from_secs(10), open_at_stop.next()).await.expect("an answer at the stop") {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001, "{f:?}"),
        other => panic!("expected a close with 1001, got {other:?}"),
    }
    for s in [preprocess, infer, results] {
        s.stop().await;
    }
    delete_topology(&prefix).await;
}
