//! Decode and letterbox, on the calling thread.

use fast_image_resize as fr;
use visionq_contract::{Config, Letterbox};

use crate::decode::{Channels, Decoded, JpegDecoder};
use crate::formats::{Format, decode_png, decode_webp};
use crate::letterbox::{fit_geometry, place};
use crate::nvjpeg::GpuJpeg;
use crate::options::{ChannelOrder, DecodeScale, PreprocessOptions, ResizeFilter};
use crate::orient::{orient, swaps_sides};
use crate::prepared::{PreprocessError, Preprocessed};

/// Decodes and letterboxes frames into a fixed model input. Keeps its decoder and
/// resizer buffers between calls: make one per thread.
pub struct Preprocessor {
    input_width: u32,
    input_height: u32,
    options: PreprocessOptions,
    resizer: fr::Resizer,
    jpeg: JpegDecoder,
    gpu: Option<&'static GpuJpeg>,
}

impl Preprocessor {
    /// The default preprocessing (OpenCV-linear letterbox, RGB, full-size decode).
    pub fn new(input_width: u32, input_height: u32, max_pixels: u64) -> Self {
        Self::with_options(input_width, input_height, PreprocessOptions { max_pixels, ..Default::default() })
    }

    pub fn with_options(input_width: u32, input_height: u32, options: PreprocessOptions) -> Self {
        // Started (or found unavailable) at start by `start_gpu_decode`; a
        // preprocessor made without that starts it here.
        let gpu = options.gpu_decode.and_then(|g| {
            let gpu = GpuJpeg::shared(g.device, g.threads, g.max_batch, g.letterbox).ok()?;
            // `auto` takes the GPU only where its model input is the CPU path's.
            (g.required || gpu.letterboxing()).then_some(gpu)
        });
        Preprocessor { input_width, input_height, options, resizer: fr::Resizer::new(), jpeg: JpegDecoder::new(), gpu }
    }

    /// The preprocessing `config` asks for, into a `input_width`×`input_height` input.
    pub fn from_config(config: &Config, input_width: u32, input_height: u32) -> Self {
        Self::with_options(input_width, input_height, PreprocessOptions::from_config(config))
    }

    pub fn input_size(&self) -> (u32, u32) {
        (self.input_width, self.input_height)
    }

    /// Letterboxes into a `width`×`height` input from now on (a thread's
    /// preprocessor serves frames of models with different inputs; nothing it keeps
    /// depends on the size).
    pub fn set_input_size(&mut self, (width, height): (u32, u32)) {
        (self.input_width, self.input_height) = (width, height);
    }

    pub fn options(&self) -> &PreprocessOptions {
        &self.options
    }

    /// Decodes a JPEG, PNG or WebP to RGB at full size, refusing more than
    /// `max_pixels` before allocating, and any truncated or corrupt data.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<(Vec<u8>, u32, u32), PreprocessError> {
        let d = self.decode_scaled(bytes, 1)?;
        Ok((d.pixels, d.width, d.height))
    }

    /// Decodes by the format the bytes start like; `scale` shrinks a JPEG only.
    fn decode_scaled(&mut self, bytes: &[u8], scale: u8) -> Result<Decoded, PreprocessError> {
        let max_pixels = self.options.max_pixels;
        match Format::sniff(bytes) {
            Some(Format::Jpeg) => {
                if let (Some(gpu), 1) = (self.gpu, scale)
                    && let Some(d) = gpu.decode(bytes, max_pixels)?
                {
                    return Ok(d);
                }
                self.jpeg.decode(bytes, max_pixels, scale, Channels::Rgb)
            }
            Some(Format::Png) => decode_png(bytes, max_pixels),
            Some(Format::WebP) => decode_webp(bytes, max_pixels),
            None => Err(PreprocessError::Decode("image: not a JPEG, PNG or WebP (none of their signatures)".into())),
        }
    }

    /// The JPEG scale denominator (1, 2, 4 or 8) for a `width`×`height` image: with
    /// `decode_scale = auto` the smallest decode that still covers the scaled image.
    fn scale_for(&self, width: u32, height: u32) -> u8 {
        if self.options.decode_scale == DecodeScale::Off {
            return 1;
        }
        let lb = fit_geometry(self.options.input_fit, width, height, self.input_width, self.input_height);
        let mut denom = 1u8;
        for d in [2u8, 4, 8] {
            let (w, h) = (width.div_ceil(d as u32), height.div_ceil(d as u32));
            if w >= lb.scaled_width && h >= lb.scaled_height {
                denom = d;
            }
        }
        denom
    }

    /// Decode, then letterbox into the model input (the pixels as stored).
    pub fn prepare(&mut self, bytes: &[u8]) -> Result<Preprocessed, PreprocessError> {
        self.prepare_oriented(bytes, 1)
    }

    /// Decode, turn by the EXIF `orientation` (1–8; 1 leaves the pixels as stored),
    /// then letterbox into the model input: boxes come out in the turned image, and
    /// `width`×`height` is its size.
    pub fn prepare_oriented(&mut self, bytes: &[u8], orientation: u8) -> Result<Preprocessed, PreprocessError> {
        let t0 = std::time::Instant::now();
        if let Some(p) = self.prepare_on_gpu(bytes, orientation)? {
            return Ok(p);
        }
        let scale = match self.options.decode_scale {
            DecodeScale::Auto if Format::sniff(bytes) == Some(Format::Jpeg) => self
                .jpeg
                .dimensions(bytes)
                .map(|(w, h)| if swaps_sides(orientation) { (h, w) } else { (w, h) })
                .map(|(w, h)| self.scale_for(w, h))
                .unwrap_or(1),
            _ => 1,
        };
        let d = self.decode_scaled(bytes, scale)?;
        let (pixels, decoded_width, decoded_height) = orient(d.pixels, d.width, d.height, orientation);
        let (width, height) =
            if swaps_sides(orientation) { (d.source_height, d.source_width) } else { (d.source_width, d.source_height) };
        let t1 = std::time::Instant::now();
        let lb = fit_geometry(self.options.input_fit, width, height, self.input_width, self.input_height);
        let mut tensor = place(&mut self.resizer, self.options.resize_filter, pixels, decoded_width, decoded_height, &lb)?;
        if self.options.channel_order == ChannelOrder::Bgr {
            tensor.chunks_exact_mut(3).for_each(|p| p.swap(0, 2));
        }
        Ok(Preprocessed {
            tensor,
            letterbox: lb,
            width,
            height,
            decode_seconds: (t1 - t0).as_secs_f64(),
            resize_seconds: t1.elapsed().as_secs_f64(),
        })
    }

    /// Decode and letterbox both on the GPU (nvJPEG and the letterbox kernel), for a
    /// JPEG the GPU takes when nothing asks for a step only the CPU path has: an
    /// EXIF turn, a scaled decode, the antialiased filter. `None`: the CPU path.
    fn prepare_on_gpu(&self, bytes: &[u8], orientation: u8) -> Result<Option<Preprocessed>, PreprocessError> {
        let Some(gpu) = self.gpu else { return Ok(None) };
        let o = &self.options;
        if orientation > 1
            || o.decode_scale != DecodeScale::Off
            || o.resize_filter != ResizeFilter::Linear
            || Format::sniff(bytes) != Some(Format::Jpeg)
        {
            return Ok(None);
        }
        let (fit, iw, ih) = (o.input_fit, self.input_width, self.input_height);
        let bgr = o.channel_order == ChannelOrder::Bgr;
        gpu.letterbox(bytes, o.max_pixels, |w, h| fit_geometry(fit, w, h, iw, ih), bgr)
    }

    /// Scales an RGB image into the model input (grey bars around it, or stretched).
    pub fn letterbox(&mut self, rgb: Vec<u8>, width: u32, height: u32) -> Result<(Vec<u8>, Letterbox), PreprocessError> {
        let lb = fit_geometry(self.options.input_fit, width, height, self.input_width, self.input_height);
        let canvas = place(&mut self.resizer, self.options.resize_filter, rgb, width, height, &lb)?;
        Ok((canvas, lb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PAD_VALUE;

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
            assert!(matches!(p.prepare(input), Err(PreprocessError::Decode(_))), "{input:?}");
        }
    }

    #[test]
    fn the_exif_orientation_turns_the_image_before_the_letterbox() {
        // 64×32 stored: red left half, blue right half.
        let rgb: Vec<u8> = (0..32).flat_map(|_| (0..64).flat_map(|x| if x < 32 { [220, 20, 20] } else { [20, 20, 220] })).collect();
        let image = turbojpeg::Image { pixels: &rgb[..], width: 64, pitch: 64 * 3, height: 32, format: turbojpeg::PixelFormat::RGB };
        let jpeg = turbojpeg::compress(image, 95, turbojpeg::Subsamp::None).unwrap();
        let mut p = Preprocessor::new(416, 416, 1 << 20);
        let px = |t: &[u8], x: usize, y: usize| <[u8; 3]>::try_from(&t[(y * 416 + x) * 3..][..3]).unwrap();
        let red = |c: [u8; 3]| c[0] > 180 && c[2] < 60;
        let blue = |c: [u8; 3]| c[2] > 180 && c[0] < 60;

        let stored = p.prepare(&jpeg).unwrap();
        assert_eq!((stored.width, stored.height), (64, 32));
        assert!(red(px(&stored.tensor, 100, 208)) && blue(px(&stored.tensor, 316, 208)));

        // 6: shown turned clockwise, so the stored left half is on top, 32×64.
        let turned = p.prepare_oriented(&jpeg, 6).unwrap();
        assert_eq!((turned.width, turned.height), (32, 64));
        assert_eq!((turned.letterbox.scaled_width, turned.letterbox.scaled_height, turned.letterbox.pad_x), (208, 416, 104));
        assert_eq!(px(&turned.tensor, 50, 208), [PAD_VALUE; 3], "bars left and right now");
        assert!(red(px(&turned.tensor, 208, 100)) && blue(px(&turned.tensor, 208, 316)), "red above blue");
        // 8: turned the other way, blue on top.
        let turned = p.prepare_oriented(&jpeg, 8).unwrap();
        assert!(blue(px(&turned.tensor, 208, 100)) && red(px(&turned.tensor, 208, 316)), "blue above red");
        // 3: upside down, blue on the left.
        let turned = p.prepare_oriented(&jpeg, 3).unwrap();
        assert_eq!((turned.width, turned.height), (64, 32));
        assert!(blue(px(&turned.tensor, 100, 208)) && red(px(&turned.tensor, 316, 208)));
    }

    #[test]
    fn auto_scale_keeps_the_decode_at_least_as_large_as_the_scaled_image() {
        let options = PreprocessOptions { decode_scale: DecodeScale::Auto, ..Default::default() };
        let p = Preprocessor::with_options(416, 416, options);
        assert_eq!(p.scale_for(1280, 720), 2, "640x360 covers 416x234");
        assert_eq!(p.scale_for(4000, 3000), 8, "500x375 covers 416x312");
        assert_eq!(p.scale_for(640, 480), 1, "320x240 would not cover 416x312");
        let off = Preprocessor::new(416, 416, 1 << 30);
        assert_eq!(off.scale_for(4000, 3000), 1);
    }
}
