//! Reading a JPEG's size from its header without decoding it.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("body is not a JPEG (it does not start with the JPEG SOI marker FF D8 FF)")]
    NotJpeg,
    #[error("JPEG header is truncated: {0}")]
    Truncated(&'static str),
    #[error("JPEG header is corrupt: {0}")]
    Corrupt(String),
}

/// Width and height from the first frame header (SOFn) of a JPEG.
pub fn dimensions(b: &[u8]) -> Result<(u32, u32), HeaderError> {
    if b.len() < 3 || b[..3] != [0xFF, 0xD8, 0xFF] {
        return Err(HeaderError::NotJpeg);
    }
    let mut i = 2;
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
            return Ok((width, height));
        }
        i += 2 + len;
    }
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
