//! `visionq bench-infer`: where the inference time goes, on one model in one run.
//! 1. The raw ONNX Runtime ceiling: the session alone on pre-assembled batches
//!    (I/O binding, reused buffers; pinned inputs on CUDA), per batch size, with the
//!    time of batch assembly and of decode+NMS measured beside it.
//! 2. The infer-worker role at several `max_batch_size`s, fed from a full in-process
//!    tensors queue, so it runs as fast as it can: frames/s and per-batch latency.
//! 3. The whole embedded pipeline with real 1280×720 JPEG frames from simulated
//!    stations (decode, letterbox, queues, batching, inference, persistence).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use uuid::Uuid;
use visionq_contract::topology::META_HEADER;
use visionq_contract::{Config, FrameMeta, FrameResult, Metrics, TensorMeta, Timings};
use visionq_infer_worker::{BatchDim, Model};
use visionq_queue::memory::MemoryBroker;
use visionq_queue::{Envelope, SharedBroker, WorkQueue};

use crate::compose::Local;
use crate::loadgen::{Load, Tally, batch_buckets, batch_distribution, drive, load_photos, percentile};

#[derive(clap::Args, Debug, Clone)]
pub struct InferBenchArgs {
    /// Batch sizes for the raw session ceiling.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    raw_batches: Vec<usize>,
    /// `max_batch_size` values for the infer-worker runs.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    worker_batches: Vec<usize>,
    /// Seconds of each raw measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Frames through the infer-worker per run.
    #[arg(long, default_value_t = 2000)]
    frames: usize,
    /// JPEG frames (default: the cached 1280x720 photos).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// End-to-end: simulated stations (0 skips the end-to-end run).
    #[arg(long, default_value_t = 16)]
    e2e_stations: usize,
    /// End-to-end: frames/s per station.
    #[arg(long, default_value_t = 30.0)]
    e2e_rate: f64,
    /// End-to-end: seconds of load.
    #[arg(long, default_value_t = 10.0)]
    e2e_seconds: f64,
}

/// The photos letterboxed into the model's input, as preprocess would send them.
fn tensors(config: &Config, photos: &[(String, Bytes)], w: u32, h: u32) -> anyhow::Result<Vec<(TensorMeta, Bytes)>> {
    let mut pre = visionq_preprocess::Preprocessor::new(w, h, config.ingest.max_pixels);
    photos
        .iter()
        .map(|(name, jpeg)| {
            let p = pre.prepare(jpeg).with_context(|| format!("preprocessing {name}"))?;
            let frame = FrameMeta {
                frame_id: Uuid::nil(),
                station: "bench".into(),
                width: p.width,
                height: p.height,
                orientation: 1,
                captured_at: None,
                received_at: Utc::now(),
                published_at: Utc::now(),
                deadline: None,
                timings_ms: Timings::new(),
            };
            Ok((TensorMeta { frame, letterbox: p.letterbox, preprocessed_at: Utc::now() }, Bytes::from(p.tensor)))
        })
        .collect()
}

fn ms(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, p) * 1e3
}

/// Section 1. Returns (batch, frames/s) pairs.
fn raw(config: &Config, args: &InferBenchArgs, photos: &[(String, Bytes)]) -> anyhow::Result<Vec<(usize, f64)>> {
    let probe = Model::load(config)?;
    let inputs = tensors(config, photos, probe.input_width, probe.input_height)?;
    println!(
        "\n1. raw ONNX Runtime session ({} provider, {:?} input, {:?} batch): pre-assembled batches, {} s each, one session per batch size",
        config.runtime.execution_provider, probe.input_format, probe.batch, args.seconds
    );
    let fixed = probe.batch;
    drop(probe);
    println!("   batch  frames/s   batch ms p50   p95  |  assemble ms  decode+NMS ms");
    let mut ceiling = Vec::new();
    for &b in &args.raw_batches {
        if let BatchDim::Fixed(n) = fixed
            && b != n
        {
            continue;
        }
        // The session alone at this one shape.
        let mut c = config.clone();
        c.batching.max_batch_size = b;
        c.batching.batch_shapes = visionq_contract::config::BatchShapes::Max;
        let mut model = Model::load(&c)?;
        let views: Vec<&[u8]> = (0..b).map(|i| &inputs[i % inputs.len()].1[..]).collect();
        // Assembly alone: the copy into the batch buffer.
        let mut assemble = Vec::new();
        for _ in 0..10 {
            let t0 = Instant::now();
            model.assemble(&views)?;
            assemble.push(t0.elapsed().as_secs_f64());
        }
        let n = model.assemble(&views)?;
        for _ in 0..3 {
            model.execute(n, |_, _| ())?;
        }
        // The pass alone (bind, copy to the device, compute, copy back), on the same batch.
        let mut batch = Vec::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < args.seconds || batch.len() < 5 {
            let t0 = Instant::now();
            let touched = model.execute(n, |d, _| d[0])?;
            batch.push(t0.elapsed().as_secs_f64());
            std::hint::black_box(touched);
        }
        let elapsed = start.elapsed().as_secs_f64();
        // Decode + NMS of that output, as the worker does it.
        let mut decode = Vec::new();
        for _ in 0..5 {
            let t0 = Instant::now();
            std::hint::black_box(model.decode_in(0, n, b)?);
            decode.push(t0.elapsed().as_secs_f64());
        }
        let fps = (b * batch.len()) as f64 / elapsed;
        ceiling.push((b, fps));
        println!(
            "   {b:>5}  {fps:>8.1}   {:>12.2}  {:>5.2}  |  {:>11.2}  {:>13.2}",
            ms(&batch, 50.0),
            ms(&batch, 95.0),
            ms(&assemble, 50.0),
            ms(&decode, 50.0)
        );
    }
    Ok(ceiling)
}

/// Section 2: one infer-worker run at `max_batch`. Returns frames/s.
async fn worker(config: &Config, frames: usize, max_batch: usize, inputs: &[(TensorMeta, Bytes)]) -> anyhow::Result<f64> {
    let mut config = config.clone();
    config.batching.max_batch_size = max_batch;
    config.batching.max_batch_wait_ms = 2;
    config.batching.infer_input = visionq_contract::config::InferInput::Tensors;
    let broker = Arc::new(MemoryBroker::new(|_| usize::MAX, 5));
    let shared: SharedBroker = broker.clone();
    for i in 0..frames {
        let (meta, tensor) = &inputs[i % inputs.len()];
        let mut meta = meta.clone();
        meta.frame.frame_id = Uuid::now_v7();
        let env = Envelope::new(tensor.clone()).with_header(META_HEADER, serde_json::to_string(&meta)?);
        shared.publish(WorkQueue::Tensors, env).await?;
    }
    let c = config.clone();
    let model = tokio::task::spawn_blocking(move || {
        let mut m = Model::load(&c)?;
        m.warm_up(c.batching.max_batch_size)?;
        Ok::<_, visionq_infer_worker::InferError>(m)
    })
    .await??;
    let mut results = shared.consume(WorkQueue::Results, 1024).await?;
    let (trigger, shutdown) = crate::shutdown::channel();
    let start = Instant::now();
    let role =
        tokio::spawn(visionq_infer_worker::run(shared.clone(), Arc::new(Metrics::new()), Arc::new(config), model, shutdown.wait()));
    let (mut inference, mut sizes) = (Vec::new(), Vec::new());
    for _ in 0..frames {
        let d = results.next().await.context("results stream ended")?;
        let r: FrameResult = serde_json::from_slice(&d.envelope.body)?;
        inference.push(r.timings_ms.get("inference").copied().unwrap_or(f64::NAN) / 1e3);
        sizes.push(r.batch_size.map_or(f64::NAN, f64::from));
        d.ack().await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    trigger.fire();
    role.await??;
    let fps = frames as f64 / elapsed;
    println!(
        "   {max_batch:>9}  {fps:>8.1}  {:>10.2}  {:>13.2}  {:>5.2}",
        sizes.iter().sum::<f64>() / sizes.len() as f64,
        ms(&inference, 50.0),
        ms(&inference, 95.0)
    );
    Ok(fps)
}

pub async fn run(config: Config, args: InferBenchArgs) -> anyhow::Result<()> {
    let dir = args.photos.clone().unwrap_or_else(|| config.cache_dir.join("photos-720p"));
    let photos = load_photos(&dir)?;
    println!(
        "visionq bench-infer: model {}, provider {}, {} photos from {}",
        config.model_path().display(),
        config.runtime.execution_provider,
        photos.len(),
        dir.display()
    );
    let (c, p) = (config.clone(), photos.clone());
    let a = args.clone();
    let ceiling = tokio::task::spawn_blocking(move || raw(&c, &a, &p)).await??;

    let probe = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || Model::load(&c)).await??
    };
    let inputs = tensors(&config, &photos, probe.input_width, probe.input_height)?;
    let fixed = match probe.batch {
        BatchDim::Fixed(n) => Some(n),
        BatchDim::Dynamic => None,
    };
    drop(probe);
    println!("\n2. infer-worker role, tensors pre-queued in process, {} frames per run, max_batch_wait_ms 2", args.frames);
    println!("   max_batch  frames/s  mean batch  batch ms p50   p95");
    let mut worker_fps = Vec::new();
    for &b in &args.worker_batches {
        worker_fps.push((b, worker(&config, args.frames, b, &inputs).await?));
    }
    let at = |v: &[(usize, f64)], b: usize| v.iter().find(|(k, _)| *k == b).map(|(_, f)| *f);
    let top = fixed.unwrap_or(8);
    if let (Some(w), Some(r)) = (at(&worker_fps, 8).or(at(&worker_fps, top)), at(&ceiling, top)) {
        println!("   worker at max batch {top}: {:.0}% of the raw ceiling at batch {top}", 100.0 * w / r);
    }
    if let (Some(w8), Some(w1)) = (at(&worker_fps, 8), at(&worker_fps, 1)) {
        println!("   max batch 8 vs 1: {:.2}x the frames/s", w8 / w1);
    }

    if args.e2e_stations > 0 {
        println!(
            "\n3. end to end, embedded pipeline: {} stations x {} frames/s x {} s, JPEG frames from {}",
            args.e2e_stations,
            args.e2e_rate,
            args.e2e_seconds,
            dir.display()
        );
        let local = Local::start(config.clone(), "127.0.0.1:0".parse()?).await?;
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        let before = batch_buckets(&client.get(format!("{}/metrics", local.base)).send().await?.text().await?);
        let load = Load {
            stations: args.e2e_stations,
            rate: args.e2e_rate,
            duration: Duration::from_secs_f64(args.e2e_seconds),
            station_prefix: "e2e".into(),
            wait_ms: 30_000,
            keep_timings: false,
        };
        let tally = Arc::new(Mutex::new(Tally::default()));
        let start = Instant::now();
        drive(client.clone(), &local.base, Arc::new(photos), &load, tally.clone()).await;
        let elapsed = start.elapsed().as_secs_f64();
        let after = batch_buckets(&client.get(format!("{}/metrics", local.base)).send().await?.text().await?);
        let t = tally.lock().expect("tally lock").clone();
        let [p50, p95, p99, max] = t.percentiles();
        let (passes, dist) = batch_distribution(&before, &after);
        println!("   sent {} frames in {elapsed:.1} s; {} results ok; statuses {:?}", t.sent(), t.ok(), t.statuses);
        println!("   throughput {:.1} results/s", t.ok() as f64 / elapsed);
        println!("   latency post->result ms: p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}  max {max:.1}");
        println!("   batches {passes} forward passes, {:.2} frames per pass ({dist})", t.ok() as f64 / passes.max(1.0));
        local.stop().await?;
    }
    Ok(())
}
