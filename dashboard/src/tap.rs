//! The ingest side of the frame previews: a publish tap ([`PublishTap`]) that, after a
//! frame's publish was confirmed, sends a sampled copy of it as a preview event. A
//! frame over `dashboard_preview_max_bytes` (a 12 MP camera's), one turned by its
//! EXIF orientation, and a PNG or WebP one, is sent as a small JPEG instead (at most 640 px on its long
//! side, turned as its boxes are), made off the request path on tokio's blocking pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use visionq_contract::topology::{EVENT_KIND_HEADER, META_HEADER, PREVIEW_EVENT, preview_routing_key};
use visionq_contract::{Config, FrameMeta, Metrics};
use visionq_preprocess::{PREVIEW_MAX_SIDE, preview_jpeg};
use visionq_queue::{Envelope, PublishTap, QueueError, SharedBroker, WorkQueue, tapped};

/// Whether an event is a frame preview (and not a result).
pub fn is_preview(e: &Envelope) -> bool {
    e.header(EVENT_KIND_HEADER) == Some(PREVIEW_EVENT)
}

/// Wraps the broker handle ingest publishes frames through. Every call is
/// forwarded unchanged; a confirmed frame publish is also sampled into a preview
/// event (see the crate docs for why). Ingest's own subscription takes results
/// only ([`visionq_contract::topology::RESULT_EVENTS`]), so it never sees a preview.
///
/// The sampling throttles each station to one preview per interval, on both edges:
/// the first frame of a quiet station goes at once, and of the frames that arrive
/// within the interval the newest is held and sent when it ends, so the frame an
/// operator sees last is the station's last frame, not the first of its burst.
pub struct PreviewTap {
    inner: SharedBroker,
    interval: Duration,
    max_bytes: usize,
    /// Pixels a frame may have (`max_pixels`), for the decode of a downscaled preview.
    max_pixels: u64,
    /// Stations with a held frame at most, and bytes of held frames at most (bound
    /// the memory: each station holds one frame).
    max_held: usize,
    max_held_bytes: usize,
    metrics: Arc<Metrics>,
    throttle: Arc<Mutex<Throttle>>,
}

#[derive(Default)]
struct Throttle {
    /// When each station's last preview left; only stations seen within the last
    /// interval matter, so the map is pruned to those when it grows.
    last_sent: HashMap<String, Instant>,
    /// The newest frame per station that came within its interval.
    held: HashMap<String, Envelope>,
    /// Bytes of the frames in `held`.
    held_bytes: usize,
}

impl Throttle {
    fn hold(&mut self, station: String, event: Envelope) {
        self.held_bytes += event.body.len();
        if let Some(old) = self.held.insert(station, event) {
            self.held_bytes -= old.body.len();
        }
    }

    fn take(&mut self, station: &str) -> Option<Envelope> {
        let event = self.held.remove(station)?;
        self.held_bytes -= event.body.len();
        Some(event)
    }
}

/// Stations remembered before the rate limiter prunes the ones it no longer needs.
const PRUNE_ABOVE: usize = 4096;

enum Due {
    Now(Envelope),
    /// The first frame held in this interval: a timer must send it at that instant.
    At(Instant),
}

impl PreviewTap {
    pub fn wrap(inner: SharedBroker, config: &Config, metrics: Arc<Metrics>) -> SharedBroker {
        // The preview events are published on the broker underneath, from its own tasks.
        tapped(
            inner.clone(),
            PreviewTap {
                inner,
                interval: Duration::from_millis(config.dashboard.dashboard_preview_interval_ms),
                max_bytes: config.dashboard.dashboard_preview_max_bytes,
                max_pixels: config.ingest.max_pixels,
                max_held: config.dashboard.dashboard_max_stations,
                max_held_bytes: config.dashboard.dashboard_store_max_bytes,
                metrics,
                throttle: Arc::new(Mutex::new(Throttle::default())),
            },
        )
    }

    fn outcome(&self, o: &str) {
        self.metrics.dashboard_previews_total.with_label_values(&[o]).inc();
    }

    /// Decides what becomes of a published frame's preview.
    fn offer(&self, frame: &Envelope) -> Option<(String, Due)> {
        let raw = frame.header(META_HEADER)?;
        let meta: FrameMeta = serde_json::from_str(raw).ok()?;
        // `Envelope` clones share the body (`Bytes`): no copy of the JPEG.
        let event = Envelope::new(frame.body.clone()).with_header(META_HEADER, raw).with_header(EVENT_KIND_HEADER, PREVIEW_EVENT);
        let now = Instant::now();
        let mut t = self.throttle.lock().expect("preview tap lock");
        match t.last_sent.get(&meta.station).copied() {
            Some(sent) if now.duration_since(sent) < self.interval => {
                let replaced = t.held.get(&meta.station).map_or(0, |e| e.body.len());
                if t.held_bytes - replaced + event.body.len() > self.max_held_bytes {
                    self.outcome("rate_limited");
                    None
                } else if t.held.contains_key(&meta.station) {
                    t.hold(meta.station, event);
                    self.outcome("superseded");
                    None
                } else if t.held.len() >= self.max_held {
                    self.outcome("rate_limited");
                    None
                } else {
                    t.hold(meta.station.clone(), event);
                    Some((meta.station, Due::At(sent + self.interval)))
                }
            }
            _ => {
                if t.last_sent.len() >= PRUNE_ABOVE {
                    let Throttle { last_sent, held, .. } = &mut *t;
                    last_sent.retain(|s, at| now.duration_since(*at) < self.interval || held.contains_key(s));
                }
                t.last_sent.insert(meta.station.clone(), now);
                Some((meta.station, Due::Now(event)))
            }
        }
    }

    /// Sends a preview off the request path: a station's POST never waits for it.
    fn send(&self, station: String, due: Due) {
        let (inner, metrics, throttle) = (self.inner.clone(), self.metrics.clone(), self.throttle.clone());
        let (max_bytes, max_pixels) = (self.max_bytes, self.max_pixels);
        tokio::spawn(async move {
            let mut event = match due {
                Due::Now(event) => event,
                Due::At(at) => {
                    tokio::time::sleep_until(at).await;
                    let mut t = throttle.lock().expect("preview tap lock");
                    let Some(event) = t.take(&station) else { return };
                    t.last_sent.insert(station.clone(), Instant::now());
                    event
                }
            };
            let orientation =
                event.header(META_HEADER).and_then(|m| serde_json::from_str::<FrameMeta>(m).ok()).map_or(1, |m| m.orientation);
            // The dashboard shows JPEGs: a PNG or WebP frame is re-encoded too.
            let downscale = event.body.len() > max_bytes || orientation != 1 || !event.body.starts_with(&[0xFF, 0xD8]);
            if downscale {
                let body = event.body.clone();
                let made = tokio::task::spawn_blocking(move || preview_jpeg(&body, orientation, PREVIEW_MAX_SIDE, max_pixels)).await;
                match made {
                    Ok(Ok(small)) => event.body = small.into(),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "no preview: the frame does not decode");
                        metrics.dashboard_previews_total.with_label_values(&["undecodable"]).inc();
                        return;
                    }
                    Err(_) => return,
                }
            }
            let outcome = match inner.publish_event(&preview_routing_key(&station), event).await {
                Ok(()) if downscale => "downscaled",
                Ok(()) => "sent",
                Err(e) => {
                    tracing::debug!(error = %e, "frame preview not sent");
                    "failed"
                }
            };
            metrics.dashboard_previews_total.with_label_values(&[outcome]).inc();
        });
    }
}

#[async_trait::async_trait]
impl PublishTap for PreviewTap {
    async fn publish(&self, inner: &SharedBroker, queue: WorkQueue, message: Envelope) -> Result<(), QueueError> {
        if queue != WorkQueue::Frames {
            return inner.publish(queue, message).await;
        }
        let frame = message.clone();
        inner.publish(queue, message).await?;
        if let Some((station, due)) = self.offer(&frame) {
            self.send(station, due);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use futures_util::StreamExt;
    use uuid::Uuid;
    use visionq_contract::topology::{PREVIEW_EVENTS, RESULT_EVENTS};
    use visionq_queue::Events;
    use visionq_queue::memory::MemoryBroker;

    fn frame(station: &str, body: &'static [u8]) -> Envelope {
        turned_frame(station, body.to_vec(), 1)
    }

    fn turned_frame(station: &str, body: Vec<u8>, orientation: u8) -> Envelope {
        let meta = FrameMeta {
            frame_id: Uuid::now_v7(),
            station: station.into(),
            width: 4,
            height: 3,
            orientation,
            captured_at: None,
            received_at: Utc::now(),
            published_at: Utc::now(),
            deadline: None,
            timings_ms: Default::default(),
        };
        Envelope::new(body).with_header(META_HEADER, serde_json::to_string(&meta).unwrap())
    }

    async fn next(events: &mut Events, within_ms: u64) -> Option<Envelope> {
        tokio::time::timeout(Duration::from_millis(within_ms), events.next()).await.ok().flatten()
    }

    fn tap(interval_ms: u64) -> (SharedBroker, SharedBroker, Arc<Metrics>) {
        let inner: SharedBroker = Arc::new(MemoryBroker::new(|_| 100, 3));
        let mut config = Config::default();
        (config.dashboard.dashboard_preview_interval_ms, config.dashboard.dashboard_preview_max_bytes) = (interval_ms, 8);
        let metrics = Arc::new(Metrics::new());
        (inner.clone(), PreviewTap::wrap(inner, &config, metrics.clone()), metrics)
    }

    #[tokio::test]
    async fn one_preview_per_station_and_interval_and_none_for_ingest() {
        let (inner, tap, metrics) = tap(60_000);
        let mut all = inner.subscribe_events(&["#"]).await.unwrap();
        let mut ingest_side = tap.subscribe_events(&[RESULT_EVENTS]).await.unwrap();

        tap.publish(WorkQueue::Frames, frame("a", b"\xFF\xD8jpg1")).await.unwrap();
        tap.publish(WorkQueue::Frames, frame("a", b"\xFF\xD8jpg2")).await.unwrap();
        tap.publish(WorkQueue::Frames, frame("b", b"\xFF\xD8too-large, not a JPEG")).await.unwrap();
        tap.publish(WorkQueue::Frames, frame("c", b"\xFF\xD8jpg3")).await.unwrap();
        assert_eq!(inner.depth(WorkQueue::Frames).await.unwrap(), 4, "every frame is published");

        let first = next(&mut all, 300).await.expect("a preview for station a");
        assert!(is_preview(&first));
        assert_eq!(&first.body[..], b"\xFF\xD8jpg1");
        let second = next(&mut all, 300).await.expect("a preview for station c");
        assert_eq!(&second.body[..], b"\xFF\xD8jpg3");
        assert!(next(&mut all, 300).await.is_none(), "a's second frame waits for its interval; b does not decode");

        inner.publish_event("result.a", Envelope::new("{}")).await.unwrap();
        let seen = next(&mut ingest_side, 300).await.expect("results still reach ingest");
        assert_eq!(&seen.body[..], b"{}");
        assert!(next(&mut ingest_side, 300).await.is_none());
        let count = |o: &str| metrics.dashboard_previews_total.with_label_values(&[o]).get();
        assert_eq!((count("sent"), count("undecodable")), (2, 1));
    }

    #[tokio::test]
    async fn the_last_frame_of_a_burst_is_sent_when_the_interval_ends() {
        let (inner, tap, metrics) = tap(200);
        let mut all = inner.subscribe_events(&[PREVIEW_EVENTS]).await.unwrap();
        for body in [b"\xFF\xD8one", b"\xFF\xD8two", b"\xFF\xD8thr"] {
            tap.publish(WorkQueue::Frames, frame("a", body)).await.unwrap();
        }
        assert_eq!(&next(&mut all, 100).await.unwrap().body[..], b"\xFF\xD8one", "the first goes at once");
        assert!(next(&mut all, 50).await.is_none(), "the rest wait for the interval");
        assert_eq!(&next(&mut all, 400).await.unwrap().body[..], b"\xFF\xD8thr", "then the newest goes");
        assert!(next(&mut all, 400).await.is_none(), "and only it");
        assert_eq!(metrics.dashboard_previews_total.with_label_values(&["superseded"]).get(), 1);
    }

    /// A noisy `w`×`h` JPEG at quality 95: a large file for its size.
    fn big_jpeg(w: usize, h: usize) -> Vec<u8> {
        visionq_preprocess::encode::noise_jpeg(w, h, 95, 0x9E37_79B9)
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_previewed_downscaled() {
        let inner: SharedBroker = Arc::new(MemoryBroker::new(|_| 100, 3));
        let config = Config::default();
        assert_eq!(config.dashboard.dashboard_preview_max_bytes, 1 << 20);
        let metrics = Arc::new(Metrics::new());
        let tap = PreviewTap::wrap(inner.clone(), &config, metrics.clone());
        let mut all = inner.subscribe_events(&[PREVIEW_EVENTS]).await.unwrap();

        let big = big_jpeg(3000, 2000);
        assert!(big.len() > 1 << 20, "{} bytes", big.len());
        tap.publish(WorkQueue::Frames, turned_frame("cam12mp", big, 1)).await.unwrap();
        let preview = next(&mut all, 10_000).await.expect("a preview of the large frame");
        let header = turbojpeg::read_header(&preview.body).expect("the preview is a JPEG");
        assert_eq!((header.width, header.height), (640, 427), "640 px on the long side, aspect kept");
        assert!(preview.body.len() < 200 * 1024, "the preview is small: {} bytes", preview.body.len());

        // A frame turned by its EXIF orientation is previewed turned, as its boxes are.
        tap.publish(WorkQueue::Frames, turned_frame("phone", big_jpeg(400, 300), 6)).await.unwrap();
        let preview = next(&mut all, 10_000).await.expect("a preview of the turned frame");
        let header = turbojpeg::read_header(&preview.body).unwrap();
        assert_eq!((header.width, header.height), (300, 400));
        let count = |o: &str| metrics.dashboard_previews_total.with_label_values(&[o]).get();
        assert_eq!((count("downscaled"), count("too_large")), (2, 0));
    }
}
