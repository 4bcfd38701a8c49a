//! `active.toml`: the active version of each name and the versions active before
//! it. Written whole, atomically: a reader (a replica starting) sees the old state
//! or the new one, never a torn file, and an acknowledged change survives a crash.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::RepoError;

/// The state file's name at the repository's root.
pub const STATE_FILE: &str = "active.toml";
/// How many earlier versions a name remembers for rollback.
const HISTORY: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default)]
    pub models: BTreeMap<String, Track>,
}

/// One name's active version and where a rollback goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    pub active: String,
    /// When `active` was activated (RFC 3339, UTC).
    #[serde(default)]
    pub activated_at: String,
    /// The versions active before, oldest first: a rollback goes to the last one.
    #[serde(default)]
    pub previous: Vec<String>,
    /// A candidate version every worker serving the name runs beside `active` (a
    /// canary or a shadow run); an activation or a rollback ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateState>,
}

/// A candidate as recorded: what every worker serving the name follows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateState {
    pub version: String,
    /// `canary` or `shadow`.
    pub mode: String,
    /// Canary: the share of every station's frames.
    #[serde(default)]
    pub share: f64,
    /// Canary: stations all of whose frames go to the candidate.
    #[serde(default)]
    pub stations: Vec<String>,
    /// Shadow: the share of frames also run on the candidate.
    #[serde(default)]
    pub sample: f64,
    /// RFC 3339, UTC.
    pub started_at: String,
}

impl Track {
    /// `version` becomes active; the one it replaces is remembered. Activating the
    /// active version changes nothing (returns false).
    pub fn activate(&mut self, version: &str) -> bool {
        if self.active == version {
            return false;
        }
        if !self.active.is_empty() {
            self.previous.push(std::mem::take(&mut self.active));
            if self.previous.len() > HISTORY {
                self.previous.remove(0);
            }
        }
        self.active = version.to_string();
        self.activated_at = now();
        self.candidate = None;
        true
    }

    /// Back to the version active before; None when there is none.
    pub fn roll_back(&mut self) -> Option<String> {
        let back = self.previous.pop()?;
        self.active = back.clone();
        self.activated_at = now();
        self.candidate = None;
        Some(back)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl State {
    /// Reads the state at `path`; no file yet is an empty state.
    pub fn read(path: &Path) -> Result<State, RepoError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(RepoError::io(path, e)),
        };
        toml::from_str(&text).map_err(|e| RepoError::BadState { path: path.display().to_string(), message: e.message().to_string() })
    }

    /// Replaces the file at `path` with this state: a temporary file beside it,
    /// fsynced, renamed over it, and the directory fsynced so the rename is durable.
    pub fn write(&self, path: &Path) -> Result<(), RepoError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
        let text = toml::to_string(self).expect("the state is plain TOML");
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(RepoError::io(&tmp, e));
        }
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            RepoError::io(path, e)
        })?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| RepoError::io(dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_remembers_what_it_replaced_and_rollback_walks_back() {
        let mut t = Track::default();
        assert!(t.activate("1"));
        assert!(t.previous.is_empty(), "nothing was active before the first");
        assert!(t.activate("2"));
        assert!(!t.activate("2"), "the active version again is no change");
        assert!(t.activate("3"));
        assert_eq!(t.previous, ["1", "2"]);
        assert_eq!(t.roll_back().as_deref(), Some("2"));
        assert_eq!(t.roll_back().as_deref(), Some("1"));
        assert_eq!(t.active, "1");
        assert_eq!(t.roll_back(), None, "nothing before the first");
        assert_eq!(t.active, "1");
        // A candidate ends with an activation or a rollback.
        let candidate = CandidateState { version: "3".into(), mode: "canary".into(), share: 0.1, ..Default::default() };
        t.candidate = Some(candidate.clone());
        assert!(t.activate("3") && t.candidate.is_none());
        t.candidate = Some(candidate);
        assert!(t.roll_back().is_some() && t.candidate.is_none());
    }

    #[test]
    fn the_state_survives_a_write_and_read_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("visionq-models-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(STATE_FILE);
        assert_eq!(State::read(&path).unwrap(), State::default());
        let mut s = State::default();
        s.models.entry("yolo".into()).or_default().activate("1");
        s.models.get_mut("yolo").unwrap().activate("2");
        s.write(&path).unwrap();
        assert_eq!(State::read(&path).unwrap(), s);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from(STATE_FILE)]);
        std::fs::write(&path, "models = 3").unwrap();
        assert_eq!(State::read(&path).unwrap_err().code(), "repository_unavailable");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
