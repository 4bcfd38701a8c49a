//! `visionq bench-latency`: the latency and throughput targets of the CPU path, in one
//! run, beside the same machine's isolated figures.
//! 1. Isolated: decode + letterbox of each photo, one batch-1 forward pass, and the
//!    batch-8 ceiling (frames/s of the session alone on pre-assembled batches).
//! 2. Idle: one frame at a time with `?wait_ms=`, and where its time went (the
//!    result's own `timings_ms`, averaged).
//! 3. Paced: N stations × R frames/s (default 9 × 1.67, the seed's load): p50/p99.
//! 4. Saturated: N stations back to back, each posting its next frame when the last
//!    result came back: results/s against the batch-8 ceiling.
//!
//! Each target is printed with the measured ratio and `met` / `MISSED`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use visionq_contract::Config;
use visionq_contract::config::BatchShapes;
use visionq_infer_worker::Model;
use visionq_preprocess::Preprocessor;

use crate::compose::Local;
use crate::loadgen::{Load, Tally, drive, load_photos, percentile};
use crate::proc_stat::{busiest, cpu_seconds, thread_cpu_seconds};

#[derive(clap::Args, Debug, Clone)]
pub struct LatencyBenchArgs {
    /// JPEG frames (default: the cached test photos).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Idle: frames posted one at a time.
    #[arg(long, default_value_t = 40)]
    idle_frames: usize,
    /// Paced and saturated runs: simulated stations.
    #[arg(long, default_value_t = 9)]
    stations: usize,
    /// Paced run: frames/s per station.
    #[arg(long, default_value_t = 1.67)]
    rate: f64,
    /// Seconds of the paced run.
    #[arg(long, default_value_t = 20.0)]
    paced_seconds: f64,
    /// Seconds of the saturated run.
    #[arg(long, default_value_t = 15.0)]
    saturated_seconds: f64,
    /// Seconds of the isolated batch-8 ceiling.
    #[arg(long, default_value_t = 5.0)]
    ceiling_seconds: f64,
}

/// What the model and the preprocessing cost alone on this machine.
struct Isolated {
    /// Median decode + letterbox over the photos, seconds.
    prepare: f64,
    /// Median batch-1 forward pass (assembly, pass, decode + NMS), seconds.
    pass1: f64,
    /// Frames/s of batch-8 passes back to back.
    ceiling8: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

fn isolated(config: &Config, photos: &[(String, Bytes)], ceiling_seconds: f64) -> anyhow::Result<Isolated> {
    let mut one = config.clone();
    one.batching.max_batch_size = 1;
    one.batching.batch_shapes = BatchShapes::Max;
    let mut model = Model::load(&one)?;
    let (w, h) = (model.input_width, model.input_height);
    let mut pre = Preprocessor::from_config(config, w, h);
    let mut prepare = Vec::new();
    let mut tensors = Vec::new();
    for (name, jpeg) in photos {
        let _ = pre.prepare(jpeg).with_context(|| format!("preprocessing {name}"))?;
        for _ in 0..5 {
            let t0 = Instant::now();
            let p = pre.prepare(jpeg)?;
            prepare.push(t0.elapsed().as_secs_f64());
            tensors.push(p.tensor);
        }
    }
    let pass = |model: &mut Model, b: usize, i: usize| -> anyhow::Result<f64> {
        let views: Vec<&[u8]> = (0..b).map(|k| &tensors[(i + k) % tensors.len()][..]).collect();
        let t0 = Instant::now();
        let n = model.assemble(&views)?;
        model.execute(n, |_, _| ())?;
        std::hint::black_box(model.decode_in(0, n, b)?);
        Ok(t0.elapsed().as_secs_f64())
    };
    for i in 0..3 {
        pass(&mut model, 1, i)?;
    }
    let pass1: Vec<f64> = (0..30).map(|i| pass(&mut model, 1, i)).collect::<anyhow::Result<_>>()?;
    drop(model);
    let mut eight = config.clone();
    eight.batching.max_batch_size = 8;
    eight.batching.batch_shapes = BatchShapes::Max;
    let mut model = Model::load(&eight)?;
    for i in 0..3 {
        pass(&mut model, 8, i)?;
    }
    let (start, mut frames, mut i) = (Instant::now(), 0usize, 0usize);
    while start.elapsed().as_secs_f64() < ceiling_seconds || frames < 40 {
        pass(&mut model, 8, i)?;
        frames += 8;
        i += 8;
    }
    Ok(Isolated { prepare: median(&prepare), pass1: median(&pass1), ceiling8: frames as f64 / start.elapsed().as_secs_f64() })
}

/// The `n` slowest frames of stations `PREFIX-1…N` by the server's own time
/// (received → completed, from the history API), each with its stages: where the
/// tail's time went.
async fn tail(client: &reqwest::Client, base: &str, prefix: &str, stations: usize, n: usize) -> anyhow::Result<Vec<String>> {
    let mut frames: Vec<(f64, String)> = Vec::new();
    for s in 1..=stations {
        let url = format!("{base}/v1/stations/{prefix}-{s}/results?limit=1000");
        let page: serde_json::Value = client.get(&url).send().await?.error_for_status()?.json().await?;
        for r in page["results"].as_array().into_iter().flatten() {
            let at = |k: &str| r[k].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            let (Some(received), Some(completed)) = (at("received_at"), at("completed_at")) else { continue };
            let server_ms = (completed - received).num_microseconds().unwrap_or(0) as f64 / 1e3;
            let mut stages: Vec<(String, f64)> = r["timings_ms"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .filter(|(_, v)| *v >= 0.05)
                .collect();
            stages.sort_by(|a, b| b.1.total_cmp(&a.1));
            let listed: Vec<String> = stages.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
            let batch = r["batch_size"].as_f64().unwrap_or(f64::NAN);
            frames.push((server_ms, format!("received->completed {server_ms:.1} ms (batch of {batch}): {}", listed.join(", "))));
        }
    }
    frames.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest = frames.into_iter().take(n).map(|(_, line)| line);
    Ok(std::iter::once(format!("the {n} slowest, by the server's own time:")).chain(slowest).collect())
}

/// This process's CPU time (pipeline and load generator together: the load's own
/// share is small, its tokio workers are shared) at the start of a phase.
struct Cpu {
    total: f64,
    threads: BTreeMap<String, f64>,
}

impl Cpu {
    fn read() -> anyhow::Result<Cpu> {
        let me = std::process::id();
        Ok(Cpu { total: cpu_seconds(me)?, threads: thread_cpu_seconds(me)? })
    }

    /// "CPU x.xx cores: busiest thread groups" over the `secs` since `self`.
    fn since(&self, secs: f64) -> anyhow::Result<String> {
        let now = Cpu::read()?;
        Ok(format!("CPU {:.2} cores; threads: {}", (now.total - self.total) / secs, busiest(&self.threads, &now.threads, secs, 6)))
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Posts one frame and waits for its result; the latency in seconds and the result.
async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> anyhow::Result<(f64, serde_json::Value)> {
    let t0 = Instant::now();
    let resp = client.post(url).header("content-type", "image/jpeg").body(body).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let elapsed = t0.elapsed().as_secs_f64();
    anyhow::ensure!(status == 200, "answered {status}: {text}");
    Ok((elapsed, serde_json::from_str(&text)?))
}

/// Stations posting back to back until `length` has passed; (results, latencies).
async fn saturate(
    client: &reqwest::Client,
    base: &str,
    photos: &Arc<Vec<(String, Bytes)>>,
    stations: usize,
    length: Duration,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + length;
    let mut set = tokio::task::JoinSet::new();
    for s in 0..stations {
        let (client, photos, tally) = (client.clone(), photos.clone(), tally.clone());
        let url = format!("{base}/v1/stations/sat-{}/frames?wait_ms=30000", s + 1);
        set.spawn(async move {
            let mut i = s;
            while Instant::now() < until {
                let r = post(&client, &url, photos[i % photos.len()].1.clone()).await;
                let mut t = tally.lock().expect("tally lock");
                match r {
                    Ok((secs, _)) => {
                        t.latencies_ms.push(secs * 1e3);
                        *t.statuses.entry(200).or_default() += 1;
                    }
                    Err(_) => t.transport_errors += 1,
                }
                i += 1;
            }
        });
    }
    while set.join_next().await.is_some() {}
    Arc::try_unwrap(tally).map(|m| m.into_inner().expect("tally lock")).unwrap_or_else(|a| a.lock().expect("tally lock").clone())
}

pub async fn run(config: Config, args: LatencyBenchArgs) -> anyhow::Result<()> {
    let dir = args.photos.clone().unwrap_or_else(|| config.cache_dir.join("photos"));
    let photos = Arc::new(load_photos(&dir)?);
    let mode = if config.broker.amqp_url.is_some() { "in-process roles over RabbitMQ" } else { "embedded" };
    println!(
        "visionq bench-latency: model {}, provider {}, {} photos from {}, {mode}, durability {:?}, preprocess concurrency {}",
        config.model_path().display(),
        config.runtime.execution_provider,
        photos.len(),
        dir.display(),
        config.broker.durability,
        config.preprocess.preprocess_concurrency,
    );

    let (c, p, secs) = (config.clone(), photos.clone(), args.ceiling_seconds);
    let iso = tokio::task::spawn_blocking(move || isolated(&c, &p, secs)).await??;
    println!("\n1. isolated, this machine");
    println!("   decode + letterbox  {:>7.1} ms (median over the photos)", iso.prepare * 1e3);
    println!("   batch-1 pass        {:>7.1} ms (assemble + pass + decode/NMS, median of 30)", iso.pass1 * 1e3);
    println!("   batch-8 ceiling     {:>7.1} frames/s (passes back to back, {} s)", iso.ceiling8, args.ceiling_seconds);

    let local = Local::start(config.clone(), "127.0.0.1:0".parse()?).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;

    // 2. Idle: one at a time, after a short warm-up.
    let url = format!("{}/v1/stations/idle-1/frames?wait_ms=30000", local.base);
    for (_, jpeg) in photos.iter().take(3) {
        post(&client, &url, jpeg.clone()).await?;
    }
    let (mut idle, mut stages) = (Vec::new(), BTreeMap::<String, Vec<f64>>::new());
    for i in 0..args.idle_frames {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (secs, result) = post(&client, &url, photos[i % photos.len()].1.clone()).await?;
        idle.push(secs);
        for (k, v) in result["timings_ms"].as_object().into_iter().flatten() {
            if let Some(v) = v.as_f64() {
                stages.entry(k.clone()).or_default().push(v);
            }
        }
    }
    let idle_p50 = median(&idle);
    let budget = iso.prepare + iso.pass1;
    println!("\n2. idle: {} frames one at a time (50 ms apart)", args.idle_frames);
    println!("   post->result p50 {:.1} ms; decode + letterbox + batch-1 pass alone {:.1} ms", idle_p50 * 1e3, budget * 1e3);
    let listed: Vec<String> = stages.iter().map(|(k, v)| format!("{k} {:.1}", v.iter().sum::<f64>() / v.len() as f64)).collect();
    println!("   the result's timings_ms, mean: {}", listed.join(", "));

    // 3. Paced.
    let load = Load {
        stations: args.stations,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.paced_seconds),
        station_prefix: "paced".into(),
        wait_ms: 30_000,
        keep_timings: false,
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let cpu = Cpu::read()?;
    let start = Instant::now();
    drive(client.clone(), &local.base, photos.clone(), &load, tally.clone()).await;
    let paced_elapsed = start.elapsed().as_secs_f64();
    let paced_cpu = cpu.since(paced_elapsed)?;
    let paced = tally.lock().expect("tally lock").clone();
    let [p50, _, p99, max] = paced.percentiles();
    println!("\n3. paced: {} stations x {} frames/s x {} s", args.stations, args.rate, args.paced_seconds);
    println!(
        "   {} ok of {} sent in {paced_elapsed:.1} s; post->result ms p50 {p50:.1}  p99 {p99:.1}  max {max:.1}",
        paced.ok(),
        paced.sent()
    );
    println!("   {paced_cpu}");
    for line in tail(&client, &local.base, "paced", args.stations, 3).await? {
        println!("   {line}");
    }

    // 4. Saturated.
    let cpu = Cpu::read()?;
    let start = Instant::now();
    let sat = saturate(&client, &local.base, &photos, args.stations, Duration::from_secs_f64(args.saturated_seconds)).await;
    let sat_elapsed = start.elapsed().as_secs_f64();
    let sat_cpu = cpu.since(sat_elapsed)?;
    let throughput = sat.ok() as f64 / sat_elapsed;
    let [s50, _, s99, _] = sat.percentiles();
    println!("\n4. saturated: {} stations back to back for {} s", args.stations, args.saturated_seconds);
    println!(
        "   {} ok, {} failed; {throughput:.1} results/s; post->result ms p50 {s50:.1}  p99 {s99:.1}",
        sat.ok(),
        sat.transport_errors
    );
    println!("   {sat_cpu}");
    local.stop().await?;

    let (idle_ratio, p99_ratio, sat_ratio) = (idle_p50 / budget, p99 / 1e3 / iso.pass1, throughput / iso.ceiling8);
    println!("\ntargets");
    println!("   idle p50 <= 1.3x (decode + letterbox + batch-1 pass)   {idle_ratio:.2}x  {}", verdict(idle_ratio <= 1.3));
    println!("   paced p99 <= 3x one batch-1 pass                       {p99_ratio:.2}x  {}", verdict(p99_ratio <= 3.0));
    println!("   saturated >= 80% of the batch-8 ceiling                {:.0}%  {}", sat_ratio * 100.0, verdict(sat_ratio >= 0.8));
    anyhow::ensure!(
        paced.ok() == paced.sent(),
        "paced run: {} of {} frames without an ok result",
        paced.sent() - paced.ok(),
        paced.sent()
    );
    Ok(())
}
