//! `visionq bench-journal`: how many frames a second the embedded frames journal
//! (SQLite, WAL) takes on this machine's disk, alone: C concurrent publishers each
//! appending real JPEG frames and removing each once it is committed (as a completed
//! result would), for `durable` (fsync per group commit) and `process`. This is the
//! ceiling the durable accept puts on an embedded pipeline, to set beside the
//! inference rate (on the GPU, about 1,900 frames/s end to end).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use visionq_contract::Config;
use visionq_contract::topology::META_HEADER;
use visionq_queue::Envelope;
use visionq_queue::journal::{Journal, Sync};

use crate::loadgen::load_photos;
use crate::proc_stat::{busiest, cpu_seconds, thread_cpu_seconds};

#[derive(clap::Args, Debug, Clone)]
pub struct JournalBenchArgs {
    /// JPEG frames to journal (default: the cached 1280x720 photos).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Concurrent publishers (requests in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    publishers: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Where the journal file goes (default: a fresh folder under the data dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(config: Config, args: JournalBenchArgs) -> anyhow::Result<()> {
    let dir = args.photos.clone().unwrap_or_else(|| config.cache_dir.join("photos-720p"));
    let photos = Arc::new(load_photos(&dir)?);
    let mean = photos.iter().map(|(_, b)| b.len()).sum::<usize>() / photos.len();
    let base = args.dir.clone().unwrap_or_else(|| config.data_dir.join("bench-journal"));
    println!(
        "visionq bench-journal: {} photos from {} ({} KB mean), journal under {}",
        photos.len(),
        dir.display(),
        mean / 1024,
        base.display()
    );
    println!("   sync     publishers  frames/s   MB/s   append ms p50   p99   CPU cores (busiest threads)");
    for (name, sync) in [("durable", Sync::Full), ("process", Sync::Normal)] {
        for &c in &args.publishers {
            let _ = std::fs::remove_dir_all(&base);
            let path = base.join("frames-journal.db");
            let (journal, _) = tokio::task::spawn_blocking(move || Journal::open(&path, sync, 5)).await??;
            let journal = Arc::new(journal);
            let me = std::process::id();
            let (cpu0, threads0) = (cpu_seconds(me)?, thread_cpu_seconds(me)?);
            let start = Instant::now();
            let until = start + Duration::from_secs_f64(args.seconds);
            let mut tasks = tokio::task::JoinSet::new();
            for p in 0..c {
                let (journal, photos) = (journal.clone(), photos.clone());
                tasks.spawn(async move {
                    let (mut lat, mut bytes, mut i) = (Vec::new(), 0usize, p);
                    while Instant::now() < until {
                        let body = photos[i % photos.len()].1.clone();
                        bytes += body.len();
                        let key = format!("{p}-{i}");
                        let envelope = Envelope::new(body).with_header(META_HEADER, format!("{{\"frame\":\"{key}\"}}"));
                        let t0 = Instant::now();
                        journal.append(key.clone(), &envelope).await?;
                        lat.push(t0.elapsed().as_secs_f64() * 1e3);
                        journal.remove(key);
                        i += c;
                    }
                    Ok::<_, anyhow::Error>((lat, bytes))
                });
            }
            let (mut lat, mut bytes) = (Vec::new(), 0usize);
            while let Some(r) = tasks.join_next().await {
                let (l, b) = r??;
                lat.extend(l);
                bytes += b;
            }
            let secs = start.elapsed().as_secs_f64();
            let (cpu1, threads1) = (cpu_seconds(me)?, thread_cpu_seconds(me)?);
            lat.sort_by(f64::total_cmp);
            let pct = |p: f64| crate::loadgen::percentile(&lat, p);
            println!(
                "   {name:<8} {c:>10}  {:>8.0}  {:>5.0}   {:>13.2}  {:>5.2}   {:.2} ({})",
                lat.len() as f64 / secs,
                bytes as f64 / secs / 1e6,
                pct(50.0),
                pct(99.0),
                (cpu1 - cpu0) / secs,
                busiest(&threads0, &threads1, secs, 2)
            );
            drop(journal);
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
