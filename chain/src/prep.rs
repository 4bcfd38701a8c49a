//! Crops into model input: OpenCV `INTER_LINEAR` resize (what PP-OCR's own
//! preprocessing calls), then (x/255 − mean)/std per channel, planar, padded right
//! with zeros.

use visionq_contract::chain::ChainChannels;

/// An RGB crop, row by row.
#[derive(Debug, Clone)]
pub struct CropImage {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl CropImage {
    pub fn aspect(&self) -> f32 {
        self.width as f32 / self.height.max(1) as f32
    }
}

/// Source taps of one destination coordinate, as OpenCV's `INTER_LINEAR` takes them
/// (pixel centres aligned, clamped at the borders): (index, weight of index + 1).
fn taps(dst: usize, src: usize) -> Vec<(usize, f32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let s = (d as f64 + 0.5) * scale - 0.5;
            let i = s.floor();
            let f = s - i;
            if i < 0.0 {
                (0, 0.0)
            } else if i as usize >= src - 1 {
                (src - 1, 0.0)
            } else {
                (i as usize, f as f32)
            }
        })
        .collect()
}

/// Bilinear resize of an RGB image to `w`×`h`, rounded to u8 as OpenCV does for u8 images.
pub fn resize_linear(img: &CropImage, w: usize, h: usize) -> Vec<u8> {
    let (sw, sh) = (img.width as usize, img.height as usize);
    if (sw, sh) == (w, h) {
        return img.rgb.clone();
    }
    let (xs, ys) = (taps(w, sw), taps(h, sh));
    let mut out = vec![0u8; w * h * 3];
    let px = |x: usize, y: usize, c: usize| img.rgb[(y * sw + x) * 3 + c] as f32;
    for (y, &(y0, fy)) in ys.iter().enumerate() {
        let y1 = (y0 + 1).min(sh - 1);
        for (x, &(x0, fx)) in xs.iter().enumerate() {
            let x1 = (x0 + 1).min(sw - 1);
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - fx) + px(x1, y0, c) * fx;
                let bottom = px(x0, y1, c) * (1.0 - fx) + px(x1, y1, c) * fx;
                out[(y * w + x) * 3 + c] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// How crops are fitted into one `[3, height, width]` slot of the batch.
#[derive(Debug, Clone, Copy)]
pub struct Fit {
    pub width: usize,
    pub height: usize,
    /// Scaled to the height keeping the aspect (at most `width` wide) and padded
    /// right with zeros; false: stretched.
    pub keep_aspect: bool,
    /// With `keep_aspect`: scaled to fit inside both sides, padded right and below.
    pub fit_inside: bool,
    pub channels: ChainChannels,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Fit {
    /// The size a crop is scaled to: stretched to the slot; PP-OCR's
    /// `min(width, ceil(height × aspect))` at full height; or, fitting inside, both
    /// sides by the smaller ratio.
    pub fn scaled(&self, img: &CropImage) -> (usize, usize) {
        let (w, h) = (img.width.max(1) as f64, img.height.max(1) as f64);
        match (self.keep_aspect, self.fit_inside) {
            (false, _) => (self.width, self.height),
            (true, false) => (((self.height as f64 * w / h).ceil() as usize).clamp(1, self.width), self.height),
            (true, true) => {
                let s = (self.width as f64 / w).min(self.height as f64 / h);
                (((w * s).round() as usize).clamp(1, self.width), ((h * s).round() as usize).clamp(1, self.height))
            }
        }
    }

    /// Writes `img` into `slot` (`3 × height × width` floats).
    pub fn fill(&self, img: &CropImage, slot: &mut [f32]) {
        let (w, h) = (self.width, self.height);
        let (sw, sh) = self.scaled(img);
        let pixels = resize_linear(img, sw, sh);
        slot.fill(0.0);
        let order: [usize; 3] = match self.channels {
            ChainChannels::Rgb => [0, 1, 2],
            ChainChannels::Bgr => [2, 1, 0],
        };
        for (plane, &src_c) in order.iter().enumerate() {
            let (mean, std) = (self.mean[plane], self.std[plane]);
            let dst = &mut slot[plane * w * h..(plane + 1) * w * h];
            for y in 0..sh {
                for x in 0..sw {
                    let v = pixels[(y * sw + x) * 3 + src_c] as f32 / 255.0;
                    dst[y * w + x] = (v - mean) / std;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> CropImage {
        let f = &f;
        let rgb = (0..h).flat_map(|y| (0..w).flat_map(move |x| f(x, y))).collect::<Vec<_>>();
        CropImage { rgb, width: w, height: h }
    }

    #[test]
    fn linear_resize_matches_opencv_on_a_known_case() {
        // cv2.resize(np.array([[0, 100, 200, 250]], np.uint8), (2, 1)) == [[50, 225]].
        let i = img(4, 1, |x, _| {
            let v = [0, 100, 200, 250][x as usize];
            [v, v, v]
        });
        let out = resize_linear(&i, 2, 1);
        assert_eq!(out, [50, 50, 50, 225, 225, 225]);
        // Upscaling 2 -> 4: [0, 255] -> [0, 64, 191, 255] (OpenCV: 0, 64, 191, 255).
        let i = img(2, 1, |x, _| [(x * 255) as u8; 3]);
        let out: Vec<u8> = resize_linear(&i, 4, 1).chunks(3).map(|p| p[0]).collect();
        assert_eq!(out, [0, 64, 191, 255]);
    }

    #[test]
    fn fill_scales_normalises_swaps_and_pads() {
        let fit = Fit {
            width: 8,
            height: 2,
            keep_aspect: true,
            fit_inside: false,
            channels: ChainChannels::Bgr,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        // 2x2 crop: scaled to 2x2 (aspect 1 at height 2), the rest padded.
        let i = img(2, 2, |_, _| [255, 0, 51]);
        assert_eq!(fit.scaled(&i), (2, 2));
        let mut slot = vec![9.0; 3 * 2 * 8];
        fit.fill(&i, &mut slot);
        // Plane 0 is blue (51 -> 0.2 -> -0.6), plane 2 red (255 -> 1.0).
        assert!((slot[0] + 0.6).abs() < 1e-6 && (slot[1] + 0.6).abs() < 1e-6, "{:?}", &slot[..8]);
        assert_eq!(slot[2..8], [0.0; 6]);
        assert!((slot[16] + 1.0).abs() < 1e-6);
        assert!((slot[32] - 1.0).abs() < 1e-6);
        // Very wide crops are capped at the slot width, at full height (PP-OCR).
        assert_eq!(fit.scaled(&img(100, 2, |_, _| [0; 3])), (8, 2));
        // Fitting inside: the smaller ratio for both sides.
        let inside = Fit { width: 4, height: 4, fit_inside: true, ..fit };
        assert_eq!(inside.scaled(&img(100, 10, |_, _| [0; 3])), (4, 1));
        assert_eq!(inside.scaled(&img(10, 20, |_, _| [0; 3])), (2, 4));
        assert_eq!(Fit { keep_aspect: false, ..inside }.scaled(&img(100, 10, |_, _| [0; 3])), (4, 4));
        // Rows below a crop fitted inside stay zero.
        let mut slot = vec![9.0; 3 * 4 * 4];
        inside.fill(&img(100, 10, |_, _| [255; 3]), &mut slot);
        assert!(slot[..4].iter().all(|v| (v - 1.0).abs() < 1e-6), "{:?}", &slot[..16]);
        assert_eq!(slot[4..16], [0.0; 12]);
    }
}
