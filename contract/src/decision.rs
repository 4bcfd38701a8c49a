//! The decision on a result (issue 15): what the detections mean for the plant,
//! under the station's rules. Made by the `decide` crate; part of the result object.

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
