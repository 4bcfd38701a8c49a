//! Webhook delivery: an HTTP POST of the event's JSON body, with its id, the time of
//! sending and, with a secret, the signature `v1=<hex HMAC-SHA256(secret,
//! "<timestamp>.<body>")>` in headers. Any 2xx answer is a delivery; anything else
//! (another status, a refused connection, no answer within `timeout_ms`) fails the
//! attempt.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use visionq_contract::sink::SinkConfig;

use crate::outbox::Pending;

/// The event id header.
pub const EVENT_ID_HEADER: &str = "visionq-event-id";
/// Unix seconds when this attempt was sent; part of what is signed.
pub const TIMESTAMP_HEADER: &str = "visionq-timestamp";
/// `v1=<64 hex digits>`: HMAC-SHA256 of `<timestamp>.<body>` keyed by the sink's secret.
pub const SIGNATURE_HEADER: &str = "visionq-signature";

/// The signature header's value of `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// POSTs events to one sink's URL.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
}

impl Webhook {
    /// The client of `sink`; refused (with the reason) when its TLS set-up cannot be made.
    pub fn new(sink: &SinkConfig) -> Result<Webhook, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(sink.timeout_ms))
            .connect_timeout(Duration::from_millis(sink.timeout_ms.min(5_000)))
            .user_agent(concat!("visionq/", env!("CARGO_PKG_VERSION")));
        let url = sink.url.clone().unwrap_or_default();
        if url.starts_with("https://") {
            // The sink's `ca_file`, or else the system's roots.
            let tls = visionq_contract::tls::client_config(sink.ca_file.as_deref()).map_err(|e| match &sink.ca_file {
                Some(_) => format!("ca_file {e}"),
                None => e,
            })?;
            builder = builder.tls_backend_preconfigured(std::sync::Arc::unwrap_or_clone(tls));
        }
        let client = builder.build().map_err(|e| format!("sink `{}`: {e}", sink.name))?;
        Ok(Webhook { client, url, secret: sink.secret.clone() })
    }

    /// One attempt at `event`: Ok when the receiver answered 2xx, else why not.
    pub async fn send(&self, event: &Pending) -> Result<(), String> {
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, &event.event_id)
            .header(TIMESTAMP_HEADER, timestamp.to_string());
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, timestamp, event.body.as_bytes()));
        }
        match request.body(event.body.clone()).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) if e.is_timeout() => Err("no answer in time".into()),
            Err(e) if e.is_connect() => Err(format!("cannot connect: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // The same figure as Python's hmac.new(b"Jefe", b'1700000000.{"a":1}', sha256).
        assert_eq!(
            signature("Jefe", 1_700_000_000, br#"{"a":1}"#),
            "v1=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
