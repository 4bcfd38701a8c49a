//! Dynamic batching: items in, batches out, sized by the load rather than a timer.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::runner::Batch;
use crate::serving::Item;

/// Gathers items into batches. A batch goes as soon as it is full, or the device is
/// idle (waiting for more frames then only adds latency), or `wait` after its first
/// item; while a pass runs it gathers until that pass ends, so batches grow with the
/// load instead of with a timer. `running` counts the passes running on the
/// `streams` inference streams.
pub(crate) async fn batcher(
    mut items: mpsc::Receiver<Item>,
    batches: mpsc::Sender<Batch>,
    max: usize,
    wait: Duration,
    streams: usize,
    mut running: watch::Receiver<usize>,
) {
    while let Some(first) = items.recv().await {
        let deadline = tokio::time::Instant::now() + wait;
        let mut batch = vec![first];
        loop {
            while batch.len() < max {
                match items.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            if batch.len() >= max || *running.borrow_and_update() < streams {
                break;
            }
            tokio::select! {
                biased;
                item = items.recv() => match item {
                    Some(item) => batch.push(item),
                    None => break,
                },
                // The pass ended (or the runner went away): send what there is.
                _ = running.wait_for(|n| *n < streams) => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if batches.send(Batch { items: batch, started_at: Instant::now() }).await.is_err() {
            return;
        }
    }
}
