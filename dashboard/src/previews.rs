//! The results side of the frame previews: per station, the latest frame whose
//! result is known (JPEG and result together, so the boxes drawn are that frame's
//! own), counters and last-seen time. Bounded: at most `dashboard_max_stations`
//! stations (the one seen longest ago is forgotten first) and
//! `dashboard_store_max_bytes` of JPEG (the pictures of the stations seen longest
//! ago are dropped first).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;
use visionq_contract::config::SELFTEST_STATION;
use visionq_contract::message::elapsed_ms;
use visionq_contract::topology::{META_HEADER, PREVIEW_EVENTS, RESULT_EVENTS};
use visionq_contract::{Config, FrameMeta, FrameResult, Metrics, ResultStatus};
use visionq_queue::{Envelope, QueueError, SharedBroker};

/// Previews waiting for their result, and results waiting for their preview, per
/// station (they may arrive in either order).
const PENDING_PER_STATION: usize = 4;

struct Pending {
    frame_id: Uuid,
    received_at: DateTime<Utc>,
    jpeg: Bytes,
}

struct Shown {
    result: Arc<FrameResult>,
    /// The result as JSON, made once. Through text, not `to_value`, so scores read
    /// exactly as in every other API (`to_value` widens f32 to f64: 0.7000991106…).
    json: Value,
    jpeg: Bytes,
}

struct Station {
    frames: u64,
    errors: u64,
    detections: u64,
    last_seen: DateTime<Utc>,
    latest: Option<Arc<FrameResult>>,
    pending: VecDeque<Pending>,
    recent: VecDeque<Arc<FrameResult>>,
    shown: Option<Shown>,
    /// Store version of this station's last change.
    version: u64,
}

impl Station {
    fn new(seen: DateTime<Utc>) -> Self {
        Station {
            frames: 0,
            errors: 0,
            detections: 0,
            last_seen: seen,
            latest: None,
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            shown: None,
            version: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.pending.iter().map(|p| p.jpeg.len()).sum::<usize>() + self.shown.as_ref().map_or(0, |s| s.jpeg.len())
    }

    /// Shows `jpeg` with `result` unless a newer frame is already shown.
    fn show(&mut self, result: Arc<FrameResult>, jpeg: Bytes) {
        if self.shown.as_ref().is_some_and(|s| s.result.received_at > result.received_at) {
            return;
        }
        let text = serde_json::to_string(&*result).expect("result serialises");
        let json = serde_json::from_str(&text).expect("a result's JSON parses");
        self.shown = Some(Shown { result, json, jpeg });
    }
}

#[derive(Default)]
struct Inner {
    stations: HashMap<String, Station>,
    /// Stations forgotten, with the version at which they were.
    removed: VecDeque<(u64, String)>,
    version: u64,
    bytes: usize,
}

/// What a client was already sent: the store version and each station's preview frame.
#[derive(Default)]
pub struct Cursor {
    pub version: u64,
    previews: HashMap<String, Uuid>,
}

pub struct Previews {
    inner: Mutex<Inner>,
    max_stations: usize,
    max_bytes: usize,
    max_preview_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Previews {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        Previews {
            inner: Mutex::new(Inner::default()),
            max_stations: config.dashboard.dashboard_max_stations.max(1),
            max_bytes: config.dashboard.dashboard_store_max_bytes,
            max_preview_bytes: config.dashboard.dashboard_preview_max_bytes,
            metrics,
        }
    }

    /// Follows the events of every process until they end: frame previews and
    /// completed results. A result pushed again with its review is an old frame's
    /// final word, not the station's latest: the tiles leave it out.
    pub async fn follow(self: Arc<Self>, broker: &SharedBroker) -> Result<(), QueueError> {
        let mut events = broker.subscribe_events(&[PREVIEW_EVENTS, RESULT_EVENTS]).await?;
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if crate::is_preview(&e) {
                    self.on_preview_event(&e);
                } else if let Ok(r) = serde_json::from_slice::<FrameResult>(&e.body)
                    && r.review.is_none()
                {
                    self.result(&Arc::new(r));
                }
            }
        });
        Ok(())
    }

    /// Takes a preview event (see [`crate::is_preview`]); ignores malformed ones.
    pub fn on_preview_event(&self, e: &Envelope) {
        let meta = e.header(META_HEADER).and_then(|raw| serde_json::from_str::<FrameMeta>(raw).ok());
        let jpeg_ok = e.body.starts_with(&[0xFF, 0xD8]) && e.body.len() <= self.max_preview_bytes;
        match meta {
            Some(meta) if jpeg_ok => self.preview(&meta, e.body.clone()),
            _ => self.metrics.dashboard_previews_total.with_label_values(&["rejected"]).inc(),
        }
    }

    /// A sampled frame: shown at once if its result is here, else kept until it is.
    /// The self-test's frames are not a station's: they are not shown.
    pub fn preview(&self, meta: &FrameMeta, jpeg: Bytes) {
        if meta.station == SELFTEST_STATION {
            return;
        }
        self.metrics.dashboard_previews_total.with_label_values(&["stored"]).inc();
        let mut inner = self.inner.lock().expect("previews lock");
        let version = self.touch(&mut inner, &meta.station, meta.received_at);
        let st = inner.stations.get_mut(&meta.station).expect("touched");
        let before = st.bytes();
        st.version = version;
        if let Some(r) = st.recent.iter().find(|r| r.frame_id == meta.frame_id).cloned() {
            st.show(r, jpeg);
        } else {
            if st.pending.len() >= PENDING_PER_STATION {
                st.pending.pop_front();
            }
            st.pending.push_back(Pending { frame_id: meta.frame_id, received_at: meta.received_at, jpeg });
        }
        let after = st.bytes();
        inner.bytes = inner.bytes + after - before;
        self.settle_bytes(&mut inner, &meta.station);
    }

    /// A completed result: counts it, and shows its frame if that was previewed.
    pub fn result(&self, r: &Arc<FrameResult>) {
        if r.station == SELFTEST_STATION {
            return;
        }
        let mut inner = self.inner.lock().expect("previews lock");
        let version = self.touch(&mut inner, &r.station, r.received_at);
        let st = inner.stations.get_mut(&r.station).expect("touched");
        let before = st.bytes();
        st.version = version;
        st.frames += 1;
        st.detections += r.detections.len() as u64;
        if r.status != ResultStatus::Ok {
            st.errors += 1;
        }
        if st.latest.as_ref().is_none_or(|l| l.received_at <= r.received_at) {
            st.latest = Some(r.clone());
        }
        if let Some(i) = st.pending.iter().position(|p| p.frame_id == r.frame_id) {
            let p = st.pending.remove(i).expect("position is valid");
            // Previews older than this one lost their chance to be shown.
            st.pending.retain(|q| q.received_at > p.received_at);
            st.show(r.clone(), p.jpeg);
        } else {
            if st.recent.len() >= PENDING_PER_STATION {
                st.recent.pop_front();
            }
            st.recent.push_back(r.clone());
        }
        let after = st.bytes();
        inner.bytes = inner.bytes + after - before;
        self.settle_bytes(&mut inner, &r.station);
    }

    /// Makes sure `station` exists (forgetting the station seen longest ago if the
    /// store is full), marks it seen, and returns the new store version.
    fn touch(&self, inner: &mut Inner, station: &str, seen: DateTime<Utc>) -> u64 {
        inner.version += 1;
        let version = inner.version;
        if !inner.stations.contains_key(station) {
            if inner.stations.len() >= self.max_stations {
                let oldest = inner.stations.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone());
                if let Some(name) = oldest {
                    let gone = inner.stations.remove(&name).expect("present");
                    inner.bytes -= gone.bytes();
                    if inner.removed.len() >= self.max_stations {
                        inner.removed.pop_front();
                    }
                    inner.removed.push_back((version, name));
                }
            }
            inner.stations.insert(station.to_string(), Station::new(seen));
        }
        let st = inner.stations.get_mut(station).expect("inserted");
        st.last_seen = st.last_seen.max(seen);
        version
    }

    /// Drops pictures until the store is within its bound: pending previews first,
    /// then shown frames, of the stations seen longest ago (the station just updated
    /// last).
    fn settle_bytes(&self, inner: &mut Inner, station: &str) {
        while inner.bytes > self.max_bytes {
            let victim = inner
                .stations
                .iter()
                .filter(|(_, s)| s.bytes() > 0)
                .min_by_key(|(name, s)| (name.as_str() == station, s.pending.is_empty(), s.last_seen))
                .map(|(k, _)| k.clone());
            let Some(name) = victim else { break };
            let st = inner.stations.get_mut(&name).expect("present");
            let freed = if let Some(p) = st.pending.pop_front() { p.jpeg.len() } else { st.shown.take().map_or(0, |s| s.jpeg.len()) };
            inner.bytes -= freed;
        }
        self.metrics.dashboard_preview_store_bytes.set(inner.bytes as f64);
    }

    /// The JPEG shown for `station` and its frame id; only that frame's when
    /// `frame_id` is given (a newer one has replaced it otherwise).
    pub fn latest_jpeg(&self, station: &str, frame_id: Option<Uuid>) -> Option<(Uuid, Bytes)> {
        let inner = self.inner.lock().expect("previews lock");
        let shown = inner.stations.get(station)?.shown.as_ref()?;
        let id = shown.result.frame_id;
        frame_id.is_none_or(|f| f == id).then(|| (id, shown.jpeg.clone()))
    }

    /// The stations changed since `cursor` (all of them for a fresh cursor), as the
    /// page reads them, and the stations forgotten since; advances `cursor`. A shown
    /// frame's result is sent once per client.
    pub fn changes(&self, cursor: &mut Cursor) -> (Vec<Value>, Vec<String>) {
        let inner = self.inner.lock().expect("previews lock");
        let now = Utc::now();
        let mut out = Vec::new();
        for (name, st) in &inner.stations {
            if st.version <= cursor.version {
                continue;
            }
            let latest = st.latest.as_ref().map(|r| {
                json!({
                    "frame_id": r.frame_id,
                    "status": r.status,
                    "error": r.error,
                    "detections": r.detections.len(),
                    "latency_ms": elapsed_ms(r.received_at, r.completed_at),
                    "completed_at": r.completed_at,
                })
            });
            let preview = st.shown.as_ref().map(|s| {
                let id = s.result.frame_id;
                let mut p = json!({
                    "frame_id": id,
                    "url": format!("/v1/stations/{name}/latest.jpg?frame_id={id}"),
                });
                if cursor.previews.get(name) != Some(&id) {
                    p["result"] = s.json.clone();
                }
                p
            });
            if let Some(s) = &st.shown {
                cursor.previews.insert(name.clone(), s.result.frame_id);
            }
            out.push(json!({
                "station": name,
                "frames": st.frames,
                "errors": st.errors,
                "detections": st.detections,
                "last_seen": st.last_seen,
                "age_ms": elapsed_ms(st.last_seen, now),
                "latest": latest,
                "preview": preview,
            }));
        }
        let removed: Vec<String> = inner.removed.iter().filter(|(v, _)| *v > cursor.version).map(|(_, n)| n.clone()).collect();
        for name in &removed {
            cursor.previews.remove(name);
        }
        cursor.version = inner.version;
        (out, removed)
    }

    /// Bytes of JPEG held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("previews lock").bytes
    }

    pub fn station_count(&self) -> usize {
        self.inner.lock().expect("previews lock").stations.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use visionq_contract::ModelInfo;
    use visionq_contract::message::ImageSize;

    fn meta(station: &str, secs: i64) -> FrameMeta {
        let t = DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap();
        FrameMeta {
            frame_id: Uuid::now_v7(),
            station: station.into(),
            width: 4,
            height: 3,
            orientation: 1,
            captured_at: None,
            received_at: t,
            published_at: t,
            deadline: None,
            timings_ms: Default::default(),
        }
    }

    fn result(m: &FrameMeta) -> Arc<FrameResult> {
        Arc::new(FrameResult {
            frame_id: m.frame_id,
            station: m.station.clone(),
            status: ResultStatus::Ok,
            error: None,
            image: ImageSize { width: m.width, height: m.height },
            model: ModelInfo::default(),
            detections: Vec::new(),
            decision: None,
            review: None,
            timings_ms: Default::default(),
            batch_size: None,
            captured_at: None,
            received_at: m.received_at,
            completed_at: m.received_at,
        })
    }

    fn jpeg(n: usize) -> Bytes {
        let mut v = vec![0u8; n];
        v[0] = 0xFF;
        v[1] = 0xD8;
        Bytes::from(v)
    }

    fn store(max_stations: usize, max_bytes: usize) -> Previews {
        let mut c = Config::default();
        (c.dashboard.dashboard_max_stations, c.dashboard.dashboard_store_max_bytes) = (max_stations, max_bytes);
        Previews::new(&c, Arc::new(Metrics::new()))
    }

    #[test]
    fn pairs_a_preview_with_its_result_in_either_order() {
        let p = store(10, 1 << 20);
        let (a, b) = (meta("s", 1), meta("s", 2));
        p.preview(&a, jpeg(10));
        assert!(p.latest_jpeg("s", None).is_none(), "nothing is shown before its result");
        p.result(&result(&a));
        assert_eq!(p.latest_jpeg("s", None).unwrap().0, a.frame_id);
        p.result(&result(&b));
        p.preview(&b, jpeg(20));
        let (id, bytes) = p.latest_jpeg("s", None).unwrap();
        assert_eq!((id, bytes.len()), (b.frame_id, 20));
        assert!(p.latest_jpeg("s", Some(a.frame_id)).is_none(), "a replaced frame is gone");
    }

    #[test]
    fn a_client_gets_each_shown_result_once_and_only_changes() {
        let p = store(10, 1 << 20);
        let a = meta("s", 1);
        p.preview(&a, jpeg(10));
        p.result(&result(&a));
        p.result(&result(&meta("t", 1)));
        let mut cursor = Cursor::default();
        let (all, _) = p.changes(&mut cursor);
        assert_eq!(all.len(), 2);
        let s = all.iter().find(|v| v["station"] == "s").unwrap();
        assert_eq!(s["frames"], 1);
        assert_eq!(s["preview"]["result"]["frame_id"], json!(a.frame_id));
        assert!(p.changes(&mut cursor).0.is_empty(), "nothing changed since");
        p.result(&result(&meta("s", 2)));
        let (changed, _) = p.changes(&mut cursor);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0]["frames"], 2);
        assert!(changed[0]["preview"].get("result").is_none(), "the shown result was sent already");
    }

    #[test]
    fn bounded_in_stations_and_bytes() {
        let p = store(2, 100);
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            let m = meta(s, i as i64);
            p.preview(&m, jpeg(40));
            p.result(&result(&m));
        }
        assert_eq!(p.station_count(), 2, "the station seen longest ago is forgotten");
        assert!(p.latest_jpeg("a", None).is_none());
        let mut cursor = Cursor::default();
        let (_, removed) = p.changes(&mut cursor);
        assert_eq!(removed, vec!["a".to_string()]);
        let m = meta("c", 5);
        p.preview(&m, jpeg(40));
        assert!(p.bytes() <= 100, "{} bytes held", p.bytes());
        p.result(&result(&m));
        assert!(p.bytes() <= 100);
        assert_eq!(p.latest_jpeg("c", None).unwrap().0, m.frame_id, "the newest picture is kept");
        assert!(p.latest_jpeg("b", None).is_none(), "the oldest station's picture went first");
    }

    #[test]
    fn malformed_preview_events_are_ignored() {
        let p = store(10, 1 << 20);
        p.on_preview_event(&Envelope::new("not a jpeg").with_header(META_HEADER, "{}"));
        p.on_preview_event(&Envelope::new(jpeg(10)));
        assert_eq!(p.station_count(), 0);
    }
}
