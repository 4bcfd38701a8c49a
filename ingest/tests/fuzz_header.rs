//! Property tests ("fuzzing") of ingest's header check, which runs on every posted
//! body before anything is accepted: arbitrary bytes, truncations and byte flips of a
//! real photo never panic; when a size comes back it is the one the SOF segment
//! declares, so the pixel limits are applied to what the decoder will see. The PNG
//! and WebP readers get arbitrary bytes behind their signatures.

use proptest::prelude::*;
use visionq_ingest::header::{self, Format};
use visionq_ingest::jpeg::{HeaderError, dimensions};

#[path = "../../preprocess/tests/support/fuzz.rs"]
mod fuzz;
use fuzz::{cases, photo};

#[test]
fn the_real_photo_reads_its_size() {
    assert_eq!(dimensions(&photo()), Ok((768, 576)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(4096)))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let r = dimensions(&bytes);
        if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            prop_assert_eq!(r, Err(HeaderError::NotJpeg));
        }
        let _ = dimensions(&[&[0xFF, 0xD8, 0xFF][..], &bytes[..]].concat());
    }

    #[test]
    fn truncations_are_refused_or_read_the_true_size(cut in 0usize..20_000) {
        let jpeg = photo();
        let cut = cut.min(jpeg.len());
        match dimensions(&jpeg[..cut]) {
            Ok(size) => prop_assert_eq!(size, (768, 576)),
            Err(e) => prop_assert!(matches!(e, HeaderError::NotJpeg | HeaderError::Truncated(_) | HeaderError::Corrupt(_))),
        }
    }

    #[test]
    fn flipped_bytes_never_panic(flips in prop::collection::vec((0usize..9000, 1u8..=255), 1..8)) {
        let mut jpeg = photo();
        for (at, mask) in flips {
            let at = at.min(jpeg.len() - 1);
            jpeg[at] ^= mask;
        }
        let _ = dimensions(&jpeg);
    }

    #[test]
    fn png_and_webp_headers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64), size in 0u32..96) {
        let png = [&b"\x89PNG\r\n\x1a\n"[..], &bytes].concat();
        if let Ok(h) = header::read(&png) {
            prop_assert_eq!(h.format, Format::Png);
            prop_assert!(h.width > 0 && h.height > 0);
        }
        let webp = [&b"RIFF"[..], &size.to_le_bytes(), b"WEBP", &bytes].concat();
        if let Ok(h) = header::read(&webp) {
            prop_assert_eq!(h.format, Format::WebP);
            prop_assert!(size as usize + 8 <= webp.len(), "a body shorter than its RIFF size is cut off");
        }
    }
}
