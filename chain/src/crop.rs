//! Which detections are cropped, and where: pure geometry in original-image pixels.

use visionq_contract::Detection;
use visionq_contract::chain::ChainSpec;

/// A crop rectangle in original-image pixels: `x0..x1` × `y0..y1`, never empty and
/// never outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl Rect {
    pub fn width(&self) -> u32 {
        self.x1 - self.x0
    }

    pub fn height(&self) -> u32 {
        self.y1 - self.y0
    }
}

/// The indices of the detections `spec` crops, highest score first (ties: the
/// earlier detection), at most `max_crops`.
pub fn select(spec: &ChainSpec, detections: &[Detection]) -> Vec<usize> {
    let mut chosen: Vec<usize> =
        (0..detections.len()).filter(|&i| spec.takes(&detections[i].class_name, detections[i].score)).collect();
    chosen.sort_by(|&a, &b| detections[b].score.total_cmp(&detections[a].score).then(a.cmp(&b)));
    chosen.truncate(spec.max_crops);
    chosen
}

/// The crop of a box `[x1, y1, x2, y2]` (original pixels): the `region` of it (0–1
/// of the box), grown by `margin` pixels on each side, clamped to the
/// `width`×`height` image. None when nothing of it lies inside the image.
pub fn crop_rect(box_px: [f32; 4], region: [f32; 4], margin: u32, width: u32, height: u32) -> Option<Rect> {
    let [bx1, by1, bx2, by2] = box_px;
    let (bw, bh) = ((bx2 - bx1).max(0.0), (by2 - by1).max(0.0));
    let m = margin as f32;
    let x0 = (bx1 + region[0] * bw - m).floor();
    let y0 = (by1 + region[1] * bh - m).floor();
    let x1 = (bx1 + region[2] * bw + m).ceil();
    let y1 = (by1 + region[3] * bh + m).ceil();
    let clamp = |v: f32, hi: u32| if v.is_finite() { v.clamp(0.0, hi as f32) as u32 } else { 0 };
    let r = Rect { x0: clamp(x0, width), y0: clamp(y0, height), x1: clamp(x1, width), y1: clamp(y1, height) };
    (r.x1 > r.x0 && r.y1 > r.y0).then_some(r)
}

/// The pixels of `rect` out of a `width`-wide RGB image, row by row.
pub fn cut(rgb: &[u8], width: u32, rect: Rect) -> Vec<u8> {
    let (w, row) = (rect.width() as usize * 3, width as usize * 3);
    let mut out = Vec::with_capacity(w * rect.height() as usize);
    for y in rect.y0..rect.y1 {
        let start = y as usize * row + rect.x0 as usize * 3;
        out.extend_from_slice(&rgb[start..start + w]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHOLE: [f32; 4] = [0.0, 0.0, 1.0, 1.0];

    #[test]
    fn crops_at_the_edges_stay_inside_the_image() {
        // Boxes touching or crossing every edge, with a margin bigger than the gap.
        let (w, h) = (640, 480);
        let boxes = [
            [0.0, 0.0, 50.0, 40.0],
            [600.0, 450.0, 640.0, 480.0],
            [-20.0, 100.0, 30.0, 200.0],
            [630.0, -5.0, 700.0, 10.0],
            [0.0, 0.0, 640.0, 480.0],
            [320.5, 240.5, 320.7, 240.9],
        ];
        for b in boxes {
            for margin in [0, 7, 100, 10_000] {
                let r = crop_rect(b, WHOLE, margin, w, h).unwrap();
                assert!(r.x0 < r.x1 && r.x1 <= w && r.y0 < r.y1 && r.y1 <= h, "{b:?} margin {margin}: {r:?}");
                // The crop covers the part of the box inside the image.
                assert!(r.x0 as f32 <= b[0].max(0.0) && r.x1 as f32 >= b[2].min(w as f32), "{b:?}: {r:?}");
            }
        }
        assert_eq!(crop_rect([10.0, 10.0, 20.0, 20.0], WHOLE, 5, w, h), Some(Rect { x0: 5, y0: 5, x1: 25, y1: 25 }));
        assert_eq!(crop_rect([0.0, 0.0, 10.0, 10.0], WHOLE, 5, w, h), Some(Rect { x0: 0, y0: 0, x1: 15, y1: 15 }));
        // Entirely outside: nothing to crop.
        assert_eq!(crop_rect([700.0, 10.0, 720.0, 20.0], WHOLE, 5, w, h), None);
        // A box that is not a number crops nothing (and never panics).
        assert_eq!(crop_rect([f32::NAN, 0.0, 10.0, 10.0], WHOLE, 0, w, h), None);
    }

    #[test]
    fn a_region_is_a_part_of_the_box() {
        let r = crop_rect([100.0, 200.0, 300.0, 400.0], [0.25, 0.5, 0.75, 1.0], 0, 1000, 1000).unwrap();
        assert_eq!(r, Rect { x0: 150, y0: 300, x1: 250, y1: 400 });
        let r = crop_rect([100.0, 200.0, 300.0, 400.0], [0.25, 0.5, 0.75, 1.0], 3, 1000, 1000).unwrap();
        assert_eq!(r, Rect { x0: 147, y0: 297, x1: 253, y1: 403 });
    }

    #[test]
    fn cut_takes_the_rectangle() {
        // 4x3 image whose pixel (x, y) is [x, y, 9].
        let rgb: Vec<u8> = (0..3).flat_map(|y| (0..4).flat_map(move |x| [x, y, 9])).collect();
        let c = cut(&rgb, 4, Rect { x0: 1, y0: 1, x1: 3, y1: 3 });
        assert_eq!(c, [1, 1, 9, 2, 1, 9, 1, 2, 9, 2, 2, 9]);
    }

    fn det(class: &str, score: f32) -> Detection {
        Detection {
            class_id: 0,
            class_name: class.into(),
            score,
            bbox: [0.0; 4],
            box_px: [0.0; 4],
            track_id: None,
            classification: None,
            text: None,
        }
    }

    #[test]
    fn selection_is_by_class_floor_and_score_order() {
        let spec: ChainSpec = toml::from_str(
            "name = \"c\"\nkind = \"classifier\"\nmodel = \"m\"\nclasses = [\"person\"]\nmin_score = 0.4\nmax_crops = 2",
        )
        .unwrap();
        let d = [det("person", 0.5), det("dog", 0.9), det("person", 0.3), det("person", 0.8), det("person", 0.5)];
        assert_eq!(select(&spec, &d), vec![3, 0]);
        let spec = ChainSpec { max_crops: 10, ..spec };
        assert_eq!(select(&spec, &d), vec![3, 0, 4]);
    }
}
