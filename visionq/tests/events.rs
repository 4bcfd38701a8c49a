//! Events out (issue 18) against real receivers: a webhook receiver in this test that
//! fails, times out and recovers, and Debian's mosquitto started on a free port with
//! a rumqttc subscriber. Every event arrives, signed, under one id per frame and sink
//! (a repeat only with the same id), across a kill -9 of visionq while the receiver
//! is down; an event out of attempts is dead-lettered and delivered by a replay; MQTT
//! events arrive with QoS 1 and a late subscriber reads each station's retained state.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "plant-secret-42";

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    Fail,
    /// Answers 200 only after the sink's timeout has passed.
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    event_id: String,
    timestamp: String,
    signature: String,
    body: String,
    answer: Answer,
}

/// A webhook receiver: answers from `script` first, then `default`; keeps every request.
#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Option<Answer>>,
    got: Mutex<Vec<Received>>,
}

impl Receiver {
    fn new(script: &[Answer], default: Answer) -> Arc<Receiver> {
        Arc::new(Receiver {
            script: Mutex::new(script.iter().copied().collect()),
            default: Mutex::new(Some(default)),
            got: Mutex::default(),
        })
    }

    fn router(self: &Arc<Self>) -> axum::Router {
        let state = self.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let r = state.clone();
                async move {
                    let answer = r.script.lock().unwrap().pop_front().unwrap_or_else(|| r.default.lock().unwrap().unwrap());
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    r.got.lock().unwrap().push(Received {
                        event_id: h("visionq-event-id"),
                        timestamp: h("visionq-timestamp"),
                        signature: h("visionq-signature"),
                        body,
                        answer,
                    });
                    match answer {
                        Answer::Ok => StatusCode::OK,
                        Answer::Fail => StatusCode::SERVICE_UNAVAILABLE,
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            StatusCode::OK
                        }
                    }
                }
            }),
        )
    }

    /// A receiver on plain HTTP; its URL.
    async fn start(script: &[Answer], default: Answer) -> (Arc<Receiver>, String) {
        let r = Receiver::new(script, default);
        let app = r.router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    /// A receiver on HTTPS with `cert` and `key` (for localhost); its URL.
    async fn start_tls(default: Answer, cert: &Path, key: &Path) -> (Arc<Receiver>, String) {
        let r = Receiver::new(&[], default);
        let app = r.router();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await.unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://localhost:{}/hook", listener.local_addr().unwrap().port());
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
        tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
        (r, url)
    }

    fn set_default(&self, a: Answer) {
        *self.default.lock().unwrap() = Some(a);
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Frame ids of the events answered 200 at once.
    fn delivered_frames(&self) -> BTreeSet<String> {
        self.got().iter().filter(|g| g.answer == Answer::Ok).map(|g| frame_of(&g.body)).collect()
    }
}

fn frame_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["frame_id"].as_str().unwrap().to_string()
}

fn sign(timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// What every request the receiver got must hold: a valid signature, the header's
/// id in the body, one body per event id and one event id per frame.
fn check_requests(got: &[Received]) {
    let mut bodies: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut ids_of_frame: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for g in got {
        assert_eq!(g.signature, sign(&g.timestamp, &g.body), "the signature verifies with the secret");
        let v: Value = serde_json::from_str(&g.body).unwrap();
        assert_eq!(v["event_id"], g.event_id.as_str(), "the header names the body's event");
        assert_eq!(v["kind"], "result");
        assert_eq!(v["sink"], "plant");
        assert_eq!(v["result"]["frame_id"], v["frame_id"]);
        bodies.entry(&g.event_id).or_default().insert(&g.body);
        ids_of_frame.entry(frame_of(&g.body)).or_default().insert(&g.event_id);
    }
    for (id, b) in &bodies {
        assert_eq!(b.len(), 1, "every delivery of event {id} is the same body");
    }
    for (frame, ids) in &ids_of_frame {
        assert_eq!(ids.len(), 1, "frame {frame} made one event id for the sink: {ids:?}");
    }
}

fn webhook_config(dir: &Path, url: &str, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("visionq.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[sink]]\nname = \"plant\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout_ms = 1000\n\
             backoff_ms = 100\nmax_backoff_ms = 400\nconcurrency = 2\n{extra}\n"
        ),
    )
    .unwrap();
    cfg
}

async fn post(server: &Server, station: &str, photo: &str) -> String {
    let url = server.url(&format!("/v1/stations/{station}/frames?wait_ms=30000"));
    let (status, result) = post_jpeg(&reqwest::Client::new(), &url, photo_bytes(photo)).await;
    assert_eq!(status, 200, "{result}");
    result["frame_id"].as_str().unwrap().to_string()
}

/// Polls `what` every 100 ms until it holds, for at most `secs` seconds.
async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn sink_status(server: &Server) -> Value {
    let (status, v) = get_json(&server.url("/v1/sinks")).await;
    assert_eq!(status, 200, "{v}");
    v["sinks"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_survive_failures_a_timeout_and_a_kill_of_visionq() {
    let dir = scratch("events-webhook");
    // Two failures, one answer too late, then the receiver takes everything.
    let (receiver, url) = Receiver::start(&[Answer::Fail, Answer::Fail, Answer::Hang], Answer::Ok).await;
    let cfg = webhook_config(&dir, &url, "max_attempts = 1000");
    let env = [("VISIONQ_DATA_DIR", dir.display().to_string())];
    let args = ["--config", cfg.to_str().unwrap(), "run"];
    let server = Server::start(&args, &env).await;

    let mut frames = BTreeSet::new();
    for (station, photo) in [("line-1", "dog.jpg"), ("line-1", "horses.jpg"), ("line-2", "person.jpg"), ("line-2", "kite.jpg")] {
        frames.insert(post(&server, station, photo).await);
    }
    until(60, "every event delivered after the failures", || receiver.delivered_frames() == frames).await;
    let got = receiver.got();
    assert!(got.iter().any(|g| g.answer == Answer::Hang), "one attempt timed out");
    assert!(got.iter().filter(|g| g.answer == Answer::Fail).count() == 2);
    check_requests(&got);
    let text = server.metrics().await;
    assert!(text.contains("visionq_sink_events_total{outcome=\"delivered\",sink=\"plant\"}"), "{text}");
    assert!(text.contains("visionq_sink_events_total{outcome=\"failed\",sink=\"plant\"}"));

    // The receiver goes down; frames keep coming; visionq is killed with their
    // events in the outbox, and started again.
    receiver.set_default(Answer::Fail);
    let mut later = BTreeSet::new();
    for photo in ["giraffe.jpg", "eagle.jpg", "scream.jpg"] {
        later.insert(post(&server, "line-3", photo).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sink_status(&server).await["pending"].as_u64().unwrap() < later.len() as u64 {
        assert!(tokio::time::Instant::now() < deadline, "the events wait in the outbox");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut server = server;
    server.child.kill().await.unwrap();
    assert!(later.iter().all(|f| !receiver.delivered_frames().contains(f)), "nothing of them was taken before the kill");
    receiver.set_default(Answer::Ok);
    let server = Server::start(&args, &env).await;
    frames.extend(later);
    until(60, "every event delivered after the restart", || receiver.delivered_frames() == frames).await;
    check_requests(&receiver.got());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink_status(&server).await["pending"] != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the outbox empties");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_out_of_attempts_is_dead_lettered_and_a_replay_delivers_it() {
    let dir = scratch("events-dead");
    let (receiver, url) = Receiver::start(&[], Answer::Fail).await;
    let cfg = webhook_config(&dir, &url, "max_attempts = 3\nstations = [\"dock-1\"]");
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &[("VISIONQ_DATA_DIR", dir.display().to_string())]).await;

    let frame = post(&server, "dock-1", "dog.jpg").await;
    // Another station: not this sink's (its filter names dock-1 only).
    post(&server, "dock-2", "dog.jpg").await;
    let dead_url = server.url("/v1/sinks/plant/dead");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (status, v) = get_json(&dead_url).await;
        assert_eq!(status, 200, "{v}");
        if !v["events"].as_array().unwrap().is_empty() {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "the event is dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events = dead["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{dead}");
    assert_eq!(events[0]["attempts"], 3);
    assert_eq!(events[0]["station"], "dock-1");
    let id = events[0]["event_id"].as_str().unwrap().to_string();
    let got = receiver.got();
    assert_eq!(got.len(), 3, "three attempts, then no more");
    assert!(got.iter().all(|g| g.event_id == id && frame_of(&g.body) == frame));
    assert!(server.metrics().await.contains("visionq_sink_events_total{outcome=\"dead_lettered\",sink=\"plant\"} 1"));
    assert_eq!(sink_status(&server).await["dead"], 1);

    // Refusals are the one error shape.
    let (status, v) = get_json(&server.url("/v1/sinks/nowhere/dead")).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("unknown_sink")), "{v}");
    let (status, v) = get_json(&server.url("/v1/sinks/plant/dead?limit=0")).await;
    assert_eq!((status, v["param"].as_str()), (400, Some("limit")), "{v}");

    receiver.set_default(Answer::Ok);
    let replay = reqwest::Client::new().post(server.url("/v1/sinks/plant/dead/replay")).send().await.unwrap();
    assert_eq!(replay.status(), 200);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["replayed"], 1, "{replay}");
    until(30, "the replayed event delivered", || receiver.delivered_frames().contains(&frame)).await;
    let got = receiver.got();
    assert_eq!(got.last().unwrap().event_id, id, "a replay keeps the event id");
    check_requests(&got);
    assert!(got.iter().all(|g| frame_of(&g.body) == frame), "dock-2's result is not this sink's");
    let (_, v) = get_json(&dead_url).await;
    assert!(v["events"].as_array().unwrap().is_empty(), "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_rabbitmq_mode_the_results_role_delivers_through_its_outbox_too() {
    let dir = scratch("events-amqp");
    let prefix = unique("events");
    let db = TestDb::new("events").await;
    let (receiver, url) = Receiver::start(&[Answer::Fail], Answer::Ok).await;
    let cfg = webhook_config(&dir, &url, "");
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_DATA_DIR", dir.display().to_string()));
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &env).await;
    let mut frames = BTreeSet::new();
    for photo in ["dog.jpg", "bus.jpg"] {
        frames.insert(post(&server, "line-9", photo).await);
    }
    until(60, "both events delivered", || receiver.delivered_frames() == frames).await;
    check_requests(&receiver.got());
    assert!(dir.join("outbox.db").exists(), "the outbox is in the results process's data dir");
    server.stop().await;
    delete_topology(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_is_verified_against_its_ca_file() {
    let dir = scratch("events-https");
    let (ca, cert, key) = tls_certificates(&dir);
    let (receiver, url) = Receiver::start_tls(Answer::Ok, &cert, &key).await;
    let cfg = webhook_config(&dir, &url, &format!("ca_file = \"{}\"", ca.display()));
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &[("VISIONQ_DATA_DIR", dir.display().to_string())]).await;
    let frame = post(&server, "line-4", "dog.jpg").await;
    until(30, "the event delivered over HTTPS", || receiver.delivered_frames().contains(&frame)).await;
    check_requests(&receiver.got());
    server.stop().await;

    // A CA file that does not exist stops the start, naming the sink and the file.
    let bad = webhook_config(&dir, &url, "ca_file = \"/nonexistent/ca.pem\"");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["--config", bad.to_str().unwrap(), "run", "--listen", "127.0.0.1:0"])
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_MODEL", model())
        .env("VISIONQ_DATA_DIR", &dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("sink `plant`") && stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

/// Debian's mosquitto on a free port, taking only the user `visionq` (password
/// `broker-pass`), stopped on drop; with `tls` (certificate, key) also MQTTS on
/// another port.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
    tls_port: Option<u16>,
}

impl Mosquitto {
    async fn start(dir: &Path) -> Mosquitto {
        Self::start_with(dir, None).await
    }

    async fn start_with(dir: &Path, tls: Option<(&Path, &Path)>) -> Mosquitto {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].into_iter().find(|p| Path::new(p).exists());
        let bin = bin.expect("mosquitto is installed (apt-get install mosquitto; scripts/test does it)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let passwords = dir.join("mosquitto.passwd");
        let made = std::process::Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwords)
            .args(["visionq", "broker-pass"])
            .status()
            .expect("mosquitto_passwd runs (Debian's mosquitto package)");
        assert!(made.success());
        let conf = dir.join("mosquitto.conf");
        let mut text =
            format!("listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n", passwords.display());
        let tls_port = tls.map(|(cert, key)| {
            // mosquitto started as root reads its files as the user `mosquitto`.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let tls_port = free_port();
            text.push_str(&format!("listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n", cert.display(), key.display()));
            tls_port
        });
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for p in std::iter::once(port).chain(tls_port) {
            while tokio::net::TcpStream::connect(("127.0.0.1", p)).await.is_err() {
                assert!(tokio::time::Instant::now() < deadline, "mosquitto listens on {p}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Mosquitto { child, port, tls_port }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A subscriber to `filter` (QoS 1); its messages (topic, retained, body) come on the channel.
async fn subscribe(port: u16, id: &str, filter: &str) -> tokio::sync::mpsc::UnboundedReceiver<(String, bool, Value)> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_credentials("visionq", "broker-pass");
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => drop(subscribed_tx.take().map(|t| t.send(()))),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    assert_eq!(p.qos, QoS::AtLeastOnce, "events are published with QoS 1");
                    let body: Value = serde_json::from_slice(&p.payload).unwrap();
                    if tx.send((p.topic.clone(), p.retain, body)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed).await.expect("SUBACK").unwrap();
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_events_arrive_with_qos_1_and_a_late_subscriber_reads_the_retained_state() {
    let dir = scratch("events-mqtt");
    let broker = Mosquitto::start(&dir).await;
    let cfg = dir.join("visionq.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[sink]]\nname = \"bus\"\nkind = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {}\ntopic_prefix = \"plant/vision\"\n\
             username = \"visionq\"\npassword = \"broker-pass\"\nbackoff_ms = 100\n",
            broker.port
        ),
    )
    .unwrap();
    let mut early = subscribe(broker.port, "early", "plant/vision/+/result").await;
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &[("VISIONQ_DATA_DIR", dir.display().to_string())]).await;
    let a1 = post(&server, "cam-a", "dog.jpg").await;
    let a2 = post(&server, "cam-a", "horses.jpg").await;
    let b1 = post(&server, "cam-b", "person.jpg").await;

    let mut seen = BTreeMap::new();
    while seen.len() < 3 {
        let (topic, retained, body) = tokio::time::timeout(Duration::from_secs(30), early.recv()).await.expect("an event").unwrap();
        assert!(!retained, "events are not retained; the state is");
        assert_eq!(topic, format!("plant/vision/{}/result", body["station"].as_str().unwrap()));
        assert_eq!(body["sink"], "bus");
        seen.insert(body["frame_id"].as_str().unwrap().to_string(), body["event_id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), BTreeSet::from([a1.clone(), a2.clone(), b1.clone()]));

    // Once the broker acknowledged every publish (the state too), a subscriber that
    // comes later gets each station's last state at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !server.metrics().await.contains("visionq_sink_events_total{outcome=\"delivered\",sink=\"bus\"} 3") {
        assert!(tokio::time::Instant::now() < deadline, "the three events count as delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut late = subscribe(broker.port, "late", "plant/vision/+/state").await;
    let mut states = BTreeMap::new();
    while states.len() < 2 {
        let (topic, retained, body) = tokio::time::timeout(Duration::from_secs(10), late.recv()).await.expect("a state").unwrap();
        assert!(retained, "{topic}: the state is retained");
        states.insert(topic, body["frame_id"].as_str().unwrap().to_string());
    }
    assert_eq!(states["plant/vision/cam-a/state"], a2, "cam-a's state is its latest result");
    assert_eq!(states["plant/vision/cam-b/state"], b1);
    server.stop().await;
}

/// Alert rules (issue 18 part 3) on real results: a class in N of the last M frames
/// fires once (not again while it holds, nor within its cool-down after it
/// resolved) and resolves when it no longer holds; a silent station fires after its
/// time and resolves with its next frame. Every change reaches a sink that takes
/// alerts (signed, one id each), the dashboard's `GET /v1/alerts` and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_fire_once_per_debounce_window_and_resolve() {
    let dir = scratch("alerts");
    let (receiver, url) = Receiver::start(&[], Answer::Ok).await;
    let rules = "events = [\"alert\"]\n\
        [[rule]]\nname = \"dogs\"\nkind = \"detections\"\nstations = [\"yard\"]\nclasses = [\"dog\"]\nmin_score = 0.4\n\
        frames = 2\nof_last = 3\nseverity = \"critical\"\ncooldown_s = 3600\n\
        [[rule]]\nname = \"quiet\"\nkind = \"silent\"\nstations = [\"yard\"]\nafter_s = 3\ncooldown_s = 0\n\
        [[rule]]\nname = \"broken\"\nkind = \"status\"\nstations = [\"dock\"]\nstatuses = [\"error\"]\nframes = 2\nof_last = 3\n";
    let cfg = webhook_config(&dir, &url, rules);
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &[("VISIONQ_DATA_DIR", dir.display().to_string())]).await;
    let alerts_of = |rule: &str| -> Vec<Value> {
        receiver.got().iter().map(|g| serde_json::from_str::<Value>(&g.body).unwrap()).filter(|v| v["alert"]["rule"] == rule).collect()
    };

    // One dog in the window is not enough; the second fires, once.
    let first = post(&server, "yard", "dog.jpg").await;
    let second = post(&server, "yard", "dog.jpg").await;
    post(&server, "yard", "dog.jpg").await;
    until(10, "the dogs alert fires", || !alerts_of("dogs").is_empty()).await;
    let (_, listed) = get_json(&server.url("/v1/alerts")).await;
    assert_eq!(listed["rules"], 3, "{listed}");
    let firing = &listed["firing"][0];
    assert_eq!(
        (firing["rule"].as_str(), firing["severity"].as_str(), firing["station"].as_str()),
        (Some("dogs"), Some("critical"), Some("yard")),
        "{listed}"
    );
    assert!(firing["reason"].as_str().unwrap().contains("2 of the last 3"), "{firing}");

    // Eagles, no dog: two of them leave one dog in the last three frames; resolved.
    post(&server, "yard", "eagle.jpg").await;
    let resolving = post(&server, "yard", "eagle.jpg").await;
    until(10, "the dogs alert resolves", || alerts_of("dogs").len() == 2).await;
    // Dogs again within the cool-down: no new alert.
    post(&server, "yard", "dog.jpg").await;
    post(&server, "yard", "dog.jpg").await;
    let dogs = alerts_of("dogs");
    let states: Vec<&str> = dogs.iter().map(|v| v["alert"]["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["firing", "resolved"], "once per window, then resolved: {dogs:#?}");
    assert_eq!(dogs[0]["frame_id"].as_str(), Some(second.as_str()), "fired by the second dog, not the first ({first})");
    assert_eq!(dogs[1]["frame_id"].as_str(), Some(resolving.as_str()));
    assert_eq!(dogs[0]["alert"]["since"], dogs[1]["alert"]["since"], "the resolution names its firing");

    let quiet_before = alerts_of("quiet").len();
    // Error results: a cut-off JPEG is answered `error`; two in three frames fire.
    let cut = server.url("/v1/stations/dock/frames?wait_ms=30000");
    for _ in 0..2 {
        let (status, result) = post_jpeg(&reqwest::Client::new(), &cut, corrupt_jpeg()).await;
        assert_eq!((status, result["status"].as_str()), (200, Some("error")), "{result}");
    }
    until(10, "the broken alert fires", || !alerts_of("broken").is_empty()).await;
    assert_eq!(alerts_of("broken")[0]["alert"]["station"], "dock");

    // Silence: three seconds without a frame from the yard (counted from its last
    // frame, before the dock's), then a frame.
    until(15, "the quiet alert fires", || alerts_of("quiet").len() > quiet_before).await;
    let (_, listed) = get_json(&server.url("/v1/alerts?station=yard")).await;
    assert!(listed["firing"].as_array().unwrap().iter().any(|a| a["rule"] == "quiet"), "{listed}");
    let back = post(&server, "yard", "eagle.jpg").await;
    until(10, "the quiet alert resolves", || {
        alerts_of("quiet").last().is_some_and(|v| v["alert"]["state"] == "resolved" && v["frame_id"] == back.as_str())
    })
    .await;
    let quiet = alerts_of("quiet");
    let last_two: Vec<&str> = quiet[quiet.len() - 2..].iter().map(|v| v["alert"]["state"].as_str().unwrap()).collect();
    assert_eq!(last_two, ["firing", "resolved"], "{quiet:#?}");
    assert!(quiet[quiet.len() - 2].get("frame_id").is_none(), "silence has no frame");

    // Every request: signed, an alert (the sink takes no results), one body per id.
    let got = receiver.got();
    let mut ids = BTreeSet::new();
    for g in &got {
        assert_eq!(g.signature, sign(&g.timestamp, &g.body));
        let v: Value = serde_json::from_str(&g.body).unwrap();
        assert_eq!((v["kind"].as_str(), v.get("result")), (Some("alert"), None), "{v}");
        ids.insert(g.event_id.clone());
    }
    assert_eq!(ids.len(), got.len(), "one delivery per event (the receiver answered every one 200)");
    let (_, listed) = get_json(&server.url("/v1/alerts")).await;
    // The dock's errors still fire (the yard may be silent again by now).
    let still: Vec<&str> = listed["firing"].as_array().unwrap().iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert!(still.contains(&"broken") && !still.contains(&"dogs"), "{listed}");
    let metrics = server.metrics().await;
    assert!(metrics.lines().any(|l| l == r#"visionq_alerts_total{severity="critical",state="firing"} 1"#), "{metrics}");
    let warnings: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"visionq_alerts_total{severity="warning",state="firing"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(warnings >= 2.0, "quiet and broken fired: {metrics}");
    server.stop().await;
}

/// MQTT over TLS: a sink with `tls` and the broker's CA delivers; one trusting
/// another CA does not (each attempt fails, nothing arrives from it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_is_verified_against_its_ca_file() {
    let dir = scratch("events-mqtts");
    let (ca, cert, key) = tls_certificates(&dir);
    let broker = Mosquitto::start_with(&dir, Some((&cert, &key))).await;
    let tls_port = broker.tls_port.unwrap();
    let sink = |name: &str, extra: &str| {
        format!(
            "[[sink]]\nname = \"{name}\"\nkind = \"mqtt\"\nhost = \"localhost\"\nport = {tls_port}\ntls = true\n\
             topic_prefix = \"{name}\"\nusername = \"visionq\"\npassword = \"broker-pass\"\nbackoff_ms = 100\nmax_backoff_ms = 200\n{extra}\n"
        )
    };
    let cfg = dir.join("visionq.toml");
    let (other_ca, _, _) = tls_certificates(&scratch("events-mqtts-other"));
    let trusting = sink("trusting", &format!("ca_file = \"{}\"", ca.display()));
    std::fs::write(&cfg, trusting + &sink("untrusting", &format!("ca_file = \"{}\"", other_ca.display()))).unwrap();
    let mut got = subscribe(broker.port, "watcher", "+/+/result").await;
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &[("VISIONQ_DATA_DIR", dir.display().to_string())]).await;
    let frame = post(&server, "cam-t", "dog.jpg").await;
    let (topic, _, body) = tokio::time::timeout(Duration::from_secs(30), got.recv()).await.expect("an event over MQTTS").unwrap();
    assert_eq!((topic.as_str(), body["frame_id"].as_str()), ("trusting/cam-t/result", Some(frame.as_str())), "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = server.metrics().await;
        let failed = m.lines().any(|l| l.starts_with(r#"visionq_sink_events_total{outcome="failed",sink="untrusting"}"#));
        if failed && m.contains(r#"visionq_sink_events_total{outcome="delivered",sink="trusting"} 1"#) {
            assert!(m.contains(r#"visionq_sink_events_total{outcome="delivered",sink="untrusting"} 0"#), "{m}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the untrusting sink's attempts fail: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(tokio::time::timeout(Duration::from_millis(500), got.recv()).await.is_err(), "nothing from the untrusting sink");
    server.stop().await;
}

/// A queue rule on RabbitMQ: frames pile up in the broker while nothing consumes
/// them; the results role (which does not consume frames) sees the depth cross the
/// line and alerts, and the alert resolves once the pipeline drains the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_over_its_line_alerts_and_resolves_when_drained() {
    let dir = scratch("alerts-queue");
    let prefix = unique("alertq");
    let db = TestDb::new("alertq").await;
    let (receiver, url) = Receiver::start(&[], Answer::Ok).await;
    let rule = "events = [\"alert\"]\n[[rule]]\nname = \"backlog\"\nkind = \"queue\"\nqueue = \"frames\"\nabove = 2\nfor_s = 1\ncooldown_s = 0\n";
    let cfg = webhook_config(&dir, &url, rule);
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_DATA_DIR", dir.display().to_string()));
    let config = ["--config", cfg.to_str().unwrap()];
    let ingest = Server::start(&[&config[..], &["ingest"]].concat(), &env).await;
    let results = Server::start(&[&config[..], &["results"]].concat(), &env).await;
    let c = reqwest::Client::new();
    for _ in 0..4 {
        let r = c
            .post(ingest.url("/v1/stations/line-q/frames"))
            .header("content-type", "image/jpeg")
            .body(photo_bytes("dog.jpg"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let states = || -> Vec<(String, String)> {
        receiver
            .got()
            .iter()
            .map(|g| serde_json::from_str::<Value>(&g.body).unwrap())
            .map(|v| {
                (v["alert"]["station"].as_str().unwrap_or("").to_string(), v["alert"]["state"].as_str().unwrap_or("").to_string())
            })
            .collect()
    };
    until(20, "the backlog alert fires", || !states().is_empty()).await;
    assert_eq!(states()[0], ("_pipeline".to_string(), "firing".to_string()));
    let body: Value = serde_json::from_str(&receiver.got()[0].body).unwrap();
    assert!(body["alert"]["reason"].as_str().unwrap().contains("frames holds 4"), "{body}");
    let infer = Server::start(&[&config[..], &["infer"]].concat(), &env).await;
    let preprocess = Server::start(&[&config[..], &["preprocess"]].concat(), &env).await;
    until(60, "the backlog alert resolves once drained", || states().len() == 2).await;
    assert_eq!(states()[1], ("_pipeline".to_string(), "resolved".to_string()));
    for s in [preprocess, infer, results, ingest] {
        s.stop().await;
    }
    delete_topology(&prefix).await;
}

/// Tracking with the real model: the eagle of `eagle.jpg`, slid frame by frame across a
/// counting line and into a zone, keeps one track id, is counted crossing once in
/// the right direction and entering once; the webhook gets those `track` events
/// (and nothing else), signed, and `GET /v1/counts` counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_crossing_a_line_is_counted_once_in_its_direction() {
    let dir = scratch("tracking");
    let (receiver, url) = Receiver::start(&[], Answer::Ok).await;
    // The line is drawn bottom to top, so moving right crosses it `in`.
    let lines = "events = [\"track\"]\n\
        [[line]]\nname = \"door\"\nstations = [\"yard\"]\nfrom = [0.5, 1.0]\nto = [0.5, 0.0]\nclasses = [\"bird\"]\nanchor = \"center\"\n\
        [[zone]]\nname = \"bay\"\nstations = [\"yard\"]\npolygon = [[0.53, 0.0], [1.0, 0.0], [1.0, 1.0], [0.53, 1.0]]\nclasses = [\"bird\"]\nanchor = \"center\"\n";
    let cfg = webhook_config(&dir, &url, lines);
    // A top-level key goes before the first table. An IoU of 0.2 lets the track
    // survive a frame in which the model misses the bird.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("track_iou = 0.2\n{text}")).unwrap();
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &[("VISIONQ_DATA_DIR", dir.display().to_string())]).await;
    let client = reqwest::Client::new();
    let post_url = server.url("/v1/stations/yard/frames?wait_ms=30000");
    let mut bird_tracks = Vec::new();
    let mut frame_ids = Vec::new();
    // The eagle (centre near x = 386 of 773) ends 480 px further right on a canvas
    // 1,253 px wide: across the middle, into the zone.
    for jpeg in slid_frames("eagle.jpg", 21, 24) {
        let (status, result) = post_jpeg(&client, &post_url, jpeg).await;
        assert_eq!((status, result["status"].as_str()), (200, Some("ok")), "{result}");
        frame_ids.push(result["frame_id"].as_str().unwrap().to_string());
        let birds: Vec<&Value> = result["detections"].as_array().unwrap().iter().filter(|d| d["class_name"] == "bird").collect();
        assert!(result["detections"].as_array().unwrap().iter().all(|d| d["track_id"].as_u64().is_some()), "{result}");
        if let [bird] = birds[..] {
            bird_tracks.push((
                bird["track_id"].as_u64().unwrap(),
                (bird["box"][0].as_f64().unwrap() + bird["box"][2].as_f64().unwrap()) / 2.0,
            ));
        }
    }
    assert!(bird_tracks.len() >= 17, "the bird is found in most frames: {bird_tracks:?}");
    let first = bird_tracks[0];
    assert!(first.1 < 0.5 && bird_tracks.last().unwrap().1 > 0.53, "it starts left of the line and ends in the zone: {bird_tracks:?}");
    assert!(bird_tracks.iter().all(|(id, _)| *id == first.0), "one track id all the way: {bird_tracks:?}");

    let tracks = || -> Vec<Value> { receiver.got().iter().map(|g| serde_json::from_str::<Value>(&g.body).unwrap()).collect() };
    until(10, "the crossing and the entry arrive", || tracks().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = tracks();
    for (g, v) in receiver.got().iter().zip(&got) {
        assert_eq!(g.signature, sign(&g.timestamp, &g.body));
        assert_eq!((v["kind"].as_str(), v.get("result")), (Some("track"), None), "{v}");
    }
    let crossed: Vec<&Value> = got.iter().filter(|v| v["track"]["kind"] == "crossed").collect();
    assert_eq!(crossed.len(), 1, "one crossing: {got:#?}");
    let c = &crossed[0]["track"];
    assert_eq!(
        (c["name"].as_str(), c["direction"].as_str(), c["class_name"].as_str(), c["track_id"].as_u64()),
        (Some("door"), Some("in"), Some("bird"), Some(first.0)),
        "{c}"
    );
    assert!(frame_ids.contains(&crossed[0]["frame_id"].as_str().unwrap().to_string()));
    let entered: Vec<&Value> = got.iter().filter(|v| v["track"]["kind"] == "entered").collect();
    assert_eq!(entered.len(), 1, "one entry: {got:#?}");
    assert_eq!(entered[0]["track"]["name"], "bay");

    let (status, counts) = get_json(&server.url("/v1/counts?station=yard&minutes=10&interval_s=3600")).await;
    assert_eq!(status, 200, "{counts}");
    let rows = counts["counts"].as_array().unwrap();
    let count = |name: &str, kind: &str| -> u64 {
        rows.iter().filter(|r| r["name"] == name && r["kind"] == kind).map(|r| r["count"].as_u64().unwrap()).sum()
    };
    assert_eq!((count("door", "crossed"), count("bay", "entered")), (1, 1), "{counts}");
    assert_eq!(rows.iter().find(|r| r["name"] == "door").unwrap()["direction"], "in", "{counts}");
    let metrics = server.metrics().await;
    assert!(metrics.lines().any(|l| l == r#"visionq_track_events_total{kind="crossed",name="door"} 1"#), "{metrics}");
    let (status, bad) = get_json(&server.url("/v1/counts?interval_s=0")).await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_parameter")), "{bad}");
    server.stop().await;
}

/// Rules, lines and zones reload without a restart (issue 18: "reloadable like the
/// rest"), by `POST /v1/events/reload` and by SIGHUP: a new rule fires at once, a
/// new line puts track ids on detections; a file that does not load, or one whose
/// sinks changed, is refused with its reason and what is in use stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_lines_and_zones_reload_without_a_restart_and_sinks_need_one() {
    let dir = scratch("events-reload");
    let (receiver, url) = Receiver::start(&[], Answer::Ok).await;
    let one_rule = "events = [\"alert\"]\n\
        [[rule]]\nname = \"dogs\"\nkind = \"detections\"\nclasses = [\"dog\"]\nmin_score = 0.4\ncooldown_s = 0\n";
    let two_rules_and_a_line = format!(
        "{one_rule}[[rule]]\nname = \"birds\"\nkind = \"detections\"\nclasses = [\"bird\"]\nmin_score = 0.4\n\
         [[line]]\nname = \"gate\"\nfrom = [0.5, 1.0]\nto = [0.5, 0.0]\n"
    );
    let cfg = webhook_config(&dir, &url, one_rule);
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &[("VISIONQ_DATA_DIR", dir.display().to_string())]).await;
    let client = reqwest::Client::new();
    let rules = || async { get_json(&server.url("/v1/alerts")).await.1["rules"].as_u64().unwrap() };
    let reload = || async {
        let r = client.post(server.url("/v1/events/reload")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let tracked = || async {
        let url = server.url("/v1/stations/yard/frames?wait_ms=30000");
        let (status, result) = post_jpeg(&client, &url, photo_bytes("eagle.jpg")).await;
        assert_eq!(status, 200, "{result}");
        result["detections"].as_array().unwrap().iter().all(|d| d["track_id"].as_u64().is_some())
    };
    assert_eq!(rules().await, 1);
    assert!(!tracked().await, "no line yet: no track ids");

    // A second rule and a line, by the admin route.
    webhook_config(&dir, &url, &two_rules_and_a_line);
    let (status, body) = reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["rules"].as_u64(), body["lines"].as_u64()), (Some(2), Some(1)), "{body}");
    assert_eq!((body["rules_changed"].as_bool(), body["tracking_changed"].as_bool()), (Some(true), Some(true)), "{body}");
    assert_eq!(rules().await, 2);
    assert!(tracked().await, "the line tracks the station now");
    let birds = || receiver.got().iter().filter(|g| g.body.contains("\"rule\":\"birds\"")).count();
    until(10, "the new rule fires on the eagle", || birds() > 0).await;

    // Back to one rule and no line, by SIGHUP.
    webhook_config(&dir, &url, one_rule);
    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let log = server.log.clone();
    until(10, "the SIGHUP reload is logged", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("SIGHUP: events configuration reloaded")
    })
    .await;
    assert_eq!(rules().await, 1);
    assert!(!tracked().await, "the line is gone");

    // A file that does not load: refused with its reason, the rule in use stays.
    std::fs::write(&cfg, "[[rule]]\nname = \"x\"\nkind = \"nonsense\"\n").unwrap();
    let (status, body) = reload().await;
    assert_eq!((status, body["code"].as_str()), (422, Some("bad_config")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("nonsense"), "{body}");
    assert_eq!(rules().await, 1);
    // Another sink: that takes a restart; nothing of the file is taken.
    webhook_config(&dir, "http://127.0.0.1:9/hook", &two_rules_and_a_line);
    let (status, body) = reload().await;
    assert_eq!((status, body["code"].as_str()), (409, Some("restart_needed")), "{body}");
    assert_eq!(rules().await, 1);
    server.stop().await;
}
