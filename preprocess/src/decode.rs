//! Decoding a camera frame to 8-bit RGB, strictly: data that is cut off or corrupt
//! is an error, never a silently grey or smeared image.
//!
//! JPEG goes through libjpeg-turbo (the `turbojpeg` crate, built from source and
//! linked statically): the same library OpenCV decodes with, so the pixels match
//! an OpenCV pipeline's, and its DCT-domain scaling can decode a large frame
//! straight at 1/2, 1/4 or 1/8 of its size. TurboJPEG reports every libjpeg warning
//! ("Premature end of JPEG file", "Corrupt JPEG data: bad Huffman code", …) as a
//! failed call, and each one is a decode error here.

use turbojpeg::{Decompressor, Image, PixelFormat, ScalingFactor};

use crate::PreprocessError;

/// A decoded image, 3 bytes a pixel, row-major.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// The image's own size (differs from `width`×`height` after a scaled decode).
    pub source_width: u32,
    pub source_height: u32,
}

/// Channel order asked of the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Rgb,
    Bgr,
}

/// A JPEG decoder that keeps its libjpeg-turbo handle between frames.
pub struct JpegDecoder {
    tj: Option<Decompressor>,
}

fn tj_error(e: turbojpeg::Error) -> PreprocessError {
    let msg = e.to_string();
    PreprocessError::Decode(format!("JPEG: {}", msg.strip_prefix("TurboJPEG error: ").unwrap_or(&msg)))
}

impl JpegDecoder {
    pub fn new() -> Self {
        JpegDecoder { tj: None }
    }

    fn handle(&mut self) -> Result<&mut Decompressor, PreprocessError> {
        if self.tj.is_none() {
            self.tj = Some(Decompressor::new().map_err(tj_error)?);
        }
        Ok(self.tj.as_mut().expect("set above"))
    }

    /// A handle that failed on a frame is not used again: libjpeg-turbo leaves it in a
    /// state that spoils the next frame (refused as "too small", or other pixels), and
    /// a new one costs far less than a decode.
    fn forget_on_error<T>(&mut self, r: Result<T, PreprocessError>) -> Result<T, PreprocessError> {
        if r.is_err() {
            self.tj = None;
        }
        r
    }

    /// Width and height from the JPEG header.
    pub fn dimensions(&mut self, jpeg: &[u8]) -> Result<(u32, u32), PreprocessError> {
        let r = self.handle().and_then(|tj| tj.read_header(jpeg).map_err(tj_error));
        self.forget_on_error(r).map(|h| (h.width as u32, h.height as u32))
    }

    /// Decodes at `scale` (1/1, 1/2, 1/4 or 1/8), refusing more than `max_pixels`
    /// (at full size) before any pixel memory is allocated.
    pub fn decode(&mut self, jpeg: &[u8], max_pixels: u64, scale: u8, channels: Channels) -> Result<Decoded, PreprocessError> {
        let r = self.decode_with_handle(jpeg, max_pixels, scale, channels);
        self.forget_on_error(r)
    }

    fn decode_with_handle(&mut self, jpeg: &[u8], max_pixels: u64, scale: u8, channels: Channels) -> Result<Decoded, PreprocessError> {
        if jpeg.len() < 3 || jpeg[..3] != [0xFF, 0xD8, 0xFF] {
            return Err(PreprocessError::Decode("JPEG: no SOI marker (not a JPEG)".into()));
        }
        let tj = self.handle()?;
        let header = tj.read_header(jpeg).map_err(tj_error)?;
        let (w, h) = (header.width, header.height);
        if w == 0 || h == 0 {
            return Err(PreprocessError::Decode(format!("JPEG: header gives a size of {w}x{h}")));
        }
        if (w as u64) * (h as u64) > max_pixels {
            return Err(PreprocessError::TooLarge { width: w, height: h, max_pixels });
        }
        let factor = if header.is_lossless { ScalingFactor::ONE } else { ScalingFactor::new(1, scale.max(1) as usize) };
        tj.set_scaling_factor(factor).map_err(tj_error)?;
        let (sw, sh) = (factor.scale(w), factor.scale(h));
        let format = match channels {
            Channels::Rgb => PixelFormat::RGB,
            Channels::Bgr => PixelFormat::BGR,
        };
        let mut pixels = vec![0u8; sw * sh * 3];
        let image = Image { pixels: &mut pixels[..], width: sw, pitch: sw * 3, height: sh, format };
        tj.decompress(jpeg, image).map_err(tj_error)?;
        Ok(Decoded { pixels, width: sw as u32, height: sh as u32, source_width: w as u32, source_height: h as u32 })
    }
}

impl Default for JpegDecoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_headers_without_data_are_decode_errors() {
        let mut d = JpegDecoder::new();
        for input in [&b""[..], b"\xff\xd8\xff", b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03", b"not a jpeg"] {
            assert!(matches!(d.decode(input, 1 << 20, 1, Channels::Rgb), Err(PreprocessError::Decode(_))), "{input:?}");
        }
    }
}
