//! Decisions: what a result means for the plant. This crate owns the per-station
//! rules that turn a result's detections into a business decision — the label map
//! (model class → business code: explicit entries, then normalisation steps), the
//! catalogue of valid codes matched by position-weighted segment similarity, the
//! `show` / `review` / `accept` thresholds (global, per rule set, per class) and a
//! station's expectation (what it should see, e.g. a delivery note's codes) — and
//! [`decide`], a pure function of (result, rules, expectation).
//!
//! It does no I/O beyond reading a rules file and its catalogue at load, so every
//! path that makes a result (embedded, RabbitMQ, a stream) gets the same decision.
//! It imports only the contract; it must not import a role, a queue, a store or HTTP.

mod catalogue;
mod decider;
mod decision;
mod labels;
mod rules;

pub use catalogue::{Catalogue, CodeMatch, similarity};
pub use decider::Decider;
pub use decision::decide;
pub use labels::{Case, LabelMap, MappedBy, Normalise};
pub use rules::{CodeFrom, RuleSet, Rules, RulesError, Thresholds};
pub use visionq_contract::decision::{Decision, Expectation, Expected, Outcome};
