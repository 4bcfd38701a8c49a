//! Events out (issue 18): this crate owns what leaves visionq as an event. A result
//! that passes a `[[sink]]`'s filter becomes an [`event::Event`] with a stable id;
//! events wait in a durable [`outbox`] (a SQLite file beside the results) until
//! their sink took them, so a receiver outage or a restart delays an event and never
//! loses it; one [`deliver`] loop per sink sends them — [`webhook`] POSTs signed
//! with HMAC-SHA256, [`mqtt`] publishes with QoS 1 and a retained last state —
//! retrying with backoff and jitter, and dead-lettering after `max_attempts`; the
//! admins' routes ([`api`]) list and replay the dead ones.
//!
//! Events are put in the outbox by the results consumer, after a batch is stored and
//! before it is acked, never sent from a request handler. This crate imports the
//! contract and the HTTP access check and error (`visionq-http`); it must not import
//! a role crate (results imports it) or the dashboard.

pub mod api;
pub mod deliver;
pub mod event;
pub mod mqtt;
pub mod outbox;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Notify;
use visionq_contract::sink::SinkConfig;
use visionq_contract::{Config, FrameResult, Metrics};

use crate::event::Event;
use crate::outbox::{NewEvent, Outbox, OutboxError};

/// The configured sinks and their outbox.
pub struct Events {
    outbox: Outbox,
    sinks: Vec<SinkConfig>,
    /// Each webhook sink's client, taken by its delivery loop.
    webhooks: std::sync::Mutex<HashMap<String, webhook::Webhook>>,
    wake: HashMap<String, Arc<Notify>>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// The sinks of `config` with the outbox opened; None when there are no sinks.
    /// Refused when a webhook's TLS set-up cannot be made (a bad `ca_file`).
    /// Blocking (opens a file).
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<Option<Arc<Events>>, OutboxError> {
        if config.sink.is_empty() {
            return Ok(None);
        }
        let mut webhooks = HashMap::new();
        for sink in config.sink.iter().filter(|s| s.kind == visionq_contract::sink::SinkKind::Webhook) {
            let client = webhook::Webhook::new(sink).map_err(|e| OutboxError::Sink(format!("sink `{}`: {e}", sink.name)))?;
            webhooks.insert(sink.name.clone(), client);
        }
        let outbox = Outbox::open(&config.outbox_path())?;
        let wake = config.sink.iter().map(|s| (s.name.clone(), Arc::new(Notify::new()))).collect();
        let webhooks = std::sync::Mutex::new(webhooks);
        Ok(Some(Arc::new(Events { outbox, sinks: config.sink.clone(), webhooks, wake, metrics })))
    }

    pub fn sinks(&self) -> &[SinkConfig] {
        &self.sinks
    }

    pub fn sink(&self, name: &str) -> Option<&SinkConfig> {
        self.sinks.iter().find(|s| s.name == name)
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The events `results` make, one per result and sink whose filter it passes.
    pub fn events_of(&self, results: &[FrameResult]) -> Vec<NewEvent> {
        let mut out = Vec::new();
        for r in results {
            for sink in self.sinks.iter().filter(|s| s.accepts(r)) {
                let event = Event::of_result(&sink.name, r);
                out.push(NewEvent {
                    event_id: event.event_id.clone(),
                    sink: sink.name.clone(),
                    station: r.station.clone(),
                    kind: event.kind.as_str().to_string(),
                    body: serde_json::to_string(&event).expect("an event serialises"),
                });
            }
        }
        out
    }

    /// Puts the events of `results` in the outbox (durably: this returns after the
    /// commit) and wakes the sinks that got some. Returns how many were new.
    pub async fn put(&self, results: &[FrameResult]) -> Result<usize, OutboxError> {
        let events = self.events_of(results);
        let sinks: std::collections::HashSet<String> = events.iter().map(|e| e.sink.clone()).collect();
        let new = self.outbox.put(events).await?;
        for s in sinks {
            if let Some(w) = self.wake.get(&s) {
                w.notify_one();
            }
        }
        Ok(new)
    }

    /// Wakes `sink`'s loop (after a replay).
    pub fn wake(&self, sink: &str) {
        if let Some(w) = self.wake.get(sink) {
            w.notify_one();
        }
    }

    /// Delivery loops, one per sink, each stopping on its `stop()` future.
    pub fn loops<F: Future<Output = ()> + Send + 'static>(
        self: &Arc<Self>,
        stop: impl Fn() -> F,
    ) -> Vec<impl Future<Output = ()> + Send + 'static> {
        self.sinks
            .iter()
            .map(|sink| {
                let wake = self.wake[&sink.name].clone();
                let webhook = self.webhooks.lock().unwrap_or_else(|p| p.into_inner()).remove(&sink.name);
                deliver::run(sink.clone(), webhook, self.outbox.clone(), self.metrics.clone(), wake, stop())
            })
            .collect()
    }
}
