//! Reading a JPEG's size and EXIF orientation from its header without decoding it.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("body is not a JPEG (it does not start with the JPEG SOI marker FF D8 FF)")]
    NotJpeg,
    #[error("JPEG header is truncated: {0}")]
    Truncated(&'static str),
    #[error("JPEG header is corrupt: {0}")]
    Corrupt(String),
}

/// What ingest reads from a JPEG's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegHeader {
    /// As stored (before any orientation).
    pub width: u32,
    pub height: u32,
    /// The EXIF Orientation tag (1–8) of an `Exif` APP1 segment before the frame
    /// header; 1 when there is none or it is unreadable (viewers ignore a broken tag too).
    pub orientation: u8,
}

/// Width and height from the first frame header (SOFn) of a JPEG.
pub fn dimensions(b: &[u8]) -> Result<(u32, u32), HeaderError> {
    header(b).map(|h| (h.width, h.height))
}

/// Size and orientation from a JPEG's header: the segments up to its first frame header (SOFn).
pub fn header(b: &[u8]) -> Result<JpegHeader, HeaderError> {
    if b.len() < 3 || b[..3] != [0xFF, 0xD8, 0xFF] {
        return Err(HeaderError::NotJpeg);
    }
    let mut i = 2;
    let mut orientation = None;
    loop {
        if i + 2 > b.len() {
            return Err(HeaderError::Truncated("no frame header (SOF) before the end of the data"));
        }
        if b[i] != 0xFF {
            return Err(HeaderError::Corrupt(format!("expected a marker at byte {i}, found {:#04x}", b[i])));
        }
        let marker = b[i + 1];
        match marker {
            0xFF => {
                i += 1; // fill byte
                continue;
            }
            0x01 | 0xD0..=0xD7 => {
                i += 2; // markers without a length
                continue;
            }
            0xD9 | 0xDA => {
                return Err(HeaderError::Corrupt("scan data or end of image before any frame header (SOF)".into()));
            }
            _ => {}
        }
        if i + 4 > b.len() {
            return Err(HeaderError::Truncated("segment length cut off"));
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if len < 2 {
            return Err(HeaderError::Corrupt(format!("segment {marker:#04x} has length {len}")));
        }
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            if len < 8 {
                return Err(HeaderError::Corrupt(format!("frame header is {len} bytes long")));
            }
            if i + 2 + len > b.len() {
                return Err(HeaderError::Truncated("frame header (SOF) cut off"));
            }
            let height = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u32;
            let width = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u32;
            if width == 0 || height == 0 {
                return Err(HeaderError::Corrupt(format!("frame header gives a size of {width}x{height}")));
            }
            return Ok(JpegHeader { width, height, orientation: orientation.unwrap_or(1) });
        }
        if marker == 0xE1 && orientation.is_none() {
            let end = (i + 2 + len).min(b.len());
            orientation = exif_orientation(&b[i + 4..end]);
        }
        i += 2 + len;
    }
}

/// The Orientation tag (0x0112) of IFD0 in an APP1 segment's data (`Exif\0\0`, then a
/// TIFF header); None when the segment is not EXIF, and 1 when the tag is absent or
/// not a valid orientation.
fn exif_orientation(app1: &[u8]) -> Option<u8> {
    let tiff = app1.strip_prefix(b"Exif\0\0")?;
    let big_endian = match tiff.get(..4)? {
        [b'I', b'I', 42, 0] => false,
        [b'M', b'M', 0, 42] => true,
        _ => return Some(1),
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = [*tiff.get(at)?, *tiff.get(at + 1)?];
        Some(if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = [*tiff.get(at)?, *tiff.get(at + 1)?, *tiff.get(at + 2)?, *tiff.get(at + 3)?];
        Some(if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    };
    let found = (|| {
        let ifd = u32_at(4)? as usize;
        let entries = u16_at(ifd)? as usize;
        (0..entries).map(|n| ifd + 2 + n * 12).find(|&e| u16_at(e) == Some(0x0112)).and_then(|e| {
            // Type SHORT (3), one value, held in the entry's value field.
            let value = (u16_at(e + 2)? == 3 && u32_at(e + 4)? == 1).then(|| u16_at(e + 8))??;
            (1..=8).contains(&value).then_some(value as u8)
        })
    })();
    Some(found.unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP0 segment, then SOF0 for `w`×`h`.
    pub fn header(w: u16, h: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46];
        v.extend([0xFF, 0xC0, 0x00, 0x11, 0x08]);
        v.extend(h.to_be_bytes());
        v.extend(w.to_be_bytes());
        v.extend([0x03, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v
    }

    #[test]
    fn reads_the_size_from_sof() {
        assert_eq!(dimensions(&header(1280, 720)), Ok((1280, 720)));
        assert_eq!(super::header(&header(1280, 720)).unwrap().orientation, 1, "no EXIF: upright");
    }

    /// An APP1 `Exif` segment whose IFD0 holds `entries` (tag, type, count, value).
    fn exif(big_endian: bool, entries: &[(u16, u16, u32, u16)]) -> Vec<u8> {
        let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut tiff: Vec<u8> = if big_endian { b"MM\0\x2a".to_vec() } else { b"II\x2a\0".to_vec() };
        tiff.extend(u32b(8));
        tiff.extend(u16b(entries.len() as u16));
        for &(tag, ty, count, value) in entries {
            tiff.extend(u16b(tag));
            tiff.extend(u16b(ty));
            tiff.extend(u32b(count));
            tiff.extend(u16b(value));
            tiff.extend([0, 0]);
        }
        tiff.extend([0; 4]);
        let data = [&b"Exif\0\0"[..], &tiff].concat();
        let mut seg = vec![0xFF, 0xE1];
        seg.extend(((data.len() + 2) as u16).to_be_bytes());
        seg.extend(data);
        seg
    }

    fn with_segment(seg: &[u8]) -> Vec<u8> {
        let h = header(640, 480);
        [&h[..2], seg, &h[2..]].concat()
    }

    #[test]
    fn reads_the_exif_orientation_in_either_byte_order() {
        for big_endian in [false, true] {
            for o in 1..=8u16 {
                let jpeg = with_segment(&exif(big_endian, &[(0x010F, 2, 4, 0), (0x0112, 3, 1, o)]));
                let h = super::header(&jpeg).unwrap();
                assert_eq!((h.width, h.height, h.orientation), (640, 480, o as u8), "big endian {big_endian}");
            }
        }
        // An XMP APP1 segment is not EXIF; out-of-range values, wrong types and a
        // truncated IFD read as upright, never as a refusal.
        let xmp = [vec![0xFF, 0xE1, 0x00, 0x0D], b"http://ns\0\0".to_vec()].concat();
        assert_eq!(super::header(&with_segment(&xmp)).unwrap().orientation, 1);
        for entries in [[(0x0112, 3, 1, 9)], [(0x0112, 3, 1, 0)], [(0x0112, 4, 1, 6)], [(0x0112, 3, 2, 6)]] {
            assert_eq!(super::header(&with_segment(&exif(false, &entries))).unwrap().orientation, 1, "{entries:?}");
        }
        let mut cut = exif(true, &[(0x0112, 3, 1, 6)]);
        cut.truncate(cut.len() - 12);
        let len = (cut.len() - 2) as u16;
        cut[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(super::header(&with_segment(&cut)).unwrap().orientation, 1);
    }

    #[test]
    fn refuses_non_jpeg_truncated_and_corrupt_headers() {
        assert_eq!(dimensions(b"\x89PNG\r\n\x1a\n"), Err(HeaderError::NotJpeg));
        assert_eq!(dimensions(b""), Err(HeaderError::NotJpeg));
        let h = header(640, 480);
        for cut in 3..h.len() {
            assert!(matches!(dimensions(&h[..cut]), Err(HeaderError::Truncated(_))), "cut at {cut}");
        }
        let mut bad = h.clone();
        bad[8] = 0x00; // where the SOF marker should be
        assert!(matches!(dimensions(&bad), Err(HeaderError::Corrupt(_))));
        assert!(matches!(dimensions(&header(0, 10)), Err(HeaderError::Corrupt(_))));
    }
}
