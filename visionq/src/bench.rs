//! `visionq bench`: N stations each posting real photos at R frames/s for D
//! seconds, each waiting for its result; prints throughput, post→result latency
//! percentiles, the batch-size distribution (from the server's own metrics) and
//! errors. Without `--url` it starts the embedded pipeline in this process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use visionq_contract::Config;

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
    /// Folder of JPEG photos to post (default: the cached test photos).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Station ids are PREFIX-1 … PREFIX-N.
    #[arg(long, default_value = "bench")]
    station_prefix: String,
    /// How long each request waits for its result.
    #[arg(long, default_value_t = 30_000)]
    wait_ms: u64,
}

#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    statuses: BTreeMap<u16, usize>,
    transport_errors: usize,
    detections: usize,
}

pub fn load_photos(dir: &std::path::Path) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut photos = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if ext == "jpg" || ext == "jpeg" {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            photos.push((name, Bytes::from(std::fs::read(&path)?)));
        }
    }
    photos.sort_by(|a, b| a.0.cmp(&b.0));
    if photos.is_empty() {
        bail!("no .jpg photos in {} (run `python3 tools/assets.py photos`)", dir.display());
    }
    Ok(photos)
}

/// The batch-size histogram's cumulative bucket counts from a metrics text.
fn batch_buckets(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("visionq_infer_batch_size_bucket{le=\""))
        .filter_map(|rest| {
            let (le, value) = rest.split_once("\"} ")?;
            Some((le.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let photos = Arc::new(load_photos(&args.photos.clone().unwrap_or_else(|| config.cache_dir.join("photos")))?);
    let mut embedded = None;
    let base = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let (trigger, shutdown) = crate::shutdown::channel();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let roles = [crate::compose::Role::Ingest, crate::compose::Role::Preprocess, crate::compose::Role::Infer, crate::compose::Role::Results].into();
            let listen = Some("127.0.0.1:0".parse()?);
            let task = tokio::spawn(crate::compose::serve(config.clone(), roles, listen, shutdown, Some(tx)));
            let addr = rx.await.context("the embedded pipeline did not start")?;
            embedded = Some((trigger, task));
            format!("http://{addr}")
        }
    };
    let mode = if args.url.is_some() { "remote" } else if config.amqp_url.is_some() { "in-process roles over RabbitMQ" } else { "embedded" };
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let before = batch_buckets(&client.get(format!("{base}/metrics")).send().await?.text().await?);
    println!(
        "visionq bench: {} stations x {} frames/s x {} s, {} photos, against {base} ({mode})",
        args.stations, args.rate, args.duration, photos.len()
    );

    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let start = Instant::now();
    let mut stations = tokio::task::JoinSet::new();
    for s in 0..args.stations {
        let (client, photos, tally) = (client.clone(), photos.clone(), tally.clone());
        let url = format!("{base}/v1/stations/{}-{}/frames?wait_ms={}", args.station_prefix, s + 1, args.wait_ms);
        let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
        let frames = (args.rate * args.duration).round() as usize;
        stations.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut requests = tokio::task::JoinSet::new();
            for i in 0..frames {
                tick.tick().await;
                let body = photos[(i + s) % photos.len()].1.clone();
                let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
                requests.spawn(async move {
                    let t0 = Instant::now();
                    let r = client.post(&url).header("content-type", "image/jpeg").body(body).send().await;
                    let mut t = Tally::default();
                    match r {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let text = resp.text().await.unwrap_or_default();
                            if status == 200 {
                                t.latencies_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                                    t.detections += v["detections"].as_array().map_or(0, |a| a.len());
                                }
                            }
                            t.statuses.insert(status, 1);
                        }
                        Err(_) => t.transport_errors = 1,
                    }
                    let mut all = tally.lock().expect("tally lock");
                    all.latencies_ms.extend(t.latencies_ms);
                    all.detections += t.detections;
                    all.transport_errors += t.transport_errors;
                    for (k, v) in t.statuses {
                        *all.statuses.entry(k).or_default() += v;
                    }
                });
            }
            while requests.join_next().await.is_some() {}
        });
    }
    while stations.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let after = batch_buckets(&client.get(format!("{base}/metrics")).send().await?.text().await?);

    let t = tally.lock().expect("tally lock");
    let sent: usize = t.statuses.values().sum::<usize>() + t.transport_errors;
    let ok = t.statuses.get(&200).copied().unwrap_or(0);
    let mut lat = t.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    println!("sent       {sent} frames in {elapsed:.1} s");
    println!(
        "results    {ok} ok (200)  |  statuses {:?}  |  transport errors {}",
        t.statuses, t.transport_errors
    );
    println!("throughput {:.1} results/s", ok as f64 / elapsed);
    println!(
        "latency    post->result ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&lat, 50.0),
        percentile(&lat, 95.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!("detections {} ({:.2} per frame)", t.detections, t.detections as f64 / ok.max(1) as f64);
    // Per-bucket forward passes during the run.
    let mut prev = 0.0;
    let mut dist = Vec::new();
    let mut passes = 0.0;
    let mut sorted: Vec<(f64, String)> =
        after.keys().filter_map(|k| Some((if k == "+Inf" { f64::INFINITY } else { k.parse().ok()? }, k.clone()))).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, le) in &sorted {
        let cum = after.get(le).copied().unwrap_or(0.0) - before.get(le).copied().unwrap_or(0.0);
        let n = cum - prev;
        prev = cum;
        if n > 0.0 {
            dist.push(format!("{le}:{n}"));
        }
        passes = cum;
    }
    println!(
        "batches    {passes} forward passes, {:.2} frames per pass; size<=bucket:count {}",
        ok as f64 / passes.max(1.0),
        dist.join(" ")
    );
    drop(t);
    if let Some((trigger, task)) = embedded {
        trigger.fire();
        task.await??;
    }
    Ok(())
}
