//! Decode and letterbox, on the calling thread.

use fast_image_resize as fr;
use visionq_contract::Letterbox;

use crate::decode::{Channels, JpegDecoder};

/// Grey of the letterbox bars, as the YOLO family was trained with.
pub const PAD_VALUE: u8 = 114;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreprocessError {
    #[error("cannot decode JPEG: {0}")]
    Decode(String),
    #[error("image is {width}x{height}, over the limit of {max_pixels} pixels")]
    TooLarge { width: usize, height: usize, max_pixels: u64 },
    #[error("cannot resize: {0}")]
    Resize(String),
}

/// A model-ready frame.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// `input_height × input_width × 3`, RGB, row-major.
    pub tensor: Vec<u8>,
    pub letterbox: Letterbox,
    pub width: u32,
    pub height: u32,
    pub decode_seconds: f64,
    pub resize_seconds: f64,
}

/// Where a `width`×`height` image lands inside the model input, aspect kept, centred.
pub fn letterbox_geometry(width: u32, height: u32, input_width: u32, input_height: u32) -> Letterbox {
    let scale = (input_width as f32 / width as f32).min(input_height as f32 / height as f32);
    let scaled_width = ((width as f32 * scale).round() as u32).clamp(1, input_width);
    let scaled_height = ((height as f32 * scale).round() as u32).clamp(1, input_height);
    Letterbox {
        input_width,
        input_height,
        scale,
        pad_x: (input_width - scaled_width) / 2,
        pad_y: (input_height - scaled_height) / 2,
        scaled_width,
        scaled_height,
    }
}

/// Decodes and letterboxes frames into a fixed model input. Keeps its resizer's
/// buffers between calls: make one per thread.
pub struct Preprocessor {
    input_width: u32,
    input_height: u32,
    max_pixels: u64,
    resizer: fr::Resizer,
    jpeg: JpegDecoder,
}

impl Preprocessor {
    pub fn new(input_width: u32, input_height: u32, max_pixels: u64) -> Self {
        Preprocessor { input_width, input_height, max_pixels, resizer: fr::Resizer::new(), jpeg: JpegDecoder::new() }
    }

    pub fn input_size(&self) -> (u32, u32) {
        (self.input_width, self.input_height)
    }

    /// Decodes a JPEG to RGB, refusing more than `max_pixels` before allocating, and
    /// any truncated or corrupt data.
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<(Vec<u8>, u32, u32), PreprocessError> {
        let d = self.jpeg.decode(jpeg, self.max_pixels, 1, Channels::Rgb)?;
        Ok((d.pixels, d.width, d.height))
    }

    /// Decode, then letterbox into the model input.
    pub fn prepare(&mut self, jpeg: &[u8]) -> Result<Preprocessed, PreprocessError> {
        let t0 = std::time::Instant::now();
        let (rgb, width, height) = self.decode(jpeg)?;
        let t1 = std::time::Instant::now();
        let (tensor, letterbox) = self.letterbox(rgb, width, height)?;
        Ok(Preprocessed {
            tensor,
            letterbox,
            width,
            height,
            decode_seconds: (t1 - t0).as_secs_f64(),
            resize_seconds: t1.elapsed().as_secs_f64(),
        })
    }

    /// Scales an RGB image into the model input with grey bars around it.
    pub fn letterbox(&mut self, rgb: Vec<u8>, width: u32, height: u32) -> Result<(Vec<u8>, Letterbox), PreprocessError> {
        let lb = letterbox_geometry(width, height, self.input_width, self.input_height);
        let src = fr::images::Image::from_vec_u8(width, height, rgb, fr::PixelType::U8x3)
            .map_err(|e| PreprocessError::Resize(e.to_string()))?;
        let mut scaled = fr::images::Image::new(lb.scaled_width, lb.scaled_height, fr::PixelType::U8x3);
        let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
        self.resizer.resize(&src, &mut scaled, &options).map_err(|e| PreprocessError::Resize(e.to_string()))?;
        let row = self.input_width as usize * 3;
        let mut canvas = vec![PAD_VALUE; row * self.input_height as usize];
        let scaled_row = lb.scaled_width as usize * 3;
        for (y, line) in scaled.buffer().chunks_exact(scaled_row).enumerate() {
            let start = (y + lb.pad_y as usize) * row + lb.pad_x as usize * 3;
            canvas[start..start + scaled_row].copy_from_slice(line);
        }
        Ok((canvas, lb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_keeps_the_aspect_and_centres() {
        let lb = letterbox_geometry(1280, 720, 416, 416);
        assert_eq!((lb.scaled_width, lb.scaled_height, lb.pad_x, lb.pad_y), (416, 234, 0, 91));
        let lb = letterbox_geometry(100, 400, 416, 416);
        assert_eq!((lb.scaled_width, lb.scaled_height, lb.pad_x, lb.pad_y), (104, 416, 156, 0));
    }

    #[test]
    fn letterbox_pads_with_grey_and_keeps_the_image() {
        let mut p = Preprocessor::new(32, 32, 1 << 20);
        // 64x32 solid red: scaled to 32x16, bars of 8 rows above and below.
        let rgb = [255u8, 0, 0].repeat(64 * 32);
        let (t, lb) = p.letterbox(rgb, 64, 32).unwrap();
        assert_eq!(t.len(), 32 * 32 * 3);
        assert_eq!(lb.pad_y, 8);
        assert_eq!(&t[0..3], &[PAD_VALUE; 3]);
        let mid = (16 * 32 + 16) * 3;
        assert_eq!(&t[mid..mid + 3], &[255, 0, 0]);
        let last = t.len() - 3;
        assert_eq!(&t[last..], &[PAD_VALUE; 3]);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let mut p = Preprocessor::new(32, 32, 1 << 20);
        for input in [&b""[..], b"\xff\xd8\xff", b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03", b"not a jpeg"] {
            assert!(matches!(p.decode(input), Err(PreprocessError::Decode(_))), "{input:?}");
        }
    }
}
