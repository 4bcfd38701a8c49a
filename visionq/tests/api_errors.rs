//! Every refusal of the HTTP API is `{error, code}` JSON, naming the parameter it
//! refuses; parameters out of range, misspelt or unknown are refused, not ignored;
//! a path served by another role says which one.

mod common;

use common::*;
use serde_json::{Value, json};

/// GETs or POSTs `url`; returns status, content type and JSON body (Null if not JSON).
async fn call(req: reqwest::RequestBuilder) -> (u16, String, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = r.text().await.unwrap();
    (status, ct, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts a JSON refusal with `status` and `code`, naming `param` (when given) in
/// its `param` field and its message.
fn refused(got: (u16, String, Value), status: u16, code: &str, param: Option<&str>, what: &str) {
    let (s, ct, v) = got;
    assert_eq!(s, status, "{what}: {v}");
    assert!(ct.starts_with("application/json"), "{what}: content type {ct}");
    assert_eq!(v["code"], code, "{what}: {v}");
    let message = v["error"].as_str().unwrap_or_else(|| panic!("{what}: no error message: {v}"));
    if let Some(p) = param {
        assert_eq!(v["param"], p, "{what}: {v}");
        assert!(message.contains(p), "{what}: the message names `{p}`: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_json_and_name_the_parameter() {
    let data = scratch("api-errors");
    let server = Server::start(&["run"], &[("VISIONQ_DATA_DIR", data.display().to_string())]).await;
    let c = reqwest::Client::new();
    let frames = server.url("/v1/stations/cam-a/frames");
    let post = |q: &str, body: Vec<u8>| c.post(format!("{frames}{q}")).header("content-type", "image/jpeg").body(body);
    let dog = photo_bytes("dog.jpg");

    // Ingest's query parameters.
    refused(call(post("?wait_ms=abc", dog.clone())).await, 400, "bad_parameter", Some("wait_ms"), "wait_ms=abc");
    refused(call(post("?wait=2000", dog.clone())).await, 400, "unknown_parameter", Some("wait"), "misspelt wait");
    refused(call(post("?captured_at=yesterday", dog.clone())).await, 400, "bad_parameter", Some("captured_at"), "query captured_at");
    refused(call(post("?deadline_ms=-1", dog.clone())).await, 400, "bad_parameter", Some("deadline_ms"), "negative deadline");
    let body = json!({"image": "AAAA", "captured_at": "last tuesday"}).to_string().into_bytes();
    let got = call(c.post(&frames).header("content-type", "application/json").body(body)).await;
    refused(got, 400, "bad_captured_at", Some("captured_at"), "JSON captured_at");
    let selftest = call(c.post(server.url("/v1/selftest?wait_ms=soon"))).await;
    refused(selftest, 400, "bad_parameter", Some("wait_ms"), "self-test wait_ms");

    // One good frame, so that history has something to filter.
    let (s, _, reply) = call(post("?wait_ms=30000", dog.clone())).await;
    assert_eq!(s, 200, "{reply}");
    assert!(classes(&reply).contains(&"dog".to_string()), "{reply}");

    // History and counts.
    let history = |q: &str| c.get(server.url(&format!("/v1/stations/cam-a/results{q}")));
    refused(call(history("?since=yesterday")).await, 400, "bad_parameter", Some("since"), "since=yesterday");
    refused(call(history("?limit=5000")).await, 400, "bad_parameter", Some("limit"), "limit=5000");
    refused(call(history("?limit=0")).await, 400, "bad_parameter", Some("limit"), "limit=0");
    refused(call(history("?min_score=2")).await, 400, "bad_parameter", Some("min_score"), "min_score=2");
    refused(call(history("?clas=dog")).await, 400, "unknown_parameter", Some("clas"), "misspelt class");
    refused(call(history("?before=nonsense")).await, 400, "bad_parameter", Some("before"), "bad cursor");
    let (s, _, v) = call(history("?class=unicorn")).await;
    refused((s, "application/json".into(), v.clone()), 400, "bad_parameter", Some("class"), "class=unicorn");
    assert!(v["error"].as_str().unwrap().contains("dog"), "the refusal lists the model's classes: {v}");
    let (s, _, page) = call(history("?class=dog&limit=1000")).await;
    assert_eq!(s, 200, "{page}");
    let stored = &page["results"][0];
    assert_eq!(stored["frame_id"], reply["frame_id"]);
    assert!(stored["detections"].as_array().unwrap().iter().all(|d| d["class_name"] == "dog"));
    // Scores read the same in the reply and in history (f32, shortest text, in both).
    let score_of = |r: &Value| r["detections"].as_array().unwrap().iter().find(|d| d["class_name"] == "dog").unwrap()["score"].clone();
    assert_eq!(score_of(stored), score_of(&reply), "history widens no score");
    let frame = call(c.get(server.url(&format!("/v1/frames/{}", reply["frame_id"].as_str().unwrap())))).await.2;
    assert_eq!(score_of(&frame), score_of(&reply));

    let counts = |q: &str| c.get(server.url(&format!("/v1/stations/cam-a/counts{q}")));
    refused(call(counts("?interval=fortnightly")).await, 400, "bad_parameter", Some("interval"), "bad interval");
    refused(call(counts("?until=noon")).await, 400, "bad_parameter", Some("until"), "until=noon");
    let range = "?since=2026-11-22T10:00:00Z&until=2026-11-22T09:00:00Z";
    refused(call(counts(range)).await, 400, "bad_parameter", Some("since"), "since after until");
    refused(call(c.get(server.url("/v1/stations/bad%20id/results"))).await, 400, "bad_station", None, "bad station in history");
    refused(call(c.get(server.url("/v1/frames/not-a-uuid"))).await, 400, "bad_frame_id", None, "frame id");
    refused(call(c.get(server.url(&format!("/v1/frames/{}", uuid::Uuid::now_v7())))).await, 404, "not_found", None, "no frame");

    // The stream: a bad station is refused before the upgrade; a plain GET is told to upgrade.
    refused(call(c.get(server.url("/v1/stream?station=bad%20id"))).await, 400, "bad_station", None, "stream station");
    refused(call(c.get(server.url("/v1/stream?statoin=cam-a"))).await, 400, "unknown_parameter", Some("statoin"), "stream param");
    let plain = call(c.get(server.url("/v1/stream?station=cam-a"))).await;
    assert!(plain.0 >= 400 && plain.2["code"] == "not_websocket", "{plain:?}");
    match tokio_tungstenite::connect_async(format!("{}/v1/stream?station=bad%20id", server.base.replace("http", "ws"))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 400),
        Ok(_) => panic!("a bad station id got a (silent) stream"),
        Err(e) => panic!("{e}"),
    }

    // Dashboard routes.
    let latest = call(c.get(server.url("/v1/stations/cam-a/latest.jpg?frame_id=nope"))).await;
    refused(latest, 400, "bad_parameter", Some("frame_id"), "latest.jpg frame_id");
    refused(call(c.get(server.url("/v1/dashboard/metrics/x"))).await, 404, "not_found", None, "metrics source");
    refused(call(c.get(server.url("/dashboard/nothing.js"))).await, 404, "not_found", None, "asset");

    // Unknown routes and methods.
    refused(call(c.get(server.url("/v1/nothing"))).await, 404, "not_found", None, "unknown route");
    refused(call(c.delete(server.url("/v1/stations/cam-a/frames"))).await, 405, "method_not_allowed", None, "DELETE frames");

    // The configuration shows the address this process listens on.
    let (s, _, config) = call(c.get(server.url("/v1/config"))).await;
    assert_eq!(s, 200, "{config}");
    assert_eq!(format!("http://{}", config["listen"].as_str().unwrap()), server.base, "{config}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_process_names_the_role_that_serves_the_read_side() {
    let prefix = unique("wrong-role");
    let env = amqp_env(&prefix, "postgres://unused@127.0.0.1:1/none");
    let ingest = Server::start(&["ingest"], &env).await;
    let c = reqwest::Client::new();
    let id = uuid::Uuid::now_v7();
    for path in [format!("/v1/frames/{id}"), "/v1/stations/cam-a/results".into(), "/v1/stream".into(), "/".into()] {
        let (s, ct, v) = call(c.get(ingest.url(&path))).await;
        refused((s, ct, v.clone()), 404, "wrong_role", None, &path);
        assert_eq!(v["served_by"], "results", "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("results role"), "{path}: {v}");
    }
    refused(call(c.get(ingest.url("/v1/nothing"))).await, 404, "not_found", None, "unknown route on ingest");
    let (s, _, config) = call(c.get(ingest.url("/v1/config"))).await;
    assert_eq!(s, 200, "{config}");
    assert_eq!(format!("http://{}", config["listen"].as_str().unwrap()), ingest.base, "{config}");
    ingest.stop().await;
    delete_topology(&prefix).await;
}
