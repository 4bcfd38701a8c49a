//! A frame's original image carried on after a message's own body, for the evidence
//! store of a results role that runs without ingest (`evidence_forward_min_score`).
//! The body is the message's own bytes followed by the image's; `ORIGINAL_HEADER`
//! says how many bytes the image takes. Messages without the header are as before.

use bytes::{Bytes, BytesMut};
use visionq_contract::topology::ORIGINAL_HEADER;
use visionq_queue::Envelope;

use crate::BadMessage;

/// `envelope` with `original` appended to its body (one copy of both).
pub fn attach_original(mut envelope: Envelope, original: &Bytes) -> Envelope {
    let mut body = BytesMut::with_capacity(envelope.body.len() + original.len());
    body.extend_from_slice(&envelope.body);
    body.extend_from_slice(original);
    envelope.body = body.freeze();
    envelope.headers.insert(ORIGINAL_HEADER.into(), original.len().to_string());
    envelope
}

/// A body split into the message's own bytes and the original image it carries,
/// if any (no copy: both share the body). A header that does not fit the body is a
/// bad message.
pub fn split_original(envelope: &Envelope) -> Result<(Bytes, Option<Bytes>), BadMessage> {
    let Some(len) = envelope.header(ORIGINAL_HEADER) else { return Ok((envelope.body.clone(), None)) };
    let body = &envelope.body;
    match len.parse::<usize>() {
        Ok(n) if n <= body.len() => {
            let own = body.len() - n;
            Ok((body.slice(..own), Some(body.slice(own..))))
        }
        _ => Err(BadMessage(format!("{ORIGINAL_HEADER} is `{len}`, but the body has {} bytes", body.len()))),
    }
}

/// The headers a message made from `from` keeps: all but the original's length
/// (the new body carries the original again, or not at all).
pub(crate) fn without_original(from: &Envelope) -> std::collections::BTreeMap<String, String> {
    let mut headers = from.headers.clone();
    headers.remove(ORIGINAL_HEADER);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_original_rides_after_the_body_and_splits_off_again() {
        let e = attach_original(Envelope::new(&b"{\"json\":1}"[..]), &Bytes::from_static(b"\xff\xd8jpeg"));
        assert_eq!(e.header(ORIGINAL_HEADER), Some("6"));
        let (own, original) = split_original(&e).unwrap();
        assert_eq!((&own[..], original.as_deref()), (&b"{\"json\":1}"[..], Some(&b"\xff\xd8jpeg"[..])));
        // Without the header the body is the message's own.
        let plain = Envelope::new(&b"abc"[..]);
        assert_eq!(split_original(&plain).unwrap(), (Bytes::from_static(b"abc"), None));
        // A length the body cannot hold, or not a number, is refused.
        for bad in ["7", "-1", "x"] {
            let e = Envelope::new(&b"abcdef"[..]).with_header(ORIGINAL_HEADER, bad);
            let err = split_original(&e).unwrap_err().to_string();
            assert!(err.contains(&format!("is `{bad}`, but the body has 6 bytes")), "{err}");
        }
    }
}
