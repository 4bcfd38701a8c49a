//! What preprocessing gives back, whichever decoder made it: a model-ready frame, or
//! why a frame cannot become one. Its own module so that the CPU path (`image`) and
//! the GPU path (`nvjpeg`) both build these without importing each other.

use visionq_contract::Letterbox;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreprocessError {
    /// The reason starts with the format: `JPEG: Premature end of JPEG file`.
    #[error("cannot decode {0}")]
    Decode(String),
    #[error("image is {width}x{height}, over the limit of {max_pixels} pixels")]
    TooLarge { width: usize, height: usize, max_pixels: u64 },
    #[error("cannot resize: {0}")]
    Resize(String),
}

/// A model-ready frame.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// `input_height × input_width × 3`, row-major, RGB (BGR if the options say so).
    pub tensor: Vec<u8>,
    pub letterbox: Letterbox,
    /// The image's size, whatever size it was decoded at.
    pub width: u32,
    pub height: u32,
    pub decode_seconds: f64,
    pub resize_seconds: f64,
}
