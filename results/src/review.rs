//! The review backlog gauge: how many stored results were decided `needs_review`
//! (`visionq_review_backlog`) and not reviewed yet (the `reviews` table), among the
//! results the store still holds — retention bounds it to its window. Counted
//! by the results role every [`EVERY`], so an alert on it lags by at most that.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use visionq_contract::Metrics;

use crate::store::SharedStore;

/// How often the backlog is counted (one indexed `COUNT` per round).
pub const EVERY: Duration = Duration::from_secs(5);

/// Counts the backlog into its gauge until `shutdown`; a failed count leaves the
/// last value and is retried next round.
pub async fn run(store: SharedStore, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        match store.review_backlog().await {
            Ok(n) => metrics.review_backlog.set(n as i64),
            Err(e) => tracing::debug!(error = %e, "cannot count the review backlog; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = &mut shutdown => return,
        }
    }
}
