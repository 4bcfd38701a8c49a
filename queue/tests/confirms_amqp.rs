//! Publisher confirms under concurrency, against the real RabbitMQ on 127.0.0.1:5672:
//! many tasks publish frames through one `AmqpBroker` (one confirm-mode channel)
//! into a short queue that refuses what does not fit, while other tasks publish
//! events on the same channel, as ingest does with its dashboard previews. A
//! publish that returned Ok must be in the queue, and one refused as full must
//! not: each task is told its own message's confirm, never another's.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use visionq_contract::topology::Topology;
use visionq_queue::amqp::{AmqpBroker, QueueLimits};
use visionq_queue::{Broker, Envelope, QueueError, WorkQueue};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_publish_is_told_its_own_confirm_with_events_on_the_same_channel() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let topology = Topology::new(format!("t{}_{}_confirms", std::process::id(), nanos % 100_000));
    let limits = QueueLimits { frames_max_length: 20, tensors_max_length: 100, results_max_length: 100, max_deliveries: 5 };
    let broker = Arc::new(AmqpBroker::connect(AMQP_URL, topology.clone(), limits.clone()).await.expect("RabbitMQ at 127.0.0.1:5672"));

    // A slow consumer on a connection of its own keeps the queue at its limit.
    let consumer = AmqpBroker::connect(AMQP_URL, topology.clone(), limits).await.unwrap();
    let mut deliveries = consumer.consume(WorkQueue::Frames, 4).await.unwrap();
    let consumed = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = consumed.clone();
    let consuming = tokio::spawn(async move {
        while let Some(d) = deliveries.next().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen.lock().unwrap().insert(d.envelope.header("x-n").unwrap().parse::<u32>().unwrap());
            d.ack().await.unwrap();
        }
    });

    let until = Instant::now() + Duration::from_secs(4);
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let broker = broker.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                broker.publish_event("preview.cam", Envelope::new(vec![7u8; 50_000])).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for _ in 0..32 {
        let (broker, confirmed, next) = (broker.clone(), confirmed.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let frame = Envelope::new(vec![1u8; 100_000]).with_header("x-n", n.to_string());
                match broker.publish(WorkQueue::Frames, frame).await {
                    Ok(()) => drop(confirmed.lock().unwrap().insert(n)),
                    Err(QueueError::Full(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = next.load(std::sync::atomic::Ordering::Relaxed);
    let confirmed = confirmed.lock().unwrap().clone();
    let drained = Instant::now() + Duration::from_secs(20);
    while consumed.lock().unwrap().len() < confirmed.len() && Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let consumed = consumed.lock().unwrap().clone();
    consuming.abort();
    let lost: Vec<_> = confirmed.difference(&consumed).collect();
    let refused_but_queued: Vec<_> = consumed.difference(&confirmed).collect();
    eprintln!("confirms: {published} published, {} confirmed, {} consumed", confirmed.len(), consumed.len());
    assert!(confirmed.len() < published as usize, "the queue refused some: the test exercised the limit");
    assert!(lost.is_empty(), "confirmed but not in the queue: {lost:?}");
    assert!(refused_but_queued.is_empty(), "refused as full but in the queue: {refused_but_queued:?}");
    broker.delete_topology().await.unwrap();
}
