//! Events out (issue 18): this crate owns what leaves visionq as an event. A result
//! that passes a `[[sink]]`'s filter becomes an [`event::Event`] with a stable id;
//! events wait in a durable [`outbox`] (a SQLite file beside the results) until
//! their sink took them, so a receiver outage or a restart delays an event and never
//! loses it; one [`deliver`] loop per sink sends them — [`webhook`] POSTs signed
//! with HMAC-SHA256, [`mqtt`] publishes with QoS 1 and a retained last state —
//! retrying with backoff and jitter, and dead-lettering after `max_attempts`; the
//! admins' routes ([`api`]) list and replay the dead ones. The alert rules
//! ([`alerts`]) watch the same results (and the clock, for silent stations): their
//! alerts go to the sinks that take `alert` events, and `GET /v1/alerts` lists them
//! for the dashboard.
//!
//! Events are put in the outbox by the results consumer, after a batch is stored and
//! before it is acked, never sent from a request handler. This crate imports the
//! contract and the HTTP access check and error (`visionq-http`); it must not import
//! a role crate (results imports it) or the dashboard.

pub mod alerts;
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

use crate::alerts::{Alert, AlertEngine};
use crate::event::Event;
use crate::outbox::{NewEvent, Outbox, OutboxError};

/// The configured sinks and their outbox, and the alert rules.
pub struct Events {
    outbox: Outbox,
    alerts: Option<AlertEngine>,
    sinks: Vec<SinkConfig>,
    /// Each sink's client, taken by its delivery loop.
    transports: std::sync::Mutex<HashMap<String, deliver::Transport>>,
    wake: HashMap<String, Arc<Notify>>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// The sinks of `config` with the outbox opened, and its alert rules; None when
    /// there are neither. Refused when a sink's TLS set-up cannot be made (a bad
    /// `ca_file`). Blocking (opens a file).
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<Option<Arc<Events>>, OutboxError> {
        if config.sink.is_empty() && config.rule.is_empty() {
            return Ok(None);
        }
        let alerts = (!config.rule.is_empty()).then(|| AlertEngine::new(config.rule.clone(), &config.stations, chrono::Utc::now()));
        let mut transports = HashMap::new();
        for sink in &config.sink {
            let client = deliver::Transport::of(sink).map_err(|e| OutboxError::Sink(format!("sink `{}`: {e}", sink.name)))?;
            transports.insert(sink.name.clone(), client);
        }
        let outbox = Outbox::open(&config.outbox_path())?;
        let wake = config.sink.iter().map(|s| (s.name.clone(), Arc::new(Notify::new()))).collect();
        let transports = std::sync::Mutex::new(transports);
        Ok(Some(Arc::new(Events { outbox, alerts, sinks: config.sink.clone(), transports, wake, metrics })))
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

    /// The alert rules at work, if any are configured.
    pub fn alerts(&self) -> Option<&AlertEngine> {
        self.alerts.as_ref()
    }

    /// Counts `results` towards the alert rules, once each: the alerts that fired or
    /// resolved (to [`Self::put`] with them).
    pub fn observe(&self, results: &[FrameResult]) -> Vec<Alert> {
        let alerts = self.alerts.as_ref().map(|e| e.observe(results)).unwrap_or_default();
        self.count(&alerts);
        alerts
    }

    fn count(&self, alerts: &[Alert]) {
        for a in alerts {
            self.metrics.alerts_total.with_label_values(&[a.severity.as_str(), a.state.as_str()]).inc();
        }
    }

    /// The events `results` and `alerts` make, one per result or alert and sink that takes it.
    pub fn events_of(&self, results: &[FrameResult], alerts: &[Alert]) -> Vec<NewEvent> {
        let mut out = Vec::new();
        let mut push = |sink: &SinkConfig, event: Event| {
            out.push(NewEvent {
                event_id: event.event_id.clone(),
                sink: sink.name.clone(),
                station: event.station.clone(),
                kind: event.kind.as_str().to_string(),
                body: serde_json::to_string(&event).expect("an event serialises"),
            })
        };
        for r in results {
            for sink in self.sinks.iter().filter(|s| s.accepts(r)) {
                push(sink, Event::of_result(&sink.name, r));
            }
        }
        for a in alerts {
            for sink in self.sinks.iter().filter(|s| s.accepts_alert(&a.station)) {
                push(sink, Event::of_alert(&sink.name, a));
            }
        }
        out
    }

    /// Puts the events of `results` and `alerts` in the outbox (durably: this returns
    /// after the commit) and wakes the sinks that got some. Returns how many were new.
    pub async fn put(&self, results: &[FrameResult], alerts: &[Alert]) -> Result<usize, OutboxError> {
        let events = self.events_of(results, alerts);
        if events.is_empty() {
            return Ok(0);
        }
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

    /// Delivery loops, one per sink, and the clock of the silent-station rules, each
    /// stopping on its `stop()` future.
    pub fn loops<F: Future<Output = ()> + Send + 'static>(
        self: &Arc<Self>,
        stop: impl Fn() -> F,
    ) -> Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>> {
        let mut loops: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = self
            .sinks
            .iter()
            .filter_map(|sink| {
                let wake = self.wake[&sink.name].clone();
                // Taken once: a second call makes no second loop for a sink.
                let transport = self.transports.lock().unwrap_or_else(|p| p.into_inner()).remove(&sink.name)?;
                Some(Box::pin(deliver::run(sink.clone(), transport, self.outbox.clone(), self.metrics.clone(), wake, stop()))
                    as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>)
            })
            .collect();
        if self.alerts.as_ref().is_some_and(AlertEngine::needs_clock) {
            loops.push(Box::pin(self.clone().watch_clock(stop())));
        }
        loops
    }

    /// Every second: the silent-station and queue rules (a queue's depth as this
    /// process's `visionq_queue_depth` last read it), their alerts put in the outbox.
    async fn watch_clock(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let Some(engine) = &self.alerts else { return };
            let depth = |queue: &str| Some(self.metrics.queue_depth.with_label_values(&[queue]).get());
            let alerts = engine.tick(chrono::Utc::now(), depth);
            if alerts.is_empty() {
                continue;
            }
            self.count(&alerts);
            // The outbox is a local file: a failure is retried a few times, then logged.
            for attempt in 1..=5u64 {
                match self.put(&[], &alerts).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "cannot put alerts in the outbox");
                        tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
        }
    }
}
