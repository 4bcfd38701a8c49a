//! The dashboard in a real headless browser (Debian's chromium, driven through
//! chromedriver) against the real embedded pipeline (`visionq run`), the real model
//! and real photos: a posted frame appears in its station's tile with its boxes and
//! labels, the counter moves, the history opens, the pipeline view reads the
//! metrics, and the disconnect banner appears when the service stops and clears
//! when it is back on the same port. The run also writes docs/dashboard.png. And
//! distributed, on the real RabbitMQ: the frame posted to an ingest process is the
//! picture the results process shows, byte for byte.
//!
//! The browser is driven over the W3C WebDriver protocol with a few plain HTTP
//! calls (new session, navigate, run a script, screenshot): the test needs no more
//! than that, and a WebDriver client crate would add dozens of crates to compile on
//! a 2-core machine for no gain. Assertions run JavaScript in the page, so they
//! read what the operator sees: the tiles' DOM.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The configuration's defaults, which the page gets from /v1/dashboard/config.
const ACCEPT: f64 = 0.85;
const LOW: f64 = 0.65;

/// `visionq run` (embedded: in-process queues, SQLite in `data`) on a given port.
struct Pipeline {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Pipeline {
    async fn start(data: &Path, port: u16) -> Pipeline {
        Self::start_with(data, port, &[]).await
    }

    async fn start_with(data: &Path, port: u16, env: &[(&str, String)]) -> Pipeline {
        Self::start_configured(data, port, env, None).await
    }

    /// With a config file (`--config`), for what only the file sets (`[[rule]]`).
    async fn start_configured(data: &Path, port: u16, env: &[(&str, String)], config: Option<&Path>) -> Pipeline {
        let log = repo().join("target/test-logs").join(format!("{}.log", unique("dashboard")));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let mut config_args = Vec::new();
        if let Some(c) = config {
            config_args = vec!["--config".to_string(), c.display().to_string()];
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_visionq"))
            .args(&config_args)
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .env_remove("VISIONQ_AMQP_URL")
            .env_remove("VISIONQ_DATABASE_URL")
            .env("VISIONQ_CACHE_DIR", cache())
            .env("VISIONQ_MODEL", model())
            .env("VISIONQ_DATA_DIR", data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true)
            .spawn()
            .expect("visionq binary runs");
        let base = wait_listening(&mut child, &log).await;
        Pipeline { child, base, log }
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running");
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("exits after SIGTERM").unwrap();
        assert!(status.success(), "visionq exited with {status}; see {}", self.log.display());
    }
}

/// chromedriver on a port of its own; chromium runs under it.
struct Driver {
    child: std::process::Child,
    base: String,
}

impl Driver {
    async fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(Path::new(bin).exists(), "{bin} is missing: `apt-get install chromium chromium-driver` (scripts/test does it)");
        }
        let port = free_port();
        let log = repo().join("target/test-logs").join(format!("{}.log", unique("chromedriver")));
        let child = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up; see {}", log.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, base }
    }

    async fn browser(&self, profile: &Path) -> Browser {
        self.browser_with(profile, &[]).await
    }

    /// A browser with more command-line switches (a fake camera, say).
    async fn browser_with(&self, profile: &Path, extra: &[String]) -> Browser {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1280,820",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let http = reqwest::Client::new();
        let v = call(http.post(format!("{}/session", self.base)).json(&caps)).await;
        let id = v["sessionId"].as_str().expect("a session id").to_string();
        Browser { http, session: format!("{}/session/{id}", self.base) }
    }
}

impl Drop for Driver {
    /// Runs after the browser's session ended (declared after the driver, the
    /// browser is dropped first); reaps chromedriver.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver call: the `value` of the answer, or a panic with the driver's message.
async fn call(req: reqwest::RequestBuilder) -> Value {
    let r = req.send().await.expect("chromedriver answers");
    let status = r.status();
    let v: Value = r.json().await.expect("WebDriver answers JSON");
    assert!(status.is_success(), "WebDriver error {status}: {}", v["value"]);
    v["value"].clone()
}

struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn goto(&self, url: &str) {
        call(self.http.post(format!("{}/url", self.session)).json(&json!({"url": url}))).await;
    }

    /// Runs `body` (a function body: `arguments[i]`, `return …`) in the page.
    async fn js(&self, body: &str, args: Value) -> Value {
        let req = self.http.post(format!("{}/execute/sync", self.session)).json(&json!({"script": body, "args": args}));
        call(req).await
    }

    /// Runs `body` in the page as an async script: it ends by calling its last
    /// argument with what it returns.
    async fn js_async(&self, body: &str, args: Value) -> Value {
        let req = self.http.post(format!("{}/execute/async", self.session)).json(&json!({"script": body, "args": args}));
        call(req).await
    }

    /// Runs `body` until `ok` holds for what it returns; returns that.
    async fn wait(&self, what: &str, timeout: Duration, body: &str, args: Value, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(body, args.clone()).await;
            if ok(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?}; last seen {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn set_window(&self, width: u32, height: u32) {
        let rect = json!({"width": width, "height": height});
        call(self.http.post(format!("{}/window/rect", self.session)).json(&rect)).await;
    }

    async fn screenshot(&self, to: &Path) {
        let v = call(self.http.get(format!("{}/screenshot", self.session))).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
    }
}

impl Drop for Browser {
    /// Ends the session (and so chromium), also when an assertion failed.
    fn drop(&mut self) {
        let session = self.session.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async { reqwest::Client::new().delete(session).timeout(Duration::from_secs(10)).send().await })
        })
        .join();
    }
}

/// What a station's tile shows, read from the page.
const TILE: &str = r#"
const t = document.querySelector(`.tile[data-station="${arguments[0]}"]`);
if (!t) return null;
const img = t.querySelector('.stage img');
return {
  frameId: t.dataset.frameId || null,
  frames: Number(t.dataset.frames || 0),
  imageLoaded: !!img && img.complete && img.naturalWidth > 0,
  stale: t.classList.contains('stale'),
  boxes: [...t.querySelectorAll('.box')].map((b) => ({
    class: b.dataset.class,
    score: Number(b.dataset.score),
    label: b.querySelector('.label').textContent,
    conf: ['conf-ok', 'conf-mid', 'conf-low'].find((c) => b.classList.contains(c)),
    left: parseFloat(b.style.left),
    top: parseFloat(b.style.top),
    visible: b.getBoundingClientRect().width > 0,
  })),
};
"#;

const BANNER: &str = r#"
const b = document.getElementById('banner');
return { shown: !b.hidden && b.getBoundingClientRect().height > 0, text: b.textContent.replace(/\s+/g, ' ').trim(),
         conn: document.getElementById('conn').dataset.state };
"#;

fn expected_conf(score: f64) -> &'static str {
    if score >= ACCEPT {
        "conf-ok"
    } else if score >= LOW {
        "conf-mid"
    } else {
        "conf-low"
    }
}

/// A score as its label shows it: two decimals, more where two would read as the
/// other side of a threshold (the eagle's bird at 0.8488 is "0.849", not an orange "0.85").
fn expected_label(score: f64) -> String {
    (2..=6)
        .map(|digits| format!("{score:.digits$}"))
        .find(|text| expected_conf(text.parse().unwrap()) == expected_conf(score))
        .unwrap_or_else(|| score.to_string())
}

/// A page served from the binary: 200, a policy that keeps it on its origin, its
/// script loaded from there and nothing from elsewhere.
async fn assert_page_on_its_origin(http: &reqwest::Client, url: &str, script: &str) {
    let page = http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200, "{url}");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(script) && !html.contains("://"), "no external resource: {html}");
}

/// The tile (or the station page) shows exactly the result's detections: same
/// count, classes, scores, labels, colours and places.
fn assert_tile_matches(tile: &Value, result: &Value) {
    let dets = result["detections"].as_array().unwrap();
    let boxes = tile["boxes"].as_array().unwrap();
    assert_eq!(boxes.len(), dets.len(), "one box per detection: tile {tile}, result {result}");
    for d in dets {
        let score = d["score"].as_f64().unwrap();
        let class = d["class_name"].as_str().unwrap();
        let b = boxes
            .iter()
            .find(|b| b["class"] == class && (b["score"].as_f64().unwrap() - score).abs() < 1e-9)
            .unwrap_or_else(|| panic!("no box for {class} {score} in {tile}"));
        assert_eq!(b["label"], format!("{class} {}", expected_label(score)), "label shows class and score");
        assert_eq!(b["conf"], expected_conf(score), "colour of {class} {score}");
        let x1 = d["box"][0].as_f64().unwrap() * 100.0;
        let y1 = d["box"][1].as_f64().unwrap() * 100.0;
        assert!((b["left"].as_f64().unwrap() - x1).abs() < 0.01 && (b["top"].as_f64().unwrap() - y1).abs() < 0.01, "{b} at {x1},{y1}");
        assert_eq!(b["visible"], true);
    }
}

async fn post_and_wait(http: &reqwest::Client, p: &Pipeline, station: &str, photo: &str) -> Value {
    let url = p.url(&format!("/v1/stations/{station}/frames?wait_ms=20000"));
    let (status, result) = post_jpeg(http, &url, photo_bytes(photo)).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["status"], "ok", "{result}");
    result
}

/// One browser test at a time: the machine has two cores, and the tests measure
/// how soon the page shows a frame.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_each_station_live_and_the_connection_state() {
    let _serial = one_at_a_time().await;
    let t_start = Instant::now();
    let data = scratch("dashboard-data");
    let pipeline = Pipeline::start(&data, 0).await;
    let port = pipeline.port();
    let http = reqwest::Client::new();

    // The page and its assets come from the binary, with a policy that keeps it on its origin.
    assert_page_on_its_origin(&http, &pipeline.url("/"), "/dashboard/app.js").await;
    let config: Value = http.get(pipeline.url("/v1/dashboard/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["accept_threshold"].as_f64().unwrap(), ACCEPT);
    assert_eq!(config["low_threshold"].as_f64().unwrap(), LOW);

    let driver = Driver::start().await;
    let browser = driver.browser(&scratch("chromium-profile")).await;
    browser.goto(&pipeline.url("/")).await;
    browser
        .wait("the live feed connects", Duration::from_secs(15), BANNER, json!([]), |v| v["conn"] == "live" && v["shown"] == false)
        .await;
    let t_loaded = t_start.elapsed();

    // A real photo posted to ingest shows up in its station's tile with its boxes.
    let station = "line1-cam1";
    let posted = Instant::now();
    let dog = post_and_wait(&http, &pipeline, station, "dog.jpg").await;
    assert!(dog["detections"].as_array().unwrap().len() >= 2, "the dog photo has several objects: {dog}");
    let frame_id = dog["frame_id"].as_str().unwrap().to_string();
    let tile = browser
        .wait("the tile shows the posted frame", Duration::from_secs(3), TILE, json!([station]), |v| {
            v["frameId"] == frame_id.as_str() && v["imageLoaded"] == true
        })
        .await;
    let tile_latency = posted.elapsed();
    assert_tile_matches(&tile, &dog);
    assert_eq!(tile["frames"], 1);
    assert_eq!(tile["stale"], false);

    // The counter moves with the next frame.
    let horses = post_and_wait(&http, &pipeline, station, "horses.jpg").await;
    let horses_id = horses["frame_id"].as_str().unwrap().to_string();
    let tile = browser
        .wait("the counter moves and the new frame shows", Duration::from_secs(3), TILE, json!([station]), |v| {
            v["frames"] == 2 && v["frameId"] == horses_id.as_str() && v["imageLoaded"] == true
        })
        .await;
    assert_tile_matches(&tile, &horses);

    // A plant: more stations, each with a real photo; the live view is what docs/ shows.
    let photos = [
        ("line1-cam2", "person.jpg"),
        ("line1-cam3", "giraffe.jpg"),
        ("line2-cam1", "bus.jpg"),
        ("line2-cam2", "zidane.jpg"),
        ("line2-cam3", "eagle.jpg"),
        ("line3-cam1", "scream.jpg"),
        ("line3-cam2", "dog.jpg"),
    ];
    let mut results = Vec::new();
    for (s, photo) in photos {
        results.push((s, post_and_wait(&http, &pipeline, s, photo).await));
    }
    for (s, r) in &results {
        let id = r["frame_id"].as_str().unwrap().to_string();
        let tile = browser
            .wait(&format!("{s} shows its frame"), Duration::from_secs(5), TILE, json!([s]), |v| {
                v["frameId"] == id.as_str() && v["imageLoaded"] == true
            })
            .await;
        assert_tile_matches(&tile, r);
    }
    let tiles = browser.js("return document.querySelectorAll('.tile').length", json!([])).await;
    assert_eq!(tiles, 8);
    tokio::time::sleep(Duration::from_millis(400)).await; // let the last pictures paint
    browser.screenshot(&repo().join("docs/dashboard.png")).await;

    // A click on a tile opens the station's recent history.
    browser.js(&format!("document.querySelector('.tile[data-station=\"{station}\"]').click()"), json!([])).await;
    let history = browser
        .wait(
            "the station's history opens",
            Duration::from_secs(5),
            "return [...document.querySelectorAll('#history tr')].slice(1).map((r) => r.textContent)",
            json!([]),
            |v| v.as_array().is_some_and(|rows| rows.len() == 2),
        )
        .await;
    assert!(history[0].as_str().unwrap().contains("horse"), "newest first: {history}");
    assert!(history[1].as_str().unwrap().contains("dog"), "{history}");
    browser.js("document.getElementById('detail-close').click()", json!([])).await;

    // The pipeline view reads the metrics: throughput, latency, batches, queues.
    browser.js("location.hash = '#pipeline'", json!([])).await;
    let view = browser
        .wait(
            "the pipeline view shows the metrics",
            Duration::from_secs(8),
            r#"return { stages: [...document.querySelectorAll('#stages td:first-child')].map((td) => td.textContent),
                        batches: Number((document.querySelector('#batches .kv .v') || {}).textContent),
                        queues: document.getElementById('queues').textContent,
                        p99: document.querySelectorAll('#latency .kv .v')[2]?.textContent || '' }"#,
            json!([]),
            |v| v["stages"].as_array().is_some_and(|s| !s.is_empty()) && v["p99"].as_str().is_some_and(|p| p.ends_with("ms")),
        )
        .await;
    assert!(view["stages"].as_array().unwrap().iter().any(|s| s == "end to end"), "{view}");
    assert!(view["batches"].as_f64().unwrap() >= 1.0, "{view}");
    assert!(view["queues"].as_str().unwrap().contains("queue frames"), "{view}");
    // … and the model drift card lists the station, still learning its baseline.
    let drift = browser
        .wait(
            "the drift card lists the station",
            Duration::from_secs(8),
            r#"const tr = document.querySelector(`#drift tr[data-station="${arguments[0]}"]`);
               return tr ? { state: tr.dataset.state, text: tr.textContent } : null;"#,
            json!([station]),
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(drift["state"], "learning", "{drift}");
    assert!(drift["text"].as_str().unwrap().contains("learning (2/500)"), "two frames of 500: {drift}");
    // … and the models card the model serving, with its frames, latency and confidence.
    let models = browser
        .wait(
            "the models card lists the model",
            Duration::from_secs(8),
            r#"const tr = document.querySelector('#models tr[data-route="active"]');
               return tr ? { model: tr.dataset.model, cells: [...tr.querySelectorAll('td')].map((td) => td.textContent) } : null;"#,
            json!([]),
            |v| !v.is_null(),
        )
        .await;
    let cells: Vec<&str> = models["cells"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(models["model"].as_str().unwrap().starts_with("yolov3-tiny:"), "{models}");
    assert!(cells[2].parse::<f64>().unwrap() >= 8.0, "one per tile at least: {models}");
    assert!(cells[4].ends_with("ms") && cells[5].ends_with("ms"), "p50 and p95: {models}");
    assert!(cells[6].parse::<f64>().is_ok_and(|c| (0.25..=1.0).contains(&c)), "mean confidence: {models}");
    assert_eq!(cells[7], "–", "no shadow run: {models}");
    browser.js("location.hash = '#live'", json!([])).await;

    // 50 stations fit on one control-room screen, every tile with its picture.
    browser.set_window(1920, 1080).await;
    let names = ["dog.jpg", "horses.jpg", "person.jpg", "giraffe.jpg", "bus.jpg", "zidane.jpg", "eagle.jpg", "scream.jpg"];
    let posts = (0..42).map(|i| {
        let (http, url) =
            (http.clone(), pipeline.url(&format!("/v1/stations/line{}-cam{:02}/frames?wait_ms=30000", 4 + i / 10, i % 10)));
        async move { post_jpeg(&http, &url, photo_bytes(names[i % names.len()])).await }
    });
    for (status, r) in futures_util::future::join_all(posts).await {
        assert_eq!(status, 200, "{r}");
    }
    let plant = browser
        .wait(
            "50 tiles with their pictures, all on screen",
            Duration::from_secs(15),
            r#"const tiles = [...document.querySelectorAll('.tile')];
               return { tiles: tiles.length,
                        pictures: tiles.filter((t) => { const i = t.querySelector('.stage img'); return i && i.complete && i.naturalWidth > 0; }).length,
                        offscreen: tiles.filter((t) => t.getBoundingClientRect().bottom > window.innerHeight).length,
                        width: tiles[0].getBoundingClientRect().width };"#,
            json!([]),
            |v| v["tiles"] == 50 && v["pictures"] == 50,
        )
        .await;
    assert_eq!(plant["offscreen"], 0, "every tile fits on a 1920x1080 screen: {plant}");
    browser.set_window(1280, 820).await;

    // The service stops: the banner says the live connection is lost.
    pipeline.stop().await;
    let stopped = Instant::now();
    let banner =
        browser.wait("the disconnect banner appears", Duration::from_secs(10), BANNER, json!([]), |v| v["shown"] == true).await;
    let banner_latency = stopped.elapsed();
    assert!(banner["text"].as_str().unwrap().contains("connection lost"), "{banner}");
    assert_eq!(banner["conn"], "down");

    // It comes back on the same port: the banner clears, and frames flow again.
    let pipeline = Pipeline::start(&data, port).await;
    let restarted = Instant::now();
    browser
        .wait("the banner clears", Duration::from_secs(15), BANNER, json!([]), |v| v["shown"] == false && v["conn"] == "live")
        .await;
    let reconnect_latency = restarted.elapsed();
    let bus = post_and_wait(&http, &pipeline, station, "bus.jpg").await;
    let bus_id = bus["frame_id"].as_str().unwrap().to_string();
    let tile = browser
        .wait("frames flow again", Duration::from_secs(3), TILE, json!([station]), |v| {
            v["frameId"] == bus_id.as_str() && v["imageLoaded"] == true
        })
        .await;
    assert_tile_matches(&tile, &bus);

    drop(browser);
    pipeline.stop().await;
    eprintln!(
        "dashboard: page live after {t_loaded:?}, first tile {tile_latency:?} after its POST, banner {banner_latency:?} after the stop, \
         reconnected {reconnect_latency:?} after the restart; whole test {:?}",
        t_start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_the_dashboard_through_rabbitmq() {
    let _serial = one_at_a_time().await;
    let prefix = unique("dash");
    let db = TestDb::new("dash").await;
    let env = amqp_env(&prefix, &db.url);
    let mut infer_env = env.clone();
    infer_env.push(("VISIONQ_INFER_INPUT", "frames".to_string()));
    // One role per process: the results process never sees a frame message.
    let results = Server::start(&["results"], &env).await;
    let infer = Server::start(&["infer"], &infer_env).await;
    let ingest = Server::start(&["ingest"], &env).await;
    let http = reqwest::Client::new();

    let driver = Driver::start().await;
    let browser = driver.browser(&scratch("chromium-profile")).await;
    browser.goto(&results.url("/")).await;
    browser.wait("the live feed connects", Duration::from_secs(15), BANNER, json!([]), |v| v["conn"] == "live").await;

    let station = "dock-cam7";
    let jpeg = photo_bytes("person.jpg");
    let url = ingest.url(&format!("/v1/stations/{station}/frames?wait_ms=30000"));
    let (status, result) = post_jpeg(&http, &url, jpeg.clone()).await;
    assert_eq!(status, 200, "{result}");
    let id = result["frame_id"].as_str().unwrap().to_string();
    let tile = browser
        .wait("the results process shows the frame", Duration::from_secs(5), TILE, json!([station]), |v| {
            v["frameId"] == id.as_str() && v["imageLoaded"] == true
        })
        .await;
    assert_tile_matches(&tile, &result);
    let shown = http.get(results.url(&format!("/v1/stations/{station}/latest.jpg?frame_id={id}"))).send().await.unwrap();
    assert_eq!(shown.status(), 200);
    assert_eq!(shown.headers()["x-visionq-frame-id"], id.as_str());
    assert_eq!(shown.bytes().await.unwrap().as_ref(), &jpeg[..], "the picture is the posted frame");
    let previews = results.metrics().await;
    assert!(previews.contains("visionq_dashboard_previews_total{outcome=\"stored\"} 1"), "{previews}");

    drop(browser);
    let ingest_log = ingest.log.clone();
    ingest.stop().await;
    infer.stop().await;
    results.stop().await;
    delete_topology(&prefix).await;
    let log = std::fs::read_to_string(ingest_log).unwrap();
    assert!(!log.contains("unreadable result event"), "previews are hidden from ingest's result waiters");
}

/// With tokens configured, the page asks for an operator token before it shows
/// anything, refuses a wrong one, and with the right one shows frames (their pictures
/// fetched with the token) as before.
#[tokio::test]
async fn operators_sign_in_with_a_token() {
    let _serial = one_at_a_time().await;
    let data = scratch("dashboard-auth");
    let tokens = data.join("tokens.toml");
    let station = new_token(&tokens, &["--scope", "station", "--station", "dock-1"]);
    let operator = new_token(&tokens, &["--scope", "operator"]);
    let pipeline = Pipeline::start_with(&data, 0, &[("VISIONQ_TOKENS_FILE", tokens.display().to_string())]).await;
    let http = reqwest::Client::new();
    let driver = Driver::start().await;
    let browser = driver.browser(&scratch("chromium-profile")).await;
    const LOGIN: &str = r#"
        const f = document.getElementById('login');
        return { shown: !f.hidden && f.getBoundingClientRect().height > 0,
                 text: document.getElementById('login-text').textContent,
                 conn: document.getElementById('conn').dataset.state,
                 tiles: document.querySelectorAll('.tile').length };
    "#;
    const SIGN_IN: &str = "document.getElementById('login-token').value = arguments[0]; \
                           document.getElementById('login').requestSubmit(); return true;";
    browser.goto(&pipeline.url("/")).await;
    let asked = browser.wait("the page asks for a token", Duration::from_secs(15), LOGIN, json!([]), |v| v["shown"] == true).await;
    assert_ne!(asked["conn"], "live", "no live feed without a token: {asked}");

    browser.js(SIGN_IN, json!(["vq_not-the-token"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = browser
        .wait("a wrong token is refused", Duration::from_secs(15), LOGIN, json!([]), |v| {
            v["shown"] == true && v["text"].as_str().unwrap().contains("not valid")
        })
        .await;
    assert_ne!(refused["conn"], "live", "{refused}");

    browser.js(SIGN_IN, json!([operator])).await;
    browser.wait("the right token opens the live feed", Duration::from_secs(15), BANNER, json!([]), |v| v["conn"] == "live").await;
    let url = pipeline.url("/v1/stations/dock-1/frames?wait_ms=20000");
    let r =
        http.post(url).bearer_auth(&station).header("content-type", "image/jpeg").body(photo_bytes("dog.jpg")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let result: Value = r.json().await.unwrap();
    let tile = browser
        .wait("the frame appears with its picture", Duration::from_secs(15), TILE, json!(["dock-1"]), |t| {
            t["imageLoaded"] == true && t["frameId"] == result["frame_id"]
        })
        .await;
    assert_tile_matches(&tile, &result);
    assert_eq!(browser.js(LOGIN, json!([])).await["shown"], false);
    drop(browser);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_labels_agree_with_their_colour_and_refusal_reasons_show_whole() {
    let _serial = one_at_a_time().await;
    let pipeline = Pipeline::start(&scratch("dashboard-labels"), 0).await;
    let http = reqwest::Client::new();
    // A refusal with a long reason, for the pipeline view's error list.
    let url = pipeline.url("/v1/stations/cam-a/frames");
    let r = http.post(url).header("content-type", "text/plain").body("not a picture").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let code = r.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_string();
    assert!(code.len() > 12, "a reason long enough to be cut: {code}");

    let driver = Driver::start().await;
    let browser = driver.browser(&scratch("chromium-profile-labels")).await;
    browser.goto(&pipeline.url("/")).await;
    browser.wait("the live feed connects", Duration::from_secs(15), BANNER, json!([]), |v| v["conn"] == "live").await;

    // Scores next to a threshold: the label never reads as the other side of it.
    let scores = [0.8488, 0.8449, 0.85, 0.8512, 0.6499, 0.65, 0.3];
    // The page's own module and configuration.
    const LABELS: &str = r#"
        const done = arguments[arguments.length - 1];
        Promise.all([import('/dashboard/boxes.js'), fetch('/v1/dashboard/config').then((r) => r.json())])
          .then(([m, t]) => done(arguments[0].map((s) => ({ label: m.scoreText(s, t), conf: m.confClass(s, t) }))))
          .catch((e) => done(String(e)));
    "#;
    let shown = browser.js_async(LABELS, json!([scores])).await;
    for (score, v) in scores.iter().zip(shown.as_array().unwrap()) {
        let label: f64 = v["label"].as_str().unwrap().parse().unwrap();
        assert_eq!(v["conf"], expected_conf(*score), "colour of {score}");
        assert_eq!(expected_conf(label), expected_conf(*score), "{score} is labelled {label}, which reads as another colour");
    }
    assert_eq!(shown[0]["label"], "0.849", "0.8488 is not labelled 0.85 below the accept threshold");
    assert_eq!(shown[6]["label"], "0.30", "two decimals where they do not mislead");

    // The pipeline view names the refusal whole.
    browser.js("location.hash = '#pipeline'", json!([])).await;
    let reasons = browser
        .wait(
            "the refusal reason shows",
            Duration::from_secs(10),
            "return [...document.querySelectorAll('#errors .bar .k')].map((k) => ({ text: k.textContent, clipped: k.scrollWidth > k.clientWidth + 1 }))",
            json!([]),
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let reason =
        reasons.as_array().unwrap().iter().find(|r| r["text"] == format!("refused: {code}")).unwrap_or_else(|| panic!("{reasons}"));
    assert_eq!(reason["clipped"], false, "the reason is not cut: {reason}");
    drop(browser);
    pipeline.stop().await;
}

/// The review queue (issue 15) in the real browser: under rules that send most
/// frames to review, the queued frames show with their kept images and boxes; an
/// operator's attempt to review is refused on the page and stores nothing; a
/// reviewer confirms one frame and corrects another; the reviews reach the
/// database (with the reviewer's name), the station's stream gets each frame's
/// final word, and the queue empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_work_the_review_queue_in_the_browser() {
    use futures_util::StreamExt;
    let _serial = one_at_a_time().await;
    let data = scratch("dashboard-review");
    let tokens = data.join("tokens.toml");
    let station = new_token(&tokens, &["--scope", "station", "--station", "dock-2"]);
    let operator = new_token(&tokens, &["--scope", "operator"]);
    let reviewer = new_token(&tokens, &["--scope", "reviewer", "--name", "ana"]);
    let rules = data.join("rules.toml");
    std::fs::write(&rules, "thresholds = { review = 0.3, accept = 0.97 }\n[rules.default]\nlabels.explicit = { dog = \"ANIMAL-DOG\", car = \"VEHICLE-CAR\", truck = \"VEHICLE-TRUCK\", bicycle = \"VEHICLE-BIKE\" }\n").unwrap();
    let env = [("VISIONQ_TOKENS_FILE", tokens.display().to_string()), ("VISIONQ_RULES_FILE", rules.display().to_string())];
    let pipeline = Pipeline::start_with(&data, 0, &env).await;
    let http = reqwest::Client::new();

    // The station listens for its results on the stream.
    let ws = pipeline.url(&format!("/v1/stream?station=dock-2&token={station}")).replace("http", "ws");
    let (mut stream, _) = tokio_tungstenite::connect_async(ws).await.expect("the station's stream connects");
    let mut queued = Vec::new();
    for photo in ["dog.jpg", "horses.jpg"] {
        let url = pipeline.url("/v1/stations/dock-2/frames?wait_ms=20000");
        let r =
            http.post(url).bearer_auth(&station).header("content-type", "image/jpeg").body(photo_bytes(photo)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let result: Value = r.json().await.unwrap();
        assert_eq!(result["decision"]["outcome"], "needs_review", "{photo}: {}", result["decision"]);
        queued.push(result);
    }
    let (dog, horses) = (queued[0]["frame_id"].as_str().unwrap().to_string(), queued[1]["frame_id"].as_str().unwrap().to_string());
    // The dog photo's best detection is one of these classes; its code is the label map's.
    let code = queued[0]["decision"]["code"].as_str().unwrap().to_string();
    assert!(["ANIMAL-DOG", "VEHICLE-CAR", "VEHICLE-TRUCK", "VEHICLE-BIKE"].contains(&code.as_str()), "{}", queued[0]["decision"]);

    const QUEUE: &str = r#"
        return [...document.querySelectorAll('#review-list .review-item')].map((it) => {
          const img = it.querySelector('.stage img');
          return { id: it.dataset.frame, done: it.dataset.done === '1',
                   imageLoaded: !!img && img.complete && img.naturalWidth > 0,
                   boxes: it.querySelectorAll('.box').length,
                   decision: it.querySelector('.decision').textContent,
                   outcome: it.querySelector('.outcome').textContent,
                   alert: it.querySelector('.outcome').getAttribute('role') === 'alert' };
        });
    "#;
    const ACT: &str = r#"
        const it = document.querySelector(`.review-item[data-frame="${arguments[0]}"]`);
        if (arguments[2]) it.querySelector('.class-input').value = arguments[2];
        it.querySelector(`button.${arguments[1]}`).click();
        return true;
    "#;
    let driver = Driver::start().await;
    let browser = driver.browser(&scratch("chromium-profile-review")).await;
    let sign_in = |token: String| {
        let browser = &browser;
        let url = pipeline.url("/#review");
        async move {
            browser.goto(&url).await;
            browser.js("localStorage.setItem('visionq.token', arguments[0]); location.reload(); return true;", json!([token])).await;
        }
    };
    let both_shown = |v: &Value| {
        v.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|it| it["imageLoaded"] == true && it["boxes"].as_u64().unwrap_or(0) > 0))
    };

    // An operator sees the queue but may not review.
    sign_in(operator.clone()).await;
    let shown = browser.wait("the queue shows both frames", Duration::from_secs(20), QUEUE, json!([]), both_shown).await;
    let first = &shown[0];
    assert_eq!(first["id"], dog.as_str(), "oldest first: {shown}");
    assert!(first["decision"].as_str().unwrap().contains("needs review") && first["decision"].as_str().unwrap().contains(&code));
    for (it, result) in shown.as_array().unwrap().iter().zip(&queued) {
        assert_eq!(it["boxes"].as_u64().unwrap() as usize, result["detections"].as_array().unwrap().len(), "one box per detection");
    }
    browser.js(ACT, json!([dog, "confirm", null])).await;
    let refused = browser
        .wait("the operator's review is refused on the page", Duration::from_secs(10), QUEUE, json!([]), |v| {
            v[0]["alert"] == true && v[0]["outcome"].as_str().unwrap_or("").contains("reviewer")
        })
        .await;
    assert_eq!(refused[0]["done"], false);
    let stored: Value =
        http.get(pipeline.url(&format!("/v1/frames/{dog}"))).bearer_auth(&operator).send().await.unwrap().json().await.unwrap();
    assert!(stored.get("review").is_none(), "nothing stored: {stored}");

    // The reviewer confirms the dog and corrects the horses' decided class.
    sign_in(reviewer.clone()).await;
    browser.wait("the queue shows both frames", Duration::from_secs(20), QUEUE, json!([]), both_shown).await;
    browser.js(ACT, json!([dog, "confirm", null])).await;
    browser.js(ACT, json!([horses, "correct", "zebra"])).await;
    let done = browser
        .wait("both reviews are stored", Duration::from_secs(10), QUEUE, json!([]), |v| {
            v.as_array().is_some_and(|a| a.len() == 2 && a.iter().all(|it| it["done"] == true))
        })
        .await;
    assert!(done[0]["outcome"].as_str().unwrap().contains(&format!("confirmed as {code} by ana")), "{done}");
    assert!(done[1]["outcome"].as_str().unwrap().starts_with("corrected"), "{done}");

    // In the database: the decision as the machine made it, the review beside it.
    let get = |id: &str| {
        let req = http.get(pipeline.url(&format!("/v1/frames/{id}"))).bearer_auth(&operator);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let d = get(&dog).await;
    assert_eq!(d["decision"], queued[0]["decision"]);
    assert_eq!((d["review"]["verdict"].as_str(), d["review"]["reviewer"].as_str()), (Some("confirmed"), Some("ana")), "{d}");
    assert_eq!(d["review"]["code"], code.as_str());
    let h = get(&horses).await;
    assert_eq!((h["review"]["verdict"].as_str(), h["review"]["class_name"].as_str()), (Some("corrected"), Some("zebra")), "{h}");
    let decided = queued[1]["decision"]["class_name"].as_str().unwrap();
    let i = h["review"]["detection"].as_u64().unwrap() as usize;
    assert_eq!(queued[1]["detections"][i]["class_name"], decided, "the decided detection was corrected");
    let page: Value = http.get(pipeline.url("/v1/review")).bearer_auth(&operator).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"], json!([]), "the queue is empty");

    // The station got both results, then each frame's final word.
    let mut finals = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while finals.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.next()).await.expect("the reviews are pushed").unwrap().unwrap();
        let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if v.get("review").is_some() {
            finals.insert(v["frame_id"].as_str().unwrap().to_string(), v["review"]["verdict"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(finals.get(&dog).map(String::as_str), Some("confirmed"));
    assert_eq!(finals.get(&horses).map(String::as_str), Some("corrected"));
    drop(browser);
    pipeline.stop().await;
}

/// What the station page shows, read from the page.
const STATION_PAGE: &str = r#"
const s = document.getElementById('stats').dataset;
const img = document.getElementById('shown');
return {
  conn: document.getElementById('conn').dataset.state,
  sent: Number(s.sent), results: Number(s.results), errors: Number(s.errors), dropped: Number(s.dropped),
  frameId: img.dataset.frameId || null,
  imageLoaded: img.complete && img.naturalWidth > 0,
  naturalWidth: img.naturalWidth,
  outcome: document.getElementById('decision').dataset.outcome,
  outcomeText: document.getElementById('decision-outcome').textContent,
  outcomeDetail: document.getElementById('decision-detail').textContent,
  boxes: [...document.querySelectorAll('#boxes .box')].map((b) => ({
    class: b.dataset.class, score: Number(b.dataset.score), label: b.querySelector('.label').textContent,
    conf: ['conf-ok', 'conf-mid', 'conf-low'].find((c) => b.classList.contains(c)),
    left: parseFloat(b.style.left), top: parseFloat(b.style.top), visible: b.getBoundingClientRect().width > 0,
  })),
  lastError: document.getElementById('last-error').textContent,
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_page_streams_the_camera_and_shows_boxes_and_the_decision() {
    let _serial = one_at_a_time().await;
    let data = scratch("station-page-data");
    let tokens = data.join("tokens.toml");
    let station = new_token(&tokens, &["--scope", "station", "--station", "line1-cam1"]);
    let operator = new_token(&tokens, &["--scope", "operator"]);
    let rules = data.join("rules.toml");
    std::fs::write(
        &rules,
        "thresholds = { review = 0.3, accept = 0.6 }\n[rules.default]\nlabels.explicit = { person = \"P-1\", dog = \"ANIMAL-DOG\" }\n",
    )
    .unwrap();
    let env = [("VISIONQ_TOKENS_FILE", tokens.display().to_string()), ("VISIONQ_RULES_FILE", rules.display().to_string())];
    let pipeline = Pipeline::start_with(&data, 0, &env).await;
    let http = reqwest::Client::new();

    // The page comes from the binary, kept on its origin; a bad station id is refused.
    assert_page_on_its_origin(&http, &pipeline.url("/station/line1-cam1"), "/dashboard/station.js").await;
    let bad = http.get(pipeline.url("/station/not%20a%20station")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "bad_station", "{body}");

    // The camera: chromium's fake capture device playing the 1280x720 photos as an
    // MJPEG clip (concatenated JPEG frames).
    let dir = cache().join("photos-720p");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let mut clip = Vec::new();
    for p in &names {
        clip.extend(std::fs::read(p).unwrap());
    }
    let clip_path = scratch("station-page-clip").join("photos.mjpeg");
    std::fs::write(&clip_path, clip).unwrap();
    let camera = [
        "--use-fake-device-for-media-stream".to_string(),
        "--use-fake-ui-for-media-stream".to_string(),
        format!("--use-file-for-fake-video-capture={}", clip_path.display()),
    ];
    let driver = Driver::start().await;
    let browser = driver.browser_with(&scratch("chromium-station-profile"), &camera).await;
    // A kiosk is set up with the station's token in the address once; the page keeps
    // it and takes it out of the address bar.
    browser.goto(&pipeline.url(&format!("/station/line1-cam1?fps=5&quality=0.85&autostart=1&token={station}"))).await;

    // Frames go out over the socket and come back with boxes drawn on the frame they
    // belong to.
    let shown = browser
        .wait("the page shows a frame with boxes", Duration::from_secs(60), STATION_PAGE, json!([]), |v| {
            v["conn"] == "live"
                && v["results"].as_u64() >= Some(3)
                && v["imageLoaded"] == true
                && !v["boxes"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(shown["errors"], 0, "{shown}");
    let address = browser.js("return location.search;", json!([])).await;
    assert!(!address.as_str().unwrap().contains("token"), "the token left the address bar: {address}");
    assert_eq!(shown["naturalWidth"], 1280, "the camera's frames are sent whole: {shown}");
    // What the page drew is the stored result of the frame it shows: read it back.
    let shown = browser.js(STATION_PAGE, json!([])).await;
    let frame_id = shown["frameId"].as_str().expect("the shown frame's id").to_string();
    let result: Value =
        http.get(pipeline.url(&format!("/v1/frames/{frame_id}"))).bearer_auth(&operator).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["station"], "line1-cam1", "{result}");
    assert_eq!(result["status"], "ok", "{result}");
    assert_tile_matches(&shown, &result);
    let dets = result["detections"].as_array().unwrap();
    // The decision line says the result's decision.
    let outcome = result["decision"]["outcome"].as_str().expect("the station's rules decide every result");
    assert_eq!(shown["outcome"], outcome, "page {shown}, result {result}");
    if let Some(code) = result["decision"]["code"].as_str() {
        assert!(shown["outcomeDetail"].as_str().unwrap().contains(code), "the decided code is shown: {shown}");
    }
    // The photos are real scenes: what the camera sent was recognised (a class of
    // the photos, not noise), and every frame the page sent was stored.
    let known = ["person", "dog", "bus", "bird", "giraffe", "horse", "kite", "car", "truck", "tie", "bicycle", "zebra"];
    assert!(dets.iter().any(|d| known.contains(&d["class_name"].as_str().unwrap())), "{result}");
    // Stop the camera: every frame the page sent was accepted (none refused) and is
    // stored, whatever was still in flight.
    browser.js("document.getElementById('start').click();", json!([])).await;
    let stopped = browser.wait("the page stops", Duration::from_secs(10), STATION_PAGE, json!([]), |v| v["conn"] == "idle").await;
    let sent = stopped["sent"].as_u64().unwrap();
    drop(browser);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = http.get(pipeline.url("/v1/stations")).bearer_auth(&operator).send().await.unwrap().json().await.unwrap();
        let stored =
            list["stations"].as_array().unwrap().iter().find(|s| s["station"] == "line1-cam1").map(|s| s["frames"].as_u64().unwrap());
        if stored == Some(sent) {
            break;
        }
        assert!(Instant::now() < deadline, "{sent} frames sent, stored: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.stop().await;
}

/// Alerts of the alert rules (issue 18) on the dashboard: a rule's alert shows under
/// the header, with its severity, rule, station and reason, while it fires, and goes
/// when it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_alerts_firing_on_the_dashboard() {
    let _serial = one_at_a_time().await;
    let data = scratch("dashboard-alerts");
    let cfg = data.join("visionq.toml");
    let rule = "[[rule]]\nname = \"dogs\"\nkind = \"detections\"\nclasses = [\"dog\"]\nmin_score = 0.4\nseverity = \"critical\"\ncooldown_s = 0\n";
    std::fs::write(&cfg, rule).unwrap();
    let pipeline = Pipeline::start_configured(&data, 0, &[], Some(&cfg)).await;
    let http = reqwest::Client::new();
    let driver = Driver::start().await;
    let browser = driver.browser(&scratch("chromium-profile-alerts")).await;
    browser.goto(&pipeline.url("/")).await;
    browser.wait("the live feed connects", Duration::from_secs(15), BANNER, json!([]), |v| v["conn"] == "live").await;
    const ALERTS: &str = r#"
        const box = document.getElementById('alerts');
        return { shown: !box.hidden && box.getBoundingClientRect().height > 0,
                 items: [...document.querySelectorAll('#alerts-list .alert')].map((a) => ({
                   rule: a.dataset.rule, station: a.dataset.station, text: a.textContent,
                   critical: a.classList.contains('sev-critical') })) };
    "#;
    let none = browser.js(ALERTS, json!([])).await;
    assert_eq!(none["shown"], false, "nothing fires yet: {none}");

    post_and_wait(&http, &pipeline, "yard-3", "dog.jpg").await;
    let shown = browser.wait("the alert shows", Duration::from_secs(15), ALERTS, json!([]), |v| v["shown"] == true).await;
    let item = &shown["items"][0];
    assert_eq!(
        (item["rule"].as_str(), item["station"].as_str(), item["critical"].as_bool()),
        (Some("dogs"), Some("yard-3"), Some(true)),
        "{shown}"
    );
    let text = item["text"].as_str().unwrap();
    assert!(text.contains("critical") && text.contains("dog scoring at least 0.4"), "{text}");

    post_and_wait(&http, &pipeline, "yard-3", "eagle.jpg").await;
    browser.wait("the alert goes when it resolves", Duration::from_secs(15), ALERTS, json!([]), |v| v["shown"] == false).await;
    drop(browser);
    pipeline.stop().await;
}

/// Line counts (issue 18) on the dashboard: with a `[[line]]` drawn, an eagle slid
/// across it shows as `in 1 · out 0` for the line and station under the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_line_counts_on_the_dashboard() {
    let _serial = one_at_a_time().await;
    let data = scratch("dashboard-counts");
    let cfg = data.join("visionq.toml");
    let line = "[[line]]\nname = \"gate\"\nfrom = [0.5, 1.0]\nto = [0.5, 0.0]\nclasses = [\"bird\"]\nanchor = \"center\"\n";
    std::fs::write(&cfg, line).unwrap();
    let pipeline = Pipeline::start_configured(&data, 0, &[], Some(&cfg)).await;
    let http = reqwest::Client::new();
    let driver = Driver::start().await;
    let browser = driver.browser(&scratch("chromium-profile-counts")).await;
    browser.goto(&pipeline.url("/")).await;
    browser.wait("the live feed connects", Duration::from_secs(15), BANNER, json!([]), |v| v["conn"] == "live").await;
    const COUNTS: &str = r#"
        const box = document.getElementById('counts');
        return { shown: !box.hidden && box.getBoundingClientRect().height > 0,
                 items: [...document.querySelectorAll('#counts-list .count')].map((c) => ({
                   name: c.dataset.name, station: c.dataset.station, text: c.textContent })) };
    "#;
    let none = browser.js(COUNTS, json!([])).await;
    assert_eq!(none["shown"], false, "nothing counted yet: {none}");
    let url = pipeline.url("/v1/stations/gate-cam/frames?wait_ms=20000");
    for jpeg in slid_frames("eagle.jpg", 21, 24) {
        let (status, result) = post_jpeg(&http, &url, jpeg).await;
        assert_eq!((status, result["status"].as_str()), (200, Some("ok")), "{result}");
    }
    let shown = browser.wait("the count shows", Duration::from_secs(20), COUNTS, json!([]), |v| v["shown"] == true).await;
    let item = &shown["items"][0];
    assert_eq!((item["name"].as_str(), item["station"].as_str()), (Some("gate"), Some("gate-cam")), "{shown}");
    assert!(item["text"].as_str().unwrap().contains("in 1 · out 0"), "{shown}");
    drop(browser);
    pipeline.stop().await;
}
