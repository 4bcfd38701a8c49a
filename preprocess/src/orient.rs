//! Turning decoded pixels by an EXIF orientation (1–8), so that the model sees the
//! image as a viewer shows it.

/// Whether `orientation` turns the image a quarter (its width becomes its height).
pub fn swaps_sides(orientation: u8) -> bool {
    (5..=8).contains(&orientation)
}

/// The image as shown: `pixels` (3 bytes a pixel, `width`×`height` as stored) turned
/// and/or mirrored by the EXIF `orientation`; returns the pixels and their size.
/// Orientation 1, and any value outside 1–8, leaves the image as it is.
pub fn orient(pixels: Vec<u8>, width: u32, height: u32, orientation: u8) -> (Vec<u8>, u32, u32) {
    if !(2..=8).contains(&orientation) {
        return (pixels, width, height);
    }
    let (w, h) = (width as isize, height as isize);
    let (out_w, out_h) = if swaps_sides(orientation) { (height, width) } else { (width, height) };
    // Output row `y` reads a line of the stored image: from pixel `origin + y × down`,
    // stepping `step` pixels for each output pixel.
    let (origin, down, step) = match orientation {
        2 => ((w - 1, 0), (0, 1), -1),      // mirrored left-right
        3 => ((w - 1, h - 1), (0, -1), -1), // turned 180°
        4 => ((0, h - 1), (0, -1), 1),      // mirrored top-bottom
        5 => ((0, 0), (1, 0), w),           // transposed
        6 => ((0, h - 1), (1, 0), -w),      // shown turned 90° clockwise
        7 => ((w - 1, h - 1), (-1, 0), -w), // transversed
        _ => ((w - 1, 0), (-1, 0), w),      // 8: shown turned 90° counter-clockwise
    };
    let mut out = vec![0u8; pixels.len()];
    for (y, row) in out.chunks_exact_mut(out_w as usize * 3).enumerate() {
        let (sx, sy) = (origin.0 + down.0 * y as isize, origin.1 + down.1 * y as isize);
        let mut at = sy * w + sx;
        for px in row.chunks_exact_mut(3) {
            let s = at as usize * 3;
            px.copy_from_slice(&pixels[s..s + 3]);
            at += step;
        }
    }
    (out, out_w, out_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×2 image whose pixels are numbered 0..6 row by row (each pixel `[n, n, n]`).
    fn numbered() -> Vec<u8> {
        (0..6u8).flat_map(|n| [n, n, n]).collect()
    }

    fn labels(pixels: &[u8]) -> Vec<u8> {
        pixels.chunks_exact(3).map(|p| p[0]).collect()
    }

    #[test]
    fn each_orientation_shows_the_image_as_exif_defines_it() {
        // Stored:  0 1 2
        //          3 4 5
        let cases: [(u8, (u32, u32), [u8; 6]); 8] = [
            (1, (3, 2), [0, 1, 2, 3, 4, 5]),
            (2, (3, 2), [2, 1, 0, 5, 4, 3]),
            (3, (3, 2), [5, 4, 3, 2, 1, 0]),
            (4, (3, 2), [3, 4, 5, 0, 1, 2]),
            // The stored first row becomes the shown left column (5), right column (6, 7), …
            (5, (2, 3), [0, 3, 1, 4, 2, 5]),
            (6, (2, 3), [3, 0, 4, 1, 5, 2]),
            (7, (2, 3), [5, 2, 4, 1, 3, 0]),
            (8, (2, 3), [2, 5, 1, 4, 0, 3]),
        ];
        for (o, size, want) in cases {
            let (px, w, h) = orient(numbered(), 3, 2, o);
            assert_eq!((w, h), size, "orientation {o}");
            assert_eq!(labels(&px), want, "orientation {o}");
        }
        assert_eq!(labels(&orient(numbered(), 3, 2, 9).0), [0, 1, 2, 3, 4, 5], "unknown values are left alone");
    }

    #[test]
    fn orientation_6_undoes_a_counter_clockwise_turn() {
        // A camera held turned: the stored pixels are the scene turned 90° counter-
        // clockwise, and the tag says to turn them back clockwise.
        let scene: Vec<u8> = (0..12u8).flat_map(|n| [n, 0, 255 - n]).collect(); // 4×3
        let (sw, sh) = (4usize, 3usize);
        let mut stored = vec![0u8; scene.len()]; // 3×4: scene turned counter-clockwise
        for y in 0..sh {
            for x in 0..sw {
                let (tx, ty) = (y, sw - 1 - x);
                stored[(ty * sh + tx) * 3..][..3].copy_from_slice(&scene[(y * sw + x) * 3..][..3]);
            }
        }
        assert_eq!(orient(stored, sh as u32, sw as u32, 6), (scene, sw as u32, sh as u32));
    }
}
