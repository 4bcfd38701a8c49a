//! PNG and WebP, decoded to 8-bit RGB as strictly as JPEG: data that is cut off or
//! fails a checksum is an error. PNG through the `png` crate (every chunk's CRC is
//! checked, and the file must reach its IEND chunk); WebP through `image-webp`, after
//! checking that the body is as long as its RIFF container says. Alpha is dropped and
//! grey is spread to three channels, as OpenCV's `imread(…, IMREAD_COLOR)` does.

use std::io::Cursor;

use crate::PreprocessError;
use crate::decode::Decoded;

/// The image formats frames come in, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
}

pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

impl Format {
    /// The format `bytes` start like; None for anything else.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(&PNG_SIGNATURE) {
            Some(Format::Png)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Format::WebP)
        } else {
            None
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

fn error(format: Format, e: impl std::fmt::Display) -> PreprocessError {
    PreprocessError::Decode(format!("{}: {e}", format.name()))
}

fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), PreprocessError> {
    if width as u64 * height as u64 > max_pixels {
        return Err(PreprocessError::TooLarge { width: width as usize, height: height as usize, max_pixels });
    }
    Ok(())
}

/// Keeps the first three of every `channels` bytes (grey: the one, three times).
fn to_rgb(pixels: Vec<u8>, channels: usize) -> Vec<u8> {
    match channels {
        3 => pixels,
        1 => pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        2 => pixels.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        _ => pixels.chunks_exact(channels).flat_map(|p| [p[0], p[1], p[2]]).collect(),
    }
}

fn decoded(pixels: Vec<u8>, width: u32, height: u32) -> Decoded {
    Decoded { pixels, width, height, source_width: width, source_height: height }
}

/// A PNG of any colour type and depth as 8-bit RGB, refusing more than `max_pixels`
/// (from its header) before any pixel memory is allocated.
pub fn decode_png(bytes: &[u8], max_pixels: u64) -> Result<Decoded, PreprocessError> {
    let fail = |e: png::DecodingError| error(Format::Png, e);
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    // Palette and low depths to 8 bits, 16 bits to 8 (the high byte, as OpenCV).
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let (width, height) = decoder.read_header_info().map_err(fail)?.size();
    check_size(width, height, max_pixels)?;
    let mut reader = decoder.read_info().map_err(fail)?;
    let len = reader.output_buffer_size().ok_or_else(|| error(Format::Png, "image too large for memory"))?;
    let mut pixels = vec![0u8; len];
    let frame = reader.next_frame(&mut pixels).map_err(fail)?;
    // The rest of the file up to IEND, CRCs checked: a cut-off file is an error even
    // when its pixel data happened to be complete.
    reader.finish().map_err(fail)?;
    pixels.truncate(frame.buffer_size());
    let channels = frame.color_type.samples();
    Ok(decoded(to_rgb(pixels, channels), width, height))
}

/// A WebP (lossy or lossless; of an animation, the first frame) as 8-bit RGB,
/// refusing more than `max_pixels` before any pixel memory is allocated.
pub fn decode_webp(bytes: &[u8], max_pixels: u64) -> Result<Decoded, PreprocessError> {
    if bytes.len() < 12 {
        return Err(error(Format::WebP, "shorter than its RIFF header"));
    }
    let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as u64 + 8;
    if (bytes.len() as u64) < declared {
        return Err(error(Format::WebP, format!("cut off: the RIFF container declares {declared} bytes, {} arrived", bytes.len())));
    }
    let fail = |e: image_webp::DecodingError| error(Format::WebP, e);
    let mut decoder = image_webp::WebPDecoder::new(Cursor::new(&bytes[..declared as usize])).map_err(fail)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels)?;
    let len = decoder.output_buffer_size().ok_or_else(|| error(Format::WebP, "image too large for memory"))?;
    let mut pixels = vec![0u8; len];
    decoder.read_image(&mut pixels).map_err(fail)?;
    let channels = if decoder.has_alpha() { 4 } else { 3 };
    Ok(decoded(to_rgb(pixels, channels), width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w`×`h` PNG of `color` with 8-bit samples.
    fn png_of(pixels: &[u8], w: u32, h: u32, color: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(pixels).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn every_png_colour_type_becomes_rgb() {
        let rgb = [10u8, 20, 30, 40, 50, 60];
        let d = decode_png(&png_of(&rgb, 2, 1, png::ColorType::Rgb, png::BitDepth::Eight), 100).unwrap();
        assert_eq!((d.pixels.as_slice(), d.width, d.height), (&rgb[..], 2, 1));
        let rgba = [10u8, 20, 30, 0, 40, 50, 60, 255];
        assert_eq!(decode_png(&png_of(&rgba, 2, 1, png::ColorType::Rgba, png::BitDepth::Eight), 100).unwrap().pixels, rgb);
        let grey = [7u8, 9];
        let d = decode_png(&png_of(&grey, 2, 1, png::ColorType::Grayscale, png::BitDepth::Eight), 100).unwrap();
        assert_eq!(d.pixels, [7, 7, 7, 9, 9, 9]);
        let grey16 = [0x12u8, 0x34, 0xAB, 0xCD];
        let d = decode_png(&png_of(&grey16, 2, 1, png::ColorType::Grayscale, png::BitDepth::Sixteen), 100).unwrap();
        assert_eq!(d.pixels, [0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB], "16 bits: the high byte");
    }

    #[test]
    fn a_png_over_the_pixel_limit_is_refused_from_its_header() {
        let png = png_of(&[0u8; 3 * 64], 8, 8, png::ColorType::Rgb, png::BitDepth::Eight);
        assert!(matches!(decode_png(&png, 63), Err(PreprocessError::TooLarge { width: 8, height: 8, .. })));
    }

    #[test]
    fn webp_lossless_round_trips_and_a_cut_is_an_error() {
        let rgb: Vec<u8> = (0..16 * 8 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut webp = Vec::new();
        image_webp::WebPEncoder::new(&mut webp).encode(&rgb, 16, 8, image_webp::ColorType::Rgb8).unwrap();
        assert_eq!(Format::sniff(&webp), Some(Format::WebP));
        let d = decode_webp(&webp, 1000).unwrap();
        assert_eq!((d.pixels, d.width, d.height), (rgb, 16, 8));
        for cut in 12..webp.len() {
            assert!(matches!(decode_webp(&webp[..cut], 1000), Err(PreprocessError::Decode(_))), "cut at {cut}");
        }
        assert!(matches!(decode_webp(&webp, 100), Err(PreprocessError::TooLarge { .. })));
    }
}
