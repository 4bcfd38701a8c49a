//! Issue 21, "a 202 must survive a crash": the embedded pipeline (`visionq run`
//! without a broker, SQLite in its data dir) under steady load from four stations
//! while something breaks — the process is SIGKILLed and started again on the same
//! data dir, or the disk fills up. Each scenario ends with exact accounting straight
//! from the SQLite database, as the RabbitMQ fault suite (faults.rs) does: every frame
//! answered 202 or 200 has exactly one result row with all its detections; none
//! missing, none doubled.
//!
//! The full disk is a small tmpfs the test mounts on a scratch directory (it needs
//! root, as the `unshare` of the other suites) and fills with a file.
//!
//! `cargo test --release --locked -p visionq --test embedded_faults -- --nocapture`
//! prints a line per scenario; docs/RELIABILITY.md has the figures of a run.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use serde_json::Value;
use tokio::process::{Child, Command};

const PHOTOS: &[&str] = &["zidane.jpg", "person.jpg", "horses.jpg", "dog.jpg", "eagle.jpg"];
/// Steady load: 4 stations at 4 fps, under what this 2-core machine infers.
const STATIONS: usize = 4;
const FPS: f64 = 4.0;

/// The scenarios carry load: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// A small tmpfs mounted on a scratch directory (needs root, as `unshare` in the
/// other suites); unmounted when dropped, pass or fail.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(tag: &str, mb: u32) -> Tmpfs {
        assert!(is_root(), "the full-disk scenario mounts a tmpfs and needs root (CAP_SYS_ADMIN)");
        let dir = scratch(tag);
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "vq-full"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs on {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `visionq run` on `data` (embedded: no broker, SQLite there).
struct Embedded {
    child: Child,
    base: String,
    log: PathBuf,
    data: PathBuf,
}

impl Embedded {
    async fn start(data: &Path, extra: &[(&str, &str)]) -> Embedded {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_visionq"));
        let logs = repo().join("target/test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("{}.log", unique("embedded-faults")));
        cmd.args(["run", "--listen", "127.0.0.1:0"])
            .env_remove("VISIONQ_AMQP_URL")
            .env_remove("VISIONQ_DATABASE_URL")
            .env("VISIONQ_CACHE_DIR", cache())
            .env("VISIONQ_MODEL", model())
            .env("VISIONQ_DATA_DIR", data)
            .env("RUST_LOG", "info,visionq=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("visionq runs");
        let base = wait_listening(&mut child, &log).await;
        Embedded { child, base, log, data: data.to_path_buf() }
    }

    /// SIGKILL: no drain, no goodbye.
    async fn kill(mut self) -> Instant {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        Instant::now()
    }

    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.expect("exits after SIGTERM").unwrap();
        assert!(status.success(), "visionq exited with {status}; see {}", self.log.display());
    }

    fn db(&self) -> rusqlite::Connection {
        let path = self.data.join("visionq.db");
        let c = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }
}

// ---------------------------------------------------------------------------------
// Load and what the stations were told.

#[derive(Debug, Clone)]
struct Sent {
    done: Instant,
    /// HTTP status; 0 when no answer came (the process was gone).
    status: u16,
    /// The frame id of an accepted frame (202, a 200 with its result, a 504 "still queued").
    frame: Option<String>,
    retry_after: bool,
    code: Option<String>,
}

async fn post(client: &reqwest::Client, base: &str, station: &str, query: &str, body: Bytes) -> Sent {
    let r = client
        .post(format!("{base}/v1/stations/{station}/frames{query}"))
        .header("content-type", "image/jpeg")
        .body(body)
        .send()
        .await;
    let (status, frame, retry_after, code) = match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r.headers().contains_key("retry-after");
            let v: Value = r.json().await.unwrap_or(Value::Null);
            let frame = matches!(status, 200 | 202 | 504)
                .then(|| v["frame_id"].as_str().unwrap_or_else(|| panic!("{status} without frame_id: {v}")).to_string());
            (status, frame, retry_after, v["code"].as_str().map(String::from))
        }
        Err(_) => (0, None, false, None),
    };
    Sent { done: Instant::now(), status, frame, retry_after, code }
}

struct Load {
    target: Arc<Mutex<String>>,
    log: Arc<Mutex<Vec<Sent>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    photos: Arc<Vec<Bytes>>,
    client: reqwest::Client,
}

impl Load {
    /// `STATIONS` stations at `FPS`: even ones take a 202, odd ones wait for the result.
    fn start(base: &str) -> Load {
        let photos: Arc<Vec<Bytes>> = Arc::new(PHOTOS.iter().map(|p| Bytes::from(photo_bytes(p))).collect());
        let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        let mut load = Load {
            target: Arc::new(Mutex::new(base.into())),
            log: Arc::default(),
            stop: Arc::default(),
            tasks: vec![],
            photos,
            client,
        };
        for s in 0..STATIONS {
            let (client, photos, target, log, stop) =
                (load.client.clone(), load.photos.clone(), load.target.clone(), load.log.clone(), load.stop.clone());
            load.tasks.push(tokio::spawn(async move {
                let query = if s % 2 == 1 { "?wait_ms=4000" } else { "" };
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / FPS));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = s;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let base = target.lock().unwrap().clone();
                    let r = post(&client, &base, &format!("station-{s}"), query, photos[i % photos.len()].clone()).await;
                    log.lock().unwrap().push(r);
                    i += 1;
                }
            }));
        }
        load
    }

    /// `clients` clients posting back to back (202) for `length`.
    fn burst(&self, clients: usize, length: Duration) -> Vec<tokio::task::JoinHandle<()>> {
        let until = Instant::now() + length;
        (0..clients)
            .map(|c| {
                let (client, photos, target, log) = (self.client.clone(), self.photos.clone(), self.target.clone(), self.log.clone());
                tokio::spawn(async move {
                    let mut i = c;
                    while Instant::now() < until {
                        let base = target.lock().unwrap().clone();
                        let r = post(&client, &base, &format!("burst-{c}"), "", photos[i % photos.len()].clone()).await;
                        let pause = r.frame.is_none();
                        log.lock().unwrap().push(r);
                        if pause {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        i += 1;
                    }
                })
            })
            .collect()
    }

    fn retarget(&self, base: &str) {
        *self.target.lock().unwrap() = base.into();
    }

    async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.log.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------
// Accounting, straight from the SQLite database.

struct Row {
    status: String,
    detection_count: i64,
    detection_rows: i64,
    stored_at: chrono::DateTime<chrono::Utc>,
}

/// Every stored frame by id; a frame id stored twice is returned in `twice`.
fn stored(db: &rusqlite::Connection) -> (HashMap<String, Row>, Vec<String>) {
    let mut q = db
        .prepare(
            "SELECT f.frame_id, f.status, f.detection_count, f.stored_at,
                    (SELECT count(*) FROM detections d WHERE d.frame_id = f.frame_id)
             FROM frames f",
        )
        .unwrap();
    let (mut rows, mut twice) = (HashMap::new(), Vec::new());
    let mut it = q.query([]).unwrap();
    while let Some(r) = it.next().unwrap() {
        let stored_at: String = r.get(3).unwrap();
        let row = Row {
            status: r.get(1).unwrap(),
            detection_count: r.get(2).unwrap(),
            stored_at: chrono::DateTime::parse_from_rfc3339(&stored_at).unwrap().into(),
            detection_rows: r.get(4).unwrap(),
        };
        if rows.insert(r.get::<_, String>(0).unwrap(), row).is_some() {
            twice.push(r.get(0).unwrap());
        }
    }
    (rows, twice)
}

/// Waits until every accepted frame is stored (or `within` passes: the accounting
/// then says what is missing), then a moment more for a twin on its way.
async fn wait_stored(server: &Embedded, sent: &[Sent], within: Duration) {
    let until = Instant::now() + within;
    loop {
        let (rows, _) = stored(&server.db());
        let missing = sent.iter().filter_map(|s| s.frame.as_ref()).filter(|id| !rows.contains_key(*id)).count();
        if missing == 0 || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Checks every acceptance against the database and prints the scenario's line.
fn account(scenario: &str, server: &Embedded, sent: &[Sent], recovery: &str) -> HashMap<String, Row> {
    let (rows, twice) = stored(&server.db());
    let accepted: Vec<&String> = sent.iter().filter_map(|s| s.frame.as_ref()).collect();
    let lost: Vec<&&String> = accepted.iter().filter(|id| !rows.contains_key(**id)).collect();
    let torn: Vec<&&String> =
        accepted.iter().filter(|id| rows.get(**id).is_some_and(|r| r.detection_rows != r.detection_count)).collect();
    let not_ok: Vec<(&&String, &str)> =
        accepted.iter().filter_map(|id| rows.get(*id).filter(|r| r.status != "ok").map(|r| (id, r.status.as_str()))).collect();
    let refused: Vec<&Sent> = sent.iter().filter(|s| matches!(s.status, 429 | 503)).collect();
    let no_answer = sent.iter().filter(|s| s.status == 0).count();
    let unexpected: Vec<u16> =
        sent.iter().filter(|s| !matches!(s.status, 0 | 200 | 202 | 429 | 503 | 504)).map(|s| s.status).collect();
    let unconfirmed = rows.len() - accepted.iter().filter(|id| rows.contains_key(**id)).count();
    eprintln!(
        "FAULTS | {scenario} | accepted {} | completed {} | lost {} | doubled {} | refused (503/429) {} | no answer {no_answer} | extra (unconfirmed) {unconfirmed} | recovery: {recovery}",
        accepted.len(),
        accepted.len() - lost.len() - torn.len(),
        lost.len(),
        twice.len(),
        refused.len(),
    );
    assert!(lost.is_empty(), "{scenario}: {} accepted frames lost: {lost:?}", lost.len());
    assert!(twice.is_empty(), "{scenario}: frames stored twice: {twice:?}");
    assert!(torn.is_empty(), "{scenario}: frames whose detection rows do not match their count: {torn:?}");
    assert!(not_ok.is_empty(), "{scenario}: results that are not `ok` (these are valid photos): {not_ok:?}");
    assert!(refused.iter().all(|s| s.retry_after), "{scenario}: every 503/429 carries Retry-After");
    assert!(unexpected.is_empty(), "{scenario}: unexpected statuses {unexpected:?}");
    rows
}

/// Frames the journal still holds (the server stopped: its lock is released).
fn journaled(data: &Path) -> i64 {
    let c = rusqlite::Connection::open(data.join("frames-journal.db")).unwrap();
    c.query_row("SELECT count(*) FROM frames WHERE dead IS NULL", [], |r| r.get(0)).unwrap()
}

fn wall(t: Instant) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::from_std(t.elapsed()).unwrap()
}

// ---------------------------------------------------------------------------------
// The scenarios.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_sigkilled_under_load_and_restarted_loses_and_doubles_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let data = scratch("efault-kill");
    let server = Embedded::start(&data, &[]).await;
    let load = Load::start(&server.base);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A burst far over what the pipeline infers, so frames are queued when it dies
    // (as in the issue: 40 frames answered 202, then kill -9).
    for b in load.burst(4, Duration::from_millis(1500)) {
        b.await.unwrap();
    }
    let killed = server.kill().await;
    let queued_at_kill = load.log.lock().unwrap().iter().filter(|s| s.frame.is_some()).count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = Embedded::start(&data, &[]).await;
    let restarted = Instant::now();
    let restarted_wall = wall(restarted);
    load.retarget(&server.base);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sent = load.finish().await;
    wait_stored(&server, &sent, Duration::from_secs(120)).await;

    let before_kill: Vec<&String> = sent.iter().filter(|s| s.done < killed).filter_map(|s| s.frame.as_ref()).collect();
    let rows = account("embedded: SIGKILL under load, restart", &server, &sent, "see below");
    // Frames answered 202 before the kill whose results were stored only after the
    // restart: the journal carried them across.
    let crossed = before_kill.iter().filter(|id| rows[**id].stored_at > restarted_wall).count();
    let done_at = before_kill.iter().map(|id| rows[*id].stored_at).max().unwrap();
    eprintln!(
        "FAULTS | embedded kill | {} accepted before the kill ({queued_at_kill} by then), {crossed} of them completed after the restart; \
         the last of them stored {:.1} s after the restart",
        before_kill.len(),
        (done_at - restarted_wall).num_milliseconds() as f64 / 1e3
    );
    assert!(crossed > 0, "some accepted frames were still queued when the process was killed");
    let after = sent.iter().filter(|s| s.done > restarted && s.frame.is_some()).count();
    assert!(after > 0, "frames are accepted again after the restart");
    server.stop().await;
    assert_eq!(journaled(&data), 0, "every completed frame left the journal");
}

/// Writes zeros into `dir/filler` until the file system says it is full.
fn fill(dir: &Path) -> u64 {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => return written,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC, not {e}");
                return written;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_on_a_full_disk_answers_503_with_retry_after_instead_of_accepting() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let disk = Tmpfs::mount("efault-disk", 48);
    let server = Embedded::start(&disk.0, &[("VISIONQ_RETRY_AFTER_S", "3")]).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let dog = Bytes::from(photo_bytes("dog.jpg"));
    let mut sent = Vec::new();
    for _ in 0..8 {
        sent.push(post(&client, &server.base, "disk-1", "?wait_ms=20000", dog.clone()).await);
    }
    assert!(sent.iter().all(|s| s.status == 200), "{:?}", sent.iter().map(|s| s.status).collect::<Vec<_>>());

    // The disk fills up (another process's log, say): frames keep coming.
    let filled = fill(&server.data);
    let load = Load::start(&server.base);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = load.finish().await;
    let refused: Vec<&Sent> = during.iter().filter(|s| s.status == 503).collect();
    assert!(!refused.is_empty(), "a full disk refuses frames: {:?}", during.iter().map(|s| s.status).collect::<Vec<_>>());
    assert!(refused.iter().all(|s| s.retry_after && s.code.as_deref() == Some("unavailable")), "503 unavailable with Retry-After");
    let accepted_full = during.iter().filter(|s| s.frame.is_some()).count();
    sent.extend(during.iter().cloned());

    // Space comes back: frames are accepted again and everything accepted completes.
    std::fs::remove_file(server.data.join("filler")).unwrap();
    let freed = Instant::now();
    let mut first_200 = None;
    for _ in 0..8 {
        let s = post(&client, &server.base, "disk-2", "?wait_ms=20000", dog.clone()).await;
        if s.status == 200 && first_200.is_none() {
            first_200 = Some(s.done - freed);
        }
        sent.push(s);
    }
    let first_200 = first_200.expect("frames are accepted once space is back");
    wait_stored(&server, &sent, Duration::from_secs(60)).await;
    let recovery = format!(
        "{} MB filler filled the 48 MB tmpfs; while full {} of {} frames refused 503 + Retry-After, {accepted_full} accepted \
         (room left in the WAL) and completed; first 200 {:.1} s after space came back",
        filled / 1_000_000,
        refused.len(),
        during.len(),
        first_200.as_secs_f64()
    );
    account("embedded: disk full, then space back", &server, &sent, &recovery);
    server.stop().await;
}
