//! The frames journal of the embedded mode: every accepted frame is written to a
//! SQLite file (WAL) before the publish returns, and removed only once its result is
//! persisted, so a restart finds every frame accepted and not yet completed.
//!
//! One writer thread owns the connection and commits whatever is waiting in one
//! transaction (group commit): under load many frames share one fsync. The file is
//! held with an exclusive lock, so two processes never replay each other's frames.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, ErrorCode, params};

use crate::{Envelope, QueueError};

/// How a commit reaches the disk before the publish returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// `synchronous = FULL`: each group commit is fsynced; a frame survives a power cut.
    Full,
    /// `synchronous = NORMAL`: written to the WAL, fsynced at checkpoints; a frame
    /// survives the process being killed, not the machine losing power.
    Normal,
}

/// Operations committed together; more than this wait for the next commit.
const MAX_GROUP: usize = 512;
/// Bytes of frame bodies committed together at most.
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;
/// Frames given up as poison (replayed too often) kept in the file for inspection.
const DEAD_KEPT: i64 = 10_000;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS frames (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    replays INTEGER NOT NULL DEFAULT 0,
    dead TEXT
);";

enum Op {
    Append { key: String, headers: String, body: Bytes, done: tokio::sync::oneshot::Sender<Result<(), String>> },
    Remove(String),
}

/// What a restart found: frames to process again, oldest first.
pub struct Recovered {
    pub frames: Vec<(String, Envelope)>,
    /// Frames replayed more than `max_replays` times (each restart counts one): kept
    /// in the file as dead, not replayed again (a frame that kills the process).
    pub given_up: u64,
}

pub struct Journal {
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    rows: Arc<AtomicU64>,
}

impl Drop for Journal {
    /// Lets the writer commit what it holds and release the file's lock.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn stopped() -> QueueError {
    QueueError::Journal("the frames journal writer stopped".into())
}

/// A frame handed to the journal's writer, not yet known to be committed.
pub struct Pending(tokio::sync::oneshot::Receiver<Result<(), String>>);

impl Pending {
    /// Returns once the frame is committed, or why it could not be.
    pub async fn committed(self) -> Result<(), QueueError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(QueueError::Journal(format!("cannot store the frame: {e}"))),
            Err(_) => Err(stopped()),
        }
    }
}

fn db(path: &Path, e: rusqlite::Error) -> QueueError {
    let why = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "in use by another visionq process (each embedded process needs its own data_dir)".to_string()
        }
        _ => e.to_string(),
    };
    QueueError::Journal(format!("frames journal {}: {why}", path.display()))
}

impl Journal {
    /// Opens (or creates) the journal at `path`, takes its lock and reads back what
    /// a previous run left. Blocking: call it at startup.
    pub fn open(path: &Path, sync: Sync, max_replays: u32) -> Result<(Journal, Recovered), QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Journal(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path).map_err(|e| db(path, e))?;
        let synchronous = match sync {
            Sync::Full => "FULL",
            Sync::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; {SCHEMA}"
        ))
        .map_err(|e| db(path, e))?;
        let recovered = recover(&mut conn, max_replays).map_err(|e| db(path, e))?;
        let rows: u64 = conn.query_row("SELECT count(*) FROM frames WHERE dead IS NULL", [], |r| r.get(0)).map_err(|e| db(path, e))?;
        let rows = Arc::new(AtomicU64::new(rows));
        let (tx, rx) = mpsc::channel();
        let r = rows.clone();
        let writer = std::thread::Builder::new()
            .name("vq-journal".into())
            .spawn(move || writer(conn, rx, r))
            .map_err(|e| QueueError::Journal(format!("cannot start the journal writer: {e}")))?;
        Ok((Journal { tx: Some(tx), writer: Some(writer), path: path.to_path_buf(), rows }, recovered))
    }

    /// Writes a frame under `key` and returns once it is committed (per [`Sync`]).
    pub async fn append(&self, key: String, envelope: &Envelope) -> Result<(), QueueError> {
        self.submit(key, envelope)?.committed().await
    }

    /// Hands a frame to the writer and returns at once; [`Pending::committed`] says
    /// when (and whether) it is on disk. Operations are committed in the order they
    /// are submitted, so a later [`Journal::remove`] of the same key never overtakes it.
    pub fn submit(&self, key: String, envelope: &Envelope) -> Result<Pending, QueueError> {
        let headers = encode_headers(&envelope.headers);
        let (done, rx) = tokio::sync::oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(Op::Append { key, headers, body: envelope.body.clone(), done }).map_err(|_| stopped())?;
        Ok(Pending(rx))
    }

    /// Forgets the frame under `key` (its result is persisted). Committed with the
    /// next group; lost on a crash before that, the frame is only done again (results
    /// are idempotent by frame id).
    pub fn remove(&self, key: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Op::Remove(key));
        }
    }

    /// Frames in the journal, not yet completed.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn recover(conn: &mut Connection, max_replays: u32) -> rusqlite::Result<Recovered> {
    // IMMEDIATE takes the write lock now: with locking_mode EXCLUSIVE it is kept.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute("UPDATE frames SET replays = replays + 1 WHERE dead IS NULL", [])?;
    let given_up = tx.execute(
        "UPDATE frames SET dead = 'replayed ' || replays || ' times without completing' WHERE dead IS NULL AND replays > ?1",
        [max_replays],
    )? as u64;
    tx.execute(
        "DELETE FROM frames WHERE dead IS NOT NULL AND seq NOT IN (SELECT seq FROM frames WHERE dead IS NOT NULL ORDER BY seq DESC LIMIT ?1)",
        [DEAD_KEPT],
    )?;
    let mut frames = Vec::new();
    {
        let mut q = tx.prepare("SELECT key, headers, body FROM frames WHERE dead IS NULL ORDER BY seq")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let headers: String = r.get(1)?;
            let body: Vec<u8> = r.get(2)?;
            frames.push((r.get(0)?, Envelope { headers: decode_headers(&headers), body: body.into() }));
        }
    }
    tx.commit()?;
    Ok(Recovered { frames, given_up })
}

/// Headers as `key \x1f value \x1e` pairs: they are short strings (JSON metadata,
/// trace context) in which these control characters never occur unescaped.
fn encode_headers(h: &BTreeMap<String, String>) -> String {
    h.iter().map(|(k, v)| format!("{k}\x1f{v}\x1e")).collect()
}

fn decode_headers(s: &str) -> BTreeMap<String, String> {
    s.split('\x1e').filter_map(|kv| kv.split_once('\x1f')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

type Append = (String, String, Bytes, tokio::sync::oneshot::Sender<Result<(), String>>);

fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>, rows: Arc<AtomicU64>) {
    // Removals that failed to commit (a full disk) are tried again with later groups.
    let mut removes: Vec<String> = Vec::new();
    loop {
        let first = if removes.is_empty() {
            match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = commit(&mut conn, &[], &removes);
                    return;
                }
            }
        };
        let mut appends: Vec<Append> = Vec::new();
        let mut bytes = 0;
        let mut next = first;
        while let Some(op) = next {
            match op {
                Op::Append { key, headers, body, done } => {
                    bytes += body.len();
                    appends.push((key, headers, body, done));
                }
                Op::Remove(key) => removes.push(key),
            }
            if appends.len() + removes.len() >= MAX_GROUP || bytes >= MAX_GROUP_BYTES {
                break;
            }
            next = rx.try_recv().ok();
        }
        match commit(&mut conn, &appends, &removes) {
            Ok(removed) => {
                rows.fetch_add(appends.len() as u64, Ordering::Relaxed);
                rows.fetch_sub(removed.min(rows.load(Ordering::Relaxed)), Ordering::Relaxed);
                removes.clear();
                for (_, _, _, done) in appends {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(error = why, frames = appends.len(), "frames journal: commit failed; frames refused");
                // A full disk refuses new frames; completed ones may still be let go.
                if !appends.is_empty()
                    && !removes.is_empty()
                    && let Ok(removed) = commit(&mut conn, &[], &removes)
                {
                    rows.fetch_sub(removed.min(rows.load(Ordering::Relaxed)), Ordering::Relaxed);
                    removes.clear();
                }
                for (_, _, _, done) in appends {
                    let _ = done.send(Err(why.clone()));
                }
            }
        }
    }
}

/// One transaction: the appends, then the removals. Returns the rows removed.
fn commit(conn: &mut Connection, appends: &[Append], removes: &[String]) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let mut removed = 0;
    {
        let mut ins = tx.prepare_cached("INSERT OR REPLACE INTO frames (key, headers, body) VALUES (?1, ?2, ?3)")?;
        for (key, headers, body, _) in appends {
            ins.execute(params![key, headers, &body[..]])?;
        }
        let mut del = tx.prepare_cached("DELETE FROM frames WHERE key = ?1")?;
        for key in removes {
            removed += del.execute([key])? as u64;
        }
    }
    tx.commit()?;
    Ok(removed)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
