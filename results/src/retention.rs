//! Retention: frames (and their detections) received longer ago than
//! `retention_days` are deleted in chunks of `retention_chunk` frames, one
//! transaction per chunk, so no delete holds locks or grows the log for long.
//! Runs every `retention_interval_s` in the results role; `retention_days = 0`
//! keeps everything.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use visionq_contract::Config;

use crate::store::{SharedStore, StoreError};

/// Deletes every frame received before `cutoff`, `chunk` frames per transaction.
/// Returns how many frames it deleted and in how many chunks.
pub async fn prune_before(store: &SharedStore, cutoff: DateTime<Utc>, chunk: usize) -> Result<(usize, usize), StoreError> {
    let chunk = chunk.max(1);
    let (mut total, mut chunks) = (0, 0);
    loop {
        let n = store.prune(cutoff, chunk).await?;
        total += n;
        if n == 0 {
            break;
        }
        chunks += 1;
        if n < chunk {
            break;
        }
        // Let the writers in between chunks.
        tokio::task::yield_now().await;
    }
    Ok((total, chunks))
}

/// Prunes periodically until `shutdown` (does nothing when retention is off).
pub async fn run(store: SharedStore, config: std::sync::Arc<Config>, shutdown: impl Future<Output = ()>) {
    if config.retention.retention_days == 0 {
        return;
    }
    let every = Duration::from_secs(config.retention.retention_interval_s.max(1));
    let max_age = chrono::Duration::days(config.retention.retention_days as i64);
    tracing::info!(
        days = config.retention.retention_days,
        chunk = config.retention.retention_chunk,
        every_s = every.as_secs(),
        "retention on"
    );
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let cutoff = Utc::now() - max_age;
        match prune_before(&store, cutoff, config.retention.retention_chunk).await {
            Ok((0, _)) => {}
            Ok((n, chunks)) => tracing::info!(frames = n, chunks, %cutoff, "retention deleted old frames"),
            Err(e) => tracing::warn!(error = %e, "retention failed; retrying next round"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut shutdown => return,
        }
    }
}
