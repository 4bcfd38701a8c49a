//! SQLite through rusqlite, for the embedded mode: one file, WAL journal, writes
//! on the blocking pool (never on the runtime's threads), one transaction per batch
//! with `INSERT OR IGNORE` keyed by frame id.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::FutureExt;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;
use visionq_contract::decision::{Decision, Expectation, Review};
use visionq_contract::message::ImageSize;
use visionq_contract::{Detection, FrameResult, ModelInfo, ResultStatus};

use crate::store::{
    ClassCount, CountsQuery, DECISION_COLUMNS, HistoryQuery, REVIEW_BACKLOG_SQL, REVIEW_COLUMNS, ResultStore, ReviewQuery,
    STATIONS_SQL, StationSummary, StoreError, StoredBaseline, bucket_start, codes_json, expectation_of, keep_detection, outcome_of,
    verdict_of,
};

pub(crate) const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE frames (
        frame_id TEXT PRIMARY KEY,
        station TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        model_name TEXT NOT NULL,
        model_version TEXT NOT NULL,
        timings_ms TEXT NOT NULL,
        detection_count INTEGER NOT NULL,
        captured_at TEXT,
        received_at TEXT NOT NULL,
        completed_at TEXT NOT NULL,
        stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE INDEX frames_station_received ON frames (station, received_at DESC);
    CREATE TABLE detections (
        frame_id TEXT NOT NULL REFERENCES frames (frame_id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        class_id INTEGER NOT NULL,
        class_name TEXT NOT NULL,
        score REAL NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
        x1_px REAL NOT NULL, y1_px REAL NOT NULL, x2_px REAL NOT NULL, y2_px REAL NOT NULL,
        PRIMARY KEY (frame_id, idx)
    );",
    ),
    (
        2,
        "CREATE TABLE stations (
            station TEXT PRIMARY KEY,
            first_seen_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL
        );
        INSERT INTO stations (station, first_seen_at, last_seen_at)
            SELECT station, min(received_at), max(received_at) FROM frames GROUP BY station;
        CREATE INDEX frames_received ON frames (received_at);",
    ),
    (
        3,
        "CREATE TABLE decisions (
            frame_id TEXT PRIMARY KEY REFERENCES frames (frame_id) ON DELETE CASCADE,
            outcome TEXT NOT NULL,
            code TEXT,
            class_name TEXT,
            score REAL,
            similarity REAL,
            expectation_ref TEXT,
            rule TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX decisions_outcome ON decisions (outcome);
        CREATE TABLE expectations (
            station TEXT PRIMARY KEY,
            reference TEXT NOT NULL,
            codes TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );",
    ),
    (
        4,
        "CREATE TABLE reviews (
            frame_id TEXT PRIMARY KEY REFERENCES frames (frame_id) ON DELETE CASCADE,
            verdict TEXT NOT NULL,
            detection INTEGER,
            class_name TEXT,
            code TEXT,
            reviewer TEXT,
            reviewed_at TEXT NOT NULL
        );",
    ),
    (
        5,
        // Frames in the forward pass that ran the frame (a result's `batch_size`;
        // before, a key of `timings_ms`). NULL for frames not run and older rows.
        "ALTER TABLE frames ADD COLUMN batch_size INTEGER;",
    ),
    (
        6,
        // Each model version's drift baseline at each station (`drift`).
        "CREATE TABLE drift_baselines (
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            station TEXT NOT NULL,
            profile TEXT NOT NULL,
            set_at TEXT NOT NULL,
            PRIMARY KEY (model, version, station)
        );",
    ),
    (
        7,
        // What model chains added to a detection (`classification`, `text`) as JSON;
        // NULL where none did (issue 22).
        "ALTER TABLE detections ADD COLUMN chain TEXT;",
    ),
];

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    pub path: PathBuf,
}

fn q(e: rusqlite::Error) -> StoreError {
    StoreError::Query(e.to_string())
}

/// Timestamps as fixed-width UTC text, so text order is time order.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| StoreError::Query(e.to_string()))
}

impl SqliteStore {
    pub async fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let path = PathBuf::from(path);
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
            }
            let mut conn = Connection::open(&p).map_err(|e| StoreError::Unavailable(format!("{}: {e}", p.display())))?;
            // FULL: a result is on disk once its batch commits (one fsync per batch), because
            // the embedded frames journal lets the frame go at that moment.
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
            )
            .map_err(q)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .expect("sqlite open does not panic")?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)), path })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("sqlite lock"))).await.expect("sqlite task does not panic")
    }

    pub fn file(&self) -> &Path {
        &self.path
    }
}

/// SQLite's side of the migration runner, on the connection's open transaction.
struct Migrations<'a>(&'a Connection);

impl crate::migrate::Dialect for Migrations<'_> {
    type Error = rusqlite::Error;
    const STEPS: &'static [(i32, &'static str)] = MIGRATIONS;

    async fn applied(&mut self) -> Result<Vec<i32>, rusqlite::Error> {
        let mut stmt = self.0.prepare("SELECT version FROM visionq_migrations")?;
        stmt.query_map([], |r| r.get(0))?.collect()
    }

    async fn apply(&mut self, sql: &str) -> Result<(), rusqlite::Error> {
        self.0.execute_batch(sql)
    }

    async fn record(&mut self, version: i32) -> Result<(), rusqlite::Error> {
        self.0.execute("INSERT INTO visionq_migrations (version) VALUES (?1)", [version]).map(|_| ())
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(q)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS visionq_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);")
        .map_err(q)?;
    // rusqlite is synchronous: every call of the runner's is done when first polled.
    crate::migrate::run(&mut Migrations(&tx)).now_or_never().expect("SQLite's migration steps never wait").map_err(q)?;
    tx.commit().map_err(q)
}

const FRAME_COLUMNS: &str = "frame_id, station, status, error, width, height, model_name, model_version, timings_ms, captured_at, \
                             received_at, completed_at, batch_size";

fn load(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    hq: Option<&HistoryQuery>,
) -> Result<Vec<FrameResult>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(q)?;
    let mut frames = Vec::new();
    let mut rows = stmt.query(args).map_err(q)?;
    while let Some(r) = rows.next().map_err(q)? {
        let status: String = r.get(2).map_err(q)?;
        let captured: Option<String> = r.get(9).map_err(q)?;
        let id: String = r.get(0).map_err(q)?;
        frames.push(FrameResult {
            frame_id: Uuid::parse_str(&id).map_err(|e| StoreError::Query(e.to_string()))?,
            station: r.get(1).map_err(q)?,
            status: ResultStatus::parse(&status).ok_or_else(|| StoreError::Query(format!("bad status {status}")))?,
            error: r.get(3).map_err(q)?,
            image: ImageSize { width: r.get(4).map_err(q)?, height: r.get(5).map_err(q)? },
            model: ModelInfo { name: r.get(6).map_err(q)?, version: r.get(7).map_err(q)? },
            detections: Vec::new(),
            decision: None,
            review: None,
            timings_ms: serde_json::from_str(&r.get::<_, String>(8).map_err(q)?).unwrap_or_default(),
            batch_size: r.get::<_, Option<u32>>(12).map_err(q)?,
            captured_at: captured.as_deref().map(parse_ts).transpose()?,
            received_at: parse_ts(&r.get::<_, String>(10).map_err(q)?)?,
            completed_at: parse_ts(&r.get::<_, String>(11).map_err(q)?)?,
        });
    }
    let mut dstmt = conn
        .prepare_cached(
            "SELECT class_id, class_name, score, x1, y1, x2, y2, x1_px, y1_px, x2_px, y2_px, chain
             FROM detections WHERE frame_id = ?1 ORDER BY idx",
        )
        .map_err(q)?;
    for f in &mut frames {
        let dets = dstmt
            .query_map([f.frame_id.to_string()], |d| {
                let mut det = Detection {
                    class_id: d.get(0)?,
                    class_name: d.get(1)?,
                    score: d.get(2)?,
                    bbox: [d.get(3)?, d.get(4)?, d.get(5)?, d.get(6)?],
                    box_px: [d.get(7)?, d.get(8)?, d.get(9)?, d.get(10)?],
                    track_id: None,
                    classification: None,
                    text: None,
                };
                visionq_contract::chain::restore(&mut det, d.get::<_, Option<String>>(11)?.as_deref());
                Ok(det)
            })
            .map_err(q)?;
        for d in dets {
            let d = d.map_err(q)?;
            if hq.is_none_or(|hq| keep_detection(hq, &d.class_name, d.score)) {
                f.detections.push(d);
            }
        }
    }
    let mut xstmt =
        conn.prepare_cached(&format!("SELECT {} FROM decisions WHERE frame_id = ?1", DECISION_COLUMNS.join(", "))).map_err(q)?;
    for f in &mut frames {
        let row = xstmt
            .query_row([f.frame_id.to_string()], |x| {
                Ok((
                    x.get::<_, String>(0)?,
                    Decision {
                        outcome: visionq_contract::decision::Outcome::Nothing,
                        code: x.get(1)?,
                        class_name: x.get(2)?,
                        score: x.get(3)?,
                        similarity: x.get(4)?,
                        expectation_ref: x.get(5)?,
                        rule: x.get(6)?,
                        reason: x.get(7)?,
                    },
                ))
            })
            .optional()
            .map_err(q)?;
        if let Some((outcome, d)) = row {
            f.decision = Some(Decision { outcome: outcome_of(&outcome)?, ..d });
        }
    }
    let mut rstmt =
        conn.prepare_cached(&format!("SELECT {} FROM reviews WHERE frame_id = ?1", REVIEW_COLUMNS.join(", "))).map_err(q)?;
    for f in &mut frames {
        let row = rstmt
            .query_row([f.frame_id.to_string()], |x| {
                Ok((
                    x.get::<_, String>(0)?,
                    x.get::<_, Option<i64>>(1)?,
                    x.get::<_, Option<String>>(2)?,
                    x.get::<_, Option<String>>(3)?,
                    x.get::<_, Option<String>>(4)?,
                    x.get::<_, String>(5)?,
                ))
            })
            .optional()
            .map_err(q)?;
        if let Some((verdict, detection, class_name, code, reviewer, at)) = row {
            f.review = Some(Review {
                verdict: verdict_of(&verdict)?,
                detection: detection.map(|i| i as usize),
                class_name,
                code,
                reviewer,
                reviewed_at: Some(parse_ts(&at)?),
            });
        }
    }
    Ok(frames)
}

#[async_trait::async_trait]
impl ResultStore for SqliteStore {
    async fn write_batch(&self, results: &[FrameResult]) -> Result<usize, StoreError> {
        let results = results.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            let mut new = 0;
            {
                let mut frame = tx
                    .prepare_cached(&format!(
                        "INSERT OR IGNORE INTO frames ({FRAME_COLUMNS}, detection_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                    ))
                    .map_err(q)?;
                let mut det = tx
                    .prepare_cached(
                        "INSERT INTO detections (frame_id, idx, class_id, class_name, score, x1, y1, x2, y2, x1_px, y1_px, x2_px, y2_px, chain)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    )
                    .map_err(q)?;
                let mut decision = tx
                    .prepare_cached(&format!(
                        "INSERT INTO decisions (frame_id, {}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        DECISION_COLUMNS.join(", ")
                    ))
                    .map_err(q)?;
                let mut station = tx
                    .prepare_cached(
                        "INSERT INTO stations (station, first_seen_at, last_seen_at) VALUES (?1, ?2, ?2)
                         ON CONFLICT (station) DO UPDATE SET
                             first_seen_at = min(first_seen_at, excluded.first_seen_at),
                             last_seen_at = max(last_seen_at, excluded.last_seen_at)",
                    )
                    .map_err(q)?;
                for r in &results {
                    let id = r.frame_id.to_string();
                    let inserted = frame
                        .execute(params![
                            id,
                            r.station,
                            r.status.as_str(),
                            r.error,
                            r.image.width,
                            r.image.height,
                            r.model.name,
                            r.model.version,
                            serde_json::to_string(&r.timings_ms).expect("timings serialise"),
                            r.captured_at.as_ref().map(ts),
                            ts(&r.received_at),
                            ts(&r.completed_at),
                            r.batch_size,
                            r.detections.len() as i64,
                        ])
                        .map_err(q)?;
                    if inserted == 0 {
                        continue;
                    }
                    new += 1;
                    station.execute(params![r.station, ts(&r.received_at)]).map_err(q)?;
                    for (i, d) in r.detections.iter().enumerate() {
                        let (b, p) = (d.bbox, d.box_px);
                        let chain = visionq_contract::chain::stored(d);
                        det.execute(params![
                            id,
                            i as i64,
                            d.class_id,
                            d.class_name,
                            d.score,
                            b[0],
                            b[1],
                            b[2],
                            b[3],
                            p[0],
                            p[1],
                            p[2],
                            p[3],
                            chain
                        ])
                        .map_err(q)?;
                    }
                    if let Some(x) = &r.decision {
                        decision
                            .execute(params![
                                id,
                                x.outcome.as_str(),
                                x.code,
                                x.class_name,
                                x.score,
                                x.similarity,
                                x.expectation_ref,
                                x.rule,
                                x.reason
                            ])
                            .map_err(q)?;
                    }
                }
            }
            tx.commit().map_err(q)?;
            Ok(new)
        })
        .await
    }

    async fn get(&self, frame_id: Uuid) -> Result<Option<FrameResult>, StoreError> {
        self.with(move |conn| {
            let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE frame_id = ?1");
            Ok(load(conn, &sql, &[&frame_id.to_string()], None)?.pop())
        })
        .await
    }

    async fn history(&self, hq: &HistoryQuery) -> Result<Vec<FrameResult>, StoreError> {
        let hq = hq.clone();
        self.with(move |conn| {
            let filter = hq.class.is_some() || hq.min_score.is_some();
            let sql = format!(
                "SELECT {FRAME_COLUMNS} FROM frames f
                 WHERE station = ?1 AND (?2 IS NULL OR received_at >= ?2) AND (?3 IS NULL OR received_at < ?3)
                   AND (NOT ?4 OR EXISTS (SELECT 1 FROM detections d WHERE d.frame_id = f.frame_id
                        AND (?5 IS NULL OR d.class_name = ?5) AND (?6 IS NULL OR d.score >= ?6)))
                   AND (?8 IS NULL OR (received_at, frame_id) < (?8, ?9))
                   AND (?10 IS NULL OR EXISTS (SELECT 1 FROM decisions x WHERE x.frame_id = f.frame_id AND x.outcome = ?10))
                 ORDER BY received_at DESC, frame_id DESC LIMIT ?7"
            );
            let since = hq.since.as_ref().map(ts);
            let until = hq.until.as_ref().map(ts);
            let limit = hq.limit as i64;
            let before_t = hq.before.map(|c| ts(&c.received_at));
            let before_id = hq.before.map(|c| c.frame_id.to_string());
            let outcome = hq.outcome.map(|o| o.as_str());
            load(
                conn,
                &sql,
                &[&hq.station, &since, &until, &filter, &hq.class, &hq.min_score, &limit, &before_t, &before_id, &outcome],
                Some(&hq),
            )
        })
        .await
    }

    async fn counts(&self, cq: &CountsQuery) -> Result<Vec<ClassCount>, StoreError> {
        let cq = cq.clone();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT unixepoch(f.received_at, 'subsec') AS t, d.class_id, d.class_name
                     FROM frames f JOIN detections d ON d.frame_id = f.frame_id
                     WHERE f.station = ?1 AND f.received_at >= ?2 AND f.received_at < ?3 AND (?4 IS NULL OR d.score >= ?4)",
                )
                .map_err(q)?;
            // Bucketed here rather than in SQL: SQLite's integer division truncates
            // toward zero, and the rows are a station's detections in a time range.
            let mut counts: std::collections::BTreeMap<(i64, u32, String), u64> = Default::default();
            let mut rows = stmt.query(params![cq.station, ts(&cq.since), ts(&cq.until), cq.min_score]).map_err(q)?;
            while let Some(r) = rows.next().map_err(q)? {
                let t: f64 = r.get(0).map_err(q)?;
                let bucket = (t.floor() as i64).div_euclid(cq.interval_s);
                *counts.entry((bucket, r.get(1).map_err(q)?, r.get(2).map_err(q)?)).or_default() += 1;
            }
            Ok(counts
                .into_iter()
                .map(|((b, class_id, class_name), count)| ClassCount {
                    bucket: bucket_start(b * cq.interval_s, cq.interval_s),
                    class_id,
                    class_name,
                    count,
                })
                .collect())
        })
        .await
    }

    async fn stations(&self) -> Result<Vec<StationSummary>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(STATIONS_SQL).map_err(q)?;
            let mut rows = stmt.query([]).map_err(q)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(q)? {
                let status: Option<String> = r.get(3).map_err(q)?;
                out.push(StationSummary {
                    station: r.get(0).map_err(q)?,
                    last_frame_at: parse_ts(&r.get::<_, String>(1).map_err(q)?)?,
                    frames: r.get::<_, i64>(2).map_err(q)? as u64,
                    last_status: status.as_deref().and_then(ResultStatus::parse),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn prune(&self, cutoff: DateTime<Utc>, max_frames: usize) -> Result<usize, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(q)?;
            // Detections first (explicitly, not by cascade, so it is one statement each).
            tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS prune_ids (frame_id TEXT PRIMARY KEY); DELETE FROM prune_ids;")
                .map_err(q)?;
            tx.execute(
                "INSERT INTO prune_ids SELECT frame_id FROM frames WHERE received_at < ?1 ORDER BY received_at LIMIT ?2",
                params![ts(&cutoff), max_frames as i64],
            )
            .map_err(q)?;
            tx.execute("DELETE FROM detections WHERE frame_id IN (SELECT frame_id FROM prune_ids)", []).map_err(q)?;
            tx.execute("DELETE FROM reviews WHERE frame_id IN (SELECT frame_id FROM prune_ids)", []).map_err(q)?;
            tx.execute("DELETE FROM decisions WHERE frame_id IN (SELECT frame_id FROM prune_ids)", []).map_err(q)?;
            let n = tx.execute("DELETE FROM frames WHERE frame_id IN (SELECT frame_id FROM prune_ids)", []).map_err(q)?;
            tx.execute("DELETE FROM prune_ids", []).map_err(q)?;
            tx.commit().map_err(q)?;
            Ok(n)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(q)).await
    }

    async fn review_backlog(&self) -> Result<u64, StoreError> {
        self.with(|conn| conn.query_row(REVIEW_BACKLOG_SQL, [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(q)).await
    }

    async fn review_queue(&self, rq: &ReviewQuery) -> Result<Vec<FrameResult>, StoreError> {
        let rq = rq.clone();
        self.with(move |conn| {
            let sql = format!(
                "SELECT {} FROM frames f JOIN decisions x ON x.frame_id = f.frame_id
                 WHERE x.outcome = 'needs_review' AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.frame_id = f.frame_id)
                   AND (?1 IS NULL OR f.station = ?1) AND (?2 IS NULL OR (f.received_at, f.frame_id) > (?2, ?3))
                 ORDER BY f.received_at, f.frame_id LIMIT ?4",
                FRAME_COLUMNS.split(", ").map(|c| format!("f.{c}")).collect::<Vec<_>>().join(", ")
            );
            let after_t = rq.after.map(|c| ts(&c.received_at));
            let after_id = rq.after.map(|c| c.frame_id.to_string());
            load(conn, &sql, &[&rq.station, &after_t, &after_id, &(rq.limit as i64)], None)
        })
        .await
    }

    async fn put_review(&self, frame_id: Uuid, review: &Review) -> Result<bool, StoreError> {
        let review = review.clone();
        self.with(move |conn| {
            let sql = format!(
                "INSERT OR IGNORE INTO reviews (frame_id, {}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                 WHERE EXISTS (SELECT 1 FROM decisions WHERE frame_id = ?1)",
                REVIEW_COLUMNS.join(", ")
            );
            let n = conn
                .execute(
                    &sql,
                    params![
                        frame_id.to_string(),
                        review.verdict.as_str(),
                        review.detection.map(|i| i as i64),
                        review.class_name,
                        review.code,
                        review.reviewer,
                        ts(&review.reviewed_at.unwrap_or_else(Utc::now)),
                    ],
                )
                .map_err(q)?;
            Ok(n == 1)
        })
        .await
    }

    async fn expectations(&self) -> Result<Vec<(String, Expectation)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT station, reference, codes FROM expectations ORDER BY station").map_err(q)?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))).map_err(q)?;
            let mut out = Vec::new();
            for row in rows {
                let (station, reference, codes) = row.map_err(q)?;
                out.push((station, expectation_of(reference, &codes)?));
            }
            Ok(out)
        })
        .await
    }

    async fn put_expectation(&self, station: &str, expectation: &Expectation) -> Result<(), StoreError> {
        let (station, reference, codes) = (station.to_string(), expectation.reference.clone(), codes_json(expectation));
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO expectations (station, reference, codes, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (station) DO UPDATE SET reference = excluded.reference, codes = excluded.codes, updated_at = excluded.updated_at",
                params![station, reference, codes, ts(&Utc::now())],
            )
            .map_err(q)?;
            Ok(())
        })
        .await
    }

    async fn delete_expectation(&self, station: &str) -> Result<bool, StoreError> {
        let station = station.to_string();
        self.with(move |conn| Ok(conn.execute("DELETE FROM expectations WHERE station = ?1", [station]).map_err(q)? > 0)).await
    }

    async fn drift_baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!("{SELECT_BASELINE} ORDER BY model, version, station")).map_err(q)?;
            let rows = stmt.query_map([], baseline_row).map_err(q)?;
            rows.map(|r| r.map_err(q)?).collect()
        })
        .await
    }

    async fn put_drift_baseline(&self, b: &StoredBaseline) -> Result<StoredBaseline, StoreError> {
        let b = b.clone();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO drift_baselines (model, version, station, profile, set_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (model, version, station) DO NOTHING",
                params![b.model, b.version, b.station, b.profile, ts(&b.set_at)],
            )
            .map_err(q)?;
            let mut stmt =
                conn.prepare_cached(&format!("{SELECT_BASELINE} WHERE model = ?1 AND version = ?2 AND station = ?3")).map_err(q)?;
            stmt.query_row(params![b.model, b.version, b.station], baseline_row).map_err(q)?
        })
        .await
    }
}

const SELECT_BASELINE: &str = "SELECT model, version, station, profile, set_at FROM drift_baselines";

fn baseline_row(r: &rusqlite::Row) -> rusqlite::Result<Result<StoredBaseline, StoreError>> {
    let set_at: String = r.get(4)?;
    Ok(parse_ts(&set_at).map(|set_at| StoredBaseline {
        model: r.get_unwrap(0),
        version: r.get_unwrap(1),
        station: r.get_unwrap(2),
        profile: r.get_unwrap(3),
        set_at,
    }))
}

#[cfg(test)]
mod tests {

    use super::*;

    /// A database an older release left (the steps up to `old` applied and recorded,
    /// a frame and its station stored) is brought up to date when the store opens:
    /// the later tables exist and work, every version is recorded, the data stays.
    #[tokio::test]
    async fn an_older_schema_is_brought_up_to_date() {
        for old in 1..MIGRATIONS.len() {
            let path = std::env::temp_dir().join(format!("visionq-upgrade-{}-{old}.db", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let frame_id = Uuid::now_v7();
            {
                let conn = Connection::open(&path).unwrap();
                conn.execute_batch(
                    "CREATE TABLE visionq_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);",
                )
                .unwrap();
                for (version, sql) in &MIGRATIONS[..old] {
                    conn.execute_batch(sql).unwrap();
                    conn.execute("INSERT INTO visionq_migrations (version) VALUES (?1)", [version]).unwrap();
                }
                conn.execute(
                    "INSERT INTO frames (frame_id, station, status, width, height, model_name, model_version, timings_ms,
                                         detection_count, received_at, completed_at)
                     VALUES (?1, 'cam-old', 'ok', 640, 480, 'm', 'v1', '{}', 0, '2026-01-01T00:00:01.000000Z', '2026-01-01T00:00:02.000000Z')",
                    [frame_id.to_string()],
                )
                .unwrap();
                if old >= 2 {
                    conn.execute(
                        "INSERT INTO stations VALUES ('cam-old', '2026-01-01T00:00:01.000000Z', '2026-01-01T00:00:01.000000Z')",
                        [],
                    )
                    .unwrap();
                }
            }

            let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
            let (versions, tables) = store
                .with(|conn| {
                    let mut s = conn.prepare("SELECT version FROM visionq_migrations ORDER BY version").map_err(q)?;
                    let versions = s.query_map([], |r| r.get::<_, i32>(0)).map_err(q)?.collect::<Result<Vec<_>, _>>().map_err(q)?;
                    let mut s = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").map_err(q)?;
                    let tables = s.query_map([], |r| r.get::<_, String>(0)).map_err(q)?.collect::<Result<Vec<_>, _>>().map_err(q)?;
                    Ok((versions, tables))
                })
                .await
                .unwrap();
            crate::store::assert_upgraded(&store, MIGRATIONS, old, (&versions, &tables), frame_id).await;
            drop(store);
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
            }
        }
    }
}
