//! Model class → business code: explicit entries first, else the class name put
//! through the normalisation steps (prefix substitution, separator substitution,
//! case), in that order.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Case {
    #[default]
    Keep,
    Upper,
    Lower,
}

/// The normalisation steps, applied in this order: the first matching prefix
/// substitution, every separator substitution, then the case.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalise {
    /// `[from, to]` pairs: a label starting with `from` (case-insensitively) gets
    /// `to` in its place. Only the first that matches is applied.
    #[serde(default)]
    pub prefixes: Vec<[String; 2]>,
    /// `[from, to]` pairs replaced everywhere in the label (e.g. `["_", "-"]`).
    #[serde(default)]
    pub separators: Vec<[String; 2]>,
    #[serde(default)]
    pub case: Case,
}

impl Normalise {
    pub fn apply(&self, label: &str) -> String {
        let mut s = label.trim().to_string();
        if let Some([from, to]) = self.prefixes.iter().find(|[from, _]| {
            !from.is_empty() && s.len() >= from.len() && s.is_char_boundary(from.len()) && s[..from.len()].eq_ignore_ascii_case(from)
        }) {
            s = format!("{to}{}", &s[from.len()..]);
        }
        for [from, to] in &self.separators {
            if !from.is_empty() {
                s = s.replace(from.as_str(), to);
            }
        }
        match self.case {
            Case::Keep => s,
            Case::Upper => s.to_uppercase(),
            Case::Lower => s.to_lowercase(),
        }
    }
}

/// How a code was found for a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappedBy {
    /// An explicit entry of the label map.
    Explicit,
    /// The normalisation steps.
    Normalised,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelMap {
    /// Model class name → business code, taken as written.
    #[serde(default)]
    pub explicit: HashMap<String, String>,
    #[serde(default)]
    pub normalise: Normalise,
}

impl LabelMap {
    /// The business code of a model class, and how it was found.
    pub fn code(&self, class_name: &str) -> (String, MappedBy) {
        match self.explicit.get(class_name) {
            Some(code) => (code.clone(), MappedBy::Explicit),
            None => (self.normalise.apply(class_name), MappedBy::Normalised),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plant() -> Normalise {
        Normalise { prefixes: vec![["W".into(), "Z".into()]], separators: vec![["_".into(), "-".into()]], case: Case::Upper }
    }

    #[test]
    fn prefix_then_separators_then_case() {
        assert_eq!(plant().apply("W_CV01_D26RXXX_C03N_NL_DG00"), "Z-CV01-D26RXXX-C03N-NL-DG00");
        assert_eq!(plant().apply(" w_cv03_d31lxxx "), "Z-CV03-D31LXXX");
        // A label without the prefix keeps its first letter.
        assert_eq!(plant().apply("A_B"), "A-B");
    }

    #[test]
    fn only_the_first_matching_prefix_is_applied() {
        let n = Normalise { prefixes: vec![["W".into(), "Z".into()], ["Z".into(), "Q".into()]], ..Default::default() };
        assert_eq!(n.apply("W1"), "Z1");
        assert_eq!(n.apply("Z1"), "Q1");
    }

    #[test]
    fn explicit_entries_win_over_normalisation() {
        let map = LabelMap { explicit: [("dog".to_string(), "ANIMAL-01".to_string())].into(), normalise: plant() };
        assert_eq!(map.code("dog"), ("ANIMAL-01".to_string(), MappedBy::Explicit));
        assert_eq!(map.code("w_cat"), ("Z-CAT".to_string(), MappedBy::Normalised));
    }
}
