//! The rules file: thresholds, named rule sets and which station uses which.
//!
//! ```toml
//! [thresholds]                 # the defaults of every rule set
//! show = 0.25                  # below: not returned at all
//! review = 0.65                # from here: a person looks at it
//! accept = 0.85                # from here: accepted without a person
//!
//! [rules.covers]
//! catalogue = "codes.csv"      # valid codes, first CSV column; relative to this file
//! min_similarity = 0.8
//! thresholds = { accept = 0.9 }
//! class.scratch = { review = 0.5 }
//! labels.explicit = { dog = "ANIMAL-01" }
//! labels.normalise = { prefixes = [["W", "Z"]], separators = [["_", "-"]], case = "upper" }
//!
//! [rules.battery-labels]
//! code_from = "text"           # the code is what a text chain read on the detection
//! catalogue = "part-numbers.csv"
//!
//! [station.line1-cam1]
//! rules = "covers"
//! ```
//!
//! A station not listed uses the rule set named `default` if there is one, else the
//! global thresholds with class names as codes. Everything is checked at load: a
//! bad file is refused whole, with the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalogue::Catalogue;
use crate::labels::LabelMap;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("rules {path}: {reason}")]
pub struct RulesError {
    pub path: String,
    pub reason: String,
}

/// Score thresholds: `show` ≤ `review` ≤ `accept`, each within 0–1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub show: f32,
    pub review: f32,
    pub accept: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { show: 0.25, review: 0.65, accept: 0.85 }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialThresholds {
    show: Option<f32>,
    review: Option<f32>,
    accept: Option<f32>,
}

impl PartialThresholds {
    fn over(self, base: Thresholds, what: &str) -> Result<Thresholds, String> {
        let t = Thresholds {
            show: self.show.unwrap_or(base.show),
            review: self.review.unwrap_or(base.review),
            accept: self.accept.unwrap_or(base.accept),
        };
        for (name, v) in [("show", t.show), ("review", t.review), ("accept", t.accept)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{what}: `{name}` = {v} is not within 0–1"));
            }
        }
        if !(t.show <= t.review && t.review <= t.accept) {
            return Err(format!(
                "{what}: thresholds must keep show ≤ review ≤ accept (show {}, review {}, accept {})",
                t.show, t.review, t.accept
            ));
        }
        Ok(t)
    }
}

/// Where a detection's label, the one the label map and the catalogue turn into a
/// code, comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeFrom {
    /// The detector's class name.
    #[default]
    Class,
    /// The text a text chain (OCR) read on the detection: a part number, a label.
    Text,
    /// The label a classifier chain gave the detection.
    Classification,
}

impl CodeFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeFrom::Class => "class",
            CodeFrom::Text => "text",
            CodeFrom::Classification => "classification",
        }
    }
}

/// One named rule set.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub name: String,
    /// Where each detection's label comes from (the class name, or a chain's output).
    pub code_from: CodeFrom,
    pub labels: LabelMap,
    pub catalogue: Option<Catalogue>,
    pub thresholds: Thresholds,
    pub per_class: HashMap<String, Thresholds>,
}

impl Rules {
    /// The built-in rules: default thresholds, class names as codes.
    pub fn builtin(thresholds: Thresholds) -> Rules {
        Rules {
            name: "builtin".into(),
            code_from: CodeFrom::Class,
            labels: LabelMap::default(),
            catalogue: None,
            thresholds,
            per_class: HashMap::new(),
        }
    }

    pub fn thresholds_for(&self, class_name: &str) -> Thresholds {
        self.per_class.get(class_name).copied().unwrap_or(self.thresholds)
    }

    /// Whether `d` reaches its class's `show` threshold (below it a detection is not
    /// returned, stored or decided on).
    pub fn shows(&self, d: &visionq_contract::Detection) -> bool {
        d.score >= self.thresholds_for(&d.class_name).show
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    thresholds: PartialThresholds,
    #[serde(default)]
    rules: HashMap<String, RulesEntry>,
    #[serde(default)]
    station: HashMap<String, StationEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesEntry {
    #[serde(default)]
    code_from: CodeFrom,
    catalogue: Option<PathBuf>,
    min_similarity: Option<f32>,
    #[serde(default)]
    thresholds: PartialThresholds,
    #[serde(default)]
    class: HashMap<String, PartialThresholds>,
    #[serde(default)]
    labels: LabelMap,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StationEntry {
    rules: String,
}

/// Every rule set of a rules file, and which station uses which.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    builtin: Rules,
    rules: HashMap<String, Rules>,
    stations: HashMap<String, String>,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet { builtin: Rules::builtin(Thresholds::default()), rules: HashMap::new(), stations: HashMap::new() }
    }
}

impl RuleSet {
    /// Reads and checks a rules file. `classes` are the model's class names, when
    /// known: a per-class threshold or an explicit label for a class the model does
    /// not have is refused (a typo would otherwise never match).
    pub fn load(path: &Path, classes: Option<&[String]>) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path, e.to_string()))?;
        RuleSet::parse(&text, path.parent().unwrap_or(Path::new(".")), classes).map_err(|reason| err(path, reason))
    }

    /// As [`RuleSet::load`], from the file's text; relative catalogue paths are
    /// taken from `dir`.
    pub fn parse(text: &str, dir: &Path, classes: Option<&[String]>) -> Result<RuleSet, String> {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let global = file.thresholds.over(Thresholds::default(), "[thresholds]")?;
        let known = |class: &str, what: &str| match classes {
            Some(names) if !names.iter().any(|n| n == class) => Err(format!("{what}: the model has no class `{class}`")),
            _ => Ok(()),
        };
        let mut rules = HashMap::new();
        for (name, entry) in file.rules {
            let what = format!("[rules.{name}]");
            let thresholds = entry.thresholds.over(global, &what)?;
            let mut per_class = HashMap::new();
            for (class, t) in entry.class {
                known(&class, &what)?;
                per_class.insert(class.clone(), t.over(thresholds, &format!("{what} class.{class}"))?);
            }
            // Explicit entries map class names only when the code comes from the class
            // (with a chain they map what the chain read, which no list can check).
            if entry.code_from == CodeFrom::Class {
                for class in entry.labels.explicit.keys() {
                    known(class, &format!("{what} labels.explicit"))?;
                }
            }
            let min = entry.min_similarity.unwrap_or(0.8);
            if !(min > 0.0 && min <= 1.0) {
                return Err(format!("{what}: min_similarity = {min} is not within (0, 1]"));
            }
            let catalogue = match entry.catalogue {
                Some(p) => Some(Catalogue::from_csv(&dir.join(p), min).map_err(|e| format!("{what}: {e}"))?),
                None if entry.min_similarity.is_some() => return Err(format!("{what}: min_similarity without a catalogue")),
                None => None,
            };
            let code_from = entry.code_from;
            rules.insert(name.clone(), Rules { name, code_from, labels: entry.labels, catalogue, thresholds, per_class });
        }
        let mut stations = HashMap::new();
        for (station, entry) in file.station {
            if !rules.contains_key(&entry.rules) {
                return Err(format!("[station.{station}]: no rule set `{}`", entry.rules));
            }
            stations.insert(station, entry.rules);
        }
        Ok(RuleSet { builtin: Rules::builtin(global), rules, stations })
    }

    /// The lowest `review` threshold any station's frame can be decided by (global,
    /// per rule set, per class): below it no frame is in a review band nor decided
    /// `needs_review`.
    pub fn lowest_review(&self) -> f32 {
        let sets = std::iter::once(&self.builtin).chain(self.rules.values());
        sets.flat_map(|r| std::iter::once(r.thresholds.review).chain(r.per_class.values().map(|t| t.review))).fold(1.0, f32::min)
    }

    /// The rules a station's results are decided by.
    pub fn for_station(&self, station: &str) -> &Rules {
        self.stations.get(station).and_then(|name| self.rules.get(name)).or_else(|| self.rules.get("default")).unwrap_or(&self.builtin)
    }
}

fn err(path: &Path, reason: String) -> RulesError {
    RulesError { path: path.display().to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        ["dog", "cat", "W_CV01_D26RXXX_C03N_NL_DG00"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_station_gets_its_rules_else_default_else_builtin() {
        let text = r#"
            thresholds = { accept = 0.8 }
            [rules.default]
            thresholds = { review = 0.5 }
            [rules.strict]
            thresholds = { accept = 0.95 }
            class.dog = { accept = 0.7 }
            [station.cam-1]
            rules = "strict"
        "#;
        let set = RuleSet::parse(text, Path::new("."), Some(&classes())).unwrap();
        let strict = set.for_station("cam-1");
        assert_eq!(strict.name, "strict");
        assert_eq!(strict.thresholds, Thresholds { show: 0.25, review: 0.65, accept: 0.95 });
        // A class override starts from its rule set's thresholds.
        assert_eq!(strict.thresholds_for("dog"), Thresholds { show: 0.25, review: 0.65, accept: 0.7 });
        assert_eq!(strict.thresholds_for("cat").accept, 0.95);
        assert_eq!(set.for_station("cam-2").name, "default");
        assert_eq!(set.for_station("cam-2").thresholds, Thresholds { show: 0.25, review: 0.5, accept: 0.8 });
        let bare = RuleSet::parse("", Path::new("."), None).unwrap();
        assert_eq!(bare.for_station("any").name, "builtin");
        assert_eq!(bare.for_station("any").thresholds, Thresholds::default());
        // The lowest review threshold any frame can meet: rule sets' and classes'.
        assert_eq!((set.lowest_review(), bare.lowest_review()), (0.5, Thresholds::default().review));
        let low_class = "[rules.default]\nclass.cat = { show = 0.1, review = 0.2 }\n";
        assert_eq!(RuleSet::parse(low_class, Path::new("."), Some(&classes())).unwrap().lowest_review(), 0.2);
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let refused = |text: &str| RuleSet::parse(text, Path::new("/nonexistent"), Some(&classes())).unwrap_err();
        assert!(refused("thresholds = { review = 0.9, accept = 0.5 }").contains("show ≤ review ≤ accept"));
        assert!(refused("thresholds = { show = 1.5 }").contains("not within 0–1"));
        assert!(refused("[rules.a]\nclass.unicorn = { accept = 0.5 }").contains("no class `unicorn`"));
        assert!(refused("[rules.a]\nlabels.explicit = { unicorn = \"U-1\" }").contains("no class `unicorn`"));
        assert!(refused("[rules.a]\ncatalogue = \"missing.csv\"").contains("missing.csv"));
        assert!(refused("[rules.a]\nmin_similarity = 0.5").contains("without a catalogue"));
        assert!(refused("[station.cam]\nrules = \"nope\"").contains("no rule set `nope`"));
        assert!(refused("[rules.a]\nthreshold = { accept = 0.5 }").contains("unknown field"));
        assert!(refused("[rules.a]\nlabels.normalise = { case = \"title\" }").contains("unknown variant"));
    }

    #[test]
    fn load_reads_the_catalogue_beside_the_file() {
        let dir = std::env::temp_dir().join(format!("vq-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("codes.csv"), "code\nZ-CV02-D26LXXX-C03N-NL-DG00\n").unwrap();
        std::fs::write(dir.join("rules.toml"), "[rules.covers]\ncatalogue = \"codes.csv\"\nmin_similarity = 0.9\n").unwrap();
        let set = RuleSet::load(&dir.join("rules.toml"), None).unwrap();
        let cat = set.rules["covers"].catalogue.as_ref().unwrap();
        assert_eq!((cat.len(), cat.min_similarity), (1, 0.9));
        let e = RuleSet::load(&dir.join("absent.toml"), None).unwrap_err();
        assert!(e.to_string().contains("absent.toml"), "{e}");
    }
}
