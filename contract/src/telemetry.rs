//! Log set-up shared by every role: `tracing` to stderr, human-readable or JSON,
//! filtered by `RUST_LOG` (default: the command's, `info` for the roles), in colour
//! only when stderr is a terminal (and `NO_COLOR` is unset); and the W3C trace
//! context (`traceparent`) that travels with a frame from the HTTP request through
//! every AMQP hop.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `default_level` unless `RUST_LOG` says otherwise.
pub fn init_logging(format: crate::config::LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let result = if format == crate::config::LogFormat::Json { builder.json().try_init() } else { builder.try_init() };
    // A second init (tests, embedded roles) keeps the first subscriber.
    drop(result);
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is one.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    match parts.as_slice() {
        [version, trace, span, flags]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && hex(span, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && span.bytes().any(|b| b != b'0') =>
        {
            Some(trace)
        }
        _ => None,
    }
}

/// A fresh `traceparent` for a frame that came without one: the frame id (128 bits)
/// is the trace id, so logs of every stage can be joined on either.
pub fn new_traceparent(frame_id: uuid::Uuid) -> String {
    let span = &frame_id.simple().to_string()[16..];
    format!("00-{}-{span}-01", frame_id.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_and_made() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
        let id = uuid::Uuid::now_v7();
        let made = new_traceparent(id);
        assert_eq!(trace_id(&made), Some(id.simple().to_string().as_str()));
    }
}
