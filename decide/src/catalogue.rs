//! The catalogue of valid business codes, and the fuzzy match of a mapped label
//! against it: position-weighted segment similarity. Codes are split into segments
//! at separators; segment i of n weighs n − i (the leading segments name the
//! product family, the trailing ones are suffixes many codes share), and two
//! segments score 1 − their edit distance over the longer length.

use std::path::Path;

/// The best catalogue code for a label.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeMatch {
    pub code: String,
    /// 0–1; 1 is the same code.
    pub similarity: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    codes: Vec<String>,
    /// Below this similarity a label matches no code.
    pub min_similarity: f32,
}

fn segments(code: &str) -> Vec<String> {
    code.split(['-', '_', ' ', '/', '.']).filter(|s| !s.is_empty()).map(str::to_uppercase).collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

fn segment_score(a: &str, b: &str) -> f32 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    1.0 - edit_distance(&a, &b) as f32 / longest as f32
}

/// Position-weighted segment similarity of two codes, 0–1, case-insensitive.
pub fn similarity(a: &str, b: &str) -> f32 {
    let (sa, sb) = (segments(a), segments(b));
    let n = sa.len().max(sb.len());
    if n == 0 {
        return 0.0;
    }
    let (mut total, mut weights) = (0.0f32, 0.0f32);
    for i in 0..n {
        let w = (n - i) as f32;
        let (x, y) = (sa.get(i).map_or("", String::as_str), sb.get(i).map_or("", String::as_str));
        total += w * segment_score(x, y);
        weights += w;
    }
    total / weights
}

impl Catalogue {
    pub fn new(codes: Vec<String>, min_similarity: f32) -> Catalogue {
        Catalogue { codes, min_similarity }
    }

    /// Reads codes from a CSV file: the first column of each line; a first line
    /// whose first column is `code` is a header; empty lines and `#` comments are
    /// skipped. Refuses an empty catalogue.
    pub fn from_csv(path: &Path, min_similarity: f32) -> Result<Catalogue, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("catalogue {}: {e}", path.display()))?;
        let codes: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split(',').next().unwrap_or("").trim().trim_matches('"').to_string())
            .enumerate()
            .filter(|(i, c)| {
                let header = *i == 0 && c.eq_ignore_ascii_case("code");
                !c.is_empty() && !header
            })
            .map(|(_, c)| c)
            .collect();
        if codes.is_empty() {
            return Err(format!("catalogue {} holds no codes", path.display()));
        }
        Ok(Catalogue { codes, min_similarity })
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The most similar code (the first listed among equals), whatever its similarity.
    pub fn best(&self, label: &str) -> Option<CodeMatch> {
        let mut best: Option<CodeMatch> = None;
        for code in &self.codes {
            let s = similarity(label, code);
            if best.as_ref().is_none_or(|b| s > b.similarity) {
                best = Some(CodeMatch { code: code.clone(), similarity: s });
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_code_is_one_and_case_and_separators_do_not_matter() {
        assert_eq!(similarity("Z-CV02-D26LXXX", "z_cv02_d26lxxx"), 1.0);
        assert_eq!(similarity("", "Z"), 0.0);
    }

    #[test]
    fn a_difference_in_a_leading_segment_costs_more_than_in_a_trailing_one() {
        let code = "Z-CV02-D26LXXX-C03N-NL-DG00";
        let family = similarity("Z-CV01-D26LXXX-C03N-NL-DG00", code);
        let suffix = similarity("Z-CV02-D26LXXX-C03N-NL-DG01", code);
        assert!(family < suffix, "{family} {suffix}");
        assert!(suffix > 0.95 && family > 0.9, "{family} {suffix}");
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        let d = |a: &str, b: &str| edit_distance(&a.chars().collect::<Vec<_>>(), &b.chars().collect::<Vec<_>>());
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("D26RXXX", "D26LXXX"), 1);
    }

    #[test]
    fn best_match_picks_the_family_that_fits() {
        let cat = Catalogue::new(vec!["Z-CV02-D26LXXX-C03N-NL-DG00".into(), "Z-CV03-D31LXXX-C03N-NL-DG00".into()], 0.8);
        let m = cat.best("Z-CV01-D26RXXX-C03N-NL-DG00").unwrap();
        assert_eq!(m.code, "Z-CV02-D26LXXX-C03N-NL-DG00");
        assert!((0.8..1.0).contains(&m.similarity), "{m:?}");
        let m = cat.best("Z-CV03-D31LXXX-C03N-NL-DG00").unwrap();
        assert_eq!((m.code.as_str(), m.similarity), ("Z-CV03-D31LXXX-C03N-NL-DG00", 1.0));
    }

    #[test]
    fn csv_takes_the_first_column_and_skips_header_and_comments() {
        let dir = std::env::temp_dir().join(format!("vq-catalogue-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("codes.csv");
        std::fs::write(&path, "code,description\n# retired below\nZ-A-1,first\n\n\"Z-B-2\",second\n").unwrap();
        let cat = Catalogue::from_csv(&path, 0.7).unwrap();
        assert_eq!(cat.codes, vec!["Z-A-1", "Z-B-2"]);
        std::fs::write(&path, "code\n").unwrap();
        assert!(Catalogue::from_csv(&path, 0.7).unwrap_err().contains("no codes"));
        assert!(Catalogue::from_csv(&dir.join("missing.csv"), 0.7).is_err());
    }
}
