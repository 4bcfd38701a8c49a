//! Decode cost per frame and strictness, for the choice of JPEG decoder:
//! libjpeg-turbo (full size and DCT-scaled 1/2, 1/4) against zune-jpeg (strict mode).
//!
//!     cargo run --release -p visionq-preprocess --example decode_bench -- [DIR] [ROUNDS]
//!
//! DIR defaults to `$VISIONQ_CACHE_DIR/photos-720p` (the 1280×720 photos). Prints ms
//! per frame for each decoder (single thread), then how many cuts of dog.jpg at every
//! kilobyte each decoder reports as an error (a strict decoder reports all of them).

use std::path::PathBuf;
use std::time::Instant;

use visionq_preprocess::{Channels, JpegDecoder};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

fn zune(jpeg: &[u8]) -> Result<usize, String> {
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB).set_strict_mode(true);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    d.decode().map(|p| p.len()).map_err(|e| e.to_string())
}

fn main() {
    let cache = std::env::var_os("VISIONQ_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".cache/visionq"));
    let mut args = std::env::args().skip(1);
    let dir = args.next().filter(|a| !a.is_empty()).map(PathBuf::from).unwrap_or_else(|| cache.join("photos-720p"));
    let rounds: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut photos: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    photos.sort();
    let mut turbo = JpegDecoder::new();
    let (w, h) = turbo.dimensions(&photos[0].1).expect("a JPEG");
    println!("{} photos from {} ({w}x{h} first), {rounds} rounds, one thread", photos.len(), dir.display());
    let time = |label: &str, f: &mut dyn FnMut(&[u8]) -> usize| {
        let _ = photos.iter().map(|(_, j)| f(j)).sum::<usize>(); // warm
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..rounds {
            for (_, j) in &photos {
                bytes += f(j);
            }
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / (rounds * photos.len()) as f64;
        println!("{label:<34} {ms:7.2} ms/frame  ({} KB of pixels/frame)", bytes / (rounds * photos.len()) / 1024);
    };
    for scale in [1u8, 2, 4] {
        time(&format!("libjpeg-turbo 1/{scale}"), &mut |j| turbo.decode(j, u64::MAX, scale, Channels::Rgb).unwrap().pixels.len());
    }
    time("zune-jpeg (strict)", &mut |j| zune(j).unwrap());

    let dog = std::fs::read(cache.join("photos/dog.jpg")).expect("photos/dog.jpg in the cache");
    let cuts: Vec<usize> = (1024..dog.len()).step_by(1024).chain([dog.len() - 1]).collect();
    let turbo_errors = cuts.iter().filter(|&&c| turbo.decode(&dog[..c], u64::MAX, 1, Channels::Rgb).is_err()).count();
    let zune_errors = cuts.iter().filter(|&&c| zune(&dog[..c]).is_err()).count();
    println!("dog.jpg cut at every KB ({} cuts): libjpeg-turbo reports {turbo_errors}, zune-jpeg strict {zune_errors}", cuts.len());
}
