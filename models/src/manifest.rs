//! `model.toml`: what a version says of its file. Every key is optional: what the
//! ONNX file declares is read at load, and a key set here must agree with it (input
//! size and format) or overrides it (layout, class names, thresholds).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::RepoError;

/// The model file's name inside a version's directory.
pub const MODEL_FILE: &str = "model.onnx";
/// The manifest's name inside a version's directory.
pub const MANIFEST_FILE: &str = "model.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Input `[width, height]` the file takes; loading refuses a file that takes another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<[u32; 2]>,
    /// `f32_nchw` (RGB scaled to 0–1) or `u8_nhwc`; loading refuses a file that differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<String>,
    /// Output layout: `yolov5`, `yolov8`, `yolov10` or `scored` (else read from the
    /// file, else inferred from the output's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Class names, for a file whose metadata has none (these win over the file's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// This version's score threshold (else the configured `conf_threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf_threshold: Option<f32>,
    /// This version's NMS IoU threshold (else the configured `iou_threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iou_threshold: Option<f32>,
}

pub const INPUT_FORMATS: [&str; 2] = ["f32_nchw", "u8_nhwc"];
pub const LAYOUTS: [&str; 4] = ["yolov5", "yolov8", "yolov10", "scored"];

impl Manifest {
    /// Parses and checks a manifest's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, RepoError> {
        let bad = |message: String| RepoError::BadManifest { path: path.display().to_string(), message };
        let m: Manifest = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        m.check().map_err(bad)?;
        Ok(m)
    }

    /// Reads `path`; a missing file is an empty manifest (everything from the ONNX file).
    pub fn read(path: &Path) -> Result<Manifest, RepoError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Manifest::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(RepoError::io(path, e)),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest is plain TOML")
    }

    fn check(&self) -> Result<(), String> {
        if let Some([w, h]) = self.input_size
            && (w == 0 || h == 0)
        {
            return Err("input_size must be [width, height], both above 0".into());
        }
        if let Some(f) = &self.input_format
            && !INPUT_FORMATS.contains(&f.as_str())
        {
            return Err(format!("input_format must be one of {INPUT_FORMATS:?}, not `{f}`"));
        }
        if let Some(l) = &self.layout
            && !LAYOUTS.contains(&l.as_str())
        {
            return Err(format!("layout must be one of {LAYOUTS:?}, not `{l}`"));
        }
        if let Some(names) = &self.names
            && (names.is_empty() || names.iter().any(|n| n.trim().is_empty()))
        {
            return Err("names must be a non-empty list of non-empty class names".into());
        }
        for (key, v) in [("conf_threshold", self.conf_threshold), ("iou_threshold", self.iou_threshold)] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err(format!("{key} must be within 0..1, not {v}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_round_trips_and_bad_values_are_refused_with_the_key() {
        let text = r#"
            input_size = [416, 416]
            input_format = "f32_nchw"
            layout = "yolov5"
            names = ["person", "car"]
            conf_threshold = 0.3
            iou_threshold = 0.5
        "#;
        let m = Manifest::parse(text, Path::new("m.toml")).unwrap();
        assert_eq!(m.input_size, Some([416, 416]));
        assert_eq!(Manifest::parse(&m.to_toml(), Path::new("m.toml")).unwrap(), m);
        assert_eq!(Manifest::parse("", Path::new("m.toml")).unwrap(), Manifest::default());
        for (bad, key) in [
            ("layout = \"yolov9\"", "layout"),
            ("input_format = \"nchw\"", "input_format"),
            ("conf_threshold = 1.5", "conf_threshold"),
            ("names = []", "names"),
            ("input_size = [0, 416]", "input_size"),
            ("colour = \"red\"", "colour"),
        ] {
            let e = Manifest::parse(bad, Path::new("v/model.toml")).unwrap_err();
            assert_eq!(e.code(), "bad_manifest");
            assert!(e.to_string().contains(key) && e.to_string().contains("v/model.toml"), "{e}");
        }
    }

    #[test]
    fn a_missing_manifest_is_empty() {
        assert_eq!(Manifest::read(Path::new("/nonexistent/model.toml")).unwrap(), Manifest::default());
    }
}
