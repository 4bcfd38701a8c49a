//! `visionq demo`: the first thing a new user runs. Fetches what is missing, starts
//! the embedded pipeline, replays the real photos as a few simulated stations for a
//! while (progress every second), serves the API and dashboard on localhost
//! meanwhile, and prints a summary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use visionq_contract::Config;
use visionq_contract::config::redact_url;

use crate::compose::Local;
use crate::loadgen::{Load, Tally, batch_buckets, batch_distribution, drive, load_photos};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// HTTP address of the API and dashboard while the demo runs.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Simulated stations.
    #[arg(long, default_value_t = 4)]
    stations: usize,
    /// Frames per second per station.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Seconds of replay.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Keep serving the dashboard and API after the replay, until Ctrl-C.
    #[arg(long)]
    keep_serving: bool,
}

pub async fn run(config: Config, args: DemoArgs) -> anyhow::Result<()> {
    crate::assets::ensure(&config)?;
    let photos = Arc::new(load_photos(&config.cache_dir.join("photos"))?);
    let listen = match args.listen {
        Some(a) => a,
        None => config.http.listen.parse().with_context(|| format!("listen address `{}`", config.http.listen))?,
    };
    let local = Local::start(config.clone(), listen).await?;
    let base = local.base.clone();
    println!("visionq demo: pipeline up; dashboard and API at {base}/");
    println!(
        "visionq demo: {} stations (demo-1 … demo-{}) replaying {} photos at {} frames/s each for {} s",
        args.stations,
        args.stations,
        photos.len(),
        args.rate,
        args.duration
    );
    let client = reqwest::Client::new();
    let before = batch_buckets(&client.get(format!("{base}/metrics")).send().await?.text().await?);
    let load = Load {
        stations: args.stations,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        station_prefix: "demo".into(),
        wait_ms: 30_000,
        keep_timings: false,
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let replay = drive(client.clone(), &base, photos, &load, tally.clone());
    tokio::pin!(replay);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut replay => break,
            _ = tick.tick() => {
                let t = tally.lock().expect("tally lock").clone();
                let [p50, ..] = t.percentiles();
                println!(
                    "  {:>5.1} s  results {:>5}  {:>6.1}/s  detections {:>6}  p50 {:>6.1} ms  errors {}",
                    start.elapsed().as_secs_f64(), t.ok(), t.ok() as f64 / start.elapsed().as_secs_f64(),
                    t.detections, p50, t.sent() - t.ok()
                );
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = batch_buckets(&client.get(format!("{base}/metrics")).send().await?.text().await?);
    let t = tally.lock().expect("tally lock").clone();
    let [p50, p95, p99, max] = t.percentiles();
    let (passes, dist) = batch_distribution(&before, &after);
    println!("visionq demo summary");
    println!("  frames       {} posted, {} with results, {} errors", t.sent(), t.ok(), t.sent() - t.ok());
    println!("  throughput   {:.1} results/s over {elapsed:.1} s", t.ok() as f64 / elapsed);
    println!("  latency      post->result ms: p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}  max {max:.1}");
    println!("  batches      {passes} forward passes ({dist})");
    let classes: Vec<String> = t.per_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!("  detections   {} in all: {}", t.detections, classes.join(", "));
    println!("  results in   {}", redact_url(&config.database_url()));
    if args.keep_serving {
        println!("visionq demo: still serving {base}/ — Ctrl-C to stop");
        let (trigger, shutdown) = crate::shutdown::channel();
        crate::shutdown::on_signals(trigger);
        shutdown.wait().await;
    }
    local.stop().await
}
