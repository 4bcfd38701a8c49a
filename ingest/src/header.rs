//! What ingest reads of a frame before accepting it, without decoding it: its format
//! (by the signature in its first bytes), its declared size (the pixel limits are
//! applied to it) and, for a JPEG, its EXIF orientation. JPEG is read by
//! [`crate::jpeg`]; PNG from its IHDR chunk; WebP from its RIFF header and first chunk.

use crate::jpeg;

/// The image formats ingest accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
}

impl Format {
    /// The format `bytes` start like (JPEG `FF D8 FF`, PNG's 8-byte signature, WebP's
    /// `RIFF….WEBP`); None for anything else.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(PNG_SIGNATURE) {
            Some(Format::Png)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Format::WebP)
        } else {
            None
        }
    }

    /// Its media type, as a `Content-Type`.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::WebP => "image/webp",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::WebP => "WebP",
        }
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("body is not a JPEG, PNG or WebP image (it starts with none of their signatures)")]
    NotAnImage,
    #[error("{} header is truncated: {}", .0.name(), .1)]
    Truncated(Format, &'static str),
    #[error("{} header is corrupt: {}", .0.name(), .1)]
    Corrupt(Format, String),
}

/// What ingest learns from a frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: Format,
    /// As stored.
    pub width: u32,
    pub height: u32,
    /// EXIF orientation, 1–8 (JPEG only; 1 for the other formats).
    pub orientation: u8,
}

/// Reads the format, declared size and orientation of `bytes`.
pub fn read(bytes: &[u8]) -> Result<Header, HeaderError> {
    let format = Format::sniff(bytes).ok_or(HeaderError::NotAnImage)?;
    let (width, height, orientation) = match format {
        Format::Jpeg => {
            let h = jpeg::header(bytes).map_err(|e| match e {
                jpeg::HeaderError::NotJpeg => HeaderError::NotAnImage,
                jpeg::HeaderError::Truncated(why) => HeaderError::Truncated(format, why),
                jpeg::HeaderError::Corrupt(why) => HeaderError::Corrupt(format, why),
            })?;
            (h.width, h.height, h.orientation)
        }
        Format::Png => {
            let (w, h) = png_size(bytes)?;
            (w, h, 1)
        }
        Format::WebP => {
            let (w, h) = webp_size(bytes)?;
            (w, h, 1)
        }
    };
    if width == 0 || height == 0 {
        return Err(HeaderError::Corrupt(format, format!("header gives a size of {width}x{height}")));
    }
    Ok(Header { format, width, height, orientation })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le24(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}

/// The size in the IHDR chunk, which must come first: length 13, `IHDR`, width, height.
fn png_size(b: &[u8]) -> Result<(u32, u32), HeaderError> {
    let png = Format::Png;
    if b.len() < 24 {
        return Err(HeaderError::Truncated(png, "the IHDR chunk is cut off"));
    }
    if be32(&b[8..12]) != 13 || &b[12..16] != b"IHDR" {
        return Err(HeaderError::Corrupt(png, "the first chunk is not a 13-byte IHDR".into()));
    }
    let (w, h) = (be32(&b[16..20]), be32(&b[20..24]));
    // The PNG specification caps both sides at 2^31 - 1.
    if w > i32::MAX as u32 || h > i32::MAX as u32 {
        return Err(HeaderError::Corrupt(png, format!("IHDR gives a size of {w}x{h}")));
    }
    Ok((w, h))
}

/// The size from the first chunk: `VP8 ` (lossy), `VP8L` (lossless) or `VP8X` (extended,
/// the canvas size). A body shorter than its RIFF container says is cut off.
fn webp_size(b: &[u8]) -> Result<(u32, u32), HeaderError> {
    let webp = Format::WebP;
    let declared = le32(&b[4..8]) as u64 + 8;
    if (b.len() as u64) < declared {
        return Err(HeaderError::Truncated(webp, "the body is shorter than its RIFF container declares"));
    }
    if b.len() < 20 {
        return Err(HeaderError::Truncated(webp, "no chunk after the RIFF header"));
    }
    let data = &b[20..];
    let cut = |what| HeaderError::Truncated(webp, what);
    match &b[12..16] {
        b"VP8 " => {
            // A 3-byte frame tag, the start code 9D 01 2A, then 14-bit width and height.
            let d = data.get(..10).ok_or_else(|| cut("the VP8 frame header is cut off"))?;
            if d[3..6] != [0x9D, 0x01, 0x2A] {
                return Err(HeaderError::Corrupt(webp, "the VP8 frame has no start code".into()));
            }
            Ok((u16::from_le_bytes([d[6], d[7]]) as u32 & 0x3FFF, u16::from_le_bytes([d[8], d[9]]) as u32 & 0x3FFF))
        }
        b"VP8L" => {
            // The signature 0x2F, then width - 1 and height - 1 in 14 bits each.
            let d = data.get(..5).ok_or_else(|| cut("the VP8L header is cut off"))?;
            if d[0] != 0x2F {
                return Err(HeaderError::Corrupt(webp, "the VP8L chunk has no signature".into()));
            }
            let bits = le32(&d[1..5]);
            Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8X" => {
            // Flags and reserved bytes, then canvas width - 1 and height - 1 in 24 bits each.
            let d = data.get(..10).ok_or_else(|| cut("the VP8X header is cut off"))?;
            Ok((le24(&d[4..7]) + 1, le24(&d[7..10]) + 1))
        }
        other => Err(HeaderError::Corrupt(webp, format!("unknown first chunk {:?}", String::from_utf8_lossy(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut v = PNG_SIGNATURE.to_vec();
        v.extend(13u32.to_be_bytes());
        v.extend(b"IHDR");
        v.extend(w.to_be_bytes());
        v.extend(h.to_be_bytes());
        v.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    fn riff(chunk: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF".to_vec();
        v.extend(((data.len() + 12) as u32).to_le_bytes());
        v.extend(b"WEBP");
        v.extend(chunk);
        v.extend((data.len() as u32).to_le_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn reads_png_and_webp_sizes() {
        let h = read(&png_header(1024, 682)).unwrap();
        assert_eq!((h.format, h.width, h.height, h.orientation), (Format::Png, 1024, 682, 1));
        let vp8 = riff(b"VP8 ", &[0x30, 0x01, 0x00, 0x9D, 0x01, 0x2A, 0x00, 0x05, 0xD0, 0x02]);
        assert_eq!(read(&vp8).map(|h| (h.format, h.width, h.height)), Ok((Format::WebP, 1280, 720)));
        let bits: u32 = (1279) | (719 << 14);
        let vp8l = riff(b"VP8L", &[[0x2F].as_slice(), &bits.to_le_bytes()].concat());
        assert_eq!(read(&vp8l).map(|h| (h.width, h.height)), Ok((1280, 720)));
        let mut x = vec![0x10, 0, 0, 0];
        x.extend(&(3999u32.to_le_bytes()[..3]));
        x.extend(&(2999u32.to_le_bytes()[..3]));
        assert_eq!(read(&riff(b"VP8X", &x)).map(|h| (h.width, h.height)), Ok((4000, 3000)));
    }

    #[test]
    fn refuses_what_is_not_an_image_cut_off_or_corrupt() {
        assert_eq!(read(b"GIF89a...."), Err(HeaderError::NotAnImage));
        assert_eq!(read(b""), Err(HeaderError::NotAnImage));
        let png = png_header(640, 480);
        for cut in 8..24 {
            assert!(matches!(read(&png[..cut]), Err(HeaderError::Truncated(Format::Png, _))), "cut at {cut}");
        }
        let mut bad = png.clone();
        bad[12] = b'i';
        assert!(matches!(read(&bad), Err(HeaderError::Corrupt(Format::Png, _))));
        assert!(matches!(read(&png_header(0, 480)), Err(HeaderError::Corrupt(Format::Png, _))));
        let vp8l = riff(b"VP8L", &[0x2F, 0, 0, 0, 0, 0, 0, 0]);
        for cut in 12..vp8l.len() {
            assert!(matches!(read(&vp8l[..cut]), Err(HeaderError::Truncated(Format::WebP, _))), "cut at {cut}");
        }
        assert!(matches!(read(&riff(b"VP8 ", &[0; 10])), Err(HeaderError::Corrupt(Format::WebP, _))));
        assert!(matches!(read(&riff(b"ALPH", &[0; 10])), Err(HeaderError::Corrupt(Format::WebP, _))));
    }
}
