//! `visionq bench`: N stations each posting real photos at R frames/s for D
//! seconds, each waiting for its result; prints throughput, post→result latency
//! percentiles, the batch-size distribution (from the server's own metrics) and
//! errors. Without `--url` it starts the embedded pipeline in this process.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use visionq_contract::Config;

use crate::compose::Local;
use crate::loadgen::{Load, Tally, batch_buckets, batch_distribution, drive, load_photos};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Base URL of a running visionq (ingest + results); omit to bench the embedded pipeline.
    #[arg(long)]
    url: Option<String>,
    /// Simulated stations.
    #[arg(long, default_value_t = 8)]
    stations: usize,
    /// Frames per second per station.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Soak: this many minutes of the load (instead of --duration), sampling the
    /// server's memory, open descriptors, queue depths and p99 as it goes; exits
    /// non-zero if one of them grows without bound (docs/RELIABILITY.md, "Soak").
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
    /// Seconds between two soak samples.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    sample_every: f64,
    /// Folder of JPEG photos to post (default: the cached test photos).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Station ids are PREFIX-1 … PREFIX-N.
    #[arg(long, default_value = "bench")]
    station_prefix: String,
    /// How long each request waits for its result.
    #[arg(long, default_value_t = 30_000)]
    wait_ms: u64,
    /// Bearer token for a `--url` with authentication on: an admin token (it may
    /// post for any station). Read from the environment, not the command line.
    #[arg(long = "token-env", default_value = "VISIONQ_BENCH_TOKEN", value_name = "VAR")]
    token_env: String,
    /// Also print where the frames' time went: the mean of each stage their results
    /// report (`timings_ms`: queue waits, decode, inference, the chain's second
    /// stage…), over all frames and over the slowest 1 %.
    #[arg(long)]
    stages: bool,
}

pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let photos = Arc::new(load_photos(&args.photos.clone().unwrap_or_else(|| config.cache_dir.join("photos")))?);
    let mode = if args.url.is_some() {
        "remote"
    } else if config.broker.amqp_url.is_some() {
        "in-process roles over RabbitMQ"
    } else {
        "embedded"
    };
    let local = match &args.url {
        Some(_) => None,
        None => Some(Local::start(config.clone(), "127.0.0.1:0".parse()?).await?),
    };
    let base = match (&args.url, &local) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(l)) => l.base.clone(),
        (None, None) => unreachable!("a local pipeline runs when no URL is given"),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if let (Some(_), Ok(token)) = (&args.url, std::env::var(&args.token_env)) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).default_headers(headers).build()?;
    let before = batch_buckets(&client.get(format!("{base}/metrics")).send().await?.text().await?);
    let load = Load {
        stations: args.stations,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.soak.map_or(args.duration, |m| m * 60.0)),
        station_prefix: args.station_prefix.clone(),
        wait_ms: args.wait_ms,
        keep_timings: args.stages,
    };
    println!(
        "visionq bench: {} stations x {} frames/s x {} s, {} photos, max batch {}, against {base} ({mode})",
        args.stations,
        args.rate,
        load.duration.as_secs_f64(),
        photos.len(),
        config.batching.max_batch_size
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let mut bounded = true;
    match args.soak {
        Some(_) => {
            if args.sample_every.is_nan() || args.sample_every <= 0.0 {
                anyhow::bail!("--sample-every must be a number of seconds above 0");
            }
            let every = Duration::from_secs_f64(args.sample_every);
            bounded = crate::soak::run(client.clone(), &base, photos, &load, tally.clone(), every).await?;
        }
        None => drive(client.clone(), &base, photos, &load, tally.clone()).await,
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = batch_buckets(&client.get(format!("{base}/metrics")).send().await?.text().await?);

    let t = tally.lock().expect("tally lock").clone();
    let ok = t.ok();
    let [p50, p95, p99, max] = t.percentiles();
    println!("sent       {} frames in {elapsed:.1} s", t.sent());
    println!("results    {ok} ok (200)  |  statuses {:?}  |  transport errors {}", t.statuses, t.transport_errors);
    println!("throughput {:.1} results/s", ok as f64 / elapsed);
    println!("latency    post->result ms: p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}  max {max:.1}");
    println!("detections {} ({:.2} per frame)", t.detections, t.detections as f64 / ok.max(1) as f64);
    let (passes, dist) = batch_distribution(&before, &after);
    println!("batches    {passes} forward passes, {:.2} frames per pass; size<=bucket:count {dist}", ok as f64 / passes.max(1.0));
    if args.stages {
        for (pct, what) in [(0.0, "all"), (99.0, "slowest 1 %")] {
            let (n, stages) = t.tail_breakdown(pct);
            let line: Vec<String> = stages.iter().map(|(k, ms)| format!("{k} {ms:.2}")).collect();
            println!("stages     mean ms, {what} ({n} frames): {}", line.join("  "));
        }
    }
    if let Some(l) = local {
        l.stop().await?;
    }
    if !bounded {
        anyhow::bail!("soak failed: a sampled series grows without bound (see the verdict lines above)");
    }
    Ok(())
}
