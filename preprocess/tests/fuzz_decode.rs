//! Property tests ("fuzzing") of the decode path on hostile input: truncated, bit-
//! flipped, spliced and garbage JPEGs, and headers that declare huge images
//! (decompression bombs). Nothing may panic; a bomb must be refused from its header,
//! before any pixel memory is allocated; whatever decodes has the declared size.
//! Cases per property: PROPTEST_CASES (default 256 here, more in a long run).

use proptest::prelude::*;
use visionq_preprocess::{PreprocessError, Preprocessor};

const MAX_PIXELS: u64 = 40_000_000;

#[path = "support/fuzz.rs"]
mod fuzz;
use fuzz::{cases, photo};

/// Offset of the SOF0 segment's height field.
fn sof_dims_at(jpeg: &[u8]) -> usize {
    jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG") + 5
}

fn check(pre: &mut Preprocessor, bytes: &[u8]) {
    match pre.prepare(bytes) {
        Ok(p) => {
            assert_eq!(p.tensor.len(), 416 * 416 * 3);
            assert!(p.width > 0 && p.height > 0);
            assert!(p.width as u64 * p.height as u64 <= MAX_PIXELS);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn truncated_photos_never_panic(cut in 0usize..200_000) {
        let jpeg = photo();
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        check(&mut pre, &jpeg[..cut.min(jpeg.len())]);
    }

    #[test]
    fn bit_flipped_photos_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..24)) {
        let mut jpeg = photo();
        let n = jpeg.len();
        for (at, mask) in flips {
            jpeg[at.index(n)] ^= mask;
        }
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        check(&mut pre, &jpeg);
    }

    #[test]
    fn spliced_garbage_never_panics(at in any::<prop::sample::Index>(), junk in prop::collection::vec(any::<u8>(), 1..4096)) {
        let jpeg = photo();
        let at = at.index(jpeg.len());
        let spliced = [&jpeg[..at], &junk[..], &jpeg[at..]].concat();
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        check(&mut pre, &spliced);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..8192)) {
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        check(&mut pre, &bytes);
        // With a JPEG start, the decoder gets further in.
        check(&mut pre, &[&[0xFF, 0xD8, 0xFF, 0xE0][..], &bytes[..]].concat());
    }

    #[test]
    fn declared_bombs_are_refused_from_the_header(
        (w, h) in (611u16..=u16::MAX).prop_flat_map(|w| (Just(w), ((MAX_PIXELS / w as u64 + 1) as u16)..=u16::MAX))
    ) {
        prop_assert!(w as u64 * h as u64 > MAX_PIXELS);
        let mut jpeg = photo();
        let at = sof_dims_at(&jpeg);
        jpeg[at..at + 2].copy_from_slice(&h.to_be_bytes());
        jpeg[at + 2..at + 4].copy_from_slice(&w.to_be_bytes());
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        match pre.prepare(&jpeg) {
            Err(PreprocessError::TooLarge { width, height, .. }) => {
                prop_assert_eq!((width, height), (w as usize, h as usize));
            }
            // The decoder's own side limit (65535) can also refuse it first.
            Err(PreprocessError::Decode(_)) => {}
            other => prop_assert!(false, "a {w}x{h} bomb was not refused: {:?}", other.map(|p| (p.width, p.height))),
        }
    }
}
