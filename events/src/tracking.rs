//! Tracking, lines and zones (issue 18): a small IoU tracker per station, run on
//! the stations a `[[line]]` or `[[zone]]` is drawn on, in the results consumer
//! (where every result of the process passes once, in order per station).
//!
//! The tracker: a detection continues the track of the same class whose last box
//! overlaps it most (IoU at least `track_iou`), greedily, best pairs first; the
//! others start new tracks; a track not seen for `track_max_gap_s` is let go. No
//! motion model: at a camera's frame rate consecutive boxes of one object overlap,
//! and a maintained crate with a Kalman-filter SORT (`similari`) pulls in a
//! geometry and linear-algebra stack for what these counts need; a missed frame or
//! two is covered by the gap. A move of a track's anchor from one frame to the next
//! that crosses a line is a crossing; an anchor coming into or leaving a zone is an
//! entry or an exit (with the dwell time).
//!
//! Order: a station's frames are tracked in the order of their time (captured, else
//! received); a result older than the last one tracked for its station (a frame
//! that overtook another between infer replicas) is stored without track ids rather
//! than tracked backwards. State lives in memory: a restart starts new tracks.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use visionq_contract::config::listed;
use visionq_contract::message::box_iou;
use visionq_contract::track::{CountLine, TrackEvent, TrackEventKind, Zone};
use visionq_contract::{Config, FrameResult, ResultStatus};

/// One followed object.
#[derive(Debug)]
struct Track {
    id: u64,
    class_name: String,
    bbox: [f32; 4],
    last_seen: DateTime<Utc>,
    /// The zones its anchor is in, with when it came in.
    inside: HashMap<String, DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct Station {
    tracks: Vec<Track>,
    next_id: u64,
    /// The last tracked frame's time (the camera's clock, or when received).
    last_at: Option<DateTime<Utc>>,
    /// When that frame was tracked (this process's clock).
    tracked_at: Option<DateTime<Utc>>,
}

impl Station {
    /// The station's time at wall-clock `now`: its last frame's time plus the time
    /// since it was tracked, so a camera clock that lags (or a queue that holds
    /// frames) does not make the clock let every track go between two frames.
    fn time_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Some(self.last_at? + (now - self.tracked_at?).max(chrono::Duration::zero()))
    }
}

/// The lines, the zones and every tracked station's tracks.
pub struct Tracking {
    lines: Vec<CountLine>,
    zones: Vec<Zone>,
    iou: f32,
    max_gap_s: f64,
    stations: Mutex<HashMap<String, Station>>,
}

impl Tracking {
    /// The tracking `config` asks for: None without lines and zones.
    pub fn new(config: &Config) -> Option<Tracking> {
        if config.events.line.is_empty() && config.events.zone.is_empty() {
            return None;
        }
        Some(Tracking {
            lines: config.events.line.clone(),
            zones: config.events.zone.clone(),
            iou: config.events.track_iou,
            max_gap_s: config.events.track_max_gap_s,
            stations: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `config` asks for exactly this tracking (lines, zones, settings).
    pub fn same_as(&self, config: &Config) -> bool {
        self.lines == config.events.line
            && self.zones == config.events.zone
            && self.iou == config.events.track_iou
            && self.max_gap_s == config.events.track_max_gap_s
    }

    /// Whether a line or a zone is drawn on `station`.
    pub fn tracks(&self, station: &str) -> bool {
        self.lines.iter().any(|l| listed(&l.stations, station)) || self.zones.iter().any(|z| listed(&z.stations, station))
    }

    /// Tracks the detections of `results` (in their order), sets their track ids,
    /// and returns the crossings, entries and exits they make.
    pub fn observe(&self, results: &mut [FrameResult]) -> Vec<TrackEvent> {
        let mut events = Vec::new();
        let mut stations = self.stations.lock().unwrap_or_else(|p| p.into_inner());
        for r in results.iter_mut() {
            if r.status != ResultStatus::Ok || !self.tracks(&r.station) {
                continue;
            }
            let at = r.captured_at.unwrap_or(r.received_at);
            let st = stations.entry(r.station.clone()).or_default();
            if st.last_at.is_some_and(|last| at < last) {
                tracing::debug!(station = %r.station, frame_id = %r.frame_id, "a frame older than the last one tracked: stored untracked");
                continue;
            }
            st.last_at = Some(at);
            st.tracked_at = Some(Utc::now());
            self.let_go(&r.station, st, at, &mut events);
            self.step(st, r, at, &mut events);
        }
        events
    }

    /// Lets go of the tracks not seen for the gap by wall-clock `now` (exits from
    /// the zones they were in), for stations that sent nothing since. A station's
    /// gap is counted on its own frames' clock (see [`Station::time_at`]).
    pub fn expire(&self, now: DateTime<Utc>) -> Vec<TrackEvent> {
        let mut events = Vec::new();
        let mut stations = self.stations.lock().unwrap_or_else(|p| p.into_inner());
        for (name, st) in stations.iter_mut() {
            if let Some(t) = st.time_at(now) {
                self.let_go(name, st, t, &mut events);
            }
        }
        events
    }

    fn let_go(&self, station: &str, st: &mut Station, now: DateTime<Utc>, events: &mut Vec<TrackEvent>) {
        let max_gap = chrono::Duration::milliseconds((self.max_gap_s * 1e3) as i64);
        let (gone, kept): (Vec<Track>, Vec<Track>) = st.tracks.drain(..).partition(|t| now - t.last_seen > max_gap);
        st.tracks = kept;
        for t in gone {
            let mut inside: Vec<_> = t.inside.iter().collect();
            inside.sort();
            for (zone, since) in inside {
                events.push(TrackEvent {
                    station: station.to_string(),
                    kind: TrackEventKind::Left,
                    name: zone.clone(),
                    track_id: t.id,
                    class_name: t.class_name.clone(),
                    direction: None,
                    dwell_s: Some((t.last_seen - *since).num_milliseconds() as f64 / 1e3),
                    frame_id: None,
                    at: t.last_seen,
                });
            }
        }
    }

    fn step(&self, st: &mut Station, r: &mut FrameResult, at: DateTime<Utc>, events: &mut Vec<TrackEvent>) {
        // Best-overlapping pairs first, same class only.
        let mut pairs = Vec::new();
        for (ti, t) in st.tracks.iter().enumerate() {
            for (di, d) in r.detections.iter().enumerate() {
                if d.class_name == t.class_name {
                    let o = box_iou(&t.bbox, &d.bbox);
                    if o >= self.iou {
                        pairs.push((o, ti, di));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_of = vec![None; r.detections.len()];
        let mut taken = vec![false; st.tracks.len()];
        for (_, ti, di) in pairs {
            if !taken[ti] && track_of[di].is_none() {
                taken[ti] = true;
                track_of[di] = Some(ti);
            }
        }
        for (di, d) in r.detections.iter_mut().enumerate() {
            let ti = match track_of[di] {
                Some(ti) => ti,
                None => {
                    st.next_id += 1;
                    st.tracks.push(Track {
                        id: st.next_id,
                        class_name: d.class_name.clone(),
                        bbox: d.bbox,
                        last_seen: at,
                        inside: HashMap::new(),
                    });
                    st.tracks.len() - 1
                }
            };
            let t = &mut st.tracks[ti];
            let born = track_of[di].is_none();
            let event = |kind, name: &str, direction, dwell_s| TrackEvent {
                station: r.station.clone(),
                kind,
                name: name.to_string(),
                track_id: t.id,
                class_name: d.class_name.clone(),
                direction,
                dwell_s,
                frame_id: Some(r.frame_id),
                at,
            };
            if !born {
                for line in self.lines.iter().filter(|l| l.counts(&r.station, d)) {
                    if let Some(dir) = line.crossing(line.anchor.of(&t.bbox), line.anchor.of(&d.bbox)) {
                        events.push(event(TrackEventKind::Crossed, &line.name, Some(dir), None));
                    }
                }
            }
            for zone in self.zones.iter().filter(|z| z.counts(&r.station, d)) {
                let now_in = zone.contains(zone.anchor.of(&d.bbox));
                match (t.inside.get(&zone.name).copied(), now_in) {
                    (None, true) => {
                        events.push(event(TrackEventKind::Entered, &zone.name, None, None));
                        t.inside.insert(zone.name.clone(), at);
                    }
                    (Some(since), false) => {
                        let dwell = (at - since).num_milliseconds() as f64 / 1e3;
                        events.push(event(TrackEventKind::Left, &zone.name, None, Some(dwell)));
                        t.inside.remove(&zone.name);
                    }
                    _ => {}
                }
            }
            t.bbox = d.bbox;
            t.last_seen = at;
            d.track_id = Some(t.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use visionq_contract::Detection;
    use visionq_contract::track::{Anchor, Direction};

    fn config() -> Config {
        let mut config = Config::default();
        config.events.line = vec![CountLine {
            name: "door".into(),
            stations: vec!["cam".into()],
            from: [0.5, 0.0],
            to: [0.5, 1.0],
            classes: vec!["dog".into()],
            anchor: Anchor::Center,
        }];
        config.events.zone = vec![Zone {
            name: "bay".into(),
            stations: vec![],
            polygon: vec![[0.6, 0.0], [1.0, 0.0], [1.0, 1.0], [0.6, 1.0]],
            classes: vec![],
            anchor: Anchor::Center,
        }];
        config
    }

    fn frame(station: &str, t: i64, boxes: &[(&str, f32)]) -> FrameResult {
        let at = DateTime::from_timestamp_millis(1_700_000_000_000 + t).unwrap();
        FrameResult {
            frame_id: uuid::Uuid::now_v7(),
            station: station.into(),
            status: ResultStatus::Ok,
            error: None,
            image: visionq_contract::message::ImageSize { width: 10, height: 10 },
            model: Default::default(),
            detections: boxes
                .iter()
                .map(|(c, x)| Detection {
                    class_id: 0,
                    class_name: (*c).into(),
                    score: 0.9,
                    bbox: [*x, 0.4, x + 0.2, 0.6],
                    box_px: [0.0; 4],
                    track_id: None,
                    classification: None,
                    text: None,
                })
                .collect(),
            decision: None,
            review: None,
            timings_ms: Default::default(),
            batch_size: None,
            captured_at: Some(at),
            received_at: at,
            completed_at: at,
        }
    }

    #[test]
    fn a_dog_walking_right_keeps_its_id_crosses_once_and_visits_the_zone() {
        let t = Tracking::new(&config()).unwrap();
        let mut frames: Vec<FrameResult> = (0..8).map(|i| frame("cam", i * 100, &[("dog", 0.2 + 0.08 * i as f32)])).collect();
        let events = t.observe(&mut frames);
        let ids: Vec<_> = frames.iter().map(|f| f.detections[0].track_id).collect();
        assert!(ids.iter().all(|id| *id == Some(1)), "{ids:?}");
        let crossed: Vec<_> = events.iter().filter(|e| e.kind == TrackEventKind::Crossed).collect();
        assert_eq!(crossed.len(), 1, "{events:?}");
        assert_eq!((crossed[0].name.as_str(), crossed[0].direction), ("door", Some(Direction::Out)));
        assert!(events.iter().any(|e| e.kind == TrackEventKind::Entered && e.name == "bay"));
        // The frames' clock is years behind this one (a camera's clock, a queue):
        // the wall clock alone lets nothing go within the gap.
        assert!(t.expire(Utc::now()).is_empty(), "still within the gap on the station's clock");
        // Lost in the zone: let go after the gap, with its dwell time.
        let left = t.expire(Utc::now() + chrono::Duration::seconds(3));
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].kind, left[0].name.as_str()), (TrackEventKind::Left, "bay"));
        assert!(left[0].dwell_s.unwrap() > 0.0);
    }

    #[test]
    fn two_objects_keep_apart_an_old_frame_is_not_tracked_and_other_stations_are_left_alone() {
        let t = Tracking::new(&config()).unwrap();
        let mut frames = vec![
            frame("cam", 0, &[("dog", 0.1), ("cat", 0.1), ("dog", 0.6)]),
            frame("cam", 100, &[("dog", 0.62), ("dog", 0.12), ("cat", 0.11)]),
            frame("cam", 50, &[("dog", 0.1)]),
            frame("elsewhere", 0, &[("dog", 0.1)]),
        ];
        t.observe(&mut frames);
        let ids = |f: &FrameResult| f.detections.iter().map(|d| d.track_id).collect::<Vec<_>>();
        assert_eq!(ids(&frames[0]), vec![Some(1), Some(2), Some(3)]);
        assert_eq!(ids(&frames[1]), vec![Some(3), Some(1), Some(2)], "each box continues its own track");
        assert_eq!(ids(&frames[2]), vec![None], "older than the last frame tracked");
        // `bay` has no station list, so `elsewhere` is tracked too (a zone on every station).
        assert_eq!(ids(&frames[3]), vec![Some(1)]);
        let mut only_door = config();
        only_door.events.zone = vec![];
        let t = Tracking::new(&only_door).unwrap();
        let mut other = vec![frame("elsewhere", 0, &[("dog", 0.1)])];
        t.observe(&mut other);
        assert_eq!(ids(&other[0]), vec![None], "no line or zone on this station");
    }
}
