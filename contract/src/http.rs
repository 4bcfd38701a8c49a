//! What the HTTP listener (the `visionq` binary) and the handlers of the role crates
//! agree on about a request body that does not arrive in time: the listener fails
//! the body with [`BodyTimedOut`], and a handler that reads it answers `408
//! body_timeout` instead of calling it a bad body.

use std::error::Error;
use std::time::Duration;

/// The request body did not arrive within `http_body_timeout_ms` of its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimedOut {
    pub after: Duration,
}

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {} ms of its headers (http_body_timeout_ms)", self.after.as_millis())
    }
}

impl Error for BodyTimedOut {}

/// The [`BodyTimedOut`] somewhere in `e`'s chain of sources (the body extractors
/// wrap the body's error once or twice), if there is one.
pub fn body_timed_out(e: &(dyn Error + 'static)) -> Option<BodyTimedOut> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<BodyTimedOut>() {
            return Some(*t);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Box<dyn Error + Send + Sync>);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "wrapped: {}", self.0)
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_timeout_is_found_under_wrappers_and_nothing_else_is_taken_for_one() {
        let t = BodyTimedOut { after: Duration::from_millis(1500) };
        let wrapped = Wrapper(Box::new(Wrapper(Box::new(t))));
        assert_eq!(body_timed_out(&wrapped), Some(t));
        assert!(wrapped.to_string().contains("1500 ms"));
        let other = Wrapper(Box::new(std::io::Error::other("reset")));
        assert_eq!(body_timed_out(&other), None);
    }
}
