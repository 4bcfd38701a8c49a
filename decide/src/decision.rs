//! [`decide`]: a result's detections, a station's rules and its expectation in,
//! one decision out. Pure: no I/O, no clock.

use visionq_contract::decision::{Decision, Expectation, Outcome};
use visionq_contract::{Detection, ResultStatus};

use crate::labels::MappedBy;
use crate::rules::{CodeFrom, Rules};

/// The code a class maps to under `rules`, with how it was found and its catalogue
/// similarity; `Err` (with the best similarity) when the catalogue has no code
/// close enough.
pub(crate) fn code_of(rules: &Rules, class_name: &str) -> Result<(String, &'static str, Option<f32>), (String, f32)> {
    let (mapped, by) = rules.labels.code(class_name);
    let by = match by {
        MappedBy::Explicit => "explicit",
        MappedBy::Normalised => "normalised",
    };
    match &rules.catalogue {
        None => Ok((mapped, by, None)),
        Some(cat) => match cat.best(&mapped) {
            Some(m) if m.similarity >= cat.min_similarity => Ok((m.code, "catalogue", Some(m.similarity))),
            Some(m) => {
                Err((format!("`{mapped}` matches no catalogue code (closest `{}` at {:.2})", m.code, m.similarity), m.similarity))
            }
            None => Err((format!("`{mapped}`: the catalogue is empty"), 0.0)),
        },
    }
}

/// What a shown detection offers to be decided on under `rules`: its label (the class
/// name, or what a chain read or classified on it) and that label's score — the
/// detection's own, or the lower of it and the chain's (an unsure reading of a sure
/// box is unsure). None: the chain the rules read from added nothing to it.
pub(crate) fn reading<'d>(rules: &Rules, d: &'d Detection) -> Option<(&'d str, f32)> {
    match rules.code_from {
        CodeFrom::Class => Some((d.class_name.as_str(), d.score)),
        CodeFrom::Text => d.text.as_ref().filter(|t| !t.value.trim().is_empty()).map(|t| (t.value.as_str(), d.score.min(t.score))),
        CodeFrom::Classification => d.classification.as_ref().map(|c| (c.label.as_str(), d.score.min(c.score))),
    }
}

/// A shown detection, its label and the label's score (see [`reading`]).
type Reading<'d> = (&'d Detection, &'d str, f32);

/// The detections over their class's `show` threshold that have a reading, with it.
fn readings<'d>(rules: &Rules, detections: &'d [Detection]) -> Vec<Reading<'d>> {
    detections.iter().filter(|x| rules.shows(x)).filter_map(|x| reading(rules, x).map(|(label, score)| (x, label, score))).collect()
}

/// The best-scoring of `readings`.
fn best<'r, 'd>(readings: &'r [Reading<'d>]) -> Option<&'r Reading<'d>> {
    readings.iter().max_by(|a, b| a.2.total_cmp(&b.2))
}

/// The best-scoring reading of `detections` under `rules` (see [`reading`]).
pub(crate) fn best_reading<'d>(rules: &Rules, detections: &'d [Detection]) -> Option<Reading<'d>> {
    best(&readings(rules, detections)).copied()
}

pub fn decide(status: ResultStatus, detections: &[Detection], rules: &Rules, expectation: Option<&Expectation>) -> Decision {
    let mut d = Decision {
        outcome: Outcome::Nothing,
        code: None,
        class_name: None,
        score: None,
        similarity: None,
        expectation_ref: expectation.map(|e| e.reference.clone()),
        rule: rules.name.clone(),
        reason: String::new(),
    };
    match status {
        ResultStatus::Error => return Decision { outcome: Outcome::Error, reason: "the frame could not be run".into(), ..d },
        ResultStatus::Expired => return Decision { outcome: Outcome::Expired, reason: "the frame's deadline passed".into(), ..d },
        ResultStatus::Ok => {}
    }
    let expected = expectation.filter(|e| !e.codes.is_empty());
    let shown = detections.iter().filter(|x| rules.shows(x)).count();
    let readings = readings(rules, detections);
    let Some(&(best, label, score)) = best(&readings) else {
        let seen = match (shown, rules.code_from) {
            (0, _) => "nothing seen".to_string(),
            (n, from) => format!("no {} on the {n} shown detection(s)", from.as_str()),
        };
        return match expected {
            Some(e) => Decision { outcome: Outcome::Mismatch, reason: format!("{seen}; {} expects {}", e.reference, codes(e)), ..d },
            None if shown == 0 => Decision { reason: "nothing reached the show threshold".into(), ..d },
            None => Decision { reason: seen, ..d },
        };
    };
    let t = rules.thresholds_for(&best.class_name);
    d.class_name = Some(best.class_name.clone());
    d.score = Some(score);
    // What the chain read, for the reason (the class name is in `class_name`).
    let read = match rules.code_from {
        CodeFrom::Class => String::new(),
        from => format!("{from} `{label}`; ", from = from.as_str()),
    };
    let code = match code_of(rules, label) {
        Ok((code, by, similarity)) => {
            d.rule = format!("{}:{by}", rules.name);
            d.similarity = similarity;
            code
        }
        Err((why, similarity)) => {
            d.rule = format!("{}:catalogue", rules.name);
            d.similarity = Some(similarity);
            let outcome = if score >= t.review { Outcome::NeedsReview } else { Outcome::Nothing };
            return Decision { outcome, reason: format!("{read}{why}"), ..d };
        }
    };
    d.code = Some(code.clone());
    if let Some(e) = expected {
        let Some(want) = e.codes.iter().find(|x| x.code == code) else {
            return Decision {
                outcome: Outcome::Mismatch,
                reason: format!("{read}saw `{code}`; {} expects {}", e.reference, codes(e)),
                ..d
            };
        };
        if let Some(q) = want.quantity {
            // Counted among the readings sure enough to be decided on.
            let seen = readings
                .iter()
                .filter(|(x, _, s)| *s >= rules.thresholds_for(&x.class_name).review)
                .filter(|(_, l, _)| code_of(rules, l).is_ok_and(|(c, _, _)| c == code))
                .count();
            if seen as u32 != q {
                return Decision {
                    outcome: Outcome::Mismatch,
                    reason: format!("saw {seen} × `{code}`; {} expects {q}", e.reference),
                    ..d
                };
            }
        }
    }
    let (outcome, reason) = if score >= t.accept {
        (Outcome::Accepted, format!("{read}score {score:.2} ≥ accept {:.2}", t.accept))
    } else if score >= t.review {
        (Outcome::NeedsReview, format!("{read}score {score:.2} between review {:.2} and accept {:.2}", t.review, t.accept))
    } else {
        (Outcome::Nothing, format!("{read}score {score:.2} below review {:.2}", t.review))
    };
    Decision { outcome, reason, ..d }
}

fn codes(e: &Expectation) -> String {
    e.codes.iter().map(|c| format!("`{}`", c.code)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rules::RuleSet;
    use visionq_contract::chain::{Classification, TextReading};
    use visionq_contract::decision::Expected;

    fn det(class: &str, score: f32) -> Detection {
        Detection {
            class_id: 0,
            class_name: class.into(),
            score,
            bbox: [0.1, 0.1, 0.5, 0.5],
            box_px: [10.0, 10.0, 50.0, 50.0],
            track_id: None,
            classification: None,
            text: None,
        }
    }

    /// A directory of its own for one call's files (tests run in parallel), with
    /// `codes.csv` holding `codes`.
    fn dir_with_codes(codes: &str) -> std::path::PathBuf {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vq-decide-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("codes.csv"), format!("code\n{codes}")).unwrap();
        dir
    }

    fn covers() -> RuleSet {
        let dir = dir_with_codes("Z-CV02-D26LXXX-C03N-NL-DG00\nZ-CV03-D31LXXX-C03N-NL-DG00\n");
        let text = r#"
            [rules.covers]
            catalogue = "codes.csv"
            min_similarity = 0.85
            labels.normalise = { prefixes = [["W", "Z"]], separators = [["_", "-"]], case = "upper" }
            labels.explicit = { "dog" = "Z-CV03-D31LXXX-C03N-NL-DG00" }
            [station.cam]
            rules = "covers"
        "#;
        RuleSet::parse(text, &dir, None).unwrap()
    }

    #[test]
    fn a_model_label_becomes_a_catalogue_code_through_normalisation_and_the_fuzzy_match() {
        let set = covers();
        let d = decide(ResultStatus::Ok, &[det("W_CV01_D26RXXX_C03N_NL_DG00", 0.9), det("cat", 0.3)], set.for_station("cam"), None);
        assert_eq!(d.outcome, Outcome::Accepted, "{d:?}");
        assert_eq!(d.code.as_deref(), Some("Z-CV02-D26LXXX-C03N-NL-DG00"));
        assert_eq!(d.rule, "covers:catalogue");
        let s = d.similarity.unwrap();
        assert!((0.85..1.0).contains(&s), "{s}");
        // An explicit label maps as written (and is still checked against the catalogue).
        let d = decide(ResultStatus::Ok, &[det("dog", 0.7)], set.for_station("cam"), None);
        assert_eq!(
            (d.outcome, d.code.as_deref(), d.similarity),
            (Outcome::NeedsReview, Some("Z-CV03-D31LXXX-C03N-NL-DG00"), Some(1.0))
        );
    }

    #[test]
    fn a_label_below_the_minimum_similarity_gets_no_code_and_goes_to_review() {
        let set = covers();
        let d = decide(ResultStatus::Ok, &[det("W_XX99_Q00_A_B_C", 0.95)], set.for_station("cam"), None);
        assert_eq!((d.outcome, d.code.as_deref()), (Outcome::NeedsReview, None), "{d:?}");
        assert!(d.reason.contains("matches no catalogue code"), "{}", d.reason);
        assert!(d.similarity.unwrap() < 0.85);
    }

    #[test]
    fn thresholds_make_the_bands() {
        let set = RuleSet::default();
        let rules = set.for_station("any");
        let outcome = |score| decide(ResultStatus::Ok, &[det("dog", score)], rules, None).outcome;
        assert_eq!(outcome(0.9), Outcome::Accepted);
        assert_eq!(outcome(0.85), Outcome::Accepted);
        assert_eq!(outcome(0.7), Outcome::NeedsReview);
        assert_eq!(outcome(0.4), Outcome::Nothing);
        // Below `show` a detection is not considered at all.
        let d = decide(ResultStatus::Ok, &[det("dog", 0.1)], rules, None);
        assert_eq!((d.outcome, d.class_name), (Outcome::Nothing, None));
        let d = decide(ResultStatus::Ok, &[det("dog", 0.9)], rules, None);
        assert_eq!((d.code.as_deref(), d.rule.as_str()), (Some("dog"), "builtin:normalised"));
    }

    #[test]
    fn an_expectation_reports_a_mismatch_and_checks_quantities() {
        let set = covers();
        let rules = set.for_station("cam");
        let note = |quantity| Expectation {
            reference: "DN-1042".into(),
            codes: vec![Expected { code: "Z-CV02-D26LXXX-C03N-NL-DG00".into(), quantity }],
        };
        let seen = [det("W_CV01_D26RXXX_C03N_NL_DG00", 0.9), det("W_CV01_D26RXXX_C03N_NL_DG00", 0.88)];
        let d = decide(ResultStatus::Ok, &seen, rules, Some(&note(None)));
        assert_eq!((d.outcome, d.expectation_ref.as_deref()), (Outcome::Accepted, Some("DN-1042")));
        let d = decide(ResultStatus::Ok, &seen, rules, Some(&note(Some(2))));
        assert_eq!(d.outcome, Outcome::Accepted, "{d:?}");
        let d = decide(ResultStatus::Ok, &seen, rules, Some(&note(Some(3))));
        assert_eq!(d.outcome, Outcome::Mismatch);
        assert!(d.reason.contains("saw 2"), "{}", d.reason);
        let d = decide(ResultStatus::Ok, &[det("dog", 0.95)], rules, Some(&note(None)));
        assert_eq!((d.outcome, d.code.as_deref()), (Outcome::Mismatch, Some("Z-CV03-D31LXXX-C03N-NL-DG00")));
        let d = decide(ResultStatus::Ok, &[], rules, Some(&note(None)));
        assert_eq!(d.outcome, Outcome::Mismatch);
        assert!(d.reason.contains("nothing seen"), "{}", d.reason);
    }

    fn read(class: &str, score: f32, text: &str, text_score: f32) -> Detection {
        let text = TextReading { value: text.into(), score: text_score, model: "ocr".into() };
        Detection { text: Some(text), ..det(class, score) }
    }

    #[test]
    fn a_code_can_come_from_the_text_a_chain_read() {
        let dir = dir_with_codes("VQ2026-0417\nVQ2026-0533\n");
        let text = r#"
            [rules.plates]
            code_from = "text"
            catalogue = "codes.csv"
            min_similarity = 0.8
            labels.normalise = { case = "upper" }
            labels.explicit = { "OLD-17" = "VQ2026-0417" }
            [station.cam]
            rules = "plates"
        "#;
        // Explicit entries name what the chain reads, not the model's classes.
        let set = RuleSet::parse(text, &dir, Some(&["bus".to_string(), "person".to_string()])).unwrap();
        let rules = set.for_station("cam");
        let d = decide(ResultStatus::Ok, &[read("bus", 0.9, "vq2026-0417", 0.99)], rules, None);
        assert_eq!((d.outcome, d.code.as_deref(), d.class_name.as_deref()), (Outcome::Accepted, Some("VQ2026-0417"), Some("bus")));
        assert_eq!((d.score, d.rule.as_str()), (Some(0.9), "plates:catalogue"));
        assert!(d.reason.starts_with("text `vq2026-0417`"), "{}", d.reason);
        // A misread character still finds its code through the catalogue.
        let d = decide(ResultStatus::Ok, &[read("bus", 0.9, "VQ2026-O417", 0.95)], rules, None);
        assert_eq!(d.code.as_deref(), Some("VQ2026-0417"));
        assert!(d.similarity.unwrap() < 1.0);
        let d = decide(ResultStatus::Ok, &[read("bus", 0.9, "OLD-17", 0.95)], rules, None);
        assert_eq!((d.code.as_deref(), d.similarity), (Some("VQ2026-0417"), Some(1.0)));
        // An unsure reading of a sure box is unsure.
        let d = decide(ResultStatus::Ok, &[read("bus", 0.95, "VQ2026-0417", 0.7)], rules, None);
        assert_eq!((d.outcome, d.score), (Outcome::NeedsReview, Some(0.7)));
        // The best reading decides, not the best detection.
        let d = decide(ResultStatus::Ok, &[det("person", 0.99), read("bus", 0.9, "VQ2026-0533", 0.9)], rules, None);
        assert_eq!((d.code.as_deref(), d.class_name.as_deref()), (Some("VQ2026-0533"), Some("bus")));
        // Nothing read: no code, never the class name.
        let d = decide(ResultStatus::Ok, &[det("bus", 0.9), read("bus", 0.9, " ", 0.9)], rules, None);
        assert_eq!((d.outcome, d.code), (Outcome::Nothing, None));
        assert_eq!(d.reason, "no text on the 2 shown detection(s)");
        let note = Expectation { reference: "DN-7".into(), codes: vec![Expected { code: "VQ2026-0533".into(), quantity: None }] };
        let d = decide(ResultStatus::Ok, &[read("bus", 0.9, "VQ2026-0417", 0.99)], rules, Some(&note));
        assert_eq!(d.outcome, Outcome::Mismatch);
        assert!(d.reason.contains("saw `VQ2026-0417`; DN-7 expects `VQ2026-0533`"), "{}", d.reason);
        let d = decide(ResultStatus::Ok, &[det("bus", 0.9)], rules, Some(&note));
        assert_eq!(
            (d.outcome, d.reason.as_str()),
            (Outcome::Mismatch, "no text on the 1 shown detection(s); DN-7 expects `VQ2026-0533`")
        );
    }

    #[test]
    fn a_code_can_come_from_a_classifier_chain() {
        let text = "[rules.grade]\ncode_from = \"classification\"\n[station.cam]\nrules = \"grade\"\n";
        let set = RuleSet::parse(text, Path::new("."), None).unwrap();
        let graded = |score| {
            let c = Classification { label: "severe".into(), score, top_k: vec![], model: "severity".into() };
            Detection { classification: Some(c), ..det("scratch", 0.95) }
        };
        let d = decide(ResultStatus::Ok, &[graded(0.9)], set.for_station("cam"), None);
        assert_eq!((d.outcome, d.code.as_deref(), d.class_name.as_deref()), (Outcome::Accepted, Some("severe"), Some("scratch")));
        assert_eq!(decide(ResultStatus::Ok, &[graded(0.7)], set.for_station("cam"), None).outcome, Outcome::NeedsReview);
        assert!(RuleSet::parse("[rules.x]\ncode_from = \"ocr\"\n", Path::new("."), None).is_err());
    }

    #[test]
    fn failed_and_expired_frames_are_decided_as_such() {
        let set = RuleSet::parse("", Path::new("."), None).unwrap();
        let rules = set.for_station("x");
        assert_eq!(decide(ResultStatus::Error, &[det("dog", 0.9)], rules, None).outcome, Outcome::Error);
        assert_eq!(decide(ResultStatus::Expired, &[], rules, None).outcome, Outcome::Expired);
    }

    #[test]
    fn the_decision_serialises_with_snake_case_outcomes() {
        let d = decide(ResultStatus::Ok, &[det("dog", 0.7)], RuleSet::default().for_station("x"), None);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["outcome"], "needs_review");
        assert_eq!(v["code"], "dog");
        assert_eq!(Outcome::NeedsReview.as_str(), "needs_review");
    }
}
