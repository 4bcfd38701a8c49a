//! Counting lines and zones (`[[line]]` and `[[zone]]` tables in the config file,
//! issue 18): where in a station's picture a tracked object is counted crossing or
//! entering, in coordinates normalised to 0–1 by the image size (x right, y down),
//! and what such a crossing or visit is as an event. The `events` crate tracks the
//! objects and applies these; this is their shape and their geometry, which is pure.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Detection;
use crate::names::listed;

/// The point of a box that stands for the object.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// The middle of the box's bottom edge: where a person or a vehicle touches
    /// the floor (the default).
    #[default]
    Bottom,
    /// The box's centre: for objects seen from above, parts on a belt.
    Center,
}

impl Anchor {
    /// The anchor point of a normalised `[x1, y1, x2, y2]` box.
    pub fn of(self, b: &[f32; 4]) -> [f32; 2] {
        let x = (b[0] + b[2]) / 2.0;
        match self {
            Anchor::Bottom => [x, b[3]],
            Anchor::Center => [x, (b[1] + b[3]) / 2.0],
        }
    }
}

/// One `[[line]]` table: a counting line (a tripwire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountLine {
    /// 1-64 of `[A-Za-z0-9._-]`, unique among lines and zones.
    pub name: String,
    /// The stations it is drawn on (empty: every station).
    #[serde(default)]
    pub stations: Vec<String>,
    /// One end, `[x, y]` in 0–1.
    pub from: [f32; 2],
    /// The other end. A crossing is `in` when the object passes to the right of the
    /// line as seen walking from `from` to `to` in the picture (for a line drawn
    /// left to right: moving down the picture), `out` the other way.
    pub to: [f32; 2],
    /// The classes counted (empty: any class).
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default)]
    pub anchor: Anchor,
}

/// One `[[zone]]` table: a polygon objects enter and leave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// 1-64 of `[A-Za-z0-9._-]`, unique among lines and zones.
    pub name: String,
    /// The stations it is drawn on (empty: every station).
    #[serde(default)]
    pub stations: Vec<String>,
    /// Its corners, `[x, y]` in 0–1, at least 3, in order around it.
    pub polygon: Vec<[f32; 2]>,
    /// The classes counted (empty: any class).
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default)]
    pub anchor: Anchor,
}

/// Which way a line was crossed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// What happened to a tracked object.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrackEventKind {
    /// It crossed a line (`direction` says which way).
    Crossed,
    /// Its anchor came into a zone.
    Entered,
    /// Its anchor left a zone, or the object was lost inside it (`dwell_s` says
    /// how long it stayed).
    Left,
}

impl TrackEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackEventKind::Crossed => "crossed",
            TrackEventKind::Entered => "entered",
            TrackEventKind::Left => "left",
        }
    }
}

/// A crossing, an entry or an exit: what a `track` event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrackEvent {
    pub station: String,
    pub kind: TrackEventKind,
    /// The line's or the zone's name.
    pub name: String,
    /// The object's track id (per station; see docs/EVENTS.md for how long it lives).
    pub track_id: u64,
    pub class_name: String,
    /// `crossed`: which way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// `left`: seconds between entering and leaving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<f64>,
    /// The frame it was seen in (none when a lost object is let go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_id: Option<Uuid>,
    /// The frame's time (captured, else received).
    pub at: DateTime<Utc>,
}

/// Whether a line or zone drawn on `stations` for `classes` (empty: all) counts `d`
/// at `station`.
fn counted(stations: &[String], classes: &[String], station: &str, d: &Detection) -> bool {
    listed(stations, station) && listed(classes, &d.class_name)
}

fn cross(a: [f32; 2], b: [f32; 2], p: [f32; 2]) -> f32 {
    (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
}

impl CountLine {
    /// Whether the line counts `d` at `station`.
    pub fn counts(&self, station: &str, d: &Detection) -> bool {
        counted(&self.stations, &self.classes, station, d)
    }

    /// The crossing of a move from `p` to `q`, if the move crosses the line segment
    /// (touching it without passing is not a crossing).
    pub fn crossing(&self, p: [f32; 2], q: [f32; 2]) -> Option<Direction> {
        let (sp, sq) = (cross(self.from, self.to, p), cross(self.from, self.to, q));
        if sp == 0.0 || sq == 0.0 || (sp > 0.0) == (sq > 0.0) {
            return None;
        }
        // The move's own line must separate the line's ends, or it passes beside.
        let (sa, sb) = (cross(p, q, self.from), cross(p, q, self.to));
        if (sa > 0.0) == (sb > 0.0) && sa != 0.0 && sb != 0.0 {
            return None;
        }
        Some(if sq > 0.0 { Direction::In } else { Direction::Out })
    }

    /// Why this line cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let name = &self.name;
        if let Some(p) = crate::names::named_table_problem("line", name, &self.stations) {
            return Some(p);
        }
        if !in_picture(&self.from) || !in_picture(&self.to) {
            return Some(format!("line `{name}`: `from` and `to` are [x, y] with both in 0-1"));
        }
        if self.from == self.to {
            return Some(format!("line `{name}`: `from` and `to` are the same point"));
        }
        None
    }
}

fn in_picture(p: &[f32; 2]) -> bool {
    p.iter().all(|v| (0.0..=1.0).contains(v))
}

impl Zone {
    /// Whether the zone counts `d` at `station`.
    pub fn counts(&self, station: &str, d: &Detection) -> bool {
        counted(&self.stations, &self.classes, station, d)
    }

    /// Whether `p` is inside the polygon (even-odd rule).
    pub fn contains(&self, p: [f32; 2]) -> bool {
        let mut inside = false;
        let n = self.polygon.len();
        for i in 0..n {
            let (a, b) = (self.polygon[i], self.polygon[(i + n - 1) % n]);
            if (a[1] > p[1]) != (b[1] > p[1]) && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0] {
                inside = !inside;
            }
        }
        inside
    }

    /// Why this zone cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let name = &self.name;
        if let Some(p) = crate::names::named_table_problem("zone", name, &self.stations) {
            return Some(p);
        }
        if self.polygon.len() < 3 || self.polygon.len() > 64 {
            return Some(format!("zone `{name}`: `polygon` needs 3 to 64 corners"));
        }
        if !self.polygon.iter().all(in_picture) {
            return Some(format!("zone `{name}`: every corner is [x, y] with both in 0-1"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(from: [f32; 2], to: [f32; 2]) -> CountLine {
        CountLine { name: "l".into(), stations: vec![], from, to, classes: vec![], anchor: Anchor::Bottom }
    }

    #[test]
    fn a_move_across_the_segment_is_one_crossing_with_its_direction() {
        // A vertical line drawn top to bottom: its right side (walking down) is the
        // picture's left.
        let l = line([0.5, 0.0], [0.5, 1.0]);
        assert_eq!(l.crossing([0.4, 0.5], [0.6, 0.5]), Some(Direction::Out));
        assert_eq!(l.crossing([0.6, 0.5], [0.4, 0.5]), Some(Direction::In));
        assert_eq!(l.crossing([0.4, 0.5], [0.45, 0.5]), None, "not across");
        assert_eq!(l.crossing([0.4, 0.5], [0.5, 0.5]), None, "onto the line is not across");
        // A line drawn left to right: moving down the picture is `in`.
        let h = line([0.2, 0.5], [0.8, 0.5]);
        assert_eq!(h.crossing([0.5, 0.4], [0.5, 0.6]), Some(Direction::In));
        assert_eq!(h.crossing([0.9, 0.4], [0.9, 0.6]), None, "beside the segment's end");
    }

    #[test]
    fn a_polygon_contains_what_is_inside_it() {
        let z = Zone {
            name: "z".into(),
            stations: vec![],
            polygon: vec![[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]],
            classes: vec![],
            anchor: Anchor::Center,
        };
        assert!(z.contains([0.3, 0.3]));
        assert!(!z.contains([0.6, 0.3]));
        assert!(!z.contains([0.3, 0.05]));
        assert!(z.problem().is_none());
        let bad = Zone { polygon: vec![[0.1, 0.1], [0.5, 0.1]], ..z };
        assert!(bad.problem().unwrap().contains("3 to 64"));
        assert!(line([0.1, 0.1], [0.1, 0.1]).problem().unwrap().contains("same point"));
        assert!(line([0.1, 0.1], [1.5, 0.1]).problem().unwrap().contains("0-1"));
    }
}
