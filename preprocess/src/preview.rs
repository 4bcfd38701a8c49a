//! Frame previews for the dashboard: a frame too large to keep as posted (a 12 MP
//! camera's), or one turned by its EXIF orientation, made into a small JPEG the way
//! the tile shows it — turned as the boxes are, at most [`PREVIEW_MAX_SIDE`] pixels
//! on its long side, without EXIF. A large JPEG is decoded at 1/2, 1/4 or 1/8 in the
//! DCT domain when that still leaves the preview's size, so a preview costs a
//! fraction of a full decode.

use fast_image_resize as fr;

use crate::PreprocessError;
use crate::decode::{Channels, JpegDecoder};
use crate::formats::{Format, decode_png, decode_webp};
use crate::orient::orient;

/// The long side of a downscaled preview, in pixels.
pub const PREVIEW_MAX_SIDE: u32 = 640;

/// JPEG quality of a preview.
const QUALITY: i32 = 80;

/// `bytes` (JPEG, PNG or WebP) turned by `orientation` (1–8), shrunk to at most
/// `max_side` on its long side (never enlarged) and encoded as a JPEG. Refuses more
/// than `max_pixels` and data that does not decode.
pub fn preview_jpeg(bytes: &[u8], orientation: u8, max_side: u32, max_pixels: u64) -> Result<Vec<u8>, PreprocessError> {
    let max_side = max_side.max(1);
    let d = match Format::sniff(bytes) {
        Some(Format::Jpeg) => {
            let mut jpeg = JpegDecoder::new();
            let (w, h) = jpeg.dimensions(bytes)?;
            let long = w.max(h);
            let scale = [8u8, 4, 2].into_iter().find(|&d| long.div_ceil(d as u32) >= max_side).unwrap_or(1);
            jpeg.decode(bytes, max_pixels, scale, Channels::Rgb)?
        }
        Some(Format::Png) => decode_png(bytes, max_pixels)?,
        Some(Format::WebP) => decode_webp(bytes, max_pixels)?,
        None => return Err(PreprocessError::Decode("image: not a JPEG, PNG or WebP (none of their signatures)".into())),
    };
    let (pixels, w, h) = orient(d.pixels, d.width, d.height, orientation);
    let (pixels, w, h) = if w.max(h) > max_side { shrink(pixels, w, h, max_side)? } else { (pixels, w, h) };
    let image = turbojpeg::Image {
        pixels: &pixels[..],
        width: w as usize,
        pitch: w as usize * 3,
        height: h as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    let out = turbojpeg::compress(image, QUALITY, turbojpeg::Subsamp::Sub2x2)
        .map_err(|e| PreprocessError::Resize(format!("cannot encode the preview: {e}")))?;
    Ok(out.to_vec())
}

/// Antialiased resize so the long side is `max_side`, aspect kept.
fn shrink(pixels: Vec<u8>, w: u32, h: u32, max_side: u32) -> Result<(Vec<u8>, u32, u32), PreprocessError> {
    let scale = max_side as f64 / w.max(h) as f64;
    let (tw, th) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    let src = fr::images::Image::from_vec_u8(w, h, pixels, fr::PixelType::U8x3).map_err(|e| PreprocessError::Resize(e.to_string()))?;
    let mut dst = fr::images::Image::new(tw, th, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    fr::Resizer::new().resize(&src, &mut dst, &options).map_err(|e| PreprocessError::Resize(e.to_string()))?;
    Ok((dst.into_vec(), tw, th))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_of(w: usize, h: usize, quality: i32) -> Vec<u8> {
        crate::encode::noise_jpeg(w, h, quality, 0x1234_5678)
    }

    fn size(jpeg: &[u8]) -> (usize, usize) {
        let h = turbojpeg::read_header(jpeg).unwrap();
        (h.width, h.height)
    }

    #[test]
    fn a_large_frame_becomes_a_small_jpeg_of_the_same_shape() {
        let big = jpeg_of(2000, 1500, 95);
        assert!(big.len() > 1 << 20, "{} bytes", big.len());
        let small = preview_jpeg(&big, 1, PREVIEW_MAX_SIDE, 40_000_000).unwrap();
        assert_eq!(size(&small), (640, 480));
        assert!(small.len() < 200 * 1024, "{} bytes", small.len());
        // Turned by its orientation, as the boxes are.
        assert_eq!(size(&preview_jpeg(&big, 6, PREVIEW_MAX_SIDE, 40_000_000).unwrap()), (480, 640));
        // A small frame is not enlarged; a broken one is an error.
        assert_eq!(size(&preview_jpeg(&jpeg_of(320, 200, 80), 8, PREVIEW_MAX_SIDE, 40_000_000).unwrap()), (200, 320));
        assert!(preview_jpeg(&big[..big.len() / 2], 1, PREVIEW_MAX_SIDE, 40_000_000).is_err());
        assert!(matches!(preview_jpeg(&big, 1, PREVIEW_MAX_SIDE, 1_000_000), Err(PreprocessError::TooLarge { .. })));
    }
}
