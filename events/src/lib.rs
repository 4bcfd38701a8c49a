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
//! for the dashboard. On the stations a `[[line]]` or `[[zone]]` is drawn on,
//! [`tracking`] follows the objects, puts track ids on their detections, and makes
//! crossings and zone visits: `track` events for the sinks that take them, and the
//! counts of `GET /v1/counts`.
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
pub mod tracking;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;
use visionq_contract::sink::SinkConfig;
use visionq_contract::track::TrackEvent;
use visionq_contract::{Config, FrameResult, Metrics};

use crate::alerts::{Alert, AlertEngine};
use crate::event::Event;
use crate::outbox::{NewEvent, Outbox, OutboxError};
use crate::tracking::Tracking;

/// What the alert rules and the tracker made of some results (or of the clock).
#[derive(Debug, Default)]
pub struct Seen {
    pub alerts: Vec<Alert>,
    pub tracks: Vec<TrackEvent>,
}

impl Seen {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.tracks.is_empty()
    }
}

/// What a reload of the events configuration changed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// The config file read.
    pub config_file: String,
    /// Alert rules in use now.
    pub rules: usize,
    /// Lines and zones in use now.
    pub lines: usize,
    pub zones: usize,
    /// Whether the rules changed (their windows and firing alerts start afresh).
    pub rules_changed: bool,
    /// Whether the lines, zones or tracking settings changed (tracks start afresh).
    pub tracking_changed: bool,
}

/// Why a reload did not take (what is in use stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The sinks differ: their delivery loops and clients are made at start.
    #[error("the [[sink]] tables changed: sinks take a restart; nothing was reloaded")]
    SinksChanged,
    #[error("visionq was started without a config file (--config): there is nothing to read again")]
    NoConfigFile,
    #[error("the config file does not load: {0}; nothing was reloaded")]
    Config(String),
}

/// The configured sinks and their outbox, the alert rules and the tracker.
pub struct Events {
    outbox: Outbox,
    /// The rules and the tracker in use; a reload swaps them.
    alerts: RwLock<Option<Arc<AlertEngine>>>,
    tracking: RwLock<Option<Arc<Tracking>>>,
    config_file: Option<std::path::PathBuf>,
    sinks: Vec<SinkConfig>,
    /// Each sink's client, taken by its delivery loop.
    transports: std::sync::Mutex<HashMap<String, deliver::Transport>>,
    wake: HashMap<String, Arc<Notify>>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// The sinks of `config` with the outbox opened, its alert rules and its
    /// tracker; None when there are none of them. Refused when a sink's TLS set-up
    /// cannot be made (a bad `ca_file`). Blocking (opens a file).
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<Option<Arc<Events>>, OutboxError> {
        let tracking = Tracking::new(config);
        if config.events.sink.is_empty() && config.events.rule.is_empty() && tracking.is_none() {
            return Ok(None);
        }
        let alerts = Self::engine(config);
        let mut transports = HashMap::new();
        for sink in &config.events.sink {
            let client = deliver::Transport::of(sink).map_err(|e| OutboxError::Sink(format!("sink `{}`: {e}", sink.name)))?;
            transports.insert(sink.name.clone(), client);
        }
        let outbox = Outbox::open(&config.outbox_path())?;
        let wake = config.events.sink.iter().map(|s| (s.name.clone(), Arc::new(Notify::new()))).collect();
        let transports = std::sync::Mutex::new(transports);
        Ok(Some(Arc::new(Events {
            outbox,
            alerts: RwLock::new(alerts),
            tracking: RwLock::new(tracking.map(Arc::new)),
            config_file: config.config_file.clone(),
            sinks: config.events.sink.clone(),
            transports,
            wake,
            metrics,
        })))
    }

    fn engine(config: &Config) -> Option<Arc<AlertEngine>> {
        (!config.events.rule.is_empty())
            .then(|| Arc::new(AlertEngine::new(config.events.rule.clone(), &config.stations, chrono::Utc::now())))
    }

    /// Reads the config file again (the environment too, as at start) and takes its
    /// rules, lines and zones ([`Self::reload`]). Blocking (reads a file).
    pub fn reload_from_file(&self) -> Result<Reloaded, ReloadError> {
        let path = self.config_file.as_deref().ok_or(ReloadError::NoConfigFile)?;
        let config = Config::load(Some(path)).map_err(|e| ReloadError::Config(e.to_string()))?;
        self.reload(&config)
    }

    /// Takes the alert rules, lines, zones and tracking settings of `config` (read
    /// again from the config file by SIGHUP or `POST /v1/events/reload`). What did
    /// not change keeps its state; changed rules start their windows afresh, changed
    /// lines or zones their tracks. Sinks are made at start: a config whose sinks
    /// differ is refused whole, and everything in use stays.
    pub fn reload(&self, config: &Config) -> Result<Reloaded, ReloadError> {
        if config.events.sink != self.sinks {
            return Err(ReloadError::SinksChanged);
        }
        // What is in use is compared with what the file asks for: the engine keeps
        // its rules, the tracker its lines, zones and settings.
        let mut alerts = self.alerts.write().unwrap_or_else(|p| p.into_inner());
        let rules_changed = alerts.as_ref().map_or(!config.events.rule.is_empty(), |e| e.rules() != config.events.rule.as_slice());
        if rules_changed {
            *alerts = Self::engine(config);
        }
        let mut tracking = self.tracking.write().unwrap_or_else(|p| p.into_inner());
        let tracking_changed = match tracking.as_ref() {
            Some(t) => !t.same_as(config),
            None => !config.events.line.is_empty() || !config.events.zone.is_empty(),
        };
        if tracking_changed {
            *tracking = Tracking::new(config).map(Arc::new);
        }
        Ok(Reloaded {
            config_file: config.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            rules: config.events.rule.len(),
            lines: config.events.line.len(),
            zones: config.events.zone.len(),
            rules_changed,
            tracking_changed,
        })
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
    pub fn alerts(&self) -> Option<Arc<AlertEngine>> {
        self.alerts.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The tracker, where lines or zones are drawn.
    pub fn tracking(&self) -> Option<Arc<Tracking>> {
        self.tracking.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Tracks the objects of `results` (setting their detections' track ids) and
    /// counts them towards the alert rules, once each: the alerts that fired or
    /// resolved and the crossings and zone visits (to [`Self::put`] with them).
    pub fn observe(&self, results: &mut [FrameResult]) -> Seen {
        let tracks = self.tracking().map(|t| t.observe(results)).unwrap_or_default();
        let alerts = self.alerts().map(|e| e.observe(results)).unwrap_or_default();
        let seen = Seen { alerts, tracks };
        self.count(&seen);
        seen
    }

    fn count(&self, seen: &Seen) {
        for a in &seen.alerts {
            self.metrics.alerts_total.with_label_values(&[a.severity.as_str(), a.state.as_str()]).inc();
        }
        for t in &seen.tracks {
            self.metrics.track_events_total.with_label_values(&[t.name.as_str(), t.kind.as_str()]).inc();
        }
    }

    /// The events `results` and `seen` make, one per result, alert or track event
    /// and sink that takes it.
    pub fn events_of(&self, results: &[FrameResult], seen: &Seen) -> Vec<NewEvent> {
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
        for a in &seen.alerts {
            for sink in self.sinks.iter().filter(|s| s.accepts_alert(&a.station)) {
                push(sink, Event::of_alert(&sink.name, a));
            }
        }
        for t in &seen.tracks {
            for sink in self.sinks.iter().filter(|s| s.accepts_track(&t.station)) {
                push(sink, Event::of_track(&sink.name, t));
            }
        }
        out
    }

    /// Puts the events of `results` and `seen` in the outbox, with the crossings and
    /// zone visits for the counts (durably: this returns after the commit), and wakes
    /// the sinks that got some. Returns how many events were new.
    pub async fn put(&self, results: &[FrameResult], seen: &Seen) -> Result<usize, OutboxError> {
        let events = self.events_of(results, seen);
        if events.is_empty() && seen.tracks.is_empty() {
            return Ok(0);
        }
        let sinks: std::collections::HashSet<String> = events.iter().map(|e| e.sink.clone()).collect();
        let new = self.outbox.put(events, seen.tracks.clone()).await?;
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
        // Always: a reload may bring a rule or a zone that needs it.
        loops.push(Box::pin(self.clone().watch_clock(stop())));
        loops
    }

    /// Every second: the silent-station and queue rules (a queue's depth as this
    /// process's `visionq_queue_depth` last read it), and the tracks lost for the gap
    /// (their zone exits), put in the outbox.
    async fn watch_clock(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let now = chrono::Utc::now();
            let depth = |queue: &str| Some(self.metrics.queue_depth.with_label_values(&[queue]).get());
            let alerts = self.alerts().filter(|e| e.needs_clock()).map(|e| e.tick(now, depth)).unwrap_or_default();
            let tracks = self.tracking().map(|t| t.expire(now)).unwrap_or_default();
            let seen = Seen { alerts, tracks };
            if seen.is_empty() {
                continue;
            }
            self.count(&seen);
            // The outbox is a local file: a failure is retried a few times, then logged.
            for attempt in 1..=5u64 {
                match self.put(&[], &seen).await {
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
