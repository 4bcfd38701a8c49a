//! The outbox: a SQLite file (`<data_dir>/outbox.db`, WAL, fsynced per commit)
//! holding every event until its sink took it. The results consumer writes a
//! batch's events after the batch's results are stored and before it acks them, so
//! a crash between the two leaves the result to be delivered again and its events
//! written again: `INSERT OR IGNORE` on the event id keeps one row per event, and
//! rows of delivered events stay a day (their body dropped) so a late twin is not
//! sent twice.
//!
//! A row is `pending` (with the time of its next attempt), `delivered` or `dead`
//! (out of attempts; an admin can replay it, which makes it pending again).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use serde::Serialize;
use visionq_contract::track::TrackEvent;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("outbox: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("outbox: {0}")]
    Task(String),
    #[error("{0}")]
    Sink(String),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    sink TEXT NOT NULL,
    station TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER NOT NULL,
    last_error TEXT,
    created_at_ms INTEGER NOT NULL,
    done_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS events_due ON events (sink, state, next_at_ms, seq);
CREATE INDEX IF NOT EXISTS events_done ON events (state, done_at_ms);
CREATE TABLE IF NOT EXISTS track_events (
    id TEXT PRIMARY KEY,
    station TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    direction TEXT,
    class_name TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
-- By time: the prune on every put and the counts' time range both read it.
CREATE INDEX IF NOT EXISTS track_events_time ON track_events (at_ms);";

/// How long the crossings and zone visits behind `GET /v1/counts` are kept.
pub const TRACK_EVENTS_KEPT_DAYS: i64 = 31;

/// One line's or zone's count over one interval.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Count {
    pub station: String,
    /// The line's or zone's name.
    pub name: String,
    /// `crossed`, `entered` or `left`.
    pub kind: String,
    /// `crossed`: `in` or `out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The interval's start (Unix milliseconds, a multiple of the interval).
    pub from_ms: i64,
    pub count: u64,
}

/// An event to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub sink: String,
    pub station: String,
    pub kind: String,
    /// The JSON body, exactly as it will be sent (and signed).
    pub body: String,
}

/// An event due for an attempt.
#[derive(Debug, Clone)]
pub struct Pending {
    pub event_id: String,
    pub station: String,
    pub kind: String,
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
}

/// An event out of attempts, as the admin route lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadEvent {
    pub event_id: String,
    pub station: String,
    pub kind: String,
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the event was put in the outbox (Unix milliseconds).
    pub created_at_ms: i64,
    /// When it was given up (Unix milliseconds).
    pub dead_at_ms: Option<i64>,
}

/// The outbox file; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Outbox {
    /// Opens (creating) the outbox at `path`. Blocking.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        let open = || -> Result<Connection, rusqlite::Error> {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| OutboxError::Open { path: path.into(), source })?;
        Ok(Outbox { conn: Arc::new(Mutex::new(conn)), path: path.into() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn).map_err(OutboxError::from)
        })
        .await
        .map_err(|e| OutboxError::Task(e.to_string()))?
    }

    /// Puts `events` in the outbox, and records `tracks` (the crossings and zone
    /// visits the counts are made of), in one transaction; an event or a track event
    /// already there (by id) is left as it is. Returns how many events were new.
    pub async fn put(&self, events: Vec<NewEvent>, tracks: Vec<TrackEvent>) -> Result<usize, OutboxError> {
        if events.is_empty() && tracks.is_empty() {
            return Ok(0);
        }
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let now = now_ms();
            let mut new = 0;
            if !tracks.is_empty() {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO track_events (id, station, kind, name, direction, class_name, track_id, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for t in &tracks {
                    insert.execute(params![
                        crate::event::track_event_id(t, ""),
                        t.station,
                        t.kind.as_str(),
                        t.name,
                        t.direction.map(|d| d.as_str()),
                        t.class_name,
                        t.track_id as i64,
                        t.at.timestamp_millis()
                    ])?;
                }
                tx.execute("DELETE FROM track_events WHERE at_ms < ?1", [now - TRACK_EVENTS_KEPT_DAYS * 86_400_000])?;
            }
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO events (event_id, sink, station, kind, body, state, next_at_ms, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)",
                )?;
                for e in &events {
                    new += insert.execute(params![e.event_id, e.sink, e.station, e.kind, e.body, now])?;
                }
            }
            tx.commit()?;
            Ok(new)
        })
        .await
    }

    /// The crossings and zone visits since `since_ms`, counted per station, line or
    /// zone, kind, direction and interval of `interval_ms`; oldest interval first.
    pub async fn track_counts(&self, station: Option<String>, since_ms: i64, interval_ms: i64) -> Result<Vec<Count>, OutboxError> {
        self.with(move |conn| {
            let mut q = conn.prepare_cached(
                "SELECT station, name, kind, direction, (at_ms / ?2) * ?2 AS bucket, COUNT(*) FROM track_events
                 WHERE at_ms >= ?1 AND (?3 IS NULL OR station = ?3)
                 GROUP BY station, name, kind, direction, bucket ORDER BY bucket, station, name, kind, direction",
            )?;
            let rows = q.query_map(params![since_ms, interval_ms, station], |r| {
                Ok(Count {
                    station: r.get(0)?,
                    name: r.get(1)?,
                    kind: r.get(2)?,
                    direction: r.get(3)?,
                    from_ms: r.get(4)?,
                    count: r.get::<_, i64>(5)? as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// At most `limit` pending events of `sink` due at `now_ms`, oldest first.
    pub async fn due(&self, sink: &str, now_ms: i64, limit: usize) -> Result<Vec<Pending>, OutboxError> {
        let sink = sink.to_string();
        self.with(move |conn| {
            let mut q = conn.prepare_cached(
                "SELECT event_id, station, kind, body, attempts FROM events
                 WHERE sink = ?1 AND state = 'pending' AND next_at_ms <= ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = q.query_map(params![sink, now_ms, limit as i64], |r| {
                Ok(Pending {
                    event_id: r.get(0)?,
                    station: r.get(1)?,
                    kind: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// When `sink`'s next pending event is due (Unix ms), if it has one.
    pub async fn next_due(&self, sink: &str) -> Result<Option<i64>, OutboxError> {
        let sink = sink.to_string();
        self.with(move |conn| {
            conn.query_row("SELECT MIN(next_at_ms) FROM events WHERE sink = ?1 AND state = 'pending'", [sink], |r| r.get(0))
        })
        .await
    }

    /// Records attempts' outcomes in one transaction.
    pub async fn record(&self, outcomes: Vec<(String, Attempt)>) -> Result<(), OutboxError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let now = now_ms();
            for (id, outcome) in &outcomes {
                match outcome {
                    Attempt::Delivered => tx.execute(
                        "UPDATE events SET state = 'delivered', attempts = attempts + 1, done_at_ms = ?2, last_error = NULL,
                         body = '' WHERE event_id = ?1",
                        params![id, now],
                    )?,
                    Attempt::Retry { next_at_ms, error } => tx.execute(
                        "UPDATE events SET attempts = attempts + 1, next_at_ms = ?2, last_error = ?3 WHERE event_id = ?1",
                        params![id, next_at_ms, error],
                    )?,
                    Attempt::Dead { error } => tx.execute(
                        "UPDATE events SET state = 'dead', attempts = attempts + 1, done_at_ms = ?2, last_error = ?3
                         WHERE event_id = ?1",
                        params![id, now, error],
                    )?,
                };
            }
            tx.commit()
        })
        .await
    }

    /// `sink`'s dead events, oldest first, at most `limit`.
    pub async fn dead_letters(&self, sink: &str, limit: usize) -> Result<Vec<DeadEvent>, OutboxError> {
        let sink = sink.to_string();
        self.with(move |conn| {
            let mut q = conn.prepare_cached(
                "SELECT event_id, station, kind, attempts, last_error, created_at_ms, done_at_ms FROM events
                 WHERE sink = ?1 AND state = 'dead' ORDER BY seq LIMIT ?2",
            )?;
            let rows = q.query_map(params![sink, limit as i64], |r| {
                Ok(DeadEvent {
                    event_id: r.get(0)?,
                    station: r.get(1)?,
                    kind: r.get(2)?,
                    attempts: r.get::<_, i64>(3)? as u32,
                    last_error: r.get(4)?,
                    created_at_ms: r.get(5)?,
                    dead_at_ms: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Makes `sink`'s dead events pending again with no attempts made (those of
    /// `ids`, or all when `ids` is None); returns how many.
    pub async fn replay(&self, sink: &str, ids: Option<Vec<String>>) -> Result<usize, OutboxError> {
        let sink = sink.to_string();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let now = now_ms();
            let sql = "UPDATE events SET state = 'pending', attempts = 0, next_at_ms = ?2, done_at_ms = NULL
                       WHERE sink = ?1 AND state = 'dead'";
            let n = match &ids {
                None => tx.execute(sql, params![sink, now])?,
                Some(ids) => {
                    let mut n = 0;
                    for id in ids {
                        n += tx.execute(&format!("{sql} AND event_id = ?3"), params![sink, now, id])?;
                    }
                    n
                }
            };
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// (pending, dead) events of `sink`.
    pub async fn counts(&self, sink: &str) -> Result<(u64, u64), OutboxError> {
        let sink = sink.to_string();
        self.with(move |conn| {
            conn.query_row(
                "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'dead'), 0) FROM events WHERE sink = ?1",
                [sink],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
        })
        .await
    }

    /// Deletes rows of events delivered before `before_ms`; returns how many.
    pub async fn prune_delivered(&self, before_ms: i64) -> Result<usize, OutboxError> {
        self.with(move |conn| conn.execute("DELETE FROM events WHERE state = 'delivered' AND done_at_ms < ?1", [before_ms])).await
    }
}

/// How one attempt at an event ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered,
    /// Failed; try again at `next_at_ms`.
    Retry {
        next_at_ms: i64,
        error: String,
    },
    /// Failed, and that was the last attempt.
    Dead {
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> NewEvent {
        NewEvent {
            event_id: id.into(),
            sink: "s".into(),
            station: "a".into(),
            kind: "result".into(),
            body: format!("{{\"id\":\"{id}\"}}"),
        }
    }

    fn ids(p: &[Pending]) -> Vec<&str> {
        p.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[tokio::test]
    async fn an_event_is_kept_once_retried_when_due_dead_after_its_attempts_and_replayed() {
        let dir = std::env::temp_dir().join(format!("visionq-outbox-{}", uuid::Uuid::now_v7()));
        let path = dir.join("outbox.db");
        let o = Outbox::open(&path).unwrap();
        assert_eq!(o.put(vec![event("e1"), event("e2")], vec![]).await.unwrap(), 2);
        assert_eq!(o.put(vec![event("e1")], vec![]).await.unwrap(), 0, "a redelivered result's event is not a second row");
        let now = now_ms();
        assert_eq!(ids(&o.due("s", now, 10).await.unwrap()), ["e1", "e2"], "oldest first");
        assert!(o.due("other", now, 10).await.unwrap().is_empty());

        o.record(vec![
            ("e1".into(), Attempt::Retry { next_at_ms: now + 60_000, error: "503".into() }),
            ("e2".into(), Attempt::Delivered),
        ])
        .await
        .unwrap();
        assert!(o.due("s", now, 10).await.unwrap().is_empty(), "e1 waits for its retry, e2 is done");
        let later = o.due("s", now + 60_000, 10).await.unwrap();
        assert_eq!((ids(&later), later[0].attempts), (vec!["e1"], 1));
        assert_eq!(o.next_due("s").await.unwrap(), Some(now + 60_000));
        assert_eq!(o.put(vec![event("e2")], vec![]).await.unwrap(), 0, "a late twin of a delivered event is not sent again");

        o.record(vec![("e1".into(), Attempt::Dead { error: "503".into() })]).await.unwrap();
        assert_eq!(o.counts("s").await.unwrap(), (0, 1));
        let dead = o.dead_letters("s", 10).await.unwrap();
        assert_eq!((dead[0].event_id.as_str(), dead[0].attempts, dead[0].last_error.as_deref()), ("e1", 2, Some("503")));
        drop(o);

        // The outbox is a file: it outlives the process that wrote it.
        let o = Outbox::open(&path).unwrap();
        assert_eq!(o.replay("s", Some(vec!["nope".into()])).await.unwrap(), 0);
        assert_eq!(o.replay("s", None).await.unwrap(), 1);
        let again = o.due("s", now_ms(), 10).await.unwrap();
        assert_eq!((ids(&again), again[0].attempts), (vec!["e1"], 0), "a replay starts its attempts afresh");
        assert_eq!(o.prune_delivered(now_ms() + 1).await.unwrap(), 1, "e2's row goes once its day is over");
        let _ = std::fs::remove_dir_all(dir);
    }
}
