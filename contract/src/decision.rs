//! The decision on a result (issue 15): what the detections mean for the plant,
//! under the station's rules. Made by the `decide` crate; part of the result object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The best detection reached `accept` and its code is valid (and expected).
    Accepted,
    /// A person should look: a score between `review` and `accept`, or a label that
    /// matched no catalogue code closely enough.
    NeedsReview,
    /// What was seen is not what the station's expectation says.
    Mismatch,
    /// Nothing reached `review` (what reached `show` is still returned).
    Nothing,
    /// The frame was not run: its deadline passed.
    Expired,
    /// The frame could not be run (its result says why).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::NeedsReview => "needs_review",
            Outcome::Mismatch => "mismatch",
            Outcome::Nothing => "nothing",
            Outcome::Expired => "expired",
            Outcome::Error => "error",
        }
    }

    pub const ALL: [Outcome; 6] =
        [Outcome::Accepted, Outcome::NeedsReview, Outcome::Mismatch, Outcome::Nothing, Outcome::Expired, Outcome::Error];

    /// The outcome [`Outcome::as_str`] names.
    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// One code a station expects, with how many if it matters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Expected {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
}

/// What a station should see, e.g. the codes of a delivery note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Expectation {
    /// The plant's reference for it (a delivery-note id).
    pub reference: String,
    pub codes: Vec<Expected>,
}

/// The decision on one result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub outcome: Outcome,
    /// The business code of the best detection, when one was found.
    pub code: Option<String>,
    pub class_name: Option<String>,
    pub score: Option<f32>,
    /// How close the code is to its catalogue entry (with a catalogue).
    pub similarity: Option<f32>,
    pub expectation_ref: Option<String>,
    /// The rule set that decided, and how the code was found: `<set>:explicit`,
    /// `<set>:normalised` or `<set>:catalogue`.
    pub rule: String,
    /// Why, in words, for the operator.
    pub reason: String,
}

/// What a reviewer said about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The decision is right as it is: the frame is accepted with its code.
    Confirmed,
    /// The decided detection is of another class and/or code: the frame is accepted
    /// with the corrected one.
    Corrected,
    /// The decided detection is wrong (or, without one, the whole frame): the frame
    /// is not accepted.
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::Corrected => "corrected",
            Verdict::Rejected => "rejected",
        }
    }

    pub const ALL: [Verdict; 3] = [Verdict::Confirmed, Verdict::Corrected, Verdict::Rejected];

    /// The verdict [`Verdict::as_str`] names.
    pub fn parse(text: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

/// A reviewer's verdict on a frame — on one detection of it (by default the decided
/// one: the best-scoring detection of the decision's class). Once stored, `code` and
/// `class_name` are the final ones: the decision's when confirmed, the reviewer's
/// where corrected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    pub verdict: Verdict,
    /// Index into the result's `detections`; absent: the decided detection (or, for
    /// a rejection, the whole frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<usize>,
    /// The (corrected) class name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// The (corrected) business code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Who reviewed: the name of the token that posted the review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_parse_by_their_names_only() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(Outcome::parse("Accepted"), None);
        assert_eq!(Outcome::parse("review"), None);
        for v in Verdict::ALL {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
    }
}
