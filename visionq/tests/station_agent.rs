//! The edge agent (`visionq station`) against the real embedded pipeline: frames
//! captured while the server is down wait in the spool, bounded (the overflow
//! counted), survive the agent being killed, and are delivered in order when the
//! server is up; the server killed (SIGKILL) mid-stream and started again on the same
//! port and data: every captured frame is stored exactly once. And a frame posted
//! twice under one `Idempotency-Key` is one frame. An RTSP camera (GStreamer's RTSP
//! server, tools/rtsp_camera.py) is read through ffmpeg, its frames stored; over
//! HTTPS the agent trusts its `--ca-file` and, without it, an unknown issuer not.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

struct Agent {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    last: Value,
}

impl Agent {
    /// The agent on the 1280×720 photos, in a loop.
    fn start(server: &str, spool: &Path, extra: &[&str]) -> Agent {
        let photos = cache().join("photos-720p");
        let mut args = vec!["--loop"];
        args.extend(extra);
        Agent::start_on(server, spool, photos.to_str().unwrap(), &args)
    }

    fn start_on(server: &str, spool: &Path, source: &str, extra: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_visionq"))
            .args(["station", "--station", "edge-1", "--server", server, "--source", source])
            .arg("--spool")
            .arg(spool)
            .args(extra)
            .env("VISIONQ_CACHE_DIR", cache())
            .env_remove("VISIONQ_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("visionq station runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Agent { child, lines, last: Value::Null }
    }

    /// Reads the agent's progress lines until `ok` holds for one (returned), or it exits.
    async fn until(&mut self, what: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.next_line()).await;
            match line {
                Ok(Ok(Some(l))) => {
                    self.last = serde_json::from_str(&l).unwrap_or_else(|e| panic!("a JSON progress line: {e}: {l}"));
                    if ok(&self.last) {
                        return self.last.clone();
                    }
                }
                Ok(Ok(None)) => panic!("{what}: the agent exited; last progress {}", self.last),
                Ok(Err(e)) => panic!("{what}: {e}"),
                Err(_) => panic!("{what}: not within {within:?}; last progress {}", self.last),
            }
        }
    }

    /// Reads to the end: the last line is the agent's summary.
    async fn summary(mut self) -> Value {
        let exited = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(l) = self.lines.next_line().await.unwrap() {
                self.last = serde_json::from_str(&l).unwrap();
            }
            self.child.wait().await.unwrap()
        })
        .await
        .unwrap_or_else(|_| panic!("the agent did not finish; last progress {}", self.last));
        assert!(exited.success(), "{exited}");
        self.last
    }
}

fn spooled_files(spool: &Path) -> usize {
    std::fs::read_dir(spool).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "frame")).count()
}

async fn stored(server: &Server, station: &str) -> u64 {
    stored_with(&reqwest::Client::new(), server, station).await
}

async fn stored_with(client: &reqwest::Client, server: &Server, station: &str) -> u64 {
    let list: Value = client.get(server.url("/v1/stations")).send().await.unwrap().json().await.unwrap();
    list["stations"].as_array().unwrap().iter().find(|s| s["station"] == station).map_or(0, |s| s["frames"].as_u64().unwrap())
}

/// Waits until `n` frames of `edge-1` are stored (and never more).
async fn until_stored(client: &reqwest::Client, server: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = stored_with(client, server, "edge-1").await;
        if got == n {
            return;
        }
        assert!(got < n, "{got} frames stored for {n} captured: a frame was stored twice");
        assert!(Instant::now() < deadline, "{got} frames stored for {n} captured");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_camera_and_a_video_file_are_read_through_ffmpeg_and_their_frames_stored() {
    let port = free_port();
    let mut camera = Command::new("/usr/bin/python3")
        .arg(repo().join("tools/rtsp_camera.py"))
        .args(["--port", &port.to_string(), "--fps", "10", "--width", "640", "--height", "480"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("GStreamer's RTSP server runs (scripts/test installs it)");
    let mut said = BufReader::new(camera.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), said.next_line()).await.expect("the camera starts").unwrap();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    assert_eq!(ready.as_deref(), Some(format!("ready {url}").as_str()));

    let data = scratch("agent-rtsp");
    let server = Server::start(&["run"], &[("VISIONQ_DATA_DIR", data.display().to_string())]).await;
    let spool = scratch("agent-rtsp-spool");
    let agent = Agent::start_on(&server.base, &spool, &url, &["--count", "6", "--rate", "4"]);
    let end = agent.summary().await;
    assert_eq!((end["captured"].as_u64(), end["spooled"].as_u64(), end["refused"].as_u64()), (Some(6), Some(0), Some(0)), "{end}");
    let client = reqwest::Client::new();
    until_stored(&client, &server, 6).await;
    // They are the camera's frames: its picture size, run by the model.
    let results: Value = client.get(server.url("/v1/stations/edge-1/results?limit=10")).send().await.unwrap().json().await.unwrap();
    let results = results["results"].as_array().unwrap_or_else(|| panic!("{results}"));
    assert_eq!(results.len(), 6);
    for r in results {
        assert_eq!(
            (r["image"]["width"].as_u64(), r["image"]["height"].as_u64(), r["status"].as_str()),
            (Some(640), Some(480), Some("ok")),
            "{r}"
        );
    }
    drop(camera);

    // A video file (the nine 1280×720 photos, 2 a second) is played at its own speed
    // and the agent stops when it ends, every frame it took stored.
    let clip = data.join("clip.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-framerate", "2", "-pattern_type", "glob", "-i"])
        .arg(cache().join("photos-720p/*.jpg"))
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", "2"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg makes the clip");
    let agent = Agent::start_on(&server.base, &spool, clip.to_str().unwrap(), &["--rate", "2"]);
    let end = agent.summary().await;
    let captured = end["captured"].as_u64().unwrap();
    assert!((6..=10).contains(&captured), "about the clip's 9 frames at 2 a second: {end}");
    assert_eq!((end["spooled"].as_u64(), end["refused"].as_u64()), (Some(0), Some(0)), "{end}");
    until_stored(&client, &server, 6 + captured).await;
    let latest: Value = client.get(server.url("/v1/stations/edge-1/results?limit=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(latest["results"][0]["image"]["width"], 1280, "{latest}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_agent_trusts_its_ca_file_and_no_unknown_issuer() {
    let (server, ca) = https_server("agent-tls").await;
    let spool = scratch("agent-tls-spool");

    // Trusting another CA, the agent does not trust the server's certificate:
    // nothing is sent, the frames wait in the spool.
    let (other_ca, _, _) = tls_certificates(&scratch("agent-tls-other"));
    let mut agent = Agent::start(&server.base, &spool, &["--count", "3", "--rate", "20", "--ca-file", other_ca.to_str().unwrap()]);
    agent.until("3 captured", Duration::from_secs(30), |p| p["captured"] == 3).await;
    for _ in 0..3 {
        let p = agent.until("a progress line", Duration::from_secs(5), |_| true).await;
        assert_eq!((p["connected"].as_bool(), p["delivered"].as_u64(), p["spooled"].as_u64()), (Some(false), Some(0), Some(3)), "{p}");
    }
    drop(agent);

    // With it: the three waiting and two more are delivered over wss.
    let agent = Agent::start(&server.base, &spool, &["--count", "2", "--rate", "20", "--ca-file", ca.to_str().unwrap()]);
    let end = agent.summary().await;
    assert_eq!((end["captured"].as_u64(), end["delivered"].as_u64(), end["spooled"].as_u64()), (Some(2), Some(5), Some(0)), "{end}");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    until_stored(&trusting, &server, 5).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_spools_through_outages_and_every_captured_frame_is_stored_once() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let spool = scratch("agent-spool");
    let data = scratch("agent-data");

    // The server is down: 12 frames captured, the spool holds 8 and counts 4 dropped.
    let mut agent = Agent::start(&url, &spool, &["--count", "12", "--rate", "50", "--spool-max-frames", "8"]);
    let p = agent.until("12 captured", Duration::from_secs(30), |p| p["captured"] == 12).await;
    assert_eq!((p["spooled"].as_u64(), p["overflow"].as_u64(), p["delivered"].as_u64()), (Some(8), Some(4), Some(0)), "{p}");
    assert_eq!(p["connected"], false);
    // The agent is killed: the spool is on disk.
    drop(agent);
    assert_eq!(spooled_files(&spool), 8);

    // The server comes up; the agent starts again and captures 30 more; halfway the
    // server is killed and started again on the same port and data.
    let args = ["run", "--listen", &format!("127.0.0.1:{port}")];
    let env = [("VISIONQ_DATA_DIR", data.display().to_string())];
    let server = Server::start(&args, &env).await;
    let mut agent = Agent::start(&url, &spool, &["--count", "30", "--rate", "20"]);
    agent.until("the first frames delivered", Duration::from_secs(60), |p| p["delivered"].as_u64() >= Some(15)).await;
    let mut server = server;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    agent.until("the agent sees the outage", Duration::from_secs(30), |p| p["connected"] == false).await;
    let server = Server::start(&args, &env).await;
    let end = agent.summary().await;
    assert_eq!((end["captured"].as_u64(), end["spooled"].as_u64()), (Some(30), Some(0)), "{end}");
    assert_eq!((end["overflow"].as_u64(), end["stale"].as_u64(), end["refused"].as_u64()), (Some(0), Some(0), Some(0)), "{end}");
    assert_eq!(spooled_files(&spool), 0);

    // 8 from the first outage and 30 since: each stored once, even a frame sent again
    // because its `accepted` was lost with the killed server (the agent's key makes
    // the frame id).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = stored(&server, "edge-1").await;
        if n == 38 {
            break;
        }
        assert!(n < 38, "{n} frames stored for 38 captured: a frame was stored twice");
        assert!(Instant::now() < deadline, "{n} frames stored for 38 captured");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_frame_posted_again_under_its_idempotency_key_is_one_frame() {
    let server = Server::start(&["run"], &[]).await;
    let http = reqwest::Client::new();
    let post = |key: &'static str| {
        http.post(server.url("/v1/stations/keyed/frames?wait_ms=20000"))
            .header("content-type", "image/jpeg")
            .header("idempotency-key", key)
            .body(photo_bytes("dog.jpg"))
            .send()
    };
    let first: Value = post("cam-9-000001").await.unwrap().json().await.unwrap();
    let again: Value = post("cam-9-000001").await.unwrap().json().await.unwrap();
    let other: Value = post("cam-9-000002").await.unwrap().json().await.unwrap();
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(first["frame_id"], again["frame_id"], "the same key is the same frame");
    assert_ne!(first["frame_id"], other["frame_id"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(&server, "keyed").await != 2 {
        assert!(Instant::now() < deadline, "two keys, two frames: {}", stored(&server, "keyed").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bad = post("has space").await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "bad_idempotency_key", "{body}");
    server.stop().await;
}
