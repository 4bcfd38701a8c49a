//! Reading a frame out of a request body, in any of the accepted encodings — a raw
//! image, multipart, JSON with base64 (a data URL too) — with the declared type
//! checked against the bytes, and the size limit held.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::header::Format;
use crate::refusal::Refusal;
use crate::state::IngestState;

/// `captured_at` is read as text so that a bad one is refused by its name.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct JsonFrame {
    /// The JPEG, PNG or WebP, base64; a data URL (`data:image/png;base64,…`) declares
    /// its type, which the bytes must be.
    image: String,
    /// When the station captured the frame (RFC 3339).
    #[schema(format = DateTime)]
    captured_at: Option<String>,
}

/// A raw JPEG, PNG or WebP body, of the type its `Content-Type` declares.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // describes the body for the OpenAPI document; the handler reads the bytes
pub(crate) struct ImageBody(Vec<u8>);

/// A multipart upload: the part `image` (alias `file`) and optionally `captured_at`;
/// any other part is refused.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the form for the OpenAPI document; the handler reads it part by part
pub(crate) struct FrameForm {
    /// The JPEG, PNG or WebP (of its part's type, when it has one).
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// When the station captured the frame (RFC 3339).
    #[schema(format = DateTime)]
    captured_at: Option<String>,
}

/// The most a frame's transport may take for a frame of `limit` bytes: room for
/// base64 (4/3) and framing, so a frame somewhat over the limit is still read and
/// refused `too_large` by [`check_size`].
pub(crate) fn transport_limit(limit: usize) -> usize {
    limit / 3 * 4 + 64 * 1024
}

pub(crate) fn too_large(limit: usize) -> Refusal {
    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("frame is larger than the limit of {limit} bytes"))
}

/// A frame's bytes within `limit` and not none.
pub(crate) fn check_size(image: &[u8], limit: usize) -> Result<(), Refusal> {
    if image.len() > limit {
        return Err(too_large(limit));
    }
    if image.is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "empty", "the frame is empty"));
    }
    Ok(())
}

fn body_error(e: impl std::error::Error + 'static, limit: usize) -> Refusal {
    if let Some(t) = visionq_contract::http::body_timed_out(&e) {
        // The listener closes the connection after this answer: what is left of the
        // body must not be read as a next request.
        return Refusal::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", t.to_string()).before_body();
    }
    if over_limit(&e) {
        // The rest of the body is not read: the connection closes after the answer.
        too_large(limit).before_body()
    } else {
        Refusal::new(StatusCode::BAD_REQUEST, "bad_body", format!("cannot read the request body: {e}"))
    }
}

/// Whether the body limit stopped the read: its error somewhere in `e`'s sources
/// (the extractors wrap it once or twice).
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The media types a frame may be posted as, with JPEG's common aliases.
fn image_type(mime: &str) -> Option<Format> {
    match mime {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(Format::Jpeg),
        "image/png" => Some(Format::Png),
        "image/webp" => Some(Format::WebP),
        _ => None,
    }
}

/// A media type without its parameters, lower case.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Extracts the image (and an optional capture time) from any of the accepted
/// encodings (see [`ACCEPTED`]). Where the image's type is declared — the request's
/// `Content-Type`, a multipart part's, a data URL's — its bytes must be of that type.
pub(crate) async fn read_image(state: &IngestState, req: Request) -> Result<(Bytes, Option<DateTime<Utc>>), Refusal> {
    let limit = state.config.ingest.max_body_bytes;
    let mime = essence(req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or(""));
    let transport_limit = transport_limit(limit);
    let (image, declared, captured_at) = match mime.as_str() {
        "multipart/form-data" => {
            let mut form = Multipart::from_request(req, &())
                .await
                .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_multipart", format!("cannot read multipart body: {e}")))?;
            match read_form(&mut form, limit).await {
                Ok(read) => read,
                Err(refusal) => return Err(drain(form, refusal).await),
            }
        }
        "application/json" => {
            let body = axum::body::to_bytes(req.into_body(), transport_limit).await.map_err(|e| body_error(e, limit))?;
            let frame: JsonFrame = serde_json::from_slice(&body).map_err(|e| {
                Refusal::new(StatusCode::BAD_REQUEST, "bad_json", format!("expected {{\"image\": \"<base64 image>\"}}: {e}"))
            })?;
            // Browser clients often send a data URL, which declares the type.
            let (declared, b64) = match frame.image.split_once(";base64,") {
                Some((prefix, data)) if prefix.starts_with("data:") => match &prefix["data:".len()..] {
                    "" => (None, data),
                    t => (
                        Some(image_type(&essence(t)).ok_or_else(|| unsupported(&format!("{t}` (the data URL's")).param("image"))?),
                        data,
                    ),
                },
                _ => (None, frame.image.as_str()),
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_base64", format!("`image` is not valid base64: {e}")))?;
            (Bytes::from(bytes), declared, frame.captured_at.as_deref().map(parse_time).transpose()?)
        }
        other => {
            // Anything else — no type, application/octet-stream, a form — is refused
            // before its body is read.
            let format = image_type(other).ok_or_else(|| unsupported(other).before_body())?;
            let body = axum::body::to_bytes(req.into_body(), transport_limit).await.map_err(|e| body_error(e, limit))?;
            (body, Some(format), None)
        }
    };
    check_size(&image, limit)?;
    // The declared type must be what the bytes are (their signature).
    if let (Some(declared), Some(actual)) = (declared, Format::sniff(&image))
        && declared != actual
    {
        let message = format!("the frame is declared `{}` but its bytes are a {} image", declared.mime(), actual.name());
        return Err(Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "type_mismatch", message));
    }
    Ok((image, captured_at))
}

/// The image part (with its declared type) and the capture time of a multipart body.
async fn read_form(form: &mut Multipart, limit: usize) -> Result<(Bytes, Option<Format>, Option<DateTime<Utc>>), Refusal> {
    let (mut image, mut captured) = (None, None);
    while let Some(field) = form.next_field().await.map_err(|e| body_error(e, limit))? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "captured_at" => {
                let text = field.text().await.map_err(|e| body_error(e, limit))?;
                captured = Some(parse_time(&text)?);
            }
            "image" | "file" => {
                if image.is_some() {
                    let message = "multipart body has more than one image part (`image`, or its alias `file`)";
                    return Err(Refusal::new(StatusCode::BAD_REQUEST, "duplicate_part", message).param(&name));
                }
                // A part without a type, or typed as plain bytes (what a browser
                // sends for an unknown extension), is told by its signature.
                let declared = match field.content_type().map(essence).as_deref() {
                    None | Some("" | "application/octet-stream") => None,
                    Some(t) => Some(image_type(t).ok_or_else(|| unsupported(&format!("{t}` (part `{name}`")).param(&name))?),
                };
                image = Some((field.bytes().await.map_err(|e| body_error(e, limit))?, declared));
            }
            other => {
                let message = format!(
                    "multipart part `{other}` is not taken: the frame goes in a part named `image` (or `file`), with an optional `captured_at`"
                );
                return Err(Refusal::new(StatusCode::BAD_REQUEST, "unknown_part", message).param(other));
            }
        }
    }
    let (image, declared) =
        image.ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "no_image", "multipart body has no `image` part"))?;
    Ok((image, declared, captured))
}

/// A multipart body refused part-way is read to its end (within the body limit and
/// the body timeout) so that the answer reaches the client and the connection stays
/// usable; where that fails the connection is closed after the answer instead.
async fn drain(mut form: Multipart, refusal: Refusal) -> Refusal {
    loop {
        match form.next_field().await {
            Ok(Some(mut field)) => loop {
                match field.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return refusal.before_body(),
                }
            },
            Ok(None) => return refusal,
            Err(_) => return refusal.before_body(),
        }
    }
}

/// What a frame may be posted as, for refusals.
const ACCEPTED: &str = "send image/jpeg, image/png or image/webp, multipart/form-data with an `image` part (alias `file`), or application/json {\"image\": \"<base64>\"}";

fn unsupported(mime: &str) -> Refusal {
    let message = match mime {
        "" => format!("the request has no Content-Type: {ACCEPTED}"),
        m => format!("Content-Type `{m}` is not accepted: {ACCEPTED}"),
    };
    Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
}

pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, Refusal> {
    DateTime::parse_from_rfc3339(s.trim()).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        let message = format!("`captured_at` is not an RFC 3339 time such as 2026-11-22T10:00:00Z: {e}");
        Refusal::new(StatusCode::BAD_REQUEST, "bad_captured_at", message).param("captured_at")
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::{FromRequest, Multipart, Request};
    use axum::http::header;

    use super::*;

    #[tokio::test]
    async fn a_body_over_the_limit_is_recognised_by_its_error_type() {
        let e = axum::body::to_bytes(Body::from(vec![0u8; 100]), 10).await.unwrap_err();
        assert!(over_limit(&e), "{e}");
        let r = body_error(e, 10);
        assert_eq!((r.status, r.code), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));

        // Through multipart's reader too (axum's body limit around the request).
        let boundary = "XyZ";
        let part = format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"image\"\r\n\r\n{}\r\n--{boundary}--\r\n",
            "x".repeat(1000)
        );
        let req = Request::builder()
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(Body::new(http_body_util::Limited::new(Body::from(part), 100)))
            .unwrap();
        let mut form = Multipart::from_request(req, &()).await.unwrap();
        let e = match form.next_field().await {
            Ok(Some(field)) => field.bytes().await.unwrap_err(),
            Ok(None) => panic!("the part is there"),
            Err(e) => e,
        };
        assert!(over_limit(&e), "{e}");
        assert_eq!(body_error(e, 100).code, "too_large");

        let other = std::io::Error::other("connection reset");
        assert!(!over_limit(&other));
    }
}
