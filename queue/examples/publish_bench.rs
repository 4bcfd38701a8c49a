//! Confirmed publishes per second through one `AmqpBroker` (one confirm-mode
//! channel), from many tasks at once, as ingest publishes frames: the figure that
//! the publish lock (see `amqp.rs`) could cost. Against RabbitMQ on 127.0.0.1:5672.
//!
//! cargo run --release -p visionq-queue --example publish_bench -- [TASKS] [SECONDS] [BYTES]

use std::sync::Arc;
use std::time::{Duration, Instant};

use visionq_contract::topology::Topology;
use visionq_queue::amqp::{AmqpBroker, QueueLimits};
use visionq_queue::{Broker, Envelope, WorkQueue};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[tokio::main]
async fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (tasks, seconds, bytes) = (arg(1, 32) as usize, arg(2, 10), arg(3, 60_000) as usize);
    let topology = Topology::new(format!("bench{}", std::process::id()));
    let limits = QueueLimits { frames_max_length: 1_000_000, tensors_max_length: 10, results_max_length: 10, max_deliveries: 5 };
    let broker = Arc::new(AmqpBroker::connect(AMQP_URL, topology, limits).await.expect("RabbitMQ at 127.0.0.1:5672"));
    let body = bytes::Bytes::from(vec![0x5Au8; bytes]);
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (broker, body) = (broker.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                broker.publish(WorkQueue::Frames, Envelope::new(body.clone())).await.expect("confirmed");
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    println!(
        "{tasks} tasks, {bytes} B messages, {elapsed:.1} s: {} confirmed, {:.0} msg/s, {:.1} MB/s; publish→confirm ms p50 {:.2} p99 {:.2}",
        all.len(),
        all.len() as f64 / elapsed,
        all.len() as f64 * bytes as f64 / elapsed / 1e6,
        pct(0.5),
        pct(0.99)
    );
    broker.delete_topology().await.expect("clean up");
}
