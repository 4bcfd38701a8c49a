//! Test harness: the real binary against the real RabbitMQ and PostgreSQL of this
//! machine, the real model and real photos from the asset cache. Every test gets
//! its own queue prefix and its own database.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A TCP port free on loopback now (for a server started on a port the test names).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

pub fn cache() -> PathBuf {
    std::env::var_os("VISIONQ_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join(".cache/visionq"))
}

pub fn model() -> PathBuf {
    let p = cache().join("models/yolov3-tiny.onnx");
    assert!(p.exists(), "{} missing: run `python3 tools/assets.py` first", p.display());
    p
}

pub fn photo(name: &str) -> PathBuf {
    let p = cache().join("photos").join(name);
    assert!(p.exists(), "{} missing: run `python3 tools/assets.py` first", p.display());
    p
}

pub fn photo_bytes(name: &str) -> Vec<u8> {
    std::fs::read(photo(name)).expect("photo readable")
}

/// `visionq ARGS` with the model repository at `repo` (the `visionq model …` commands).
pub fn model_cli(args: &[&str], repo: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(args)
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_MODEL_REPOSITORY", repo)
        .output()
        .expect("visionq runs")
}

/// A server's API called with a bearer token: the status and the JSON body (null
/// when the body is not JSON).
pub struct ApiClient {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl ApiClient {
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let mut r = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// The stdout of a command that must have succeeded.
pub fn succeeded(out: std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[path = "../../../results/tests/common/pg.rs"]
mod pg;
pub use pg::*;

/// Waits for a `visionq` child (stdout piped) to print its address; keeps draining stdout.
pub async fn wait_listening(child: &mut Child, log: &Path) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("visionq listening on ") {
                return addr.trim().to_string();
            }
        }
        panic!("visionq exited before listening; see {}", log.display());
    })
    .await
    .unwrap_or_else(|_| panic!("visionq did not start in time; see {}", log.display()));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    base
}

/// A running `visionq` process.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts `visionq <args> --listen 127.0.0.1:0` with `env` and waits until it listens.
    pub async fn start(args: &[&str], env: &[(&str, String)]) -> Server {
        let logs = repo().join("target/test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("{}.log", unique(args[0])));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_visionq"));
        cmd.args(args);
        // A test may name the address (a restart on the same port); else any free port.
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.env("VISIONQ_CACHE_DIR", cache())
            .env("VISIONQ_MODEL", model())
            // Each server its own data dir (SQLite, frames journal), unless the test names one.
            .env("VISIONQ_DATA_DIR", scratch(&format!("{}-data", args[0])))
            .env("RUST_LOG", "info,visionq=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("visionq binary runs");
        let base = wait_listening(&mut child, &log).await;
        Server { child, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("exits after SIGTERM").unwrap();
        assert!(status.success(), "visionq exited with {status}; see {}", self.log.display());
    }
}

/// Env for a pipeline on this machine's RabbitMQ (unique prefix) and a database.
pub fn amqp_env(prefix: &str, db_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("VISIONQ_AMQP_URL", AMQP_URL.to_string()),
        ("VISIONQ_QUEUE_PREFIX", prefix.to_string()),
        ("VISIONQ_DATABASE_URL", db_url.to_string()),
    ]
}

/// Deletes a test's queues and exchanges.
pub async fn delete_topology(prefix: &str) {
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in ["frames", "tensors", "results", "dead"] {
        let _ = ch.queue_delete(format!("{prefix}.{q}").into(), Default::default()).await;
    }
    for x in ["", ".dlx", ".events"] {
        let _ = ch.exchange_delete(format!("{prefix}{x}").into(), Default::default()).await;
    }
}

/// Messages in a queue of this machine's RabbitMQ (passive declare).
pub async fn queue_len(name: &str) -> u32 {
    queue_len_at(AMQP_URL, name).await
}

/// Ready messages in a queue of the broker at `url` (passive declare).
pub async fn queue_len_at(url: &str, name: &str) -> u32 {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(name.into(), lapin::options::QueueDeclareOptions { passive: true, ..Default::default() }, Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

/// A scratch directory under target/ (embedded mode keeps its SQLite there).
pub fn scratch(tag: &str) -> PathBuf {
    let d = repo().join("target/test-tmp").join(unique(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// dog.jpg up to the end of its frame header, then garbage: the header is valid, the data is not.
pub fn corrupt_jpeg() -> Vec<u8> {
    let dog = photo_bytes("dog.jpg");
    let sof = dog.windows(2).position(|w| w == [0xFF, 0xC0]).expect("dog.jpg is baseline");
    let sof_len = u16::from_be_bytes([dog[sof + 2], dog[sof + 3]]) as usize;
    let mut broken = dog[..sof + 2 + sof_len].to_vec();
    broken.extend(std::iter::repeat_n(0x5Au8, 2000));
    broken
}

/// dog.jpg decoded to RGB: (pixels, width, height).
pub fn dog_rgb() -> (Vec<u8>, u32, u32) {
    let mut pre = visionq_preprocess::Preprocessor::new(416, 416, 40_000_000);
    pre.decode(&photo_bytes("dog.jpg")).expect("dog.jpg decodes")
}

/// `rgb` (`w`×`h`) as a PNG: lossless, the same pixels.
pub fn to_png(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    visionq_preprocess::encode::png_of(rgb, w, h)
}

/// `rgb` (`w`×`h`) as a lossless WebP: the same pixels.
pub fn to_webp(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    visionq_preprocess::encode::webp_of(rgb, w, h)
}

/// POSTs a JPEG; returns status and JSON body.
pub async fn post_jpeg(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = client.post(url).header("content-type", "image/jpeg").body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

pub fn classes(result: &serde_json::Value) -> Vec<String> {
    let mut c: Vec<String> =
        result["detections"].as_array().unwrap().iter().map(|d| d["class_name"].as_str().unwrap().to_string()).collect();
    c.sort();
    c.dedup();
    c
}

/// Runs `visionq token new ARGS`; returns the token and appends its entry to `file`.
pub fn new_token(file: &Path, args: &[&str]) -> String {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_visionq")).args(["token", "new"]).args(args).output().expect("visionq runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let entry: String =
        String::from_utf8(out.stderr).unwrap().lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert!(entry.contains(&sha256_hex(&token)), "the entry holds the token's hash:\n{entry}");
    assert!(!entry.contains(&token), "the entry never holds the token itself");
    let mut all = std::fs::read_to_string(file).unwrap_or_default();
    all.push_str(&entry);
    std::fs::write(file, all).unwrap();
    token
}

/// SHA-256 hex by the system's sha256sum, independent of the code under test.
fn sha256_hex(token: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A detection's box in image pixels.
pub fn box_of(d: &serde_json::Value) -> [f64; 4] {
    let b: Vec<f64> = d["box_px"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    [b[0], b[1], b[2], b[3]]
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: [f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

/// The detections of two results of the same photo are the same: classes, scores, boxes.
pub fn same_detections(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    let (da, db) = (a["detections"].as_array().unwrap(), b["detections"].as_array().unwrap());
    assert_eq!(da.len(), db.len(), "{what}: as many detections\n{a}\n{b}");
    assert!(!da.is_empty(), "{what}: the photo has detections");
    for d in da {
        let twin = db
            .iter()
            .filter(|e| e["class_name"] == d["class_name"])
            .max_by(|x, y| iou(box_of(x), box_of(d)).total_cmp(&iou(box_of(y), box_of(d))))
            .unwrap_or_else(|| panic!("{what}: no {} in the other result", d["class_name"]));
        assert!(iou(box_of(twin), box_of(d)) > 0.98, "{what}: {d} against {twin}");
        assert!((twin["score"].as_f64().unwrap() - d["score"].as_f64().unwrap()).abs() < 0.01, "{what}: {d} against {twin}");
    }
}

/// Runs `cmd`; panics with its stderr unless it succeeds.
fn run_ok(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `visionq run` (embedded) serving HTTPS with a certificate of a new test CA: the
/// server, and the CA's file to trust it by.
pub async fn https_server(tag: &str) -> (Server, PathBuf) {
    let dir = scratch(tag);
    let (ca, cert, key) = tls_certificates(&dir);
    let env = [
        ("VISIONQ_TLS_CERT_FILE", cert.display().to_string()),
        ("VISIONQ_TLS_KEY_FILE", key.display().to_string()),
        ("VISIONQ_DATA_DIR", dir.display().to_string()),
    ];
    let server = Server::start(&["run"], &env).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    (server, ca)
}

/// A CA, and a server certificate it signed for localhost and 127.0.0.1.
pub fn tls_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(f).display().to_string();
    let openssl = || {
        let mut c = std::process::Command::new("openssl");
        c.current_dir(dir);
        c
    };
    run_ok(openssl().args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=visionq test CA"]).args([
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]));
    run_ok(openssl().args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"]).args([
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]));
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    run_ok(
        openssl().args(["x509", "-req", "-days", "2", "-in", &p("server.csr"), "-CA", &p("ca.pem"), "-CAkey", &p("ca.key")]).args([
            "-CAcreateserial",
            "-extfile",
            &p("san.ext"),
            "-out",
            &p("server.pem"),
        ]),
    );
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// Frames made from a test photo slid across a grey canvas wide enough for it and its
/// slide, `step` pixels further right each frame.
pub fn slid_frames(photo: &str, n: usize, step: usize) -> Vec<Vec<u8>> {
    let mut pre = visionq_preprocess::Preprocessor::new(416, 416, 40_000_000);
    let (rgb, w, h) = pre.decode(&photo_bytes(photo)).unwrap();
    let (w, h) = (w as usize, h as usize);
    let cw = w + (n - 1) * step;
    (0..n)
        .map(|k| {
            let mut canvas = vec![114u8; cw * h * 3];
            let x0 = k * step;
            for y in 0..h {
                canvas[(y * cw + x0) * 3..(y * cw + x0 + w) * 3].copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
            }
            let mut out = Vec::new();
            jpeg_encoder::Encoder::new(&mut out, 90).encode(&canvas, cw as u16, h as u16, jpeg_encoder::ColorType::Rgb).unwrap();
            out
        })
        .collect()
}
