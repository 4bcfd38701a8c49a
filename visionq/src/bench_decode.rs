//! `visionq bench-decode`: preprocessing alone (decode + letterbox into the model
//! input), libjpeg-turbo on the CPU against nvJPEG on the GPU, T threads each
//! preparing real photos back to back: frames/s, CPU cores used (which threads),
//! and, before any timing, how far nvJPEG's pixels are from libjpeg-turbo's on each
//! photo (decoded image and model input). A node whose decode is the end-to-end
//! bound (BENCHMARKS.md, "GPU") reads here what moving it to the GPU buys.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use visionq_contract::Config;
use visionq_preprocess::{PreprocessOptions, Preprocessor, start_gpu_decode};

use crate::loadgen::load_photos;
use crate::proc_stat::{busiest, cpu_seconds, thread_cpu_seconds};

#[derive(clap::Args, Debug, Clone)]
pub struct DecodeBenchArgs {
    /// JPEG frames (default: the cached 1280x720 photos).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Decoders to time: `cpu`, `nvjpeg`.
    #[arg(long, value_delimiter = ',', default_value = "cpu,nvjpeg")]
    decoders: Vec<String>,
    /// Preprocessing threads (frames in flight) per run.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    threads: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Largest mean absolute difference (0-255) of nvJPEG's model input from the
    /// CPU's on any photo before the command fails.
    #[arg(long, default_value_t = 1.5)]
    max_mean_diff: f64,
}

/// The preprocessing `config` asks for, decoding on the GPU (`nvjpeg`, required)
/// or on the CPU.
fn options(config: &Config, gpu: bool) -> PreprocessOptions {
    let mut config = config.clone();
    config.decode.jpeg_decoder = if gpu { "nvjpeg" } else { "cpu" }.to_string();
    PreprocessOptions::from_config(&config)
}

/// Mean and largest absolute difference of two equally long byte buffers, and the
/// share of bytes more than 2 apart.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8, f64) {
    let (mut sum, mut max, mut far) = (0u64, 0u8, 0u64);
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        sum += d as u64;
        max = max.max(d);
        far += (d > 2) as u64;
    }
    (sum as f64 / a.len().max(1) as f64, max, far as f64 / a.len().max(1) as f64)
}

pub async fn run(config: Config, args: DecodeBenchArgs) -> anyhow::Result<()> {
    let dir = args.photos.clone().unwrap_or_else(|| config.cache_dir.join("photos-720p"));
    let photos = Arc::new(load_photos(&dir)?);
    let size = config.preprocess.input_size;
    println!("visionq bench-decode: {} photos from {}, model input {size}x{size}", photos.len(), dir.display());
    if args.decoders.iter().any(|d| d == "nvjpeg") {
        let gpu = start_gpu_decode(&options(&config, true)).map_err(anyhow::Error::msg)?.context("nvJPEG not started")?;
        println!("nvJPEG: backend {}, {} JPEG engines", gpu.backend(), gpu.engines());
        // Parity first: every photo through both decoders.
        let mut cpu = Preprocessor::with_options(size, size, options(&config, false));
        let mut nv = Preprocessor::with_options(size, size, options(&config, true));
        let mut worst = 0.0f64;
        println!("   photo                 decoded: mean  max  >2      model input: mean  max  >2");
        for (name, jpeg) in photos.iter() {
            let (a, aw, ah) = cpu.decode(jpeg).with_context(|| format!("CPU decode of {name}"))?;
            let (b, bw, bh) = nv.decode(jpeg).with_context(|| format!("nvJPEG decode of {name}"))?;
            if (aw, ah) != (bw, bh) {
                bail!("{name}: the CPU decodes {aw}x{ah}, nvJPEG {bw}x{bh}");
            }
            let d = diff(&a, &b);
            let ta = cpu.prepare(jpeg)?.tensor;
            let tb = nv.prepare(jpeg)?.tensor;
            let t = diff(&ta, &tb);
            worst = worst.max(t.0);
            println!("   {name:<20} {:>14.3} {:>4} {:>5.2}% {:>17.3} {:>4} {:>5.2}%", d.0, d.1, d.2 * 100.0, t.0, t.1, t.2 * 100.0);
        }
        let (on_gpu, on_cpu) = gpu.counts();
        println!("   nvJPEG decoded {on_gpu} frames, left {on_cpu} to the CPU");
        if on_gpu == 0 {
            bail!("nvJPEG decoded none of the photos");
        }
        if worst > args.max_mean_diff {
            bail!("nvJPEG's model input differs from the CPU's by {worst:.3} on average (limit {})", args.max_mean_diff);
        }
    }
    println!("   decoder  threads   frames/s   ms/frame/thread   CPU cores (busiest threads)");
    for decoder in &args.decoders {
        let gpu = match decoder.as_str() {
            "cpu" => false,
            "nvjpeg" => true,
            other => bail!("unknown decoder `{other}` (cpu or nvjpeg)"),
        };
        let opts = options(&config, gpu);
        for &threads in &args.threads {
            let me = std::process::id();
            let (cpu0, threads0) = (cpu_seconds(me)?, thread_cpu_seconds(me)?);
            let start = Instant::now();
            let until = start + Duration::from_secs_f64(args.seconds);
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let photos = photos.clone();
                    std::thread::Builder::new()
                        .name(format!("bench-pre-{t}"))
                        .spawn(move || -> anyhow::Result<u64> {
                            let mut pre = Preprocessor::with_options(size, size, opts);
                            let mut n = 0u64;
                            while Instant::now() < until {
                                let (_, jpeg) = &photos[(n as usize + t) % photos.len()];
                                pre.prepare(jpeg)?;
                                n += 1;
                            }
                            Ok(n)
                        })
                        .expect("spawning a bench thread")
                })
                .collect();
            let mut frames = 0;
            for w in workers {
                frames += w.join().map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
            }
            let secs = start.elapsed().as_secs_f64();
            let (cpu1, threads1) = (cpu_seconds(me)?, thread_cpu_seconds(me)?);
            let rate = frames as f64 / secs;
            println!(
                "   {decoder:<8} {threads:>7} {rate:>10.0} {:>17.2}   {:.2} ({})",
                threads as f64 * 1000.0 / rate,
                (cpu1 - cpu0) / secs,
                busiest(&threads0, &threads1, secs, 4)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_mean_max_and_the_share_far_apart() {
        let (mean, max, far) = diff(&[10, 10, 10, 10], &[10, 11, 14, 10]);
        assert!((mean - 1.25).abs() < 1e-9);
        assert_eq!(max, 4);
        assert!((far - 0.25).abs() < 1e-9);
    }
}
