//! The journal and the durable in-process broker against real SQLite files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::*;
use crate::memory::{Durable, MemoryBroker};
use crate::{Broker, Deliveries, Delivery, WorkQueue};

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vq-journal-{tag}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&d).unwrap();
    d.join("frames-journal.db")
}

fn frame(id: &str) -> Envelope {
    Envelope::new(format!("jpeg of {id}").into_bytes()).with_header("id", id).with_header("meta", "{\"a\":1}")
}

/// Frames are keyed by their `id` header; a result's body is the id it completes.
fn durable(path: &std::path::Path, max_replays: u32) -> (MemoryBroker, usize) {
    let (journal, recovered) = Journal::open(path, Sync::Full, max_replays).unwrap();
    let n = recovered.frames.len();
    let d = Durable {
        journal,
        frame_key: Arc::new(|e: &Envelope| e.header("id").map(String::from)),
        result_key: Arc::new(|e: &Envelope| String::from_utf8(e.body.to_vec()).ok()),
    };
    (MemoryBroker::durable(|_| 100, 5, d, recovered), n)
}

async fn next(d: &mut Deliveries) -> Delivery {
    tokio::time::timeout(Duration::from_secs(2), d.next()).await.expect("a delivery").unwrap()
}

#[tokio::test]
async fn appended_frames_come_back_in_order_and_removed_ones_do_not() {
    let path = temp("order");
    {
        let (j, r) = Journal::open(&path, Sync::Full, 5).unwrap();
        assert!(r.frames.is_empty());
        for id in ["a", "b", "c"] {
            j.append(id.to_string(), &frame(id)).await.unwrap();
        }
        j.remove("b".into());
        assert_eq!(j.rows(), 3, "append returns once committed; the removal is not waited for");
    }
    let (j, r) = Journal::open(&path, Sync::Full, 5).unwrap();
    let keys: Vec<&str> = r.frames.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "c"]);
    assert_eq!(r.frames[1].1, frame("c"), "headers and body as written");
    assert_eq!(j.rows(), 2);
}

#[tokio::test]
async fn a_second_process_cannot_open_a_journal_in_use() {
    let path = temp("lock");
    let (_held, _) = Journal::open(&path, Sync::Normal, 5).unwrap();
    let e = Journal::open(&path, Sync::Normal, 5).err().expect("refused");
    assert!(e.to_string().contains("in use by another visionq process"), "{e}");
}

#[tokio::test]
async fn a_frame_that_never_completes_is_given_up_after_max_replays() {
    let path = temp("poison");
    {
        let (j, _) = Journal::open(&path, Sync::Full, 2).unwrap();
        j.append("p".into(), &frame("p")).await.unwrap();
    }
    for replay in 1..=2 {
        let (_, r) = Journal::open(&path, Sync::Full, 2).unwrap();
        assert_eq!((r.frames.len(), r.given_up), (1, 0), "replay {replay}");
    }
    let (j, r) = Journal::open(&path, Sync::Full, 2).unwrap();
    assert_eq!((r.frames.len(), r.given_up, j.rows()), (0, 1, 0), "third restart: given up, kept as dead");
}

#[tokio::test]
async fn a_frame_leaves_the_journal_only_when_its_result_is_acked() {
    let path = temp("broker");
    {
        let (b, recovered) = durable(&path, 5);
        assert_eq!(recovered, 0);
        for id in ["f1", "f2"] {
            b.publish(WorkQueue::Frames, frame(id)).await.unwrap();
        }
        assert_eq!(b.journaled(), Some(2));
        let mut frames = b.consume(WorkQueue::Frames, 10).await.unwrap();
        let mut results = b.consume(WorkQueue::Results, 10).await.unwrap();
        // Both frames are processed and acked; only f1's result is persisted (acked).
        for _ in 0..2 {
            let d = next(&mut frames).await;
            let id = d.envelope.header("id").unwrap().to_string();
            b.publish(WorkQueue::Results, Envelope::new(id.into_bytes())).await.unwrap();
            d.ack().await.unwrap();
        }
        let r1 = next(&mut results).await;
        assert_eq!(&r1.envelope.body[..], b"f1");
        r1.ack().await.unwrap();
        let _r2 = next(&mut results).await; // f2's result: taken, never acked (the process dies)
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(b.journaled(), Some(1), "f1 completed");
    }
    // "Restart": f2 comes back as a redelivered frame, f1 does not.
    let (b, recovered) = durable(&path, 5);
    assert_eq!(recovered, 1);
    assert_eq!(b.depth(WorkQueue::Frames).await.unwrap(), 1);
    let mut frames = b.consume(WorkQueue::Frames, 10).await.unwrap();
    let d = next(&mut frames).await;
    assert_eq!((d.envelope.header("id"), d.redelivered), (Some("f2"), true));
}

#[tokio::test]
async fn a_frame_without_a_key_is_refused_and_the_limit_is_kept() {
    let path = temp("nokey");
    let (journal, recovered) = Journal::open(&path, Sync::Normal, 5).unwrap();
    let d = Durable {
        journal,
        frame_key: Arc::new(|e: &Envelope| e.header("id").map(String::from)),
        result_key: Arc::new(|_: &Envelope| None),
    };
    let b = MemoryBroker::durable(|_| 1, 5, d, recovered);
    let e = b.publish(WorkQueue::Frames, Envelope::new("x")).await.unwrap_err();
    assert!(matches!(e, QueueError::Journal(_)), "{e}");
    b.publish(WorkQueue::Frames, frame("a")).await.unwrap();
    let e = b.publish(WorkQueue::Frames, frame("b")).await.unwrap_err();
    assert!(matches!(e, QueueError::Full("frames")), "{e}");
    assert_eq!(b.journaled(), Some(1), "a refused frame is never written");
}
