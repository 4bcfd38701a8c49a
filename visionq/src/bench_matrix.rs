//! `visionq bench-matrix`: the end-to-end pipeline over a matrix of configurations
//! (preprocess concurrency × tensors/inline × max batch), one `visionq run` child
//! process per row, so that a cliff in any ordinary configuration shows at once.
//! Each row prints results/s, latency, the forward pass under load beside the same
//! pass in isolation, the server's CPU in cores (and its busiest threads), and the
//! GPU's utilisation read through NVML; the end checks the "no cliff" lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use visionq_contract::Config;
use visionq_contract::config::InferInput;
use visionq_infer_worker::Model;
use visionq_infer_worker::gpu::GpuProbe;

use crate::loadgen::{Load, Tally, drive, load_photos};
use crate::proc_stat::{busiest, cpu_seconds, thread_cpu_seconds};

#[derive(clap::Args, Debug, Clone)]
pub struct MatrixArgs {
    /// `preprocess_concurrency` values.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16")]
    concurrency: Vec<usize>,
    /// `infer_input` values: tensors (separate preprocess tasks), frames (inline).
    #[arg(long, value_delimiter = ',', default_value = "tensors,frames")]
    inputs: Vec<String>,
    /// `max_batch_size` values.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    max_batch: Vec<usize>,
    /// Simulated stations.
    #[arg(long, default_value_t = 32)]
    stations: usize,
    /// Frames/s per station (offered load = stations × rate).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of load per row.
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
    /// Seconds of the same load before each row's measurement begins (not counted):
    /// what a node has seen before an ordinary minute of its day.
    #[arg(long, default_value_t = 0.0)]
    warmup_seconds: f64,
    /// Print each row's answered frames by the second they were sent in (count,
    /// p50, p99, max): whether a tail is the first seconds or spread over the run;
    /// and each stage's mean and p99 (from `/metrics`): where in the pipeline.
    #[arg(long)]
    timeline: bool,
    /// Seconds a row may take after the load to answer what it accepted.
    #[arg(long, default_value_t = 4.0)]
    drain_seconds: f64,
    /// JPEG frames (default: the cached 1280x720 photos).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Extra `KEY=VALUE` environment for every child (e.g. VISIONQ_BATCH_SHAPES=exact).
    #[arg(long = "env", value_delimiter = ',')]
    envs: Vec<String>,
}

/// One row's configuration and what it measured.
#[derive(Debug, Clone)]
struct Row {
    concurrency: usize,
    input: String,
    max_batch: usize,
    results_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    pass_ms: f64,
    mean_batch: f64,
    server_cores: f64,
    client_cores: f64,
    gpu_util_median: Option<f64>,
    top_threads: String,
    /// (second, frames, p50, p99, max) by when the frames were sent.
    timeline: Vec<(usize, usize, f64, f64, f64)>,
    /// (stage, observations, mean ms, p99 bucket bound ms) over the measured load.
    stages: Vec<(String, f64, f64, f64)>,
    /// The frames at or above p99 latency: how many, and their mean ms per stage.
    tail: (usize, Vec<(String, f64)>),
}

/// A `visionq run` child serving on a free port.
struct Child {
    process: tokio::process::Child,
    base: String,
}

async fn start_child(envs: &[(String, String)], data_dir: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["run", "--listen", "127.0.0.1:0"])
        .env("VISIONQ_DATA_DIR", data_dir)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut process = cmd.spawn().context("starting `visionq run`")?;
    let mut lines = BufReader::new(process.stdout.take().context("child stdout")?).lines();
    let base = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("visionq listening on ") {
                return Ok(addr.trim().to_string());
            }
        }
        bail!("`visionq run` exited before listening")
    })
    .await
    .context("`visionq run` did not start in 180 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Child { process, base })
}

/// Sum and count of a histogram series (`name` plus one `label="value"`, or none).
fn histogram(metrics: &str, name: &str, label: Option<&str>) -> (f64, f64) {
    let pick = |suffix: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_{suffix}")))
            .filter(|l| label.is_none_or(|lab| l.contains(lab)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (pick("sum"), pick("count"))
}

/// Per stage, between two scrapes of `visionq_stage_duration_seconds`: (stage,
/// observations, mean ms, the upper bound in ms of the bucket holding the 99th
/// percentile). Where in the pipeline a latency tail is spent.
fn stage_tails(before: &str, after: &str) -> Vec<(String, f64, f64, f64)> {
    /// (stage, le) -> cumulative count; stage -> (sum, count).
    type Parsed = (BTreeMap<(String, String), f64>, BTreeMap<String, (f64, f64)>);
    fn parse(metrics: &str) -> Parsed {
        let (mut buckets, mut totals) = (BTreeMap::new(), BTreeMap::<String, (f64, f64)>::new());
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("visionq_stage_duration_seconds_") else { continue };
            let Some((kind, rest)) = rest.split_once('{') else { continue };
            let Some((labels, value)) = rest.split_once("} ") else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            let label = |name: &str| {
                labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{name}=\""))?.strip_suffix('"').map(str::to_string))
            };
            let Some(stage) = label("stage") else { continue };
            match kind {
                "bucket" => {
                    if let Some(le) = label("le") {
                        buckets.insert((stage, le), value);
                    }
                }
                "sum" => totals.entry(stage).or_default().0 = value,
                "count" => totals.entry(stage).or_default().1 = value,
                _ => {}
            }
        }
        (buckets, totals)
    }
    let ((b0, t0), (b1, t1)) = (parse(before), parse(after));
    let mut out = Vec::new();
    for (stage, (sum1, count1)) in &t1 {
        let (sum0, count0) = t0.get(stage).copied().unwrap_or_default();
        let n = count1 - count0;
        if n <= 0.0 {
            continue;
        }
        let mut bounds: Vec<(f64, f64)> = b1
            .iter()
            .filter(|((s, _), _)| s == stage)
            .map(|((s, le), c)| {
                let upper = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
                (upper, c - b0.get(&(s.clone(), le.clone())).copied().unwrap_or(0.0))
            })
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let p99 = bounds.iter().find(|(_, c)| *c >= 0.99 * n).map_or(f64::INFINITY, |(u, _)| *u);
        out.push((stage.clone(), n, (sum1 - sum0) / n * 1e3, p99 * 1e3));
    }
    out
}

async fn scrape(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(client.get(format!("{base}/metrics")).send().await?.text().await?)
}

/// Samples GPU utilisation until `stop` is set; returns the samples (0–1).
fn sample_gpu(probe: Option<Arc<GpuProbe>>, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Vec<f64>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        while let Some(p) = probe.as_ref() {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if let Ok(r) = p.read() {
                v.push(r.utilization);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        v
    })
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

async fn run_row(
    args: &MatrixArgs,
    photos: Arc<Vec<(String, Bytes)>>,
    gpu: Option<Arc<GpuProbe>>,
    row: (usize, &str, usize),
) -> anyhow::Result<Row> {
    let (concurrency, input, max_batch) = row;
    let data = tempdir(&format!("vq-matrix-{concurrency}-{input}-{max_batch}"))?;
    let mut envs: Vec<(String, String)> = vec![
        ("VISIONQ_PREPROCESS_CONCURRENCY".into(), concurrency.to_string()),
        ("VISIONQ_INFER_INPUT".into(), input.to_string()),
        ("VISIONQ_MAX_BATCH_SIZE".into(), max_batch.to_string()),
    ];
    for kv in &args.envs {
        let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv}: not KEY=VALUE"))?;
        envs.push((k.into(), v.into()));
    }
    let mut child = start_child(&envs, &data).await?;
    let pid = child.process.id().context("child pid")?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    if args.warmup_seconds > 0.0 {
        drive_for(args, &client, &child.base, photos.clone(), args.warmup_seconds, "warmup").await;
    }
    let before = scrape(&client, &child.base).await?;
    let (server0, threads0, client0) = (cpu_seconds(pid)?, thread_cpu_seconds(pid)?, cpu_seconds(std::process::id())?);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_gpu(gpu, stop.clone());
    let start = Instant::now();
    let t = drive_for(args, &client, &child.base, photos, args.seconds, "matrix").await;
    let elapsed = start.elapsed().as_secs_f64();
    let (server1, threads1, client1) = (cpu_seconds(pid)?, thread_cpu_seconds(pid)?, cpu_seconds(std::process::id())?);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut gpu_samples = sampler.join().unwrap_or_default();
    let after = scrape(&client, &child.base).await?;
    let _ = child.process.start_kill();
    let _ = child.process.wait().await;
    let _ = std::fs::remove_dir_all(&data);

    let [p50, _, p99, _] = t.percentiles();
    let delta = |name, label| {
        let (s0, c0) = histogram(&before, name, label);
        let (s1, c1) = histogram(&after, name, label);
        (s1 - s0, c1 - c0)
    };
    let (pass_sum, passes) = delta("visionq_stage_duration_seconds", Some("stage=\"inference\""));
    let (frames, batches) = delta("visionq_infer_batch_size", None);
    Ok(Row {
        concurrency,
        input: input.into(),
        max_batch,
        results_per_s: t.ok() as f64 / elapsed,
        p50_ms: p50,
        p99_ms: p99,
        // The inference stage is observed once per batch.
        pass_ms: if passes > 0.0 { pass_sum / passes * 1e3 } else { f64::NAN },
        mean_batch: if batches > 0.0 { frames / batches } else { f64::NAN },
        server_cores: (server1 - server0) / elapsed,
        client_cores: (client1 - client0) / elapsed,
        gpu_util_median: median(&mut gpu_samples),
        top_threads: busiest(&threads0, &threads1, elapsed, 4),
        timeline: t.by_second(),
        stages: stage_tails(&before, &after),
        tail: t.tail_breakdown(99.0),
    })
}

/// The row's stations (`PREFIX-1…N`, `args.rate` frames/s each) for `seconds`, with
/// `args.drain_seconds` more to answer what was accepted; what came back by then.
async fn drive_for(
    args: &MatrixArgs,
    client: &reqwest::Client,
    base: &str,
    photos: Arc<Vec<(String, Bytes)>>,
    seconds: f64,
    prefix: &str,
) -> Tally {
    let load = Load {
        stations: args.stations,
        rate: args.rate,
        duration: Duration::from_secs_f64(seconds),
        station_prefix: prefix.into(),
        wait_ms: 30_000,
        keep_timings: args.timeline,
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let limit = Duration::from_secs_f64(seconds + args.drain_seconds);
    let _ = tokio::time::timeout(limit, drive(client.clone(), base, photos, &load, tally.clone())).await;
    tally.lock().expect("tally lock").clone()
}

fn tempdir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The isolated pass (ms, median of 50) at each batch size, on this process's own session.
fn isolated_passes(config: &Config, sizes: &[usize]) -> anyhow::Result<BTreeMap<usize, f64>> {
    let mut out = BTreeMap::new();
    for &b in sizes {
        let mut c = config.clone();
        c.batching.max_batch_size = b;
        let mut model = Model::load(&c)?;
        let b = model.max_batch(b);
        model.warm_up(b)?;
        let blank = vec![114u8; model.tensor_len()];
        let n = model.assemble(&vec![&blank[..]; b])?;
        let mut times = Vec::new();
        for _ in 0..50 {
            let t0 = Instant::now();
            model.execute(n, |d, _| std::hint::black_box(d[0]))?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        out.insert(b, median(&mut times).unwrap_or(f64::NAN));
    }
    Ok(out)
}

pub async fn run(config: Config, args: MatrixArgs) -> anyhow::Result<()> {
    let dir = args.photos.clone().unwrap_or_else(|| config.cache_dir.join("photos-720p"));
    let photos = Arc::new(load_photos(&dir)?);
    for i in &args.inputs {
        if serde_json::from_value::<InferInput>(serde_json::Value::String(i.clone())).is_err() {
            bail!("--inputs: `{i}` is neither tensors nor frames");
        }
    }
    let gpu = (config.runtime.execution_provider == visionq_contract::config::ExecutionProvider::Cuda)
        .then(|| GpuProbe::open(config.runtime.cuda_device_id.max(0) as u32).map(Arc::new))
        .transpose()
        .unwrap_or_else(|reason| {
            println!("GPU utilisation not read: {reason}");
            None
        });
    let c = config.clone();
    let sizes = args.max_batch.clone();
    let isolated = tokio::task::spawn_blocking(move || isolated_passes(&c, &sizes)).await??;
    println!(
        "visionq bench-matrix: model {}, provider {}, batch shapes {:?}, {} stations x {} frames/s ({} offered) for {} s a row, photos {}",
        config.model_path().display(),
        config.runtime.execution_provider,
        config.batching.batch_shapes,
        args.stations,
        args.rate,
        args.stations as f64 * args.rate,
        args.seconds,
        dir.display()
    );
    println!(
        "isolated pass ms by max batch: {isolated:?}; extra env: {:?}; warm-up {} s a row (not counted)",
        args.envs, args.warmup_seconds
    );
    println!(
        "{:>4} {:>8} {:>5} | {:>9} {:>8} {:>8} | {:>8} {:>8} {:>6} | {:>6} {:>6} {:>5} | busiest threads (cores)",
        "conc", "input", "batch", "results/s", "p50 ms", "p99 ms", "pass ms", "isolated", "batch", "server", "client", "gpu%"
    );
    let mut rows = Vec::new();
    for &b in &args.max_batch {
        for input in &args.inputs {
            for &c in &args.concurrency {
                let r = run_row(&args, photos.clone(), gpu.clone(), (c, input, b)).await?;
                let iso = isolated.range(..=b).next_back().map(|(_, v)| *v).unwrap_or(f64::NAN);
                println!(
                    "{:>4} {:>8} {:>5} | {:>9.1} {:>8.1} {:>8.1} | {:>8.2} {:>8.2} {:>6.2} | {:>6.2} {:>6.2} {:>5} | {}",
                    r.concurrency,
                    r.input,
                    r.max_batch,
                    r.results_per_s,
                    r.p50_ms,
                    r.p99_ms,
                    r.pass_ms,
                    iso,
                    r.mean_batch,
                    r.server_cores,
                    r.client_cores,
                    r.gpu_util_median.map_or("-".into(), |u| format!("{:.0}", u * 100.0)),
                    r.top_threads
                );
                if args.timeline {
                    let stages: Vec<String> =
                        r.stages.iter().map(|(s, n, mean, p99)| format!("{s} {n:.0}x {mean:.2}/{p99:.0}")).collect();
                    println!("      stages (observations, mean ms / p99 at most ms): {}", stages.join(", "));
                    let (n, tail) = &r.tail;
                    let tail: Vec<String> = tail.iter().map(|(s, ms)| format!("{s} {ms:.1}")).collect();
                    println!("      the {n} frames at or above p99, mean ms by stage: {}", tail.join(", "));
                    for (second, n, p50, p99, max) in &r.timeline {
                        println!("      second {second:>3}: {n:>6} answered  p50 {p50:>8.1}  p99 {p99:>8.1}  max {max:>8.1} ms");
                    }
                }
                rows.push(r);
            }
        }
    }
    checks(&rows, args.stations as f64 * args.rate);
    Ok(())
}

/// The lines a cliff would cross, checked over the rows that ran. A pair of rows
/// that both answered (nearly) all the `offered` load compares nothing about
/// capacity: it is reported as such, not as a pass or a failure.
fn checks(rows: &[Row], offered: f64) {
    let answered_all = |r: &Row| r.results_per_s >= 0.98 * offered;
    let find = |c: usize, i: &str, b: usize| rows.iter().find(|r| r.concurrency == c && r.input == i && r.max_batch == b);
    let top = rows.iter().map(|r| r.concurrency).max().unwrap_or(0);
    println!("checks:");
    let mut failed = 0;
    let mut check = |ok: bool, what: String| {
        failed += usize::from(!ok);
        println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
    };
    for r in rows {
        if let Some(full) = find(top, &r.input, r.max_batch).filter(|_| r.concurrency < top) {
            let need = 0.8 * r.concurrency as f64 / top as f64 * full.results_per_s;
            check(
                r.results_per_s >= need,
                format!(
                    "{} batch {} concurrency {}: {:.0}/s >= 0.8 x {}/{} of {:.0}/s",
                    r.input, r.max_batch, r.concurrency, r.results_per_s, r.concurrency, top, full.results_per_s
                ),
            );
        }
        if r.input == "frames"
            && let Some(t) = find(r.concurrency, "tensors", r.max_batch)
        {
            check(
                r.results_per_s >= 0.9 * t.results_per_s,
                format!(
                    "inline vs tensors, batch {} concurrency {}: {:.0}/s >= 0.9 x {:.0}/s",
                    r.max_batch, r.concurrency, r.results_per_s, t.results_per_s
                ),
            );
        }
        if r.max_batch == 16
            && let Some(e) = find(r.concurrency, &r.input, 8)
        {
            if answered_all(r) && answered_all(e) {
                println!(
                    "  n/a  {} concurrency {}: max batch 16 {:.0}/s and 8 {:.0}/s both answered the {offered:.0}/s offered",
                    r.input, r.concurrency, r.results_per_s, e.results_per_s
                );
                continue;
            }
            check(
                r.results_per_s >= e.results_per_s,
                format!(
                    "{} concurrency {}: max batch 16 {:.0}/s >= max batch 8 {:.0}/s",
                    r.input, r.concurrency, r.results_per_s, e.results_per_s
                ),
            );
        }
    }
    println!("  {failed} check(s) failed");
}

#[cfg(test)]
mod tests {
    use super::stage_tails;

    #[test]
    fn stage_tails_takes_the_difference_of_two_scrapes() {
        let before = "visionq_stage_duration_seconds_bucket{stage=\"decode\",le=\"0.005\"} 10\n\
                      visionq_stage_duration_seconds_bucket{stage=\"decode\",le=\"0.1\"} 10\n\
                      visionq_stage_duration_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 10\n\
                      visionq_stage_duration_seconds_sum{stage=\"decode\"} 0.02\n\
                      visionq_stage_duration_seconds_count{stage=\"decode\"} 10\n";
        // 100 more: 98 under 5 ms, 2 between 5 and 100 ms, summing to 0.5 s.
        let after = "visionq_stage_duration_seconds_bucket{stage=\"decode\",le=\"0.005\"} 108\n\
                     visionq_stage_duration_seconds_bucket{stage=\"decode\",le=\"0.1\"} 110\n\
                     visionq_stage_duration_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 110\n\
                     visionq_stage_duration_seconds_sum{stage=\"decode\"} 0.52\n\
                     visionq_stage_duration_seconds_count{stage=\"decode\"} 110\n\
                     visionq_stage_duration_seconds_count{stage=\"inference\"} 0\n";
        let t = stage_tails(before, after);
        assert_eq!(t.len(), 1, "{t:?}");
        let (stage, n, mean, p99) = &t[0];
        assert_eq!((stage.as_str(), *n), ("decode", 100.0));
        assert!((mean - 5.0).abs() < 1e-9, "{mean}");
        assert_eq!(*p99, 100.0);
    }
}
