//! The results consumer: batches of results → one transaction → their events in the
//! outbox (with sinks configured) → ack → broadcast. While the database or the
//! outbox cannot be written it keeps its batch unacked and retries with backoff, so
//! an acked result always has its events in the outbox.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use visionq_contract::instrument::{Emit, InFlight, NotAResult, Stage};
use visionq_contract::message::elapsed_ms;
use visionq_contract::topology::event_routing_key;
use visionq_contract::{Config, FrameResult, Metrics};
use visionq_decide::Decider;
use visionq_queue::{Delivery, Envelope, Fate, QueueError, SharedBroker, WorkQueue};

use visionq_events::Events;

use crate::drift::Drift;
use crate::evidence::Keeper;
use crate::store::SharedStore;

async fn persist(
    store: &SharedStore,
    metrics: &Metrics,
    batch: Vec<(Delivery, FrameResult)>,
    broker: &SharedBroker,
    events: Option<&Events>,
    stop: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    let (deliveries, mut results): (Vec<Delivery>, Vec<FrameResult>) = batch.into_iter().unzip();
    // The tracker and the alert rules take each result once, whatever retries its
    // write takes; the track ids they set are stored and broadcast with it.
    let seen = events.map(|ev| ev.observe(&mut results)).unwrap_or_default();
    let mut backoff = Duration::from_millis(100);
    let mut write_s = 0.0;
    loop {
        let t0 = Instant::now();
        let written = match store.write_batch(&results).await {
            Ok(new) => {
                write_s = t0.elapsed().as_secs_f64();
                metrics.observe_stage(Stage::DbWrite, write_s);
                tracing::debug!(batch = results.len(), new, "results persisted");
                // Every result's events, new or redelivered: the outbox keeps one row per event id.
                match events {
                    Some(ev) => ev.put(&results, &seen).await.map(|_| ()).map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match written {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, batch = results.len(), retry_in_ms = backoff.as_millis() as u64, "cannot persist results or their events; holding them");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut *stop => {
                        for d in deliveries {
                            d.settle(Fate::Requeue).await;
                        }
                        return false;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let now = Utc::now();
    for (d, mut r) in deliveries.into_iter().zip(results) {
        d.settle(Fate::Ack).await;
        // The broadcast copy also tells how long the write took (the stored one cannot).
        r.timings_ms.insert("db_write".into(), write_s * 1e3);
        metrics.results_persisted_total.with_label_values(&[r.status.as_str()]).inc();
        metrics.observe_stage(Stage::EndToEnd, elapsed_ms(r.received_at, now) / 1e3);
        let body = serde_json::to_vec(&r).expect("result serialises");
        if let Err(e) = broker.publish_event(&event_routing_key(&r.station), Envelope::new(body)).await {
            tracing::warn!(error = %e, "cannot broadcast a result (it is stored)");
        }
    }
    true
}

/// Where a result goes besides the store and the broadcast (each optional).
#[derive(Default, Clone)]
pub struct Outlets {
    /// Keeps the frames whose decision asks for review as evidence (after their
    /// results are persisted).
    pub keeper: Option<Arc<Keeper>>,
    /// Puts each result that passes a sink's filter in the outbox as an event,
    /// before the result is acked.
    pub events: Option<Arc<Events>>,
    /// Follows each model version's scores at each station against its baseline.
    pub drift: Option<Arc<Drift>>,
}

/// Consumes results until `shutdown`, finishing the batch in hand. Each result
/// gets its decision under the station's rules here, where every result of every
/// path passes before anyone sees it; then it goes to the store and its `outlets`.
pub async fn run(
    broker: SharedBroker,
    store: SharedStore,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    decider: Arc<Decider>,
    outlets: Outlets,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    let Outlets { keeper, events, drift } = outlets;
    let max = config.database.results_batch_size;
    let wait = Duration::from_millis(config.database.results_batch_wait_ms);
    let mut deliveries = broker.consume(WorkQueue::Results, (max * 2).min(u16::MAX as usize) as u16).await?;
    tracing::info!(batch = max, "results consuming");
    let shutdown = futures_util::FutureExt::shared(Box::pin(shutdown));
    loop {
        let first = tokio::select! {
            _ = shutdown.clone() => break,
            d = deliveries.next() => match d { Some(d) => d, None => break },
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut taken = vec![first];
        while taken.len() < max {
            match tokio::time::timeout_at(deadline, deliveries.next()).await {
                Ok(Some(d)) => taken.push(d),
                _ => break,
            }
        }
        let mut batch = Vec::with_capacity(taken.len());
        let mut to_keep = Vec::new();
        for d in taken {
            // The result, and the frame's image where an infer-worker sent it on after it.
            let parsed = visionq_stage::split_original(&d.envelope)
                .map_err(|e| e.to_string())
                .and_then(|(body, sent)| serde_json::from_slice::<FrameResult>(&body).map(|r| (r, sent)).map_err(|e| e.to_string()));
            match parsed {
                Ok((mut r, sent)) => {
                    let now = Utc::now();
                    r.timings_ms.insert("queue_wait_results".into(), elapsed_ms(r.completed_at, now));
                    r.decision = decider.decide(&r);
                    // What the station's rules do not show is not returned, pushed or stored.
                    decider.retain_shown(&mut r);
                    if let Some(d) = &r.decision {
                        metrics.decisions_total.with_label_values(&[d.outcome.as_str()]).inc();
                    }
                    if let Some(drift) = &drift {
                        drift.observe(&r);
                    }
                    let in_band = decider.in_review_band(&r);
                    if let Some(image) = keeper.as_ref().and_then(|k| k.claim(&r, in_band, sent)) {
                        to_keep.push((r.clone(), image));
                    }
                    batch.push((d, r));
                }
                Err(e) => {
                    let error = format!("not a result: {e}");
                    NotAResult { error: &error }.emit(&metrics);
                    d.settle(Fate::DeadLetter(error)).await;
                }
            }
        }
        let held = InFlight::new(&metrics, Stage::Results, batch.len());
        // On shutdown, a batch still waiting for the database is handed back.
        let mut stop = shutdown.clone();
        let ok = persist(&store, &metrics, batch, &broker, events.as_deref(), &mut stop).await;
        drop(held);
        if !ok {
            break;
        }
        // Off the consumer's path: writing images must not slow the results down.
        if let (Some(k), false) = (&keeper, to_keep.is_empty()) {
            let k = k.clone();
            tokio::spawn(async move {
                for (r, image) in to_keep {
                    k.keep(r, image).await;
                }
            });
        }
    }
    Ok(())
}
