//! The edge agent (`visionq station`) against the real embedded pipeline: frames
//! captured while the server is down wait in the spool, bounded (the overflow
//! counted), survive the agent being killed, and are delivered in order when the
//! server is up; the server killed (SIGKILL) mid-stream and started again on the same
//! port and data: every captured frame is stored exactly once. And a frame posted
//! twice under one `Idempotency-Key` is one frame.

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
    fn start(server: &str, spool: &Path, extra: &[&str]) -> Agent {
        let photos = cache().join("photos-720p");
        let mut child = Command::new(env!("CARGO_BIN_EXE_visionq"))
            .args(["station", "--station", "edge-1", "--server", server, "--source"])
            .arg(&photos)
            .arg("--spool")
            .arg(spool)
            .args(["--loop"])
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
    let list: Value = reqwest::get(server.url("/v1/stations")).await.unwrap().json().await.unwrap();
    list["stations"].as_array().unwrap().iter().find(|s| s["station"] == station).map_or(0, |s| s["frames"].as_u64().unwrap())
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
