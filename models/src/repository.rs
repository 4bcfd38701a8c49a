//! The repository on disk: versions in directories, the active ones in the state
//! file. Changes to the state take the repository's lock (`<root>/.lock`), so a
//! CLI and a server changing it at once never lose each other's change.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::manifest::{MANIFEST_FILE, MODEL_FILE, Manifest};
use crate::state::{CandidateState, STATE_FILE, State, Track};
use crate::{RepoError, valid_name, valid_version};

#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

/// One version of a model: its directory and manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Version {
    /// The ONNX file.
    pub fn model_file(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// `name:version`, as results, logs and metrics name it.
    pub fn label(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// A name in the repository: its versions, the active one and where a rollback goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    /// Ascending.
    pub versions: Vec<String>,
    pub track: Option<Track>,
}

impl Repository {
    pub fn new(root: impl Into<PathBuf>) -> Repository {
        Repository { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state_path(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }

    pub fn state(&self) -> Result<State, RepoError> {
        State::read(&self.state_path())
    }

    /// The names in the repository (directories with a valid name), ascending.
    pub fn names(&self) -> Result<Vec<String>, RepoError> {
        let mut names = subdirs(&self.root)?.into_iter().filter(|n| valid_name(n)).collect::<Vec<_>>();
        names.sort();
        Ok(names)
    }

    /// `name`'s versions (directories holding a model file), ascending.
    pub fn versions(&self, name: &str) -> Result<Vec<String>, RepoError> {
        let dir = self.name_dir(name)?;
        if !dir.is_dir() {
            return Err(RepoError::UnknownModel { name: name.into(), root: self.root.display().to_string() });
        }
        let mut versions: Vec<String> =
            subdirs(&dir)?.into_iter().filter(|v| valid_version(v) && dir.join(v).join(MODEL_FILE).is_file()).collect();
        versions.sort();
        Ok(versions)
    }

    pub fn version(&self, name: &str, version: &str) -> Result<Version, RepoError> {
        let dir = self.name_dir(name)?;
        if !valid_version(version) {
            return Err(RepoError::BadVersion(version.into()));
        }
        if !dir.is_dir() {
            return Err(RepoError::UnknownModel { name: name.into(), root: self.root.display().to_string() });
        }
        let vdir = dir.join(version);
        if !vdir.join(MODEL_FILE).is_file() {
            return Err(RepoError::UnknownVersion { name: name.into(), version: version.into() });
        }
        let manifest = Manifest::read(&vdir.join(MANIFEST_FILE))?;
        Ok(Version { name: name.into(), version: version.into(), dir: vdir, manifest })
    }

    /// `name`'s active version.
    pub fn active(&self, name: &str) -> Result<Version, RepoError> {
        self.versions(name)?;
        let track = self.state()?.models.remove(name).ok_or_else(|| RepoError::NoActive(name.into()))?;
        self.version(name, &track.active)
    }

    /// Every name with its versions and state.
    pub fn list(&self) -> Result<Vec<Entry>, RepoError> {
        let mut state = self.state()?;
        self.names()?
            .into_iter()
            .map(|name| Ok(Entry { versions: self.versions(&name)?, track: state.models.remove(&name), name }))
            .collect()
    }

    /// The name a process serves: `configured`, or the repository's only name.
    pub fn serving_name(&self, configured: Option<&str>) -> Result<String, RepoError> {
        if let Some(name) = configured {
            self.versions(name)?;
            return Ok(name.to_string());
        }
        match &self.names()?[..] {
            [one] => Ok(one.clone()),
            [] => Err(RepoError::UnknownModel { name: "(any)".into(), root: self.root.display().to_string() }),
            several => Err(RepoError::BadManifest {
                path: self.root.display().to_string(),
                message: format!("holds several models ({}): set model_name to the one to serve", several.join(", ")),
            }),
        }
    }

    /// Copies `file` in as `name`'s `version` with `manifest` beside it. A version
    /// is never replaced. The copy is made in a hidden directory and renamed into
    /// place, so a half-copied version is never seen.
    pub fn add(&self, file: &Path, name: &str, version: &str, manifest: &Manifest) -> Result<Version, RepoError> {
        let name_dir = self.name_dir(name)?;
        if !valid_version(version) {
            return Err(RepoError::BadVersion(version.into()));
        }
        std::fs::create_dir_all(&name_dir).map_err(|e| RepoError::io(&name_dir, e))?;
        let _lock = self.lock()?;
        let target = name_dir.join(version);
        if target.exists() {
            return Err(RepoError::VersionExists { name: name.into(), version: version.into() });
        }
        let tmp = name_dir.join(format!(".add-{version}-{}", std::process::id()));
        let made = (|| -> Result<(), RepoError> {
            std::fs::create_dir_all(&tmp).map_err(|e| RepoError::io(&tmp, e))?;
            let onnx = tmp.join(MODEL_FILE);
            std::fs::copy(file, &onnx).map_err(|e| RepoError::io(file, e))?;
            sync(&onnx)?;
            let m = tmp.join(MANIFEST_FILE);
            let mut f = std::fs::File::create(&m).map_err(|e| RepoError::io(&m, e))?;
            f.write_all(manifest.to_toml().as_bytes()).map_err(|e| RepoError::io(&m, e))?;
            f.sync_all().map_err(|e| RepoError::io(&m, e))?;
            sync(&tmp)?;
            std::fs::rename(&tmp, &target).map_err(|e| RepoError::io(&target, e))?;
            sync(&name_dir)
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.version(name, version)
    }

    /// Reads the state, applies `change`, and writes it back, under the lock.
    pub fn update<R>(&self, change: impl FnOnce(&mut State) -> Result<R, RepoError>) -> Result<R, RepoError> {
        let _lock = self.lock()?;
        let mut state = self.state()?;
        let r = change(&mut state)?;
        state.write(&self.state_path())?;
        Ok(r)
    }

    /// Records `version` as `name`'s active version; returns the track as it was
    /// (to put back with [`Self::restore`] if serving it fails).
    pub fn record_activation(&self, name: &str, version: &str) -> Result<Option<Track>, RepoError> {
        self.version(name, version)?;
        self.update(|s| {
            let before = s.models.get(name).cloned();
            s.models.entry(name.into()).or_default().activate(version);
            Ok(before)
        })
    }

    /// The version a rollback of `name` goes to.
    pub fn rollback_target(&self, name: &str) -> Result<Version, RepoError> {
        self.versions(name)?;
        let track = self.state()?.models.remove(name).ok_or_else(|| RepoError::NoActive(name.into()))?;
        let back = track.previous.last().ok_or_else(|| RepoError::NoPrevious(name.into()))?;
        self.version(name, back)
    }

    /// Records the rollback of `name` to `expected` (what [`Self::rollback_target`]
    /// said); refused when the state changed in between. Returns the track as it was.
    pub fn record_rollback(&self, name: &str, expected: &str) -> Result<Option<Track>, RepoError> {
        self.update(|s| {
            let track = s.models.get_mut(name).ok_or_else(|| RepoError::NoActive(name.into()))?;
            let before = track.clone();
            match track.previous.last() {
                Some(back) if back == expected => {
                    track.roll_back();
                    Ok(Some(before))
                }
                _ => Err(RepoError::NoPrevious(name.into())),
            }
        })
    }

    /// Records `candidate` (a version of `name`, or None: no candidate) for every
    /// worker serving `name` to follow. Returns whether the state changed.
    pub fn record_candidate(&self, name: &str, candidate: Option<CandidateState>) -> Result<bool, RepoError> {
        if let Some(c) = &candidate {
            self.version(name, &c.version)?;
        }
        self.update(|s| {
            let track = s.models.get_mut(name).ok_or_else(|| RepoError::NoActive(name.into()))?;
            let changed = track.candidate != candidate;
            track.candidate = candidate;
            Ok(changed)
        })
    }

    /// Puts `name`'s track back as it was (None: no active version).
    pub fn restore(&self, name: &str, track: Option<Track>) -> Result<(), RepoError> {
        self.update(|s| {
            match track {
                Some(t) => s.models.insert(name.into(), t),
                None => s.models.remove(name),
            };
            Ok(())
        })
    }

    fn name_dir(&self, name: &str) -> Result<PathBuf, RepoError> {
        if !valid_name(name) {
            return Err(RepoError::BadName(name.into()));
        }
        Ok(self.root.join(name))
    }

    /// The repository's lock, held until dropped (also released if the process dies).
    fn lock(&self) -> Result<std::fs::File, RepoError> {
        std::fs::create_dir_all(&self.root).map_err(|e| RepoError::io(&self.root, e))?;
        let path = self.root.join(".lock");
        let f =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| RepoError::io(&path, e))?;
        f.lock().map_err(|e| RepoError::io(&path, e))?;
        Ok(f)
    }
}

fn subdirs(dir: &Path) -> Result<Vec<String>, RepoError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RepoError::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| RepoError::io(dir, e))?;
        if entry.path().is_dir()
            && let Ok(name) = entry.file_name().into_string()
        {
            names.push(name);
        }
    }
    Ok(names)
}

fn sync(path: &Path) -> Result<(), RepoError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| RepoError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("visionq-models-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn add_activate_rollback_and_list() {
        let root = scratch("repo");
        let src = root.join("weights.onnx");
        std::fs::write(&src, b"not really onnx").unwrap();
        let repo = Repository::new(root.join("models"));
        let m = Manifest { layout: Some("yolov5".into()), ..Default::default() };
        let v1 = repo.add(&src, "yolo", "1", &m).unwrap();
        assert_eq!(std::fs::read(v1.model_file()).unwrap(), b"not really onnx");
        assert_eq!(v1.manifest, m);
        assert_eq!(v1.label(), "yolo:1");
        let e = repo.add(&src, "yolo", "1", &Manifest::default()).unwrap_err();
        assert_eq!(e.code(), "version_exists");
        repo.add(&src, "yolo", "2", &Manifest::default()).unwrap();
        assert_eq!(repo.versions("yolo").unwrap(), ["1", "2"]);
        assert!(
            std::fs::read_dir(root.join("models/yolo")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.')),
            "no temporary directory is left"
        );

        assert_eq!(repo.active("yolo").unwrap_err().code(), "no_active_version");
        assert_eq!(repo.record_activation("yolo", "1").unwrap(), None);
        assert_eq!(repo.rollback_target("yolo").unwrap_err().code(), "no_previous_version");
        let before = repo.record_activation("yolo", "2").unwrap().unwrap();
        assert_eq!(before.active, "1");
        assert_eq!(repo.active("yolo").unwrap().version, "2");
        assert_eq!(repo.record_activation("yolo", "3").unwrap_err().code(), "unknown_version");

        let list = repo.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].versions, ["1", "2"]);
        assert_eq!(list[0].track.as_ref().unwrap().previous, ["1"]);

        let back = repo.rollback_target("yolo").unwrap();
        assert_eq!(back.version, "1");
        assert_eq!(repo.record_rollback("yolo", "2").unwrap_err().code(), "no_previous_version", "not what the target was");
        let was = repo.record_rollback("yolo", "1").unwrap();
        assert_eq!(repo.active("yolo").unwrap().version, "1");
        repo.restore("yolo", was).unwrap();
        assert_eq!(repo.active("yolo").unwrap().version, "2", "restored as it was");

        // A second repository object (another process) reads the same state.
        assert_eq!(Repository::new(root.join("models")).active("yolo").unwrap().version, "2");
        assert_eq!(repo.serving_name(None).unwrap(), "yolo");
        assert_eq!(repo.serving_name(Some("other")).unwrap_err().code(), "unknown_model");
        assert_eq!(repo.version("yolo", "../x").unwrap_err().code(), "bad_parameter");
        assert_eq!(repo.versions("a/b").unwrap_err().code(), "bad_parameter");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
