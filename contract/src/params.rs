//! The query parameters of the HTTP API, read strictly: a value that does not parse,
//! a value out of its documented range, a parameter given twice and a parameter the
//! route does not take are each refused with the parameter's name, so a misspelt
//! `?wait=2000` is a `400` and not a silent `202`. Rendering the refusal as JSON is
//! left to the HTTP side; this module does no I/O.
//!
//! A handler takes the parameters it knows one by one ([`Params::get`],
//! [`Params::get_in`]) and then calls [`Params::finish`], which refuses whatever is
//! left: the names a route takes are the names it asks for, listed once.

use std::fmt::Display;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A refused query parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// The parameter's name, as the caller wrote it.
    pub param: String,
    /// `bad_parameter` (does not parse or is out of range), `unknown_parameter` or
    /// `duplicate_parameter`.
    pub code: &'static str,
    pub message: String,
}

/// A type a query parameter can be read as, and how its expected form reads in a refusal.
pub trait ParamValue: Sized {
    const EXPECTED: &'static str;
    fn parse_param(text: &str) -> Option<Self>;
}

impl ParamValue for u64 {
    const EXPECTED: &'static str = "a whole number";
    fn parse_param(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl ParamValue for usize {
    const EXPECTED: &'static str = "a whole number";
    fn parse_param(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl ParamValue for f32 {
    const EXPECTED: &'static str = "a number";
    fn parse_param(text: &str) -> Option<Self> {
        text.parse().ok().filter(|v: &f32| v.is_finite())
    }
}

impl ParamValue for String {
    const EXPECTED: &'static str = "text";
    fn parse_param(text: &str) -> Option<Self> {
        Some(text.to_string())
    }
}

impl ParamValue for DateTime<Utc> {
    const EXPECTED: &'static str = "an RFC 3339 time such as 2026-11-22T10:00:00Z";
    fn parse_param(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
    }
}

impl ParamValue for crate::decision::Outcome {
    const EXPECTED: &'static str = "an outcome: accepted, needs_review, mismatch, nothing, expired or error";
    fn parse_param(text: &str) -> Option<Self> {
        crate::decision::Outcome::parse(text)
    }
}

impl ParamValue for Uuid {
    const EXPECTED: &'static str = "a frame id (UUID)";
    fn parse_param(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok()
    }
}

/// The query of one request, taken apart.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
    taken: Vec<&'static str>,
}

impl Params {
    /// Parses a raw query string (`a=1&b=x%20y`, without the `?`).
    pub fn parse(query: Option<&str>) -> Params {
        let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
        Params { pairs, taken: Vec::new() }
    }

    /// Accepts `name` without reading it (a parameter another layer reads, such as
    /// the access check's `token`).
    pub fn allow(&mut self, name: &'static str) {
        self.taken.push(name);
    }

    /// The parameter `name` read as `T`; None when absent or empty (as an HTML form
    /// sends a field left blank).
    pub fn get<T: ParamValue>(&mut self, name: &'static str) -> Result<Option<T>, ParamError> {
        self.taken.push(name);
        let mut values = self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.trim());
        let Some(text) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err(ParamError {
                param: name.to_string(),
                code: "duplicate_parameter",
                message: format!("query parameter `{name}` is given more than once"),
            });
        }
        if text.is_empty() {
            return Ok(None);
        }
        T::parse_param(text).map(Some).ok_or_else(|| bad(name, format!("`{name}={text}` is not {}", T::EXPECTED)))
    }

    /// As [`Params::get`], refused unless within `min..=max`.
    pub fn get_in<T: ParamValue + PartialOrd + Display>(
        &mut self,
        name: &'static str,
        min: T,
        max: T,
    ) -> Result<Option<T>, ParamError> {
        match self.get::<T>(name)? {
            Some(v) if v < min || v > max => Err(bad(name, format!("`{name}={v}` is out of range: use {min} to {max}"))),
            v => Ok(v),
        }
    }

    /// Refuses the first parameter no one asked for, naming the ones this route takes.
    pub fn finish(self) -> Result<(), ParamError> {
        let Some((name, _)) = self.pairs.iter().find(|(k, _)| !self.taken.contains(&k.as_str())) else {
            return Ok(());
        };
        let known: Vec<&str> = self.taken.iter().copied().filter(|k| *k != "token").collect();
        let guess = known.iter().find(|k| !name.is_empty() && (k.starts_with(name.as_str()) || name.starts_with(*k)));
        let hint = match guess {
            Some(k) => format!(" (did you mean `{k}`?)"),
            None => String::new(),
        };
        let takes = match known.is_empty() {
            true => "this route takes no query parameters".to_string(),
            false => format!("this route takes {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")),
        };
        Err(ParamError {
            param: name.clone(),
            code: "unknown_parameter",
            message: format!("unknown query parameter `{name}`{hint}: {takes}"),
        })
    }
}

fn bad(name: &str, message: String) -> ParamError {
    ParamError { param: name.to_string(), code: "bad_parameter", message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_are_refused_by_name() {
        let mut p = Params::parse(Some("wait_ms=2000&since=2026-11-22T10%3A00%3A00Z&class=traffic%20light"));
        assert_eq!(p.get::<u64>("wait_ms"), Ok(Some(2000)));
        assert_eq!(p.get::<DateTime<Utc>>("since").unwrap().unwrap().to_rfc3339(), "2026-11-22T10:00:00+00:00");
        assert_eq!(p.get::<String>("class").unwrap().as_deref(), Some("traffic light"));
        assert_eq!(p.get::<u64>("deadline_ms"), Ok(None));
        p.finish().unwrap();

        let e = Params::parse(Some("wait_ms=abc")).get::<u64>("wait_ms").unwrap_err();
        assert_eq!((e.param.as_str(), e.code), ("wait_ms", "bad_parameter"));
        assert!(e.message.contains("`wait_ms=abc`"), "{e}");
        let e = Params::parse(Some("since=yesterday")).get::<DateTime<Utc>>("since").unwrap_err();
        assert!(e.message.contains("RFC 3339"), "{e}");
        let e = Params::parse(Some("min_score=NaN")).get::<f32>("min_score").unwrap_err();
        assert_eq!(e.param, "min_score");
    }

    #[test]
    fn ranges_duplicates_and_blanks() {
        let e = Params::parse(Some("limit=5000")).get_in::<usize>("limit", 1, 1000).unwrap_err();
        assert_eq!((e.param.as_str(), e.code), ("limit", "bad_parameter"));
        assert!(e.message.contains("1 to 1000"), "{e}");
        assert_eq!(Params::parse(Some("limit=1000")).get_in::<usize>("limit", 1, 1000), Ok(Some(1000)));
        let e = Params::parse(Some("limit=1&limit=2")).get::<usize>("limit").unwrap_err();
        assert_eq!(e.code, "duplicate_parameter");
        assert_eq!(Params::parse(Some("class=")).get::<String>("class"), Ok(None));
    }

    #[test]
    fn parameters_no_one_asked_for_are_refused_with_a_hint() {
        let mut p = Params::parse(Some("wait=2000"));
        p.get::<u64>("wait_ms").unwrap();
        p.get::<u64>("deadline_ms").unwrap();
        let e = p.finish().unwrap_err();
        assert_eq!((e.param.as_str(), e.code), ("wait", "unknown_parameter"));
        assert!(e.message.contains("did you mean `wait_ms`"), "{e}");
        assert!(e.message.contains("`deadline_ms`"), "{e}");

        let mut p = Params::parse(Some("token=abc"));
        p.allow("token");
        p.finish().unwrap();
        let e = Params::parse(Some("x=1")).finish().unwrap_err();
        assert!(e.message.contains("takes no query parameters"), "{e}");
    }
}
