//! Evidence in a local directory: `<root>/<station>/<YYYY-MM-DD>/<stamp>_<frame id>.<jpg|png|webp>`
//! with `….json` beside it (the sidecar, written last: a sidecar means a complete
//! frame). `<stamp>` is the frame's `received_at` (UTC, microseconds), so names sort
//! by time. An index of what is there (read from the names at open) keeps the byte
//! total and the order pruning deletes in without reading the files again.
//!
//! Several processes may share one directory (results replicas on one
//! ReadWriteMany volume): each writes its own frames whole (image, then sidecar,
//! each renamed into place), a frame its index does not know is looked for on disk
//! again before it is called missing, and pruning reads the directory again at
//! least every [`RESCAN_EVERY`], so the bounds hold for the whole directory, not
//! per process.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use crate::record::{ImageFile, SIDECAR_VERSION, image_type};
use crate::store::{Bounds, EvidenceStore, Pruned, Query};
use crate::{Evidence, EvidenceError};

// (A separator after the year: chrono reads `%Y` greedily.)
const STAMP: &str = "%Y-%m-%dT%H%M%S%.6fZ";
const IMAGE_EXTS: [&str; 3] = ["jpg", "png", "webp"];
/// Files left by a write that never finished (no sidecar, or a `.tmp`) are removed
/// at open once they are this old (younger ones may be another process's write).
const ORPHAN_AGE: Duration = Duration::from_secs(3600);
/// How old the index may be when pruning (frames other processes wrote or deleted
/// in a shared directory are seen at most this late by the bounds).
const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// A frame's place in the index: its `received_at` (to the microsecond) and id.
type Key = (DateTime<Utc>, Uuid);

struct Entry {
    station: String,
    day: String,
    ext: &'static str,
    bytes: u64,
}

struct Index {
    root: PathBuf,
    bounds: Bounds,
    entries: BTreeMap<Key, Entry>,
    by_id: HashMap<Uuid, DateTime<Utc>>,
    bytes: u64,
    /// When the directory was last read.
    scanned: std::time::Instant,
}

/// The local-directory evidence store.
pub struct LocalDir {
    index: Arc<Mutex<Index>>,
}

/// Station ids may start with a dot (`.` and `..` are valid ids); such a folder is
/// written with a `%` in front (a character no id has), so the name reads back.
fn station_dir(station: &str) -> String {
    if station.starts_with('.') { format!("%{station}") } else { station.to_string() }
}

fn station_of_dir(dir: &str) -> String {
    dir.strip_prefix('%').unwrap_or(dir).to_string()
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn stem((at, id): Key) -> String {
    format!("{}_{id}", at.format(STAMP))
}

fn parse_stem(stem: &str) -> Option<Key> {
    let (stamp, id) = stem.split_once('_')?;
    let at = NaiveDateTime::parse_from_str(stamp, STAMP).ok()?.and_utc();
    Some((at, Uuid::parse_str(id).ok()?))
}

fn entries_of(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir).map(|r| r.flatten().collect()).unwrap_or_default()
}

fn old(path: &Path) -> bool {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::now());
    modified.elapsed().unwrap_or_default() > ORPHAN_AGE
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    std::fs::write(&tmp, bytes).map_err(EvidenceError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(EvidenceError::io(path))
}

impl Index {
    fn folder(&self, e: &Entry) -> PathBuf {
        self.root.join(station_dir(&e.station)).join(&e.day)
    }

    fn paths(&self, key: Key, e: &Entry) -> (PathBuf, PathBuf) {
        // Not `with_extension`: the stamp's fraction has a dot of its own.
        let (folder, stem) = (self.folder(e), stem(key));
        (folder.join(format!("{stem}.{}", e.ext)), folder.join(format!("{stem}.json")))
    }

    fn scan(root: &Path, bounds: Bounds) -> Result<Index, EvidenceError> {
        std::fs::create_dir_all(root).map_err(EvidenceError::io(root))?;
        let mut index = Index {
            root: root.to_path_buf(),
            bounds,
            entries: BTreeMap::new(),
            by_id: HashMap::new(),
            bytes: 0,
            scanned: std::time::Instant::now(),
        };
        for station in entries_of(root).into_iter().filter(|e| e.path().is_dir()) {
            let station_name = station_of_dir(&station.file_name().to_string_lossy());
            for day in entries_of(&station.path()).into_iter().filter(|e| e.path().is_dir()) {
                let day_name = day.file_name().to_string_lossy().to_string();
                let files = entries_of(&day.path());
                let mut sizes: HashMap<String, u64> = HashMap::new();
                for f in &files {
                    sizes.insert(f.file_name().to_string_lossy().to_string(), f.metadata().map(|m| m.len()).unwrap_or(0));
                }
                for f in &files {
                    let name = f.file_name().to_string_lossy().to_string();
                    let Some((stem, ext)) = name.rsplit_once('.') else { continue };
                    let complete = match ext {
                        "json" => true,
                        e if IMAGE_EXTS.contains(&e) => sizes.contains_key(&format!("{stem}.json")),
                        _ => false,
                    };
                    if !complete {
                        if old(&f.path()) {
                            let _ = std::fs::remove_file(f.path());
                        }
                        continue;
                    }
                    if ext != "json" {
                        continue;
                    }
                    let (Some(key), Some(image_ext)) =
                        (parse_stem(stem), IMAGE_EXTS.iter().find(|e| sizes.contains_key(&format!("{stem}.{e}"))))
                    else {
                        continue;
                    };
                    let bytes = sizes[&name] + sizes[&format!("{stem}.{image_ext}")];
                    let entry = Entry { station: station_name.clone(), day: day_name.clone(), ext: image_ext, bytes };
                    index.bytes += bytes;
                    index.by_id.insert(key.1, key.0);
                    index.entries.insert(key, entry);
                }
            }
        }
        Ok(index)
    }

    /// Reads the directory again (what other processes sharing it wrote or deleted).
    fn rescan(&mut self) -> Result<(), EvidenceError> {
        *self = Index::scan(&self.root, self.bounds)?;
        Ok(())
    }

    /// Where a frame is: from the index, else from the directory read again.
    fn find(&mut self, frame_id: Uuid) -> Result<Option<DateTime<Utc>>, EvidenceError> {
        if let Some(at) = self.by_id.get(&frame_id) {
            return Ok(Some(*at));
        }
        self.rescan()?;
        Ok(self.by_id.get(&frame_id).copied())
    }

    fn remove(&mut self, key: Key) -> Option<u64> {
        let entry = self.entries.remove(&key)?;
        self.by_id.remove(&key.1);
        self.bytes -= entry.bytes;
        let (image, sidecar) = self.paths(key, &entry);
        // The sidecar first: without it the frame is gone, even if the image stays.
        let _ = std::fs::remove_file(sidecar);
        let _ = std::fs::remove_file(image);
        // Empty day and station folders go too (remove_dir fails on a non-empty one).
        let day = self.folder(&entry);
        if std::fs::remove_dir(&day).is_ok() {
            let _ = std::fs::remove_dir(day.parent().unwrap_or(&self.root));
        }
        Some(entry.bytes)
    }

    fn put(&mut self, mut evidence: Evidence, image: &[u8]) -> Result<(), EvidenceError> {
        let (ext, content_type) =
            image_type(image).ok_or_else(|| EvidenceError::Invalid("evidence image is not a JPEG, PNG or WebP file".into()))?;
        let r = &evidence.result;
        let key = (micros(r.received_at), r.frame_id);
        let entry = Entry { station: r.station.clone(), day: r.received_at.format("%Y-%m-%d").to_string(), ext, bytes: 0 };
        if let Some(at) = self.by_id.get(&key.1).copied() {
            self.remove((at, key.1));
        }
        let folder = self.folder(&entry);
        std::fs::create_dir_all(&folder).map_err(EvidenceError::io(&folder))?;
        let (image_path, sidecar_path) = self.paths(key, &entry);
        evidence.version = SIDECAR_VERSION;
        evidence.image = ImageFile {
            file: image_path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
            content_type: content_type.into(),
            bytes: image.len() as u64,
        };
        let sidecar = serde_json::to_vec_pretty(&evidence).expect("evidence serialises");
        write_atomically(&image_path, image)?;
        if let Err(e) = write_atomically(&sidecar_path, &sidecar) {
            let _ = std::fs::remove_file(&image_path);
            return Err(e);
        }
        let bytes = (image.len() + sidecar.len()) as u64;
        self.bytes += bytes;
        self.by_id.insert(key.1, key.0);
        self.entries.insert(key, Entry { bytes, ..entry });
        Ok(())
    }

    fn prune(&mut self, now: DateTime<Utc>) -> Pruned {
        let oldest_kept = self.bounds.max_age.and_then(|a| chrono::Duration::from_std(a).ok()).map(|a| now - a);
        let mut pruned = Pruned::default();
        while let Some(&key) = self.entries.keys().next() {
            let too_old = oldest_kept.is_some_and(|t| key.0 < t);
            if self.bytes <= self.bounds.max_bytes && !too_old {
                break;
            }
            pruned.bytes += self.remove(key).unwrap_or(0);
            pruned.frames += 1;
        }
        pruned
    }
}

fn read_sidecar(path: &Path) -> Result<Option<Evidence>, EvidenceError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        // Deleted meanwhile (pruned by the process that keeps the store).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EvidenceError::Io { path: path.into(), source: e }),
    };
    let evidence: Evidence = serde_json::from_slice(&bytes).map_err(|source| EvidenceError::Sidecar { path: path.into(), source })?;
    if evidence.version > SIDECAR_VERSION {
        return Err(EvidenceError::Invalid(format!(
            "{}: sidecar version {} is newer than this visionq reads ({SIDECAR_VERSION})",
            path.display(),
            evidence.version
        )));
    }
    Ok(Some(evidence))
}

impl LocalDir {
    /// Opens (creating) the store at `root`, indexing what is there.
    pub fn open(root: &Path, bounds: Bounds) -> Result<LocalDir, EvidenceError> {
        Ok(LocalDir { index: Arc::new(Mutex::new(Index::scan(root, bounds)?)) })
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("evidence index lock")
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&mut Index) -> T + Send + 'static) -> T {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || f(&mut index.lock().expect("evidence index lock")))
            .await
            .expect("evidence store task panicked")
    }
}

#[async_trait::async_trait]
impl EvidenceStore for LocalDir {
    async fn put(&self, evidence: Evidence, image: Bytes) -> Result<(), EvidenceError> {
        self.blocking(move |i| i.put(evidence, &image)).await
    }

    async fn list(&self, query: &Query) -> Result<Vec<Evidence>, EvidenceError> {
        // The index knows times to the microsecond: it selects a superset (`since`
        // taken down to its microsecond), the sidecars' exact times decide.
        let q = query.clone();
        let coarse = Query { since: query.since.map(micros), ..query.clone() };
        let paths: Vec<PathBuf> = self
            .blocking(move |i| {
                i.entries.iter().filter(|(k, e)| coarse.matches(&e.station, k.0)).map(|(k, e)| i.paths(*k, e).1).collect()
            })
            .await;
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(paths.len());
            for p in paths {
                out.extend(read_sidecar(&p)?.filter(|e| q.matches(&e.result.station, e.result.received_at)));
            }
            Ok(out)
        })
        .await
        .expect("evidence list task panicked")
    }

    async fn get(&self, frame_id: Uuid) -> Result<Option<(Evidence, Bytes)>, EvidenceError> {
        self.blocking(move |i| {
            let Some(at) = i.find(frame_id)? else { return Ok(None) };
            let (image, sidecar) = i.paths((at, frame_id), &i.entries[&(at, frame_id)]);
            let Some(evidence) = read_sidecar(&sidecar)? else { return Ok(None) };
            match std::fs::read(&image) {
                Ok(bytes) => Ok(Some((evidence, Bytes::from(bytes)))),
                // Pruned meanwhile by another process sharing the directory.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(EvidenceError::Io { path: image, source: e }),
            }
        })
        .await
    }

    async fn delete(&self, frame_id: Uuid) -> Result<bool, EvidenceError> {
        self.blocking(move |i| Ok(i.find(frame_id)?.and_then(|at| i.remove((at, frame_id))).is_some())).await
    }

    async fn prune(&self, now: DateTime<Utc>) -> Result<Pruned, EvidenceError> {
        self.blocking(move |i| {
            if i.scanned.elapsed() >= RESCAN_EVERY {
                i.rescan()?;
            }
            Ok(i.prune(now))
        })
        .await
    }

    async fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{det, result};
    use crate::{KeptFor, Review, Verdict, record_review};

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("visionq-evidence-{tag}-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn kept(station: &str, when: &str) -> Evidence {
        let r = result(station, at(when), vec![det("dog", 0.5, [1.0, 2.0, 3.0, 4.0])], Some("dog"));
        Evidence::new(r, KeptFor::ReviewBand, Utc::now())
    }

    #[tokio::test]
    async fn processes_sharing_a_directory_find_each_others_frames() {
        let root = tmp("shared");
        let unbounded = Bounds { max_bytes: u64::MAX, max_age: None };
        let (a, b) = (LocalDir::open(&root, unbounded).unwrap(), LocalDir::open(&root, unbounded).unwrap());
        let e = kept("cam-1", "2026-12-01T10:00:00Z");
        let id = e.frame_id();
        a.put(e, Bytes::from_static(JPEG)).await.unwrap();
        // b opened before a wrote: it looks on disk again rather than calling it missing.
        let (got, image) = b.get(id).await.unwrap().expect("b finds the frame a kept");
        assert_eq!((got.frame_id(), &image[..]), (id, JPEG));
        // A review through b lands in the same files; a reads it back.
        let review =
            Review { verdict: Verdict::Rejected, detection: None, class_name: None, code: None, reviewer: None, reviewed_at: None };
        record_review(&b, id, review).await.unwrap();
        assert_eq!(a.get(id).await.unwrap().unwrap().0.kept_for, KeptFor::Reviewed);
        // Deleted by one, gone for the other; an id nobody kept is missing.
        assert!(a.delete(id).await.unwrap());
        assert_eq!(b.get(id).await.unwrap().map(|(e, _)| e.frame_id()), None);
        assert_eq!(a.get(Uuid::now_v7()).await.unwrap().map(|(e, _)| e.frame_id()), None);
    }

    #[tokio::test]
    async fn put_list_get_delete_and_reopen() {
        let root = tmp("crud");
        let unbounded = Bounds { max_bytes: u64::MAX, max_age: None };
        let store = LocalDir::open(&root, unbounded).unwrap();
        let a = kept("cam-1", "2026-12-01T10:00:00.123456789Z");
        let b = kept("cam-2", "2026-12-02T10:00:00Z");
        let c = kept("..", "2026-12-03T10:00:00Z");
        for e in [&c, &a, &b] {
            store.put(e.clone(), Bytes::from_static(JPEG)).await.unwrap();
        }
        let all = store.list(&Query::default()).await.unwrap();
        let ids: Vec<Uuid> = all.iter().map(Evidence::frame_id).collect();
        assert_eq!(ids, [a.frame_id(), b.frame_id(), c.frame_id()], "oldest first");
        assert_eq!(all[0].image.content_type, "image/jpeg");
        assert_eq!(all[0].result, a.result, "the result is kept whole (nanoseconds too)");
        let q = Query { since: Some(a.result.received_at), ..Default::default() };
        assert_eq!(store.list(&q).await.unwrap().len(), 3, "since is inclusive, to the nanosecond");
        let q = Query { since: Some(a.result.received_at + chrono::Duration::nanoseconds(1)), ..Default::default() };
        assert_eq!(store.list(&q).await.unwrap().len(), 2);
        let q = Query { since: Some(at("2026-12-02T00:00:00Z")), ..Default::default() };
        assert_eq!(store.list(&q).await.unwrap().len(), 2);
        let q = Query { until: Some(at("2026-12-02T10:00:00Z")), ..Default::default() };
        assert_eq!(store.list(&q).await.unwrap().len(), 1, "until is exclusive");
        let q = Query { station: Some("..".into()), ..Default::default() };
        assert_eq!(store.list(&q).await.unwrap()[0].frame_id(), c.frame_id());
        assert!(root.join("%..").is_dir(), "a dot station gets its own folder, not the parent");
        let (e, bytes) = store.get(a.frame_id()).await.unwrap().unwrap();
        assert_eq!((e.result.station.as_str(), &bytes[..]), ("cam-1", JPEG));
        assert!(store.get(Uuid::now_v7()).await.unwrap().is_none());
        let total = store.bytes().await;
        let on_disk: u64 = walk(&root).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        assert_eq!(total, on_disk, "the index counts what is on disk");

        // A review replaces the sidecar; the store still counts one frame.
        let review = Review {
            verdict: Verdict::Rejected,
            detection: None,
            class_name: None,
            code: None,
            reviewer: Some("ana".into()),
            reviewed_at: None,
        };
        record_review(&store, b.frame_id(), review.clone()).await.unwrap();
        assert_eq!(store.len(), 3);
        let reopened = LocalDir::open(&root, unbounded).unwrap();
        assert_eq!(reopened.bytes().await, store.bytes().await, "a reopened store indexes the same files");
        let (e, _) = reopened.get(b.frame_id()).await.unwrap().unwrap();
        assert_eq!((e.review.clone(), e.kept_for), (Some(review), KeptFor::Reviewed));
        assert!(matches!(record_review(&store, Uuid::now_v7(), e.review.clone().unwrap()).await, Err(EvidenceError::NotFound(_))));

        assert!(store.delete(c.frame_id()).await.unwrap());
        assert!(!store.delete(c.frame_id()).await.unwrap());
        assert!(!root.join("%..").exists(), "empty folders go with their last frame");
        assert!(store.put(kept("x", "2026-12-01T00:00:00Z"), Bytes::from_static(b"GIF89a")).await.is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in entries_of(dir) {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[tokio::test]
    async fn pruning_deletes_the_oldest_first_to_the_byte_and_age_bounds() {
        let root = tmp("prune");
        let image = Bytes::from(vec![0xFF, 0xD8, 0xFF].into_iter().chain(std::iter::repeat_n(7u8, 10_000)).collect::<Vec<u8>>());
        let open = |max_bytes, days: Option<u64>| {
            LocalDir::open(&root, Bounds { max_bytes, max_age: days.map(|d| Duration::from_secs(d * 86_400)) }).unwrap()
        };
        let store = open(u64::MAX, None);
        let frames: Vec<Evidence> = (1..=6).map(|d| kept("cam", &format!("2026-12-0{d}T08:00:00Z"))).collect();
        for e in frames.iter().rev() {
            store.put(e.clone(), image.clone()).await.unwrap();
        }
        let each = store.bytes().await / 6;
        assert!(each > 10_000);
        // Room for three and a half frames: the three oldest go.
        let store = open(each * 7 / 2, None);
        let pruned = store.prune(Utc::now()).await.unwrap();
        assert_eq!(pruned.frames, 3);
        assert!(store.bytes().await <= each * 7 / 2);
        let left: Vec<Uuid> = store.list(&Query::default()).await.unwrap().iter().map(Evidence::frame_id).collect();
        assert_eq!(left, frames[3..].iter().map(Evidence::frame_id).collect::<Vec<_>>());
        assert_eq!(walk(&root).len(), 6, "three images and their sidecars are left on disk");
        // Within bounds: nothing to do.
        assert_eq!(store.prune(Utc::now()).await.unwrap(), Pruned::default());
        // Two days at 2026-12-07T09:00: only the frame of the 6th is young enough.
        let store = open(u64::MAX, Some(2));
        let pruned = store.prune(at("2026-12-07T09:00:00Z")).await.unwrap();
        assert_eq!(pruned.frames, 2);
        assert_eq!(store.list(&Query::default()).await.unwrap()[0].frame_id(), frames[5].frame_id());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
