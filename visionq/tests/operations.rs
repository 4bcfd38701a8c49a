//! What SREs rely on: metrics with the right names and values after a known run,
//! readiness that follows the broker, SIGTERM under load that loses and doubles
//! nothing, JSON logs with a line per batch, trace context across every hop, and the
//! synthetic self-test.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PHOTOS: &[&str] = &["dog.jpg", "horses.jpg", "person.jpg", "giraffe.jpg", "eagle.jpg"];

/// Env for the embedded pipeline (in-process queues, SQLite under a scratch dir).
fn embedded_env(tag: &str) -> Vec<(&'static str, String)> {
    vec![("VISIONQ_DATA_DIR", scratch(tag).display().to_string())]
}

/// One parsed sample of the Prometheus text exposition.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (head, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample { name: name.to_string(), labels, value: value.parse().unwrap() }
        })
        .collect()
}

/// Sum of the samples named `name` whose labels include `labels`; None if there is none.
fn metric(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = all
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

fn must(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(all, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} is not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_after_a_known_run_have_the_right_names_and_values() {
    let server = Server::start(&["run"], &embedded_env("metrics")).await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/stations/line1-cam1/frames?wait_ms=30000");
    let mut dogs = 0;
    for name in PHOTOS {
        let (status, r) = post_jpeg(&client, &url, photo_bytes(name)).await;
        assert_eq!((status, r["status"].as_str()), (200, Some("ok")), "{name}: {r}");
        dogs += r["detections"].as_array().unwrap().iter().filter(|d| d["class_name"] == "dog").count();
    }
    let (status, r) = post_jpeg(&client, &url, corrupt_jpeg()).await;
    assert_eq!((status, r["status"].as_str()), (200, Some("error")), "{r}");

    let text = server.metrics().await;
    let problems = visionq_contract::metrics::convention_violations(&text);
    assert!(problems.is_empty(), "live /metrics breaks the conventions: {problems:#?}");
    let m = samples(&text);
    let n = PHOTOS.len() as f64;
    // Frames in, out and failed, stage by stage.
    assert_eq!(must(&m, "visionq_ingest_accepted_total", &[("mode", "wait")]), n + 1.0);
    assert_eq!(must(&m, "visionq_station_frames_total", &[("station", "line1-cam1")]), n + 1.0);
    assert_eq!(must(&m, "visionq_stage_frames_total", &[("stage", "preprocess"), ("outcome", "ok")]), n);
    assert_eq!(must(&m, "visionq_stage_frames_total", &[("stage", "preprocess"), ("outcome", "error")]), 1.0);
    assert_eq!(must(&m, "visionq_stage_frames_total", &[("stage", "infer"), ("outcome", "ok")]), n);
    assert_eq!(must(&m, "visionq_results_persisted_total", &[("status", "ok")]), n);
    assert_eq!(must(&m, "visionq_results_persisted_total", &[("status", "error")]), 1.0);
    assert_eq!(must(&m, "visionq_dead_lettered_total", &[("queue", "frames"), ("reason", "corrupt_image")]), 1.0);
    assert_eq!(must(&m, "visionq_ingest_body_bytes_count", &[]), n + 1.0);
    // Every frame went through exactly one forward pass.
    assert_eq!(must(&m, "visionq_infer_batch_size_sum", &[]), n);
    let passes = must(&m, "visionq_infer_batch_size_count", &[]);
    assert!((1.0..=n).contains(&passes), "{passes} passes");
    // Stage durations.
    let count = |stage: &str| must(&m, "visionq_stage_duration_seconds_count", &[("stage", stage)]);
    assert_eq!(count("decode"), n, "the corrupt frame fails in decode, before it is timed");
    assert_eq!(count("resize"), n);
    assert_eq!(count("inference"), passes);
    assert_eq!(count("postprocess"), n);
    assert_eq!(count("end_to_end"), n + 1.0);
    assert!(count("db_write") >= 1.0);
    assert!(count("queue_wait_frames") >= n);
    assert!(must(&m, "visionq_stage_duration_seconds_sum", &[("stage", "end_to_end")]) > 0.0);
    // Detections per class, and the score histogram behind mean confidence per model.
    assert_eq!(must(&m, "visionq_detections_total", &[("class", "dog")]), dogs as f64);
    assert!(dogs >= 2, "dog.jpg and person.jpg show dogs");
    let detections = must(&m, "visionq_detections_total", &[]);
    let scores = must(&m, "visionq_detection_score_count", &[("model", "yolov3-tiny")]);
    assert_eq!(scores, detections);
    let mean = must(&m, "visionq_detection_score_sum", &[("model", "yolov3-tiny")]) / scores;
    assert!((0.25..=1.0).contains(&mean), "mean confidence {mean}");
    assert_eq!(must(&m, "visionq_model_info", &[("name", "yolov3-tiny")]), 1.0);
    for q in ["frames", "tensors", "results"] {
        assert!(metric(&m, "visionq_queue_depth", &[("queue", q)]).is_some(), "queue depth of {q}");
    }
    assert_eq!(must(&m, "visionq_in_flight", &[("stage", "ingest_wait")]), 0.0);
    // /readyz feeds the dependency gauges.
    assert_eq!(reqwest::get(server.url("/readyz")).await.unwrap().status(), 200);
    let m = samples(&server.metrics().await);
    for dep in ["broker", "database", "model"] {
        assert_eq!(must(&m, "visionq_dependency_up", &[("dependency", dep)]), 1.0, "{dep}");
    }
    // Frames are counted per station, so an alert can name the one that went quiet.
    let (status, _) = post_jpeg(&client, &server.url("/v1/stations/line2-cam7/frames"), photo_bytes("dog.jpg")).await;
    assert_eq!(status, 202);
    let m = samples(&server.metrics().await);
    assert_eq!(must(&m, "visionq_station_frames_total", &[("station", "line1-cam1")]), n + 1.0);
    assert_eq!(must(&m, "visionq_station_frames_total", &[("station", "line2-cam7")]), 1.0);
    server.stop().await;
}

/// A TCP proxy to this machine's RabbitMQ that the test can cut (every connection
/// dropped, new ones closed at once) and restore.
struct BrokerProxy {
    port: u16,
    up: watch::Sender<bool>,
}

impl BrokerProxy {
    async fn start() -> BrokerProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, _) = watch::channel(true);
        let state = up.subscribe();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                let mut down = state.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect("127.0.0.1:5672").await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        BrokerProxy { port, up }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// Polls `/readyz` until its status is `want`; returns the last body.
async fn readiness_becomes(server: &Server, want: u16, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        let r = reqwest::get(server.url("/readyz")).await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        if status == want {
            return body;
        }
        assert!(Instant::now() < until, "/readyz stayed {status} ({body:?}), wanted {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `GET /v1/frames/{id}` until the result is stored.
async fn stored_result(client: &reqwest::Client, server: &Server, id: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let r = client.get(server.url(&format!("/v1/frames/{id}"))).send().await.unwrap();
        if r.status() == 200 {
            return r.json().await.unwrap();
        }
        assert!(Instant::now() < until, "no result for {id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_the_broker_and_frames_are_refused_while_it_is_gone() {
    let proxy = BrokerProxy::start().await;
    let prefix = unique("ready");
    let db = TestDb::new("ready").await;
    let mut env = amqp_env(&prefix, &db.url);
    env[0].1 = proxy.url();
    let server = Server::start(&["run"], &env).await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/stations/s1/frames");
    readiness_becomes(&server, 200, Duration::from_secs(10)).await;
    let (s, r) = post_jpeg(&client, &format!("{url}?wait_ms=30000"), photo_bytes("dog.jpg")).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("ok")), "{r}");

    proxy.set(false);
    let cut = Instant::now();
    let body = readiness_becomes(&server, 503, Duration::from_secs(5)).await;
    assert!(body.contains("broker"), "{body}");
    eprintln!("not ready {:?} after the cut", cut.elapsed());
    let r = client.post(&url).header("content-type", "image/jpeg").body(photo_bytes("dog.jpg")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "a frame posted while the broker is gone is refused, never 202");
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unavailable", "{v}");
    assert_eq!(must(&samples(&server.metrics().await), "visionq_dependency_up", &[("dependency", "broker")]), 0.0);

    proxy.set(true);
    let back = Instant::now();
    readiness_becomes(&server, 200, Duration::from_secs(15)).await;
    eprintln!("ready again {:?} after the restore", back.elapsed());
    let (s, r) = post_jpeg(&client, &url, photo_bytes("dog.jpg")).await;
    assert_eq!(s, 202, "{r}");
    let got = stored_result(&client, &server, r["frame_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(got["status"], "ok", "{got}");
    assert!(classes(&got).contains(&"dog".to_string()));
    server.stop().await;
    delete_topology(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_load_loses_nothing_and_doubles_nothing() {
    let prefix = unique("term");
    let db = TestDb::new("term").await;
    let shutdown_timeout = Duration::from_secs(15);
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_SHUTDOWN_TIMEOUT_MS", shutdown_timeout.as_millis().to_string()));
    let mut server = Server::start(&["run"], &env).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();

    // Four stations until the process goes away: two post 40 frames a second without
    // waiting (more than two cores infer, so the queues grow), two wait for each result.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let mut stations = Vec::new();
    for s in 0..4 {
        let (client, accepted, failed, stop) = (client.clone(), accepted.clone(), failed.clone(), stop.clone());
        let wait = if s % 2 == 1 { "?wait_ms=10000" } else { "" };
        let url = server.url(&format!("/v1/stations/station-{s}/frames{wait}"));
        stations.push(tokio::spawn(async move {
            let mut i = s;
            while !stop.load(Ordering::Relaxed) {
                let r =
                    client.post(&url).header("content-type", "image/jpeg").body(photo_bytes(PHOTOS[i % PHOTOS.len()])).send().await;
                match r {
                    Ok(r) if [200, 202].contains(&r.status().as_u16()) => {
                        let v: Value = r.json().await.unwrap();
                        accepted.lock().unwrap().push(v["frame_id"].as_str().unwrap().to_string());
                    }
                    Ok(r) => assert_eq!(r.status(), 503, "a frame is accepted or refused with 503: {:?}", r.text().await),
                    // The process is gone (nothing was sent): the station would retry elsewhere.
                    Err(e) if e.is_connect() => {}
                    // Cut mid-request: the frame may or may not have been queued.
                    Err(_) => *failed.lock().unwrap() += 1,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = accepted.lock().unwrap().len();
    assert!(before > 20, "load is flowing: {before} frames accepted");
    let pid = server.child.id().unwrap();
    let t0 = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(shutdown_timeout + Duration::from_secs(5), server.child.wait())
        .await
        .unwrap_or_else(|_| panic!("visionq did not exit within the shutdown timeout; see {}", server.log.display()))
        .unwrap();
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for s in stations {
        s.await.unwrap();
    }
    assert!(status.success(), "exit status {status}; see {}", server.log.display());
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    let distinct: HashSet<&String> = accepted.iter().collect();
    assert_eq!(distinct.len(), accepted.len(), "frame ids are unique");
    let pg = db.client().await;
    let rows_at_exit: i64 = pg.query_one("SELECT count(*) FROM frames", &[]).await.unwrap().get(0);
    eprintln!(
        "SIGTERM: exit 0 after {took:?}; {} accepted, {rows_at_exit} stored at exit, {} requests cut",
        accepted.len(),
        failed.lock().unwrap()
    );

    // The same roles again, on the same queues and database, until everything drained.
    let server = Server::start(&["run"], &env).await;
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let rows: i64 = pg.query_one("SELECT count(*) FROM frames", &[]).await.unwrap().get(0);
        let mut queued = 0;
        for q in ["frames", "tensors", "results"] {
            queued += queue_len(&format!("{prefix}.{q}")).await;
        }
        if queued == 0 && rows as usize >= accepted.len() {
            break;
        }
        assert!(Instant::now() < until, "not drained: {rows} rows for {} accepted, {queued} queued", accepted.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let a straggler (a redelivered duplicate) land before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored: Vec<uuid::Uuid> = pg.query("SELECT frame_id FROM frames", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let stored_set: HashSet<String> = stored.iter().map(|u| u.to_string()).collect();
    assert_eq!(stored_set.len(), stored.len(), "no frame stored twice");
    let missing: Vec<&String> = accepted.iter().filter(|id| !stored_set.contains(*id)).collect();
    assert!(missing.is_empty(), "{} accepted frames lost: {missing:?}", missing.len());
    // Anything stored beyond the 202s was confirmed by the broker while its reply was cut.
    let failed = *failed.lock().unwrap();
    assert!(stored.len() <= accepted.len() + failed, "{} stored, {} accepted, {failed} requests failed", stored.len(), accepted.len());
    let doubled: i64 = pg
        .query_one("SELECT count(*) FROM (SELECT frame_id, idx FROM detections GROUP BY frame_id, idx HAVING count(*) > 1) d", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(doubled, 0, "no detection stored twice");
    assert_eq!(queue_len(&format!("{prefix}.dead")).await, 0, "nothing dead-lettered");
    server.stop().await;
    delete_topology(&prefix).await;
}

/// A header of a message, as text.
fn header(d: &lapin::message::Delivery, name: &str) -> Option<String> {
    d.properties.headers().as_ref()?.inner().iter().find(|(k, _)| k.as_str() == name).and_then(|(_, v)| match v {
        lapin::types::AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    })
}

/// Waits for a message on `queue`, returns its traceparent and hands it back to the queue.
async fn traceparent_on(ch: &lapin::Channel, queue: &str) -> Option<String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(m) = ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: false }).await.unwrap() {
            let tp = header(&m.delivery, "traceparent");
            m.delivery.acker.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
            return tp;
        }
        assert!(Instant::now() < until, "nothing arrived on {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_context_travels_in_the_frame_tensor_and_result_messages() {
    let prefix = unique("trace");
    let env = amqp_env(&prefix, "sqlite://unused");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    // Start the stages one by one and read what each one left in its output queue.
    let ingest = Server::start(&["ingest"], &env).await;
    let client = reqwest::Client::new();
    let r = client
        .post(ingest.url("/v1/stations/s1/frames"))
        .header("content-type", "image/jpeg")
        .header("traceparent", traceparent)
        .body(photo_bytes("dog.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(traceparent_on(&ch, &format!("{prefix}.frames")).await.as_deref(), Some(traceparent), "frame message");
    let preprocess = Server::start(&["preprocess"], &env).await;
    assert_eq!(traceparent_on(&ch, &format!("{prefix}.tensors")).await.as_deref(), Some(traceparent), "tensor message");
    let infer = Server::start(&["infer"], &env).await;
    assert_eq!(traceparent_on(&ch, &format!("{prefix}.results")).await.as_deref(), Some(traceparent), "result message");

    // A frame posted without one gets a fresh trace context: its trace id is the frame id.
    let r = client
        .post(ingest.url("/v1/stations/s1/frames"))
        .header("content-type", "image/jpeg")
        .body(photo_bytes("dog.jpg"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let id = uuid::Uuid::parse_str(v["frame_id"].as_str().unwrap()).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    'found: loop {
        // The results queue now holds both results: find the second one's.
        while let Some(m) =
            ch.basic_get(format!("{prefix}.results").into(), lapin::options::BasicGetOptions { no_ack: false }).await.unwrap()
        {
            let result: Value = serde_json::from_slice(&m.delivery.data).unwrap();
            let tp = header(&m.delivery, "traceparent");
            m.delivery.acker.ack(Default::default()).await.unwrap();
            if result["frame_id"] == v["frame_id"] {
                let tp = tp.expect("a result carries trace context");
                assert!(tp.starts_with(&format!("00-{}-", id.simple())), "{tp}");
                break 'found;
            }
        }
        assert!(Instant::now() < until, "no result for {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in [ingest, preprocess, infer] {
        s.stop().await;
    }
    delete_topology(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selftest_reports_each_stage_and_logs_are_json_lines() {
    let mut env = embedded_env("selftest");
    env.push(("VISIONQ_LOG_FORMAT", "json".into()));
    env.push(("RUST_LOG", "info,visionq::frames=debug".into()));
    let server = Server::start(&["run"], &env).await;
    let client = reqwest::Client::new();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = client.post(server.url("/v1/selftest")).header("traceparent", traceparent).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["result"]["station"], "selftest");
    assert_eq!(v["result"]["image"]["width"], 64);
    let total = v["total_ms"].as_f64().unwrap();
    for stage in [
        "queue_wait_frames",
        "decode",
        "resize",
        "queue_wait_tensors",
        "batch_wait",
        "inference",
        "postprocess",
        "queue_wait_results",
        "db_write",
    ] {
        let ms = v["stages_ms"][stage].as_f64().unwrap_or_else(|| panic!("{stage} in {v}"));
        assert!((0.0..=total).contains(&ms), "{stage}: {ms} ms of {total} ms");
    }
    assert!(v["stages_ms"]["inference"].as_f64().unwrap() > 0.0);
    // It is counted, and stored like any frame.
    let m = samples(&server.metrics().await);
    assert_eq!(must(&m, "visionq_selftest_runs_total", &[("outcome", "ok")]), 1.0);
    let stored = stored_result(&client, &server, v["frame_id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(stored["station"], "selftest");
    // A too short wait is a 504 that says so.
    let r = client.post(server.url("/v1/selftest?wait_ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let log_path = server.log.clone();
    server.stop().await;

    // JSON lines only: the batch at info, the frame at debug, with its trace id.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let batch = lines.iter().find(|l| l["fields"]["message"] == "batch done").expect("a batch line");
    assert_eq!(batch["level"], "INFO", "{batch}");
    assert!(batch["fields"]["batch"].as_u64().unwrap() >= 1 && batch["fields"]["pass_ms"].as_f64().unwrap() > 0.0, "{batch}");
    // The trace id is a field of the frame's span (contract::instrument::frame_span).
    let frame = lines
        .iter()
        .find(|l| l["fields"]["message"] == "frame inferred" && l["span"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c")
        .expect("a per-frame line with the request's trace id");
    assert_eq!(frame["span"]["station"], "selftest", "{frame}");
    assert_eq!(frame["level"], "DEBUG", "{frame}");
}
