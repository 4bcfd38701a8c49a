//! A PostgreSQL outage in the middle of a run loses nothing and doubles nothing.
//! The machine's PostgreSQL is shared, so the test does not stop it: the store
//! talks to the test's own database through a TCP proxy that the test cuts (every
//! connection reset, new ones refused) and later restores.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::TestDb;
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;
use visionq_contract::message::{ImageSize, Timings};
use visionq_contract::{Config, Detection, FrameResult, Metrics, ModelInfo, ResultStatus};
use visionq_queue::memory::MemoryBroker;
use visionq_queue::{Envelope, SharedBroker, WorkQueue};

/// A TCP proxy to PostgreSQL that can be cut and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if !u.load(Ordering::SeqCst) {
                    drop(inbound); // refused: the client sees the connection closed
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(h.abort_handle());
            }
        });
        Proxy { port, up, conns }
    }

    /// Resets every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn result(i: usize) -> FrameResult {
    let t = Utc::now();
    FrameResult {
        frame_id: Uuid::now_v7(),
        station: format!("cam{}", i % 4),
        status: ResultStatus::Ok,
        error: None,
        image: ImageSize { width: 640, height: 480 },
        model: ModelInfo { name: "yolov3-tiny".into(), version: "test".into() },
        detections: (0..(i % 3))
            .map(|k| Detection {
                class_id: k as u32,
                class_name: format!("c{k}"),
                score: 0.5,
                bbox: [0.0, 0.0, 0.5, 0.5],
                box_px: [0.0, 0.0, 320.0, 240.0],
                track_id: None,
                classification: None,
                text: None,
            })
            .collect(),
        decision: None,
        review: None,
        timings_ms: Timings::new(),
        batch_size: None,
        captured_at: None,
        received_at: t,
        completed_at: t,
    }
}

async fn publish(broker: &SharedBroker, r: &FrameResult) {
    broker.publish(WorkQueue::Results, Envelope::new(serde_json::to_vec(r).unwrap())).await.unwrap();
}

async fn stored(db: &TestDb) -> (i64, i64) {
    let c = db.client().await;
    let f: i64 = c.query_one("SELECT count(*) FROM frames", &[]).await.unwrap().get(0);
    let d: i64 = c.query_one("SELECT count(*) FROM detections", &[]).await.unwrap().get(0);
    (f, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_run_loses_nothing_and_doubles_nothing() {
    let db = TestDb::new("outage").await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}?connect_timeout=2", proxy.port, db.name);
    let store = visionq_results::open_store(&via_proxy).await.unwrap();
    let broker: SharedBroker = Arc::new(MemoryBroker::new(|_| 100_000, 1000));
    let mut config = Config::default();
    (config.database.results_batch_size, config.database.results_batch_wait_ms) = (16, 5);
    let config = Arc::new(config);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let consumer = tokio::spawn(visionq_results::run(
        broker.clone(),
        store.clone(),
        Arc::new(Metrics::new()),
        config,
        Arc::new(visionq_decide::Decider::load(None, None).unwrap()),
        visionq_results::Outlets::default(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let all: Vec<FrameResult> = (0..600).map(result).collect();
    let expected_detections: i64 = all.iter().map(|r| r.detections.len() as i64).sum();
    // Before the outage.
    for r in &all[..200] {
        publish(&broker, r).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The outage: results keep arriving (and some arrive twice, as redeliveries do).
    proxy.cut();
    for r in &all[200..400] {
        publish(&broker, r).await;
    }
    for r in &all[150..250] {
        publish(&broker, r).await;
    }
    let down_since = std::time::Instant::now();
    let mut saw_down = false;
    while down_since.elapsed() < Duration::from_secs(3) {
        let t = std::time::Instant::now();
        saw_down |= store.ping().await.is_err();
        assert!(t.elapsed() < Duration::from_secs(2), "readiness answers within a probe's timeout");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(saw_down, "readiness (the store's ping) reports the database down during the outage");
    assert!(store.ping().await.is_err(), "still down");
    let (during, _) = stored(&db).await; // straight to the database, not through the proxy
    assert!(during < 400, "the outage held results back ({during} stored)");

    proxy.restore();
    for r in &all[400..] {
        publish(&broker, r).await;
    }
    let t0 = std::time::Instant::now();
    loop {
        let (frames, _) = stored(&db).await;
        if frames >= 600 || t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.ping().await.expect("ready again after the outage");
    // Let any straggling duplicate deliveries settle, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (frames, detections) = stored(&db).await;
    assert_eq!(frames, 600, "every result stored exactly once");
    assert_eq!(detections, expected_detections, "every detection stored exactly once");
    let c = db.client().await;
    let ids: Vec<Uuid> = all.iter().map(|r| r.frame_id).collect();
    let n: i64 = c.query_one("SELECT count(*) FROM frames WHERE frame_id = ANY($1)", &[&ids]).await.unwrap().get(0);
    assert_eq!(n, 600, "the stored frames are exactly the published ones");
    assert_eq!(broker.depth(WorkQueue::Results).await.unwrap(), 0, "everything acked");

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), consumer).await.unwrap().unwrap().unwrap();
}
