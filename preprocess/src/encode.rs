//! Images made from pixels, for tests here and in the crates above and for warming
//! decoders up at start (never on a request path): lossless PNG and WebP of given
//! RGB pixels (the same pixels back when decoded), a noisy JPEG, large for its
//! size, and a smooth 4:2:0 one, shaped like a camera's.

/// `rgb` (`w`×`h`, RGB) as a PNG.
pub fn png_of(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    let mut writer = enc.write_header().expect("PNG header");
    writer.write_image_data(rgb).expect("PNG data");
    writer.finish().expect("PNG end");
    out
}

/// `rgb` (`w`×`h`, RGB) as a lossless WebP.
pub fn webp_of(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out).encode(rgb, w, h, image_webp::ColorType::Rgb8).expect("WebP");
    out
}

/// A `w`×`h` JPEG of pseudo-random noise at `quality` (noise compresses badly: a
/// large file for its size), the same for the same `seed`.
pub fn noise_jpeg(w: usize, h: usize, quality: i32, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    let rgb: Vec<u8> = (0..w * h * 3)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let image = turbojpeg::Image { pixels: &rgb[..], width: w, pitch: w * 3, height: h, format: turbojpeg::PixelFormat::RGB };
    turbojpeg::compress(image, quality, turbojpeg::Subsamp::None).expect("JPEG").to_vec()
}

/// A `w`×`h` JPEG of smooth colour gradients, 4:2:0 at quality 90: the layout
/// most cameras send.
pub fn gradient_jpeg(w: usize, h: usize) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, ((x + y) % 256) as u8]);
        }
    }
    let image = turbojpeg::Image { pixels: &rgb[..], width: w, pitch: w * 3, height: h, format: turbojpeg::PixelFormat::RGB };
    turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2).expect("JPEG").to_vec()
}
