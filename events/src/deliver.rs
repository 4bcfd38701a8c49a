//! A sink's delivery loop: takes the events due from the outbox (at most
//! `concurrency` at once), makes one attempt at each, and records how each went —
//! delivered, retried after an exponential backoff with jitter, or dead after
//! `max_attempts`. It sleeps until an event is put (the outbox wakes it), the next
//! retry is due, or a second passed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use visionq_contract::Metrics;
use visionq_contract::sink::{SinkConfig, SinkKind};

use crate::mqtt::Mqtt;
use crate::outbox::{Attempt, Outbox, Pending, now_ms};
use crate::webhook::Webhook;

/// Delivered rows are kept this long (a late twin of a delivered event is not sent again).
const KEEP_DELIVERED_MS: i64 = 24 * 3600 * 1000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// The longest a loop sleeps without looking at the outbox.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How a sink's events leave: its client, made at start (where a bad TLS set-up
/// stops the start, naming the sink).
pub(crate) enum Transport {
    Webhook(Webhook),
    Mqtt(Box<Mqtt>),
}

impl Transport {
    /// The client of `sink`, or why it cannot be made.
    pub(crate) fn of(sink: &SinkConfig) -> Result<Transport, String> {
        Ok(match sink.kind {
            SinkKind::Webhook => Transport::Webhook(Webhook::new(sink)?),
            SinkKind::Mqtt => Transport::Mqtt(Box::new(Mqtt::new(sink)?)),
        })
    }

    async fn send(&mut self, events: &[Pending]) -> Vec<Result<(), String>> {
        match self {
            Transport::Webhook(w) => futures_util::future::join_all(events.iter().map(|e| w.send(e))).await,
            Transport::Mqtt(m) => m.send(events).await,
        }
    }
}

/// The wait before attempt `attempt + 1` after `attempt` failed ones: `backoff_ms`
/// doubled per earlier failure, at most `max_backoff_ms`, then a random share of
/// it taken off (at most half), so retries of many events spread out.
pub fn backoff_ms(sink: &SinkConfig, attempt: u32) -> u64 {
    let doubled = sink.backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
    let ceiling = doubled.min(sink.max_backoff_ms);
    let random = getrandom::u64().unwrap_or(0);
    ceiling - random % (ceiling / 2 + 1)
}

/// Delivers `sink`'s events through `transport` until `stop`; an attempt in flight
/// is finished first.
pub(crate) async fn run(
    sink: SinkConfig,
    mut transport: Transport,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    stop: impl Future<Output = ()>,
) {
    let name = sink.name.as_str();
    let count = |outcome: &str, n: usize| metrics.sink_events_total.with_label_values(&[name, outcome]).inc_by(n as u64);
    let mut stop = std::pin::pin!(stop);
    let mut pruned_at = tokio::time::Instant::now();
    tracing::info!(sink = name, kind = sink.kind.as_str(), "sink delivering");
    loop {
        if let Ok((pending, dead)) = outbox.counts(name).await {
            metrics.sink_outbox_depth.with_label_values(&[name]).set(pending as i64);
            metrics.sink_dead_letters.with_label_values(&[name]).set(dead as i64);
        }
        let now = now_ms();
        let due = match outbox.due(name, now, sink.concurrency).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(sink = name, error = %e, "cannot read the outbox");
                Vec::new()
            }
        };
        if due.is_empty() {
            if pruned_at.elapsed() > PRUNE_EVERY {
                pruned_at = tokio::time::Instant::now();
                if let Err(e) = outbox.prune_delivered(now - KEEP_DELIVERED_MS).await {
                    tracing::warn!(error = %e, "cannot prune the outbox");
                }
            }
            let next = outbox.next_due(name).await.ok().flatten();
            let sleep = next.map_or(IDLE_POLL, |t| Duration::from_millis((t - now).clamp(1, 1_000) as u64));
            tokio::select! {
                _ = &mut stop => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            continue;
        }
        let outcomes = transport.send(&due).await;
        let mut records = Vec::with_capacity(due.len());
        let (mut delivered, mut failed, mut dead) = (0, 0, 0);
        for (event, outcome) in due.iter().zip(outcomes) {
            let attempt = event.attempts + 1;
            let record = match outcome {
                Ok(()) => {
                    delivered += 1;
                    Attempt::Delivered
                }
                Err(error) if attempt >= sink.max_attempts => {
                    failed += 1;
                    dead += 1;
                    tracing::warn!(sink = name, event_id = %event.event_id, attempt, %error, "event dead-lettered: out of attempts");
                    Attempt::Dead { error }
                }
                Err(error) => {
                    failed += 1;
                    let wait = backoff_ms(&sink, attempt);
                    tracing::info!(sink = name, event_id = %event.event_id, attempt, %error, retry_in_ms = wait, "event not delivered; retrying");
                    Attempt::Retry { next_at_ms: now_ms() + wait as i64, error }
                }
            };
            records.push((event.event_id.clone(), record));
        }
        // Until this is recorded the events stay due: a crash here sends them again.
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = outbox.record(records.clone()).await {
            tracing::warn!(sink = name, error = %e, "cannot record deliveries in the outbox; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        count("delivered", delivered);
        count("failed", failed);
        count("dead_lettered", dead);
        let stopping = futures_util::FutureExt::now_or_never(&mut stop).is_some();
        if stopping {
            break;
        }
    }
    tracing::info!(sink = name, "sink stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bounds_with_jitter() {
        let sink: SinkConfig =
            toml::from_str("name = \"s\"\nkind = \"webhook\"\nurl = \"http://h/\"\nbackoff_ms = 100\nmax_backoff_ms = 1000").unwrap();
        for _ in 0..100 {
            assert!((50..=100).contains(&backoff_ms(&sink, 1)));
            assert!((200..=400).contains(&backoff_ms(&sink, 3)));
            assert!((500..=1000).contains(&backoff_ms(&sink, 20)));
        }
    }
}
