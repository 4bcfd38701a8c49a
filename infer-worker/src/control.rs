//! A running worker's model lifecycle (issue 16): activating a version of the model
//! repository loads and warms it beside the one serving (one copy per inference
//! stream), records it as active in the repository, switches every stream to it
//! between two batches, and tells the other workers on the events exchange, which
//! follow by loading it themselves. A version that fails to load or to warm up, or
//! that cannot take the batches the worker makes, is refused and the serving one
//! stays. One activation at a time. The repository's state is the truth: a worker
//! also compares it with what it serves every few seconds, so an announcement
//! missed (a broker reconnect) or a change made without a broker is still followed.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use visionq_contract::topology::{EVENT_KIND_HEADER, MODEL_EVENT, MODEL_EVENTS, model_routing_key};
use visionq_contract::{Config, Metrics, ModelInfo};
use visionq_models::{CandidateState, RepoError, Repository, Version};
use visionq_queue::{Envelope, SharedBroker};

use crate::error::InferError;
use crate::model::{Model, ModelSpec};
use crate::serving::{CandidateReport, Ended, Plan, Slot};

/// Why an activation or rollback did not happen; the serving model stays.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error(transparent)]
    Repository(#[from] RepoError),
    /// The version does not load or does not run.
    #[error("{label} was refused, {served} keeps serving: {error}")]
    Refused { label: String, served: String, error: InferError },
    /// It loads, but cannot take what this worker feeds it.
    #[error("{label} was refused, {served} keeps serving: {reason}")]
    Incompatible { label: String, served: String, reason: String },
    #[error("model `{asked}` is not served by this process (it serves `{served}`); `visionq model activate` records it")]
    NotServed { asked: String, served: String },
    #[error("the worker is not running: {0}")]
    Unavailable(String),
    /// A candidate must be another version than the active one.
    #[error("{0} is the active version; a candidate is another version")]
    CandidateIsActive(String),
    #[error("model `{0}` has no candidate version running")]
    NoCandidate(String),
}

impl ActivateError {
    /// The machine-readable reason (the `code` of an `{error, code}` refusal).
    pub fn code(&self) -> &'static str {
        match self {
            ActivateError::Repository(e) => e.code(),
            ActivateError::Refused { .. } => "model_refused",
            ActivateError::Incompatible { .. } => "model_incompatible",
            ActivateError::NotServed { .. } => "not_served",
            ActivateError::Unavailable(_) => "unavailable",
            ActivateError::CandidateIsActive(_) => "candidate_is_active",
            ActivateError::NoCandidate(_) => "no_candidate",
        }
    }
}

/// What an activation or rollback did.
#[derive(Debug, Clone, PartialEq)]
pub struct Activated {
    pub name: String,
    /// Now serving.
    pub version: String,
    /// Serving before.
    pub previous: String,
    /// Whether the serving model changed (activating the serving version does not).
    pub switched: bool,
}

pub struct ModelControl {
    config: Arc<Config>,
    repo: Repository,
    name: String,
    slot: Arc<Slot>,
    serving: Mutex<ModelInfo>,
    /// What a new version must take: the input size the tensors are made at, and the
    /// batch size the batcher gathers up to.
    input: (u32, u32),
    batch_limit: usize,
    busy: tokio::sync::Mutex<()>,
    /// The active version this worker failed to follow (not tried again until it changes).
    refused: Mutex<Option<String>>,
    /// The recorded candidate (`version@started_at`) this worker failed to start.
    refused_candidate: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
    broker: SharedBroker,
}

/// How often a worker compares the repository's active version with its own.
pub const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl ModelControl {
    /// The control of a worker about to serve `model` (a version of the configured
    /// repository); `None` when the configuration names no repository.
    pub fn new(config: Arc<Config>, model: &Model, metrics: Arc<Metrics>, broker: SharedBroker) -> Option<Arc<ModelControl>> {
        let root = config.model.model_repository.clone()?;
        let batch_limit = crate::role::batch_limit(model, &config);
        Some(Arc::new(ModelControl {
            repo: Repository::new(root),
            name: model.info.name.clone(),
            slot: Slot::new(model.info.name.clone()),
            serving: Mutex::new(model.info.clone()),
            input: (model.input_width, model.input_height),
            batch_limit,
            busy: tokio::sync::Mutex::new(()),
            refused: Mutex::new(None),
            refused_candidate: Mutex::new(None),
            config,
            metrics,
            broker,
        }))
    }

    /// What the worker serves this name under (see [`crate::run_models`]): switched
    /// models are taken from its lanes, a candidate runs beside the active version.
    pub fn slot(&self) -> Arc<Slot> {
        self.slot.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The candidate running now, and the last one that ended.
    pub fn candidate(&self) -> (Option<CandidateReport>, Option<Ended>) {
        (self.slot.candidate().map(|c| self.slot.report(&c)), self.slot.ended())
    }

    /// Starts `version` as a candidate beside the active version (replacing a
    /// candidate running): loaded, warmed and checked like an activation, on an
    /// engine of its own. Nothing is recorded in the repository; a restart ends it.
    pub async fn start_candidate(&self, name: &str, version: &str, plan: Plan) -> Result<CandidateReport, ActivateError> {
        self.check_served(name)?;
        let _one = self.busy.lock().await;
        let report = self.run_candidate(version, plan.clone()).await?;
        let (repo, n, state) = (self.repo.clone(), self.name.clone(), state_of(version, &plan));
        if let Err(e) = blocking(move || repo.record_candidate(&n, Some(state))).await {
            self.slot.end_candidate(Some(version), "cancelled", format!("could not be recorded: {e}"), &self.metrics);
            return Err(e);
        }
        self.broadcast(&self.serving().version).await;
        Ok(report)
    }

    /// Loads, warms, checks and starts `version` as this worker's candidate.
    async fn run_candidate(&self, version: &str, plan: Plan) -> Result<CandidateReport, ActivateError> {
        if self.serving().version == version {
            return Err(ActivateError::CandidateIsActive(format!("{}:{version}", self.name)));
        }
        let (repo, n, v) = (self.repo.clone(), self.name.clone(), version.to_string());
        let target = blocking(move || repo.version(&n, &v)).await?;
        let model = self.load(&target, 1).await?.pop().expect("one copy");
        let c = self
            .slot
            .start_candidate(model, plan, &self.metrics)
            .ok_or_else(|| ActivateError::Unavailable("the worker is not running".into()))?;
        tracing::info!(model = %target.label(), plan = ?c.plan, "candidate started");
        Ok(self.slot.report(&c))
    }

    /// Ends the running candidate (`cancelled`); its frames in flight finish on it.
    pub async fn end_candidate(&self, name: &str) -> Result<Ended, ActivateError> {
        self.check_served(name)?;
        let _one = self.busy.lock().await;
        let ended = self
            .slot
            .end_candidate(None, "cancelled", "ended over the API".into(), &self.metrics)
            .ok_or_else(|| ActivateError::NoCandidate(self.name.clone()))?;
        let (repo, n) = (self.repo.clone(), self.name.clone());
        blocking(move || repo.record_candidate(&n, None)).await?;
        self.broadcast(&self.serving().version).await;
        Ok(ended)
    }

    /// An activation or rollback to `version` ends the candidate: promoted when it
    /// is that version, replaced otherwise.
    fn settle_candidate(&self, version: &str, why: &str) {
        let Some(c) = self.slot.candidate() else { return };
        let (reason, detail) = match c.info.version == version {
            true => ("promoted", format!("activated by {why}")),
            false => (if why == "rollback" { "rolled_back" } else { "replaced" }, format!("{why} to {version}")),
        };
        self.slot.end_candidate(Some(&c.info.version), reason, detail, &self.metrics);
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The name:version serving now.
    pub fn serving(&self) -> ModelInfo {
        self.serving.lock().expect("serving lock").clone()
    }

    /// Activates `version` of `name` (see the module docs).
    pub async fn activate(&self, name: &str, version: &str) -> Result<Activated, ActivateError> {
        self.check_served(name)?;
        let _one = self.busy.lock().await;
        let (repo, n, v) = (self.repo.clone(), self.name.clone(), version.to_string());
        let target = blocking(move || repo.version(&n, &v)).await?;
        let previous = self.serving().version;
        let models = match previous == version {
            true => None,
            false => Some(self.load(&target, self.slot.switch.streams()).await?),
        };
        let (repo, n, v) = (self.repo.clone(), self.name.clone(), version.to_string());
        let before = blocking(move || repo.record_activation(&n, &v)).await?;
        if let Some(models) = models {
            self.switch_to(models, &target, before).await?;
            self.broadcast(version).await;
        }
        self.settle_candidate(version, "activation");
        Ok(Activated { name: self.name.clone(), version: version.into(), switched: previous != version, previous })
    }

    /// Goes back to the version active before the active one.
    pub async fn rollback(&self, name: &str) -> Result<Activated, ActivateError> {
        self.check_served(name)?;
        let _one = self.busy.lock().await;
        let (repo, n) = (self.repo.clone(), self.name.clone());
        let target = blocking(move || repo.rollback_target(&n)).await?;
        let previous = self.serving().version;
        let models = match previous == target.version {
            true => None,
            false => Some(self.load(&target, self.slot.switch.streams()).await?),
        };
        let (repo, n, v) = (self.repo.clone(), self.name.clone(), target.version.clone());
        let before = blocking(move || repo.record_rollback(&n, &v)).await?;
        if let Some(models) = models {
            self.switch_to(models, &target, before).await?;
            self.broadcast(&target.version).await;
        }
        self.settle_candidate(&target.version, "rollback");
        Ok(Activated { name: self.name.clone(), switched: previous != target.version, version: target.version, previous })
    }

    /// Serves the repository's active version if it is not the serving one: another
    /// worker (or `visionq model activate`) changed it. Loads, checks and switches
    /// without recording anything. A version refused here is not tried again until
    /// the active version changes. Returns whether it switched.
    pub async fn follow(&self) -> Result<bool, ActivateError> {
        let _one = self.busy.lock().await;
        let switched = self.follow_active().await?;
        if let Err(e) = self.follow_candidate().await {
            tracing::error!(error = %e, model = self.name, "cannot follow the recorded candidate");
        }
        Ok(switched)
    }

    async fn follow_active(&self) -> Result<bool, ActivateError> {
        let (repo, n) = (self.repo.clone(), self.name.clone());
        let target = match blocking(move || repo.active(&n)).await {
            Ok(v) => v,
            // No active version recorded (yet): keep serving.
            Err(ActivateError::Repository(RepoError::NoActive(_))) => return Ok(false),
            Err(e) => return Err(e),
        };
        if self.serving().version == target.version {
            return Ok(false);
        }
        {
            let mut refused = self.refused.lock().expect("refused lock");
            if refused.as_deref() == Some(target.version.as_str()) {
                return Ok(false);
            }
            *refused = None;
        }
        let loaded = self.load(&target, self.slot.switch.streams()).await;
        let models = loaded.inspect_err(|_| *self.refused.lock().expect("refused lock") = Some(target.version.clone()))?;
        self.swap(models, &target).await?;
        self.settle_candidate(&target.version, "activation");
        Ok(true)
    }

    /// Runs the candidate the repository records, as every worker serving the name
    /// does: starts it (or the one replacing it), ends one no longer recorded, and
    /// withdraws the record of one that ended here after it was recorded (a line it
    /// crossed here, or a `DELETE`), so the other workers end theirs too.
    async fn follow_candidate(&self) -> Result<(), ActivateError> {
        let repo = self.repo.clone();
        let state = blocking(move || repo.state()).await?;
        let recorded = state.models.get(&self.name).and_then(|t| t.candidate.clone());
        let local = self.slot.candidate();
        let Some(r) = recorded else {
            if let Some(c) = local {
                let detail = "no longer recorded (ended by another worker, or by an activation)".to_string();
                self.slot.end_candidate(Some(&c.info.version), "ended_elsewhere", detail, &self.metrics);
            }
            return Ok(());
        };
        let plan = plan_of(&r);
        if local.as_ref().is_some_and(|c| c.info.version == r.version && c.plan == plan) {
            return Ok(());
        }
        let recorded_at = chrono::DateTime::parse_from_rfc3339(&r.started_at).map(|t| t.with_timezone(&chrono::Utc)).ok();
        if local.is_none()
            && let Some(e) = self.slot.ended()
            && e.report.info.version == r.version
            && recorded_at.is_some_and(|at| e.ended_at >= at)
        {
            let (repo, n) = (self.repo.clone(), self.name.clone());
            blocking(move || repo.record_candidate(&n, None)).await?;
            self.broadcast(&self.serving().version).await;
            tracing::info!(model = self.name, version = r.version, reason = e.reason, "candidate ended here; its record withdrawn");
            return Ok(());
        }
        let key = format!("{}@{}", r.version, r.started_at);
        if self.refused_candidate.lock().expect("refused lock").as_deref() == Some(key.as_str()) {
            return Ok(());
        }
        match self.run_candidate(&r.version, plan).await {
            Ok(_) => {
                tracing::info!(model = self.name, version = r.version, mode = r.mode, "followed a recorded candidate");
                Ok(())
            }
            Err(e) => {
                // Not tried again unless it changes; a worker not running yet tries again.
                if !matches!(e, ActivateError::Unavailable(_)) {
                    *self.refused_candidate.lock().expect("refused lock") = Some(key);
                }
                Err(e)
            }
        }
    }

    /// Follows the activations of other workers until `shutdown`: at once when one is
    /// announced on the events exchange, and otherwise within [`FOLLOW_INTERVAL`] from
    /// the repository's state (an announcement missed while the broker was away, or
    /// a change made by `visionq model activate` without a broker). A version that
    /// cannot be served here is logged and the serving one stays.
    pub async fn follow_events(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut events = match self.broker.subscribe_events(&[MODEL_EVENTS]).await {
            Ok(e) => e.boxed(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for model activations; following the repository's state only");
                futures_util::stream::pending::<Envelope>().boxed()
            }
        };
        let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
                // A candidate ended here (a line crossed): the others are told at once.
                _ = self.slot.candidate_ended() => {}
                e = events.next() => match e {
                    Some(e) if self.announces_mine(&e) => {}
                    Some(_) => continue,
                    None => events = futures_util::stream::pending::<Envelope>().boxed(),
                },
            }
            match self.follow().await {
                Ok(true) => tracing::info!(model = self.name, version = self.serving().version, "followed an activation"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot follow the repository's active version; the serving model stays"),
            }
        }
    }

    /// Whether `e` announces an activation of the model served here.
    fn announces_mine(&self, e: &Envelope) -> bool {
        if e.header(EVENT_KIND_HEADER) != Some(MODEL_EVENT) {
            return false;
        }
        serde_json::from_slice::<serde_json::Value>(&e.body).is_ok_and(|v| v["name"].as_str() == Some(self.name.as_str()))
    }

    fn check_served(&self, name: &str) -> Result<(), ActivateError> {
        if name != self.name {
            return Err(ActivateError::NotServed { asked: name.into(), served: self.name.clone() });
        }
        Ok(())
    }

    /// Loads and warms `copies` of `target` (one per inference stream), and checks
    /// they fit.
    async fn load(&self, target: &Version, copies: usize) -> Result<Vec<Model>, ActivateError> {
        let served = label(&self.serving());
        let spec = ModelSpec::version(target);
        let streams = copies.max(1);
        let mut models = Vec::with_capacity(streams);
        for _ in 0..streams {
            let (c, s) = (self.config.clone(), spec.clone());
            let loaded = tokio::task::spawn_blocking(move || Model::load_warmed_spec(&c, &s))
                .await
                .map_err(|e| ActivateError::Unavailable(format!("loading panicked: {e}")))?;
            let model = loaded.map_err(|error| ActivateError::Refused { label: target.label(), served: served.clone(), error })?;
            models.push(model);
        }
        let m = &models[0];
        let reason = if (m.input_width, m.input_height) != self.input {
            Some(format!(
                "it takes {}x{} input, the worker's tensors are {}x{} (another input size needs a restart with input_size set)",
                m.input_width, m.input_height, self.input.0, self.input.1
            ))
        } else if m.max_batch(self.batch_limit) < self.batch_limit {
            Some(format!(
                "it takes batches of {}, the worker makes batches of up to {}",
                m.max_batch(self.batch_limit),
                self.batch_limit
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ActivateError::Incompatible { label: target.label(), served, reason }),
            None => Ok(models),
        }
    }

    /// Switches to `models`; if that fails, the repository's state is put back as it was.
    async fn switch_to(
        &self,
        models: Vec<Model>,
        target: &Version,
        before: Option<visionq_models::Track>,
    ) -> Result<(), ActivateError> {
        if let Err(e) = self.swap(models, target).await {
            let (repo, n) = (self.repo.clone(), self.name.clone());
            if let Err(restore) = blocking(move || repo.restore(&n, before)).await {
                tracing::error!(error = %restore, "the switch failed and the repository's state could not be put back");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn swap(&self, models: Vec<Model>, target: &Version) -> Result<(), ActivateError> {
        let old = self.slot.switch.hand_over(models).await.map_err(|e| ActivateError::Unavailable(e.to_string()))?;
        let before = std::mem::replace(
            &mut *self.serving.lock().expect("serving lock"),
            ModelInfo { name: target.name.clone(), version: target.version.clone() },
        );
        let _ = self.metrics.model_info.remove_label_values(&[&before.name, &before.version]);
        self.metrics.model_info.with_label_values(&[&target.name, &target.version]).set(1.0);
        tracing::info!(from = %label(&before), to = %target.label(), "model switched");
        // The old sessions are freed off the async threads.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    async fn broadcast(&self, version: &str) {
        let body = serde_json::json!({ "name": self.name, "version": version }).to_string();
        let event = Envelope::new(body).with_header(EVENT_KIND_HEADER, MODEL_EVENT);
        if let Err(e) = self.broker.publish_event(&model_routing_key(&self.name), event).await {
            tracing::warn!(error = %e, "cannot announce the activation; other workers serve it after their restart");
        }
    }
}

/// A recorded candidate's plan.
fn plan_of(c: &CandidateState) -> Plan {
    match c.mode.as_str() {
        "shadow" => Plan::Shadow { sample: c.sample },
        _ => Plan::Canary { share: c.share, stations: c.stations.clone() },
    }
}

/// How a candidate is recorded.
fn state_of(version: &str, plan: &Plan) -> CandidateState {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut c = CandidateState { version: version.into(), started_at, ..Default::default() };
    match plan {
        Plan::Canary { share, stations } => {
            (c.mode, c.share, c.stations) = ("canary".into(), *share, stations.clone());
        }
        Plan::Shadow { sample } => (c.mode, c.sample) = ("shadow".into(), *sample),
    }
    c
}

fn label(info: &ModelInfo) -> String {
    format!("{}:{}", info.name, info.version)
}

/// Runs a repository call (file I/O, fsync) off the async threads.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> Result<R, RepoError> + Send + 'static) -> Result<R, ActivateError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ActivateError::from),
        Err(e) => Err(ActivateError::Unavailable(format!("repository call panicked: {e}"))),
    }
}
