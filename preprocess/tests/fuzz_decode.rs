//! Property tests ("fuzzing") of the decode path on hostile input: truncated, bit-
//! flipped, spliced and garbage JPEGs, and headers that declare huge images
//! (decompression bombs). Nothing may panic; a bomb must be refused from its header,
//! before any pixel memory is allocated; whatever decodes has the declared size.
//! Data that lies is never a clean decode: a photo cut anywhere after its header is
//! an error, and bit flips in its scan data are reported (JPEG has no checksum, so a
//! flip that keeps the code stream valid can only change pixels unnoticed; most break
//! it, and those must be errors).
//! Cases per property: PROPTEST_CASES (default 256 here, more in a long run).

use proptest::prelude::*;
use visionq_preprocess::{PreprocessError, Preprocessor};

const MAX_PIXELS: u64 = 40_000_000;

/// (cases, errors) of `bit_flips_in_scan_data_are_reported`, across its cases.
static FLIPS: std::sync::Mutex<(u32, u32)> = std::sync::Mutex::new((0, 0));

#[path = "support/fuzz.rs"]
mod fuzz;
use fuzz::{cases, photo};

/// Offset of the SOF0 segment's height field.
fn sof_dims_at(jpeg: &[u8]) -> usize {
    jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG") + 5
}

/// Offset of the first byte of entropy-coded data (after the SOS segment).
fn scan_start(jpeg: &[u8]) -> usize {
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a scan");
    sos + 2 + u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]) as usize
}

#[test]
fn a_photo_cut_at_every_kilobyte_is_an_error() {
    let jpeg = photo();
    let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
    let cuts: Vec<usize> = (1024..jpeg.len()).step_by(1024).chain([jpeg.len() - 2, jpeg.len() - 1]).collect();
    for &cut in &cuts {
        match pre.prepare(&jpeg[..cut]) {
            Err(PreprocessError::Decode(reason)) => assert!(!reason.is_empty()),
            Err(e) => panic!("cut at {cut}: unexpected error {e}"),
            Ok(_) => panic!("dog.jpg cut to {cut} of {} bytes decoded as a clean image", jpeg.len()),
        }
    }
    assert!(cuts.len() > 100, "{} cuts", cuts.len());
    pre.prepare(&jpeg).expect("the intact photo decodes");
}

#[test]
fn a_photo_whose_second_half_is_garbage_is_an_error() {
    let mut jpeg = photo();
    let n = jpeg.len();
    let mut x: u32 = 0x9E37_79B9;
    for b in &mut jpeg[n / 2..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
    let err = pre.prepare(&jpeg).map(|_| ()).expect_err("half garbage must not decode cleanly");
    assert!(matches!(err, PreprocessError::Decode(_)), "{err}");
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
    fn truncated_scan_data_is_always_an_error(cut in any::<prop::sample::Index>()) {
        let jpeg = photo();
        let start = scan_start(&jpeg);
        let cut = start + cut.index(jpeg.len() - start);
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        let r = pre.prepare(&jpeg[..cut]);
        prop_assert!(matches!(r, Err(PreprocessError::Decode(_))), "cut at {} of {}: {:?}", cut, jpeg.len(), r.map(|p| p.width));
    }

    #[test]
    fn bit_flips_in_scan_data_are_reported(flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 4..16)) {
        let mut jpeg = photo();
        let start = scan_start(&jpeg);
        let end = jpeg.len() - 2; // the EOI marker stays
        for (at, bit) in &flips {
            let i = start + at.index(end - start);
            jpeg[i] ^= 1 << bit;
        }
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        let reported = pre.prepare(&jpeg).is_err();
        let mut seen = FLIPS.lock().unwrap();
        seen.0 += 1;
        seen.1 += reported as u32;
        if seen.0 >= 32 {
            prop_assert!(seen.1 * 2 >= seen.0, "only {} of {} damaged scans were reported", seen.1, seen.0);
        }
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

/// A frame that fails to decode leaves nothing behind in the decoder it used: the
/// frames after it decode as on a fresh one. (The embedded pipeline found person.jpg,
/// decoded right after a broken frame, refused as "output image is too small" or
/// decoded to other pixels.)
#[test]
fn a_broken_frame_does_not_spoil_the_next() {
    let dog = photo();
    let person = std::fs::read(fuzz::cache().join("photos/person.jpg")).expect("person.jpg in the asset cache");
    // dog.jpg up to the end of its frame header, then garbage: no scan at all.
    let sof = sof_dims_at(&dog) - 5;
    let mut broken = dog[..sof + 2 + u16::from_be_bytes([dog[sof + 2], dog[sof + 3]]) as usize].to_vec();
    broken.extend(std::iter::repeat_n(0x5Au8, 2000));
    for good in [&person, &dog] {
        let fresh = Preprocessor::new(416, 416, MAX_PIXELS).prepare(good).expect("a real photo decodes").tensor;
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        for round in 0..3 {
            assert!(pre.prepare(&broken).is_err(), "round {round}: the broken frame is an error");
            let after = pre.prepare(good).unwrap_or_else(|e| panic!("round {round}: the next frame decodes: {e}"));
            assert!(after.tensor == fresh, "round {round}: the next frame's pixels are a fresh decoder's");
        }
    }
}
