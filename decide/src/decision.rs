//! [`decide`]: a result's detections, a station's rules and its expectation in,
//! one decision out. Pure: no I/O, no clock.

use visionq_contract::decision::{Decision, Expectation, Outcome};
use visionq_contract::{Detection, ResultStatus};

use crate::labels::MappedBy;
use crate::rules::Rules;

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
    let shown: Vec<&Detection> = detections.iter().filter(|x| x.score >= rules.thresholds_for(&x.class_name).show).collect();
    let Some(best) = shown.iter().copied().max_by(|a, b| a.score.total_cmp(&b.score)) else {
        return match expectation.filter(|e| !e.codes.is_empty()) {
            Some(e) => {
                Decision { outcome: Outcome::Mismatch, reason: format!("nothing seen; {} expects {}", e.reference, codes(e)), ..d }
            }
            None => Decision { reason: "nothing reached the show threshold".into(), ..d },
        };
    };
    let t = rules.thresholds_for(&best.class_name);
    d.class_name = Some(best.class_name.clone());
    d.score = Some(best.score);
    let code = match code_of(rules, &best.class_name) {
        Ok((code, by, similarity)) => {
            d.rule = format!("{}:{by}", rules.name);
            d.similarity = similarity;
            code
        }
        Err((why, similarity)) => {
            d.rule = format!("{}:catalogue", rules.name);
            d.similarity = Some(similarity);
            let outcome = if best.score >= t.review { Outcome::NeedsReview } else { Outcome::Nothing };
            return Decision { outcome, reason: why, ..d };
        }
    };
    d.code = Some(code.clone());
    if let Some(e) = expectation.filter(|e| !e.codes.is_empty()) {
        let Some(expected) = e.codes.iter().find(|x| x.code == code) else {
            return Decision {
                outcome: Outcome::Mismatch,
                reason: format!("saw `{code}`; {} expects {}", e.reference, codes(e)),
                ..d
            };
        };
        if let Some(q) = expected.quantity {
            // Counted among the detections sure enough to be decided on.
            let seen = shown
                .iter()
                .filter(|x| x.score >= rules.thresholds_for(&x.class_name).review)
                .filter(|x| code_of(rules, &x.class_name).is_ok_and(|(c, _, _)| c == code))
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
    let (outcome, reason) = if best.score >= t.accept {
        (Outcome::Accepted, format!("score {:.2} ≥ accept {:.2}", best.score, t.accept))
    } else if best.score >= t.review {
        (Outcome::NeedsReview, format!("score {:.2} between review {:.2} and accept {:.2}", best.score, t.review, t.accept))
    } else {
        (Outcome::Nothing, format!("score {:.2} below review {:.2}", best.score, t.review))
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

    fn covers() -> RuleSet {
        // Each call its own directory: tests run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vq-decide-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("codes.csv"), "code\nZ-CV02-D26LXXX-C03N-NL-DG00\nZ-CV03-D31LXXX-C03N-NL-DG00\n").unwrap();
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
