//! Where an image lands in the model input, and the resize that puts it there.

use fast_image_resize as fr;
use visionq_contract::Letterbox;

use crate::PreprocessError;
use crate::options::{InputFit, ResizeFilter};

/// Grey of the letterbox bars, as the YOLO family was trained with.
pub const PAD_VALUE: u8 = 114;

/// Where a `width`×`height` image lands inside the model input, aspect kept, centred.
/// Scaled size `round(side × scale)`, bars `(input − scaled) / 2` rounded down on the
/// top/left: Ultralytics' and Darknet's letterbox.
pub fn letterbox_geometry(width: u32, height: u32, input_width: u32, input_height: u32) -> Letterbox {
    let scale = (input_width as f32 / width as f32).min(input_height as f32 / height as f32);
    let scaled_width = ((width as f32 * scale).round() as u32).clamp(1, input_width);
    let scaled_height = ((height as f32 * scale).round() as u32).clamp(1, input_height);
    Letterbox {
        input_width,
        input_height,
        scale,
        scale_y: None,
        pad_x: (input_width - scaled_width) / 2,
        pad_y: (input_height - scaled_height) / 2,
        scaled_width,
        scaled_height,
    }
}

/// The geometry for `fit`: the letterbox, or the whole input (aspect not kept).
pub fn fit_geometry(fit: InputFit, width: u32, height: u32, input_width: u32, input_height: u32) -> Letterbox {
    match fit {
        InputFit::Letterbox => letterbox_geometry(width, height, input_width, input_height),
        InputFit::Stretch => Letterbox {
            input_width,
            input_height,
            scale: input_width as f32 / width as f32,
            scale_y: Some(input_height as f32 / height as f32),
            pad_x: 0,
            pad_y: 0,
            scaled_width: input_width,
            scaled_height: input_height,
        },
    }
}

/// Resizes a 3-byte-a-pixel image to `lb`'s scaled size and places it on a grey
/// canvas of the input size.
pub fn place(
    resizer: &mut fr::Resizer,
    filter: ResizeFilter,
    pixels: Vec<u8>,
    width: u32,
    height: u32,
    lb: &Letterbox,
) -> Result<Vec<u8>, PreprocessError> {
    let src = fr::images::Image::from_vec_u8(width, height, pixels, fr::PixelType::U8x3)
        .map_err(|e| PreprocessError::Resize(e.to_string()))?;
    let mut scaled = fr::images::Image::new(lb.scaled_width, lb.scaled_height, fr::PixelType::U8x3);
    let alg = match filter {
        // Fixed support of one source pixel each side, half-pixel centres, edge pixels
        // repeated: the weights of OpenCV's INTER_LINEAR.
        ResizeFilter::Linear => fr::ResizeAlg::Interpolation(fr::FilterType::Bilinear),
        ResizeFilter::Antialias => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
    };
    resizer
        .resize(&src, &mut scaled, &fr::ResizeOptions::new().resize_alg(alg))
        .map_err(|e| PreprocessError::Resize(e.to_string()))?;
    let row = lb.input_width as usize * 3;
    let mut canvas = vec![PAD_VALUE; row * lb.input_height as usize];
    let scaled_row = lb.scaled_width as usize * 3;
    for (y, line) in scaled.buffer().chunks_exact(scaled_row).enumerate() {
        let start = (y + lb.pad_y as usize) * row + lb.pad_x as usize * 3;
        canvas[start..start + scaled_row].copy_from_slice(line);
    }
    Ok(canvas)
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
    fn stretch_fills_the_input_and_maps_back_per_axis() {
        let lb = fit_geometry(InputFit::Stretch, 1280, 720, 416, 416);
        assert_eq!((lb.scaled_width, lb.scaled_height, lb.pad_x, lb.pad_y), (416, 416, 0, 0));
        let b = lb.to_image([41.6, 41.6, 416.0, 416.0], 1280, 720);
        assert!((b[0] - 128.0).abs() < 1e-3 && (b[1] - 72.0).abs() < 1e-3, "{b:?}");
        assert!((b[2] - 1280.0).abs() < 1e-3 && (b[3] - 720.0).abs() < 1e-3, "{b:?}");
    }

    /// OpenCV's INTER_LINEAR on a 4-pixel row halved: each output is the mean of two
    /// neighbours (half-pixel centres); the antialiased filter mixes in more.
    #[test]
    fn linear_is_opencv_inter_linear_not_antialiased() {
        let row: Vec<u8> = [0u8, 100, 200, 40].iter().flat_map(|&v| [v, v, v]).collect();
        let lb = Letterbox {
            input_width: 2,
            input_height: 1,
            scale: 0.5,
            scale_y: None,
            pad_x: 0,
            pad_y: 0,
            scaled_width: 2,
            scaled_height: 1,
        };
        let mut r = fr::Resizer::new();
        let out = place(&mut r, ResizeFilter::Linear, row.clone(), 4, 1, &lb).unwrap();
        assert_eq!((out[0], out[3]), (50, 120), "cv2.resize([[0,100,200,40]], (2,1)) = [[50,120]]");
        let aa = place(&mut r, ResizeFilter::Antialias, row, 4, 1, &lb).unwrap();
        assert_ne!((aa[0], aa[3]), (50, 120));
    }

    #[test]
    fn pads_with_grey_and_keeps_the_image() {
        // 64x32 solid red into 32x32: scaled to 32x16, bars of 8 rows above and below.
        let rgb = [255u8, 0, 0].repeat(64 * 32);
        let lb = letterbox_geometry(64, 32, 32, 32);
        let t = place(&mut fr::Resizer::new(), ResizeFilter::Linear, rgb, 64, 32, &lb).unwrap();
        assert_eq!(t.len(), 32 * 32 * 3);
        assert_eq!(lb.pad_y, 8);
        assert_eq!(&t[0..3], &[PAD_VALUE; 3]);
        let mid = (16 * 32 + 16) * 3;
        assert_eq!(&t[mid..mid + 3], &[255, 0, 0]);
        let last = t.len() - 3;
        assert_eq!(&t[last..], &[PAD_VALUE; 3]);
    }
}
