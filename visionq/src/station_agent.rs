//! `visionq station`: the edge agent beside a camera. It captures frames from a
//! folder, a file, an HTTP(S) snapshot URL or a camera stream (RTSP, through ffmpeg:
//! [`crate::camera`]) at a fixed rate, writes each one to an
//! on-disk spool first, and streams the spool in order over the station's WebSocket
//! (docs/STREAMING.md). A frame leaves the spool only when the server answers
//! `accepted` (it is then in the broker or the fsynced journal), or is refused for
//! good (`not_an_image`…). While the server is unreachable frames wait in the spool
//! and are replayed in order with backoff when it is back, each with the
//! `captured_at` of its capture; the spool survives a restart of the agent.
//!
//! Each frame carries a `key` (the agent's spool id and the frame's capture time),
//! from which the server derives the frame id: a frame sent again because its
//! `accepted` was lost with the connection is stored once. The spool is bounded
//! (`--spool-max-frames`): beyond it the oldest waiting frame is dropped and
//! counted, never silently. With `--live-ms` a frame that waited longer than that
//! is dropped as stale and counted instead of replayed (a live view that only
//! wants the present).
//!
//! The server may be `https://` (the socket is then `wss://`), verified against the
//! system's roots or `--ca-file`, which also verifies an `https://` snapshot URL.
//!
//! Progress goes to standard output as one JSON line per second and a last one at
//! exit (`{"captured", "delivered", "spooled", "in_flight", "overflow", "stale",
//! "refused", "connected"}`).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use visionq_contract::Config;

use crate::camera::{Camera, Video};

#[derive(clap::Args, Debug, Clone)]
pub struct StationArgs {
    /// Where frames come from: a folder (its .jpg/.jpeg files in name order), one
    /// JPEG file (sent at every tick), a video file (played at its speed, through
    /// ffmpeg), an http(s) URL answering a JPEG snapshot, or a camera stream,
    /// rtsp:// or rtsps:// (read by ffmpeg, the newest frame at every tick).
    #[arg(long)]
    source: String,
    /// visionq's base URL (the ingest role's), e.g. http://127.0.0.1:8080 or https://visionq.example.com.
    #[arg(long)]
    server: String,
    /// CA certificates (PEM) to verify an https server and snapshot URL with,
    /// instead of the system's roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The station this camera is.
    #[arg(long)]
    station: String,
    /// Frames captured per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// The station's token (else VISIONQ_TOKEN).
    #[arg(long, env = "VISIONQ_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The spool folder (default: <data_dir>/spool/<station>).
    #[arg(long)]
    spool: Option<PathBuf>,
    /// Frames the spool holds at most; beyond it the oldest waiting one is dropped (counted as overflow).
    #[arg(long, default_value_t = 10_000)]
    spool_max_frames: usize,
    /// Capture this many frames, then exit once the spool is empty (0: run until stopped).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// A frame that waited in the spool longer than this is dropped as stale, not sent (0: send every frame).
    #[arg(long, default_value_t = 0)]
    live_ms: u64,
    /// With a folder or a video file: start over after its end instead of stopping.
    #[arg(long = "loop")]
    repeat: bool,
}

/// What a spooled frame carries besides its JPEG.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpoolMeta {
    captured_at: DateTime<Utc>,
    key: String,
}

/// The frames waiting, on disk (`<seq>.frame`: a JSON line of [`SpoolMeta`], then
/// the JPEG), in capture order.
struct Spool {
    dir: PathBuf,
    next: u64,
    /// Waiting to be sent on the current connection, oldest first.
    waiting: VecDeque<u64>,
    /// Sent on the current connection, not yet answered.
    in_flight: BTreeSet<u64>,
    max_frames: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Progress {
    captured: u64,
    delivered: u64,
    spooled: usize,
    in_flight: usize,
    overflow: u64,
    stale: u64,
    refused: u64,
    connected: bool,
}

impl Spool {
    fn open(dir: &Path, max_frames: usize) -> anyhow::Result<Spool> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the spool {}", dir.display()))?;
        let mut seqs: Vec<u64> =
            std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".frame")?.parse().ok()).collect();
        seqs.sort_unstable();
        let next = seqs.last().map_or(1, |s| s + 1);
        Ok(Spool { dir: dir.to_path_buf(), next, waiting: seqs.into(), in_flight: BTreeSet::new(), max_frames: max_frames.max(1) })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016}.frame"))
    }

    fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }

    /// Writes a frame (fsynced, then renamed into place); drops the oldest waiting
    /// ones past the bound. Returns how many were dropped.
    fn push(&mut self, jpeg: &[u8], captured_at: DateTime<Utc>, station: &str) -> anyhow::Result<u64> {
        let seq = self.next;
        self.next += 1;
        let meta = SpoolMeta { captured_at, key: format!("{station}-{}-{seq}", captured_at.timestamp_micros()) };
        let mut bytes = serde_json::to_vec(&meta)?;
        bytes.push(b'\n');
        bytes.extend_from_slice(jpeg);
        let tmp = self.dir.join(format!("{seq:016}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.path(seq))?;
        self.waiting.push_back(seq);
        let mut dropped = 0;
        while self.len() > self.max_frames {
            let Some(oldest) = self.waiting.pop_front() else { break };
            self.remove(oldest);
            dropped += 1;
        }
        Ok(dropped)
    }

    fn read(&self, seq: u64) -> anyhow::Result<(SpoolMeta, Vec<u8>)> {
        let bytes = std::fs::read(self.path(seq))?;
        let nl = bytes.iter().position(|&b| b == b'\n').context("a spool file without its details line")?;
        Ok((serde_json::from_slice(&bytes[..nl])?, bytes[nl + 1..].to_vec()))
    }

    fn remove(&mut self, seq: u64) {
        self.in_flight.remove(&seq);
        let _ = std::fs::remove_file(self.path(seq));
    }

    /// The connection ended: what was in flight is sent again first, in order.
    fn requeue(&mut self) {
        let mut all: Vec<u64> = self.in_flight.iter().copied().chain(self.waiting.iter().copied()).collect();
        all.sort_unstable();
        self.in_flight.clear();
        self.waiting = all.into();
    }
}

/// Where the frames come from.
enum Source {
    Folder { files: Vec<PathBuf>, at: usize, repeat: bool },
    File(PathBuf),
    Url { http: reqwest::Client, url: String },
    Stream(Camera),
}

impl Source {
    fn open(spec: &str, args: &StationArgs) -> anyhow::Result<Source> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let mut http = reqwest::Client::builder().timeout(Duration::from_secs(5));
            if spec.starts_with("https://") {
                http = http.tls_backend_preconfigured(Arc::unwrap_or_clone(tls(args)?));
            }
            return Ok(Source::Url { http: http.build()?, url: spec.to_string() });
        }
        if spec.starts_with("rtsp://") || spec.starts_with("rtsps://") {
            return Ok(Source::Stream(Camera::open(spec, args.rate, Video::Live)?));
        }
        let repeat = args.repeat;
        let path = PathBuf::from(spec);
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{} holds no .jpg or .jpeg file", path.display());
            }
            return Ok(Source::Folder { files, at: 0, repeat });
        }
        if path.is_file() {
            // A JPEG is sent at every tick; anything else is taken for a video file.
            let mut magic = [0u8; 3];
            let is_jpeg = std::fs::File::open(&path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
                && magic == [0xFF, 0xD8, 0xFF];
            if !is_jpeg {
                return Ok(Source::Stream(Camera::open(spec, args.rate, Video::File { repeat })?));
            }
            return Ok(Source::File(path));
        }
        bail!("source {spec}: neither a folder, a file, an http(s) URL nor an rtsp(s) stream")
    }

    /// The next frame; `None` when a folder is done.
    async fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Source::Folder { files, at, repeat } => {
                if *at == files.len() {
                    if !*repeat {
                        return Ok(None);
                    }
                    *at = 0;
                }
                *at += 1;
                Ok(Some(tokio::fs::read(&files[*at - 1]).await?))
            }
            Source::File(p) => Ok(Some(tokio::fs::read(&p).await?)),
            Source::Url { http, url } => {
                let r = http.get(url.as_str()).send().await?.error_for_status()?;
                Ok(Some(r.bytes().await?.to_vec()))
            }
            Source::Stream(camera) => camera.next().await,
        }
    }
}

/// The TLS set-up of the agent's connections (server and snapshot URL): `--ca-file`,
/// or the system's roots.
fn tls(args: &StationArgs) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    visionq_contract::tls::client_config(args.ca_file.as_deref()).map_err(|e| anyhow::anyhow!("TLS: {e}"))
}

struct Shared {
    spool: Mutex<Spool>,
    progress: Mutex<Progress>,
    changed: Notify,
    capturing_done: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn note(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().expect("progress lock"));
    }

    fn snapshot(&self) -> Progress {
        let spool = self.spool.lock().expect("spool lock");
        let mut p = self.progress.lock().expect("progress lock").clone();
        p.spooled = spool.len();
        p.in_flight = spool.in_flight.len();
        p
    }
}

pub async fn run(config: Config, args: StationArgs) -> anyhow::Result<()> {
    if !visionq_contract::config::valid_station_id(&args.station) {
        bail!("station id must be 1-64 of A-Z a-z 0-9 . _ -");
    }
    if !(args.server.starts_with("http://") || args.server.starts_with("https://")) {
        bail!("--server must be an http:// or https:// URL");
    }
    if args.server.starts_with("https://") {
        tls(&args)?;
    }
    if !(args.rate > 0.0 && args.rate <= 100.0) {
        bail!("--rate must be above 0 and at most 100 frames/s");
    }
    let dir = args.spool.clone().unwrap_or_else(|| config.data_dir.join("spool").join(&args.station));
    let spool = Spool::open(&dir, args.spool_max_frames)?;
    if !spool.waiting.is_empty() {
        eprintln!("visionq station: {} frames waiting in the spool {} from before", spool.waiting.len(), dir.display());
    }
    let source = Source::open(&args.source, &args)?;
    let shared = Arc::new(Shared {
        spool: Mutex::new(spool),
        progress: Mutex::new(Progress::default()),
        changed: Notify::new(),
        capturing_done: false.into(),
    });
    let capture = tokio::spawn(capture(shared.clone(), source, args.clone()));
    let sender = tokio::spawn(send(shared.clone(), args.clone()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let p = shared.snapshot();
        println!("{}", serde_json::to_string(&p)?);
        if capture.is_finished() && p.spooled == 0 {
            break;
        }
    }
    capture.abort();
    sender.abort();
    if let Ok(Err(e)) = capture.await {
        eprintln!("visionq station: capture stopped: {e:#}");
    }
    println!("{}", serde_json::to_string(&shared.snapshot())?);
    Ok(())
}

async fn capture(shared: Arc<Shared>, mut source: Source, args: StationArgs) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut captured = 0u64;
    while args.count == 0 || captured < args.count {
        tick.tick().await;
        let jpeg = match source.next().await {
            Ok(Some(j)) => j,
            Ok(None) => break,
            Err(e) => {
                eprintln!("visionq station: capture failed: {e:#}");
                continue;
            }
        };
        let captured_at = Utc::now();
        let dropped = {
            let mut spool = shared.spool.lock().expect("spool lock");
            spool.push(&jpeg, captured_at, &args.station)?
        };
        captured += 1;
        shared.note(|p| {
            p.captured += 1;
            p.overflow += dropped;
        });
        shared.changed.notify_one();
    }
    shared.capturing_done.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// A server reply, as far as the agent reads it.
#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    id: Option<serde_json::Value>,
    window: Option<usize>,
    code: Option<String>,
    error: Option<String>,
    retry_after_s: Option<u64>,
}

/// Refusals that may pass: the frame stays in the spool and is sent again.
fn retryable(code: &str) -> bool {
    matches!(code, "rate_limited" | "queue_full" | "unavailable" | "window_full")
}

async fn send(shared: Arc<Shared>, args: StationArgs) {
    let mut attempt = 0u32;
    loop {
        match stream(&shared, &args).await {
            Ok(()) => attempt = 0,
            Err(e) => {
                eprintln!("visionq station: {e:#}; frames wait in the spool");
                attempt = attempt.saturating_add(1);
            }
        }
        shared.note(|p| p.connected = false);
        shared.spool.lock().expect("spool lock").requeue();
        let wait = Duration::from_millis((250u64 << attempt.min(6)).min(10_000));
        tokio::time::sleep(wait).await;
    }
}

/// One connection: sends the spool in order within the window until the socket ends.
async fn stream(shared: &Shared, args: &StationArgs) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/').replacen("http", "ws", 1);
    let mut req = format!("{base}/v1/stations/{}/ws?mode=queue", args.station).into_client_request()?;
    if let Some(t) = &args.token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse()?);
    }
    let connector = match base.starts_with("wss://") {
        true => tokio_tungstenite::Connector::Rustls(tls(args)?),
        false => tokio_tungstenite::Connector::Plain,
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector));
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .context("connecting timed out")?
        .context("the server is unreachable")?;
    let hello: Reply = loop {
        match ws.next().await.context("closed before its hello")?? {
            Message::Text(t) => break serde_json::from_str(t.as_str())?,
            Message::Close(f) => bail!("closed before its hello: {f:?}"),
            _ => continue,
        }
    };
    let window = hello.window.unwrap_or(1).max(1);
    shared.note(|p| p.connected = true);
    let mut pause_until = tokio::time::Instant::now();
    loop {
        // Fill the window from the spool, oldest first.
        while tokio::time::Instant::now() >= pause_until {
            let next = {
                let mut spool = shared.spool.lock().expect("spool lock");
                if spool.in_flight.len() >= window { None } else { spool.waiting.pop_front().map(|seq| (seq, spool.read(seq))) }
            };
            let Some((seq, frame)) = next else { break };
            let (meta, jpeg) = match frame {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("visionq station: spool file {seq} unreadable, dropped: {e:#}");
                    shared.spool.lock().expect("spool lock").remove(seq);
                    continue;
                }
            };
            if args.live_ms > 0 && (Utc::now() - meta.captured_at).num_milliseconds() > args.live_ms as i64 {
                shared.spool.lock().expect("spool lock").remove(seq);
                shared.note(|p| p.stale += 1);
                continue;
            }
            shared.spool.lock().expect("spool lock").in_flight.insert(seq);
            let details = serde_json::json!({"id": seq, "captured_at": meta.captured_at, "key": meta.key});
            ws.send(Message::text(details.to_string())).await?;
            ws.send(Message::binary(jpeg)).await?;
        }
        let idle = shared.spool.lock().expect("spool lock").len() == 0;
        if idle && shared.capturing_done.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = ws.close(None).await;
            return Ok(());
        }
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = shared.changed.notified() => continue,
            _ = tokio::time::sleep_until(pause_until), if pause_until > tokio::time::Instant::now() => continue,
        };
        let text = match msg {
            None => bail!("the server closed the stream"),
            Some(Err(e)) => bail!("the stream broke: {e}"),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => bail!("the server closed the stream: {f:?}"),
            Some(Ok(_)) => continue,
        };
        let reply: Reply = serde_json::from_str(text.as_str())?;
        let Some(seq) = reply.id.as_ref().and_then(|v| v.as_u64()) else { continue };
        match reply.kind.as_str() {
            "accepted" => {
                shared.spool.lock().expect("spool lock").remove(seq);
                shared.note(|p| p.delivered += 1);
            }
            "error" => {
                let code = reply.code.unwrap_or_default();
                let mut spool = shared.spool.lock().expect("spool lock");
                if retryable(&code) {
                    // Back in its place; sent again after the pause the server asks for.
                    spool.in_flight.remove(&seq);
                    spool.waiting.push_front(seq);
                    pause_until = tokio::time::Instant::now() + Duration::from_secs(reply.retry_after_s.unwrap_or(1).clamp(1, 30));
                } else {
                    eprintln!("visionq station: frame {seq} refused ({code}): {}", reply.error.unwrap_or_default());
                    spool.remove(seq);
                    drop(spool);
                    shared.note(|p| p.refused += 1);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_keeps_order_survives_reopening_and_drops_the_oldest_past_its_bound() {
        let dir = std::env::temp_dir().join(format!("vq-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, 3).unwrap();
        let t = Utc::now();
        for i in 0..5u8 {
            let dropped = s.push(&[0xFF, 0xD8, i], t, "cam").unwrap();
            assert_eq!(dropped, u64::from(i >= 3), "frame {i}");
        }
        assert_eq!(s.waiting, [3, 4, 5]);
        let (meta, jpeg) = s.read(4).unwrap();
        assert_eq!(jpeg, [0xFF, 0xD8, 3]);
        assert!(meta.key.starts_with("cam-") && meta.key.ends_with("-4"), "{meta:?}");
        // One in flight when the agent stops: after reopening, all three wait in order.
        s.in_flight.insert(s.waiting.pop_front().unwrap());
        drop(s);
        let mut s = Spool::open(&dir, 3).unwrap();
        assert_eq!((s.waiting.iter().copied().collect::<Vec<_>>(), s.next), (vec![3, 4, 5], 6));
        s.in_flight.insert(s.waiting.pop_front().unwrap());
        s.requeue();
        assert_eq!(s.waiting, [3, 4, 5], "what was in flight goes first again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
