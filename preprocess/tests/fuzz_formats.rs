//! Property tests ("fuzzing") of the PNG and WebP decode paths, on dog.jpg re-encoded
//! to each (losslessly, so the pixels are the JPEG's): the intact file decodes to the
//! same pixels; a file cut anywhere is an error, never a clean image; a PNG with any
//! byte of its chunk data changed fails its CRC; nothing panics; a header declaring a
//! huge image is refused before any pixel memory is allocated.
//! Cases per property: PROPTEST_CASES (default 64 here).

use proptest::prelude::*;
use visionq_preprocess::{PreprocessError, Preprocessor};

#[path = "support/fuzz.rs"]
mod fuzz;
use fuzz::{cases, photo};

const MAX_PIXELS: u64 = 40_000_000;

fn dog_rgb() -> (Vec<u8>, u32, u32) {
    Preprocessor::new(416, 416, MAX_PIXELS).decode(&photo()).expect("dog.jpg decodes")
}

fn to_png(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    visionq_preprocess::encode::png_of(rgb, w, h)
}

fn to_webp(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    visionq_preprocess::encode::webp_of(rgb, w, h)
}

/// The photo as PNG and as WebP (made once).
fn files() -> &'static (Vec<u8>, Vec<u8>) {
    static FILES: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let (rgb, w, h) = dog_rgb();
        (to_png(&rgb, w, h), to_webp(&rgb, w, h))
    })
}

/// CRC-32 (ISO-HDLC, as PNG chunks carry), bit by bit: small and independent of the decoder.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Offset of the data of the first IDAT chunk, and its length.
fn idat(png: &[u8]) -> (usize, usize) {
    let at = png.windows(4).position(|w| w == b"IDAT").expect("an IDAT chunk");
    (at + 4, u32::from_be_bytes(png[at - 4..at].try_into().unwrap()) as usize)
}

#[test]
fn the_intact_files_decode_to_the_jpegs_pixels() {
    let (rgb, w, h) = dog_rgb();
    let (png, webp) = files();
    let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
    assert_eq!(pre.decode(png).unwrap(), (rgb.clone(), w, h));
    assert_eq!(pre.decode(webp).unwrap(), (rgb, w, h));
    let (from_jpeg, from_png) = (pre.prepare(&photo()).unwrap(), pre.prepare(png).unwrap());
    assert_eq!(from_jpeg.tensor, from_png.tensor, "the model sees the same input");
}

#[test]
fn png_and_webp_cut_at_every_kilobyte_are_errors() {
    let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
    for (name, file) in [("PNG", &files().0), ("WebP", &files().1)] {
        let cuts: Vec<usize> = (1024..file.len()).step_by(1024).chain([file.len() - 1]).collect();
        assert!(cuts.len() > 100, "{name}: {} cuts", cuts.len());
        for &cut in &cuts {
            match pre.prepare(&file[..cut]) {
                Err(PreprocessError::Decode(reason)) => assert!(reason.starts_with(name), "{reason}"),
                Err(e) => panic!("{name} cut at {cut}: unexpected error {e}"),
                Ok(_) => panic!("{name} cut to {cut} of {} bytes decoded as a clean image", file.len()),
            }
        }
    }
}

fn check(pre: &mut Preprocessor, bytes: &[u8]) {
    match pre.prepare(bytes) {
        Ok(p) => {
            assert_eq!(p.tensor.len(), 416 * 416 * 3);
            assert!(p.width as u64 * p.height as u64 <= MAX_PIXELS);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn truncated_png_and_webp_are_always_errors(cut in any::<prop::sample::Index>()) {
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        for file in [&files().0, &files().1] {
            let cut = cut.index(file.len());
            prop_assert!(matches!(pre.prepare(&file[..cut]), Err(PreprocessError::Decode(_))), "cut at {cut}");
        }
    }

    #[test]
    fn a_changed_byte_in_png_image_data_fails_its_crc(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut png = files().0.clone();
        let (start, len) = idat(&png);
        png[start + at.index(len)] ^= mask;
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        let r = pre.prepare(&png);
        prop_assert!(matches!(&r, Err(PreprocessError::Decode(m)) if m.starts_with("PNG")), "{:?}", r.map(|p| p.width));
    }

    #[test]
    fn flipped_png_and_webp_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..16)) {
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        for file in [&files().0, &files().1] {
            let mut bytes = file.clone();
            let n = bytes.len();
            for (at, mask) in &flips {
                bytes[at.index(n)] ^= mask;
            }
            check(&mut pre, &bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_behind_the_signatures_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        check(&mut pre, &[&b"\x89PNG\r\n\x1a\n"[..], &bytes].concat());
        let riff = [&b"RIFF"[..], &(bytes.len() as u32 + 4).to_le_bytes(), b"WEBP", &bytes].concat();
        check(&mut pre, &riff);
    }

    #[test]
    fn declared_png_bombs_are_refused_from_the_header(w in 6400u32..=1 << 20, h in 6400u32..=1 << 20) {
        // IHDR rewritten to declare w×h (its CRC too, so only the size is wrong).
        let mut png = files().0.clone();
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
        match pre.prepare(&png) {
            Err(PreprocessError::TooLarge { width, height, .. }) => prop_assert_eq!((width, height), (w as usize, h as usize)),
            other => prop_assert!(false, "a {w}x{h} PNG was not refused: {:?}", other.map(|p| (p.width, p.height))),
        }
    }
}

#[test]
fn a_declared_webp_bomb_is_refused_from_the_header() {
    // A lossless header declaring 16383×16383, no image data.
    let bits: u32 = 16382 | (16382 << 14);
    let mut webp = b"RIFF\x12\0\0\0WEBPVP8L\x06\0\0\0\x2f".to_vec();
    webp.extend(bits.to_le_bytes());
    webp.push(0);
    let mut pre = Preprocessor::new(416, 416, MAX_PIXELS);
    let r = pre.prepare(&webp).map(|p| p.width);
    assert!(matches!(r, Err(PreprocessError::TooLarge { width: 16383, height: 16383, .. })), "{r:?}");
}
