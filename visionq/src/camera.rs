//! Video for the edge agent: a camera's stream (RTSP) or a video file, read by an
//! `ffmpeg` child that turns it into JPEG frames at the agent's rate. The newest
//! frame wins: frames are read off ffmpeg's pipe as fast as it makes them, so a slow
//! consumer never makes ffmpeg (and the camera's RTP stream) fall behind; the agent
//! takes the latest when its clock ticks. A live stream that ends or breaks is
//! opened again after a pause that grows (up to 10 s); a file is played at its own
//! speed (`-re`) once, or over and over.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::watch;

/// The most a JPEG from ffmpeg may take; past it the stream is not JPEG frames.
const MAX_FRAME_BYTES: usize = 32 << 20;
/// Frames are awaited this long before the capture is reported as failing.
const FRAME_WAIT: Duration = Duration::from_secs(10);

/// The newest frame, numbered so a reader can tell a new one from the last it took;
/// [`ENDED`] once a file has played out.
type Latest = Option<(u64, Arc<Vec<u8>>)>;

/// The number of the "frame" that says a file has ended.
const ENDED: u64 = u64::MAX;

/// What ffmpeg reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    /// A camera's stream: opened again whenever it ends.
    Live,
    /// A file, played at its own speed; over and over with `repeat`.
    File { repeat: bool },
}

/// A camera stream read by ffmpeg.
pub struct Camera {
    latest: watch::Receiver<Latest>,
    taken: u64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The ffmpeg command reading `url` into JPEG frames at `fps` on its stdout.
fn ffmpeg(url: &str, fps: f64, video: Video) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    if url.starts_with("rtsp://") || url.starts_with("rtsps://") {
        // TCP: no lost UDP packets smearing frames on a busy network.
        cmd.args(["-rtsp_transport", "tcp"]);
    }
    if let Video::File { repeat } = video {
        // A file as a camera would show it: at its own speed, not as fast as it decodes.
        cmd.arg("-re");
        if repeat {
            cmd.args(["-stream_loop", "-1"]);
        }
    }
    cmd.args(["-i", url, "-an", "-vf", &format!("fps={fps}"), "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "pipe:1"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

impl Camera {
    /// Starts reading `url`; fails when ffmpeg is not installed.
    pub fn open(url: &str, fps: f64, video: Video) -> anyhow::Result<Camera> {
        let found = std::process::Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !found.is_ok_and(|s| s.success()) {
            bail!("{url}: reading a camera stream takes ffmpeg (Debian: apt-get install ffmpeg), and none runs here");
        }
        let (tx, latest) = watch::channel(None);
        let reader = tokio::spawn(read_forever(url.to_string(), fps, video, tx));
        Ok(Camera { latest, taken: 0, reader })
    }

    /// A frame newer than the last one taken; `None` once a file has played out; an
    /// error when none came for a while (a stream is down: ffmpeg is being started
    /// again meanwhile).
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let taken = self.taken;
        let fresh = tokio::time::timeout(FRAME_WAIT, self.latest.wait_for(|l| l.as_ref().is_some_and(|(n, _)| *n > taken)))
            .await
            .map_err(|_| anyhow::anyhow!("no frame from the camera for {} s (reconnecting)", FRAME_WAIT.as_secs()))?
            .context("the camera reader stopped")?;
        let (n, jpeg) = fresh.clone().expect("checked by wait_for");
        if n == ENDED {
            return Ok(None);
        }
        self.taken = n;
        Ok(Some(jpeg.as_ref().clone()))
    }
}

/// Runs ffmpeg on `url` (again and again for a live stream), publishing each frame
/// it makes.
async fn read_forever(url: String, fps: f64, video: Video, tx: watch::Sender<Latest>) {
    let mut count = 0u64;
    let mut failures = 0u32;
    loop {
        let before = count;
        match (read_once(&url, fps, video, &tx, &mut count).await, video) {
            (Ok(()), Video::File { .. }) => {
                tx.send_replace(Some((ENDED, Arc::new(Vec::new()))));
                return;
            }
            (Ok(()), Video::Live) => eprintln!("visionq station: the camera stream {url} ended; reconnecting"),
            (Err(e), _) => eprintln!("visionq station: the video {url}: {e:#}; opening it again"),
        }
        failures = if count > before { 0 } else { failures.saturating_add(1) };
        tokio::time::sleep(Duration::from_millis((500u64 << failures.min(5)).min(10_000))).await;
    }
}

/// One ffmpeg run: frames off its stdout until it ends.
async fn read_once(url: &str, fps: f64, video: Video, tx: &watch::Sender<Latest>, count: &mut u64) -> anyhow::Result<()> {
    let mut child = ffmpeg(url, fps, video).spawn().context("starting ffmpeg")?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut frames = Frames::default();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = stdout.read(&mut chunk).await.context("reading ffmpeg's output")?;
        if n == 0 {
            break;
        }
        for jpeg in frames.push(&chunk[..n])? {
            *count += 1;
            tx.send_replace(Some((*count, Arc::new(jpeg))));
        }
    }
    let status = child.wait().await?;
    let said = errors.await.unwrap_or_default();
    if !status.success() {
        bail!("ffmpeg exited with {status}: {}", said.trim());
    }
    Ok(())
}

/// Splits a stream of concatenated JPEGs (ffmpeg's `image2pipe` of MJPEG) into
/// frames by walking their markers: segment lengths up to the scan, then the
/// entropy-coded data up to EOI (where 0xFF is always followed by 0x00, a restart
/// marker or the next marker).
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
}

/// Where the JPEG at the start of `b` ends (one past its EOI); `None` if not yet in.
fn frame_end(b: &[u8]) -> anyhow::Result<Option<usize>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[..2] != [0xFF, 0xD8] {
        bail!("the camera stream is not JPEG frames (no SOI where a frame starts)");
    }
    let mut at = 2;
    loop {
        // A marker: 0xFF, maybe fill bytes, then its code.
        while at < b.len() && b[at] == 0xFF && b.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (Some(&ff), Some(&code)) = (b.get(at), b.get(at + 1)) else { return Ok(None) };
        if ff != 0xFF {
            bail!("the camera stream is not JPEG frames (no marker at byte {at})");
        }
        match code {
            0xD9 => return Ok(Some(at + 2)),
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let Some(len) = b.get(at + 2..at + 4).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else { return Ok(None) };
                at += 2 + len;
                if code == 0xDA {
                    // The scan's data: up to the first 0xFF that is no stuffing or restart.
                    loop {
                        let Some(i) = b.get(at..).and_then(|rest| rest.iter().position(|&x| x == 0xFF)) else { return Ok(None) };
                        at += i;
                        match b.get(at + 1) {
                            None => return Ok(None),
                            Some(0x00 | 0xD0..=0xD7) => at += 2,
                            Some(_) => break,
                        }
                    }
                }
            }
        }
    }
}

impl Frames {
    /// Takes `bytes`; returns the frames they complete.
    fn push(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = frame_end(&self.buf)? {
            out.push(self.buf.drain(..end).collect());
        }
        if self.buf.len() > MAX_FRAME_BYTES {
            bail!("a frame from the camera is over {} MiB", MAX_FRAME_BYTES >> 20);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small JPEG with a table holding 0xFF 0xD9 (no EOI there) and stuffed and
    /// restart bytes in its scan.
    fn jpeg(tag: u8) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend([0xFF, 0xDB, 0x00, 0x06, 0x00, 0xFF, 0xD9, 0x01]);
        j.extend([0xFF, 0xDA, 0x00, 0x03, 0x00]);
        j.extend([tag, 0xFF, 0x00, 0x12, 0xFF, 0xD0, 0x34, 0xFF, 0xD9]);
        j
    }

    #[test]
    fn frames_split_at_their_eoi_whatever_the_chunks() {
        let (a, b) = (jpeg(1), jpeg(2));
        let stream: Vec<u8> = a.iter().chain(&b).copied().collect();
        for chunk in 1..stream.len() {
            let mut f = Frames::default();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                got.extend(f.push(c).unwrap());
            }
            assert_eq!(got, vec![a.clone(), b.clone()], "chunks of {chunk}");
            assert!(f.buf.is_empty());
        }
        assert!(Frames::default().push(b"not a jpeg").is_err());
    }
}
