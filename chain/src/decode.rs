//! Second-stage outputs into what a detection carries: class probabilities into
//! `classification`, CTC sequences into `text`.

use visionq_contract::chain::{ClassScore, Classification, TextReading};

/// Whether `v` already reads as probabilities (each in 0–1, summing to about 1).
fn is_distribution(v: &[f32]) -> bool {
    v.iter().all(|p| (0.0..=1.0).contains(p)) && (v.iter().sum::<f32>() - 1.0).abs() < 1e-3
}

/// Softmax of logits, or the values as they are when they are probabilities already.
pub fn probabilities(v: &[f32]) -> Vec<f32> {
    if is_distribution(v) {
        return v.to_vec();
    }
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// One crop's class scores into its classification: the best `top_k` classes.
pub fn classify(scores: &[f32], labels: &[String], top_k: usize, model: &str) -> Classification {
    let p = probabilities(scores);
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let label = |i: usize| labels.get(i).cloned().unwrap_or_else(|| format!("class_{i}"));
    let top: Vec<ClassScore> = order.iter().take(top_k.max(1)).map(|&i| ClassScore { label: label(i), score: p[i] }).collect();
    Classification { label: top[0].label.clone(), score: top[0].score, top_k: top, model: model.to_string() }
}

/// The characters of a CTC recogniser: index 0 is the blank, index i the dictionary's
/// line i − 1, and one past the dictionary a space (PP-OCR's `use_space_char`).
#[derive(Debug, Clone)]
pub struct Alphabet {
    chars: Vec<String>,
}

impl Alphabet {
    /// From the dictionary's lines (the model's `character` metadata or its file).
    pub fn new(lines: &str) -> Alphabet {
        let mut chars = vec![String::new()];
        chars.extend(lines.lines().map(|l| l.trim_end_matches('\r').to_string()));
        chars.push(" ".to_string());
        Alphabet { chars }
    }

    /// Output classes it names: blank, the dictionary and the space.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.len() <= 2
    }

    /// Greedy CTC: the best class per time step, repeats collapsed, blanks dropped;
    /// the score is the mean probability of the characters kept (0 when none).
    pub fn read(&self, steps: &[f32], classes: usize, model: &str) -> TextReading {
        let mut value = String::new();
        let (mut sum, mut kept) = (0.0f32, 0usize);
        let mut previous = usize::MAX;
        for step in steps.chunks_exact(classes) {
            let p = probabilities(step);
            let (best, prob) = p.iter().enumerate().fold((0, f32::NEG_INFINITY), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc });
            if best != 0 && best != previous {
                value.push_str(self.chars.get(best).map_or("", String::as_str));
                sum += prob;
                kept += 1;
            }
            previous = best;
        }
        TextReading { value, score: if kept == 0 { 0.0 } else { sum / kept as f32 }, model: model.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_become_probabilities_and_top_k_is_ordered() {
        let c = classify(&[1.0, 3.0, 2.0], &["a".into(), "b".into()], 2, "m");
        assert_eq!(c.label, "b");
        assert_eq!(c.top_k.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(), ["b", "class_2"]);
        let total: f32 = probabilities(&[1.0, 3.0, 2.0]).iter().sum();
        assert!((total - 1.0).abs() < 1e-5);
        // Probabilities pass through.
        let c = classify(&[0.25, 0.75], &["0".into(), "180".into()], 5, "m");
        assert_eq!((c.label.as_str(), c.score, c.top_k.len()), ("180", 0.75, 2));
    }

    #[test]
    fn ctc_collapses_repeats_drops_blanks_and_maps_indices() {
        let a = Alphabet::new("A\nB\nC");
        assert_eq!(a.len(), 5);
        // Steps: A A blank A B space C C -> "AAB C" (a blank separates a real repeat).
        let one_hot = |i: usize| {
            let mut v = vec![0.0; 5];
            v[i] = 1.0;
            v
        };
        let steps: Vec<f32> = [1, 1, 0, 1, 2, 4, 3, 3].iter().flat_map(|&i| one_hot(i)).collect();
        let r = a.read(&steps, 5, "ocr");
        assert_eq!(r.value, "AAB C");
        assert!((r.score - 1.0).abs() < 1e-6);
        let r = a.read(&one_hot(0), 5, "ocr");
        assert_eq!((r.value.as_str(), r.score), ("", 0.0));
    }
}
