//! The store trait every database implements (the choice of one by URL is `open.rs`;
//! the migrations' runner, `migrate.rs`).
//!
//! One logical schema in every dialect (PostgreSQL, SQLite, SQL Server), applied by
//! versioned migrations at start:
//! - `stations`: every station that has a stored result (first and last seen).
//! - `frames`: one row per frame id — station, status and error reason, image size,
//!   model name and version, per-stage latencies (`timings_ms`, a JSON object of
//!   milliseconds by stage), `batch_size` (frames in the pass that ran it; from
//!   version 5), `captured_at` (station clock, optional), `received_at` (ingest),
//!   `completed_at` (inference done, i.e. "inferred at"), `stored_at`.
//! - `detections`: (frame id, index) — class id and name, score, the box normalised
//!   (`x1, y1, x2, y2`) and in pixels (`x1_px, …`).
//! - `decisions`: at most one per frame id (issue 15; written in the frame's
//!   transaction, only when the frame row is new, so a redelivered result neither
//!   doubles nor replaces it) — outcome, code, class name, score, similarity,
//!   expectation reference, rule and reason; deleted with its frame.
//! - `reviews`: at most one per frame id, for frames with a decision — a reviewer's
//!   verdict, the detection reviewed, the final class name and code, who and when;
//!   deleted with its frame. A second review of a frame is refused, not stored.
//! - `expectations`: one per station — what it should see (a reference and its codes
//!   as JSON), so an expectation set over the API survives a restart.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use uuid::Uuid;
use visionq_contract::decision::{Expectation, Outcome, Review, Verdict};
use visionq_contract::{FrameResult, ResultStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(String),
    #[error("unsupported database URL `{0}`: use postgres://…, mssql://… (or an ADO connection string) or sqlite://PATH")]
    UnsupportedUrl(String),
    #[error("invalid database URL: {0}")]
    BadUrl(String),
}

/// Where a page of history ends: the last result's `received_at` and frame id.
/// Results strictly older (in `received_at DESC, frame_id DESC` order) come next.
/// On the wire it is the opaque string `<unix microseconds>_<frame id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub received_at: DateTime<Utc>,
    pub frame_id: Uuid,
}

impl Cursor {
    pub fn of(r: &FrameResult) -> Cursor {
        Cursor { received_at: r.received_at, frame_id: r.frame_id }
    }

    pub fn encode(&self) -> String {
        format!("{}_{}", self.received_at.timestamp_micros(), self.frame_id.simple())
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (t, id) = s.split_once('_')?;
        let received_at = Utc.timestamp_micros(t.parse().ok()?).single()?;
        Some(Cursor { received_at, frame_id: Uuid::parse_str(id).ok()? })
    }
}

/// A station's results, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub station: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only frames with a detection of this class (and only those detections).
    pub class: Option<String>,
    /// Only frames with a detection scoring at least this (and only those detections).
    pub min_score: Option<f32>,
    /// Only frames whose decision has this outcome.
    pub outcome: Option<Outcome>,
    /// Only results after this cursor (the previous page's last result).
    pub before: Option<Cursor>,
    pub limit: usize,
}

/// Detections per class per time bucket of a station.
#[derive(Debug, Clone)]
pub struct CountsQuery {
    pub station: String,
    /// Bucket width in seconds (buckets are aligned to the Unix epoch).
    pub interval_s: i64,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Only detections scoring at least this.
    pub min_score: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClassCount {
    /// Start of the bucket (`received_at` of the frames counted is within it).
    pub bucket: DateTime<Utc>,
    pub class_id: u32,
    pub class_name: String,
    pub count: u64,
}

/// A station the store has results of: its latest frame and how many it holds.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StationSummary {
    pub station: String,
    /// `received_at` of the station's latest frame.
    pub last_frame_at: DateTime<Utc>,
    /// Frames stored for the station (retention deletes old ones: 0 once all are gone).
    pub frames: u64,
    /// Status of the latest stored frame (none once retention deleted them all).
    pub last_status: Option<ResultStatus>,
}

/// Every station seen, its frame count and its latest frame's status (both read
/// through the index on `(station, received_at)`), in SQL that SQLite and PostgreSQL
/// both take (SQL Server's is its own).
pub(crate) const STATIONS_SQL: &str = "SELECT s.station, s.last_seen_at,
        (SELECT COUNT(*) FROM frames f WHERE f.station = s.station) AS n,
        (SELECT f.status FROM frames f WHERE f.station = s.station ORDER BY f.received_at DESC, f.frame_id DESC LIMIT 1) AS last_status
     FROM stations s ORDER BY s.station";

/// A model version's drift baseline at a station, as stored: the profile is the
/// JSON the drift monitor writes and reads ([`crate::drift`]); stores keep it as text.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBaseline {
    pub model: String,
    pub version: String,
    pub station: String,
    pub profile: String,
    pub set_at: DateTime<Utc>,
}

#[async_trait::async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// Writes results in one transaction; a frame already stored is left as it is.
    /// Returns how many were new.
    async fn write_batch(&self, results: &[FrameResult]) -> Result<usize, StoreError>;
    async fn get(&self, frame_id: Uuid) -> Result<Option<FrameResult>, StoreError>;
    async fn history(&self, q: &HistoryQuery) -> Result<Vec<FrameResult>, StoreError>;
    /// Detections per class per bucket, ordered by bucket, then class id.
    async fn counts(&self, q: &CountsQuery) -> Result<Vec<ClassCount>, StoreError>;
    /// Every station seen, by station id.
    async fn stations(&self) -> Result<Vec<StationSummary>, StoreError>;
    /// Deletes at most `max_frames` frames received before `cutoff` (with their
    /// detections) in one transaction; returns how many it deleted.
    async fn prune(&self, cutoff: DateTime<Utc>, max_frames: usize) -> Result<usize, StoreError>;
    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Stored frames decided `needs_review` and not yet reviewed (the review backlog;
    /// retention bounds it).
    async fn review_backlog(&self) -> Result<u64, StoreError>;
    /// The review queue: frames decided `needs_review` and not yet reviewed, oldest
    /// first.
    async fn review_queue(&self, q: &ReviewQuery) -> Result<Vec<FrameResult>, StoreError>;
    /// Stores `review` of a stored frame that has a decision, unless the frame has a
    /// review already; returns whether it was stored.
    async fn put_review(&self, frame_id: Uuid, review: &Review) -> Result<bool, StoreError>;
    /// Every station's stored expectation, by station id.
    async fn expectations(&self) -> Result<Vec<(String, Expectation)>, StoreError>;
    /// Stores (or replaces) `station`'s expectation.
    async fn put_expectation(&self, station: &str, expectation: &Expectation) -> Result<(), StoreError>;
    /// Deletes `station`'s expectation; returns whether there was one.
    async fn delete_expectation(&self, station: &str) -> Result<bool, StoreError>;
    /// Every stored drift baseline.
    async fn drift_baselines(&self) -> Result<Vec<StoredBaseline>, StoreError>;
    /// Stores `b` unless a baseline is stored for its model, version and station
    /// already (another replica's came first); returns the one stored.
    async fn put_drift_baseline(&self, b: &StoredBaseline) -> Result<StoredBaseline, StoreError>;
}

/// The columns of a decision row after its frame id, in every dialect.
pub(crate) const DECISION_COLUMNS: [&str; 8] =
    ["outcome", "code", "class_name", "score", "similarity", "expectation_ref", "rule", "reason"];

/// The columns of a review row after its frame id, in every dialect.
pub(crate) const REVIEW_COLUMNS: [&str; 6] = ["verdict", "detection", "class_name", "code", "reviewer", "reviewed_at"];

/// The verdict a review row holds.
pub(crate) fn verdict_of(text: &str) -> Result<Verdict, StoreError> {
    Verdict::parse(text).ok_or_else(|| StoreError::Query(format!("bad review verdict {text}")))
}

/// Counts the review backlog, in SQL every dialect takes.
pub(crate) const REVIEW_BACKLOG_SQL: &str = "SELECT COUNT(*) AS n FROM decisions x
     WHERE x.outcome = 'needs_review' AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.frame_id = x.frame_id)";

/// A page of the review queue.
#[derive(Debug, Clone, Default)]
pub struct ReviewQuery {
    /// Only this station's frames.
    pub station: Option<String>,
    /// Only frames after this one (`received_at`, frame id: the previous page's last).
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// The outcome a decision row holds.
pub(crate) fn outcome_of(text: &str) -> Result<Outcome, StoreError> {
    Outcome::parse(text).ok_or_else(|| StoreError::Query(format!("bad decision outcome {text}")))
}

/// An expectation's codes as the stores keep them (JSON).
pub(crate) fn codes_json(e: &Expectation) -> String {
    serde_json::to_string(&e.codes).expect("codes serialise")
}

pub(crate) fn expectation_of(reference: String, codes: &str) -> Result<Expectation, StoreError> {
    let codes = serde_json::from_str(codes).map_err(|e| StoreError::Query(format!("stored expectation codes: {e}")))?;
    Ok(Expectation { reference, codes })
}

pub type SharedStore = Arc<dyn ResultStore>;

/// The detections a history query shows of a result.
pub(crate) fn keep_detection(q: &HistoryQuery, class_name: &str, score: f32) -> bool {
    q.class.as_deref().is_none_or(|c| c == class_name) && q.min_score.is_none_or(|m| score >= m)
}

/// How long a server store's `ping` waits for an answer.
pub(crate) const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

pub(crate) fn ping_timed_out() -> StoreError {
    StoreError::Unavailable(format!("no answer within {} ms", PING_TIMEOUT.as_millis()))
}

/// The first occurrence of each frame id (a batch may hold a redelivered twin).
pub(crate) fn distinct(results: &[FrameResult]) -> Vec<&FrameResult> {
    let mut seen = std::collections::HashSet::new();
    results.iter().filter(|r| seen.insert(r.frame_id)).collect()
}

/// The start of the bucket of width `interval_s` seconds that holds `unix_s`.
pub(crate) fn bucket_start(unix_s: i64, interval_s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix_s.div_euclid(interval_s) * interval_s, 0).single().unwrap_or_default()
}

/// Parses an interval: `90`, `90s`, `5m`, `1h`, `1d` → seconds (at least 1).
pub fn parse_interval(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = n.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(n.checked_mul(mul)?).filter(|&v| v > 0)
}

/// What a store opened on an older schema must show once migrated (the SQLite and
/// PostgreSQL upgrade tests): `versions` (every one of the dialect's `migrations`)
/// and `tables` as read from its database, and the frame of station `cam-old`
/// stored before the upgrade.
#[cfg(test)]
pub(crate) async fn assert_upgraded(
    store: &dyn ResultStore,
    migrations: &[(i32, &str)],
    old: usize,
    (versions, tables): (&[i32], &[String]),
    frame_id: uuid::Uuid,
) {
    use visionq_contract::decision::{Expectation, Expected};
    assert_eq!(versions, migrations.iter().map(|(v, _)| *v).collect::<Vec<_>>(), "from version {old}: every version recorded");
    for t in ["frames", "detections", "stations", "decisions", "expectations", "reviews", "drift_baselines"] {
        assert!(tables.iter().any(|n| n == t), "from version {old}: table {t} in {tables:?}");
    }
    let got = store.get(frame_id).await.unwrap().expect("the old frame reads back");
    assert_eq!((got.station.as_str(), got.decision, got.review), ("cam-old", None, None));
    let stations = store.stations().await.unwrap();
    assert_eq!(stations.iter().map(|s| (s.station.as_str(), s.frames)).collect::<Vec<_>>(), [("cam-old", 1)]);
    assert_eq!(store.review_backlog().await.unwrap(), 0, "decisions and reviews are there");
    let e = Expectation { reference: "ref".into(), codes: vec![Expected { code: "A".into(), quantity: None }] };
    store.put_expectation("cam-old", &e).await.unwrap();
    assert_eq!(store.expectations().await.unwrap().len(), 1);
    // Drift baselines: the first one stored for a key stays; a second is answered with it.
    let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    let first = StoredBaseline {
        model: "m".into(),
        version: "1".into(),
        station: "cam-old".into(),
        profile: "{\"a\":1}".into(),
        set_at: at(0),
    };
    assert_eq!(store.put_drift_baseline(&first).await.unwrap(), first);
    let second = StoredBaseline { profile: "{\"a\":2}".into(), set_at: at(5), ..first.clone() };
    assert_eq!(store.put_drift_baseline(&second).await.unwrap(), first, "from version {old}: the first baseline stays");
    let other = StoredBaseline { version: "2".into(), ..second.clone() };
    assert_eq!(store.put_drift_baseline(&other).await.unwrap(), other);
    assert_eq!(store.drift_baselines().await.unwrap(), vec![first, other]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor { received_at: Utc.timestamp_micros(1_700_000_000_123_456).unwrap(), frame_id: Uuid::now_v7() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nonsense"), None);
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("90"), Some(90));
        assert_eq!(parse_interval("5m"), Some(300));
        assert_eq!(parse_interval("1h"), Some(3600));
        assert_eq!(parse_interval("1d"), Some(86_400));
        assert_eq!(parse_interval("0s"), None);
        assert_eq!(parse_interval("5x"), None);
        assert_eq!(bucket_start(3_661, 3600).timestamp(), 3600);
        assert_eq!(bucket_start(-1, 60).timestamp(), -60);
    }
}
