//! Composes roles into one process: the broker (RabbitMQ or in-process), the store,
//! the model, the HTTP side (each role's routes plus [`crate::process_routes`]) and the
//! shutdown order — stop taking frames, let the pipeline drain, then stop the roles.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use visionq_contract::auth::Auth;
use visionq_contract::config::redact_url;
use visionq_contract::topology::Topology;
use visionq_contract::{Config, Metrics};
use visionq_queue::amqp::{AmqpBroker, QueueLimits};
use visionq_queue::{SharedBroker, WorkQueue};

pub use crate::role::Role;
use crate::shutdown::Shutdown;

pub async fn broker(config: &Config) -> anyhow::Result<SharedBroker> {
    let Some(url) = &config.broker.amqp_url else {
        return crate::embedded::broker(config).await;
    };
    let limits = QueueLimits {
        frames_max_length: config.broker.frames_max_length,
        tensors_max_length: config.broker.tensors_max_length,
        results_max_length: config.broker.results_max_length,
        max_deliveries: config.broker.max_deliveries,
    };
    let topology = Topology::new(config.broker.queue_prefix.clone());
    let tls_ca = match &config.broker.amqp_tls_ca_file {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading the broker CA {}", path.display()))?),
        None => None,
    };
    // A pod may start before the broker: keep trying for a while.
    let mut attempt = 0;
    loop {
        match AmqpBroker::connect_tls(url.expose(), tls_ca.clone(), topology.clone(), limits.clone()).await {
            Ok(b) => return Ok(Arc::new(b)),
            Err(e) if attempt < 30 => {
                attempt += 1;
                tracing::warn!(%url, error = %e, "broker not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot connect to {url}")),
        }
    }
}

/// On every SIGHUP, runs `reload` (it reads a file, so on the blocking pool) and logs
/// `SIGHUP: <what> reloaded` with what it reports, or `SIGHUP: <what> not reloaded`
/// with why, what is in use staying. Used for the tokens file (rotation without a
/// restart), the decision rules and the events configuration.
fn reload_on_sighup<E: std::fmt::Display>(what: &'static str, reload: impl Fn() -> Result<String, E> + Send + Sync + 'static) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: changes of the {what} need a restart");
        return;
    };
    let reload = Arc::new(reload);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let r = reload.clone();
            match tokio::task::spawn_blocking(move || r().map_err(|e| e.to_string())).await {
                Ok(Ok(detail)) => tracing::info!(detail, "SIGHUP: {what} reloaded"),
                Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: {what} not reloaded; what is in use stays"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: the reload of the {what} failed"),
            }
        }
    });
}

/// The HTTP side of a process running `roles`: each role's routes (the states of
/// those it runs), the routes every process serves, and the JSON 404 and 405.
/// `serve` listens with exactly this router; the OpenAPI test walks it.
pub fn http_app(
    roles: &BTreeSet<Role>,
    read: Option<ReadSide>,
    ingest: Option<Arc<visionq_ingest::IngestState>>,
    process: Router,
) -> Router {
    let mut app = Router::new();
    if let Some(read) = read {
        app = app
            .merge(visionq_results::routes::router(read.results))
            .merge(visionq_dashboard::router(read.dashboard))
            .merge(visionq_events::api::router(read.sinks));
    }
    if let Some(state) = ingest {
        app = app.merge(visionq_ingest::router(state));
    }
    crate::fallback::install(app.merge(process), roles)
}

/// What the results role serves: the read side's routes, the dashboard (both follow
/// the events of every process on their own subscription) and the sinks' admin routes.
pub struct ReadSide {
    pub results: Arc<visionq_results::api::ResultsState>,
    pub dashboard: Arc<visionq_dashboard::DashboardState>,
    pub sinks: Arc<visionq_events::api::SinksState>,
}

impl ReadSide {
    pub async fn start(
        broker: &SharedBroker,
        parts: visionq_results::api::ResultsParts,
        events: Option<Arc<visionq_events::Events>>,
    ) -> anyhow::Result<ReadSide> {
        let (config, metrics, auth) = (parts.config.clone(), parts.metrics.clone(), parts.auth.clone());
        let sinks = Arc::new(visionq_events::api::SinksState { events, auth: auth.clone(), metrics: metrics.clone() });
        let results = visionq_results::api::ResultsState::start(broker, parts).await?;
        let previews = Arc::new(visionq_dashboard::Previews::new(&config, metrics.clone()));
        previews.clone().follow(broker).await?;
        let dashboard = visionq_dashboard::DashboardState::new(previews, config, metrics, auth);
        Ok(ReadSide { results, dashboard, sinks })
    }
}

/// Binds the HTTP listener: `listen` (`--listen`), else the configured address.
/// Bound before the roles are built, so a port already taken fails at once.
pub async fn bind(config: &Config, listen: Option<SocketAddr>) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = match listen {
        Some(a) => a,
        None => config.http.listen.parse().with_context(|| format!("listen address `{}`", config.http.listen))?,
    };
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}

/// A process built for its roles: the roles running, the HTTP app made, and what
/// its shutdown needs. [`serve`] runs it on a listener until the shutdown signal,
/// then drains it.
pub struct Built {
    config: Arc<Config>,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    metrics: Arc<Metrics>,
    broker: SharedBroker,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    role_stop: crate::shutdown::Trigger,
    stopping: tokio::sync::watch::Sender<bool>,
    open_streams: Option<Arc<visionq_ingest::IngestState>>,
}

impl Built {
    /// `https` with a certificate configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Builds `roles` for a listener bound at `bound` (its address decides whether
/// running without tokens is allowed, and is the `listen` the configuration
/// reports): loads the model, opens the store and the broker, starts the roles.
pub async fn build(config: Config, roles: BTreeSet<Role>, bound: SocketAddr) -> anyhow::Result<Built> {
    let mut config = config;
    // The model loads first: its input size is the preprocessing's unless configured.
    let model = match roles.contains(&Role::Infer) {
        true => Some(load_model(config.clone()).await?),
        false => None,
    };
    if let Some(m) = &model {
        config.adopt_model_input(&m.spec.path, m.input_width, m.input_height)?;
    }
    // The other models stations name (`[station.<id>] model`), each batched on its own.
    let station_models = match &model {
        Some(m) => load_station_models(&config, &m.info.name).await?,
        None => Vec::new(),
    };
    let station_inputs = match roles.contains(&Role::Preprocess) {
        true => station_inputs(&config, model.iter().chain(&station_models))?,
        false => Default::default(),
    };
    let config = Arc::new(config);
    // JPEG decode on the GPU starts before any frame needs it: a node told to use
    // nvJPEG that cannot refuses to start, with the reason.
    let decodes = roles.contains(&Role::Preprocess)
        || (roles.contains(&Role::Infer) && config.batching.infer_input == visionq_contract::config::InferInput::Frames);
    if decodes {
        let options = visionq_preprocess::PreprocessOptions::from_config(&config);
        tokio::task::spawn_blocking(move || visionq_preprocess::start_gpu_decode(&options)).await?.map_err(anyhow::Error::msg)?;
    }
    // Roles with an API check tokens (the infer role has one with a model repository:
    // the model admin routes); the others serve only health and metrics.
    let model_api = roles.contains(&Role::Infer) && config.model.model_repository.is_some();
    let auth = Arc::new(if roles.contains(&Role::Ingest) || roles.contains(&Role::Results) || model_api {
        Auth::for_listener(config.http.tokens_file.as_deref(), bound)?
    } else {
        Auth::off()
    });
    if auth.enabled() {
        let tokens = auth.clone();
        reload_on_sighup("tokens", move || tokens.reload().map(|n| format!("{n} tokens")));
    }
    let metrics = Arc::new(Metrics::new());
    let broker = broker(&config).await?;
    let embedded = config.broker.amqp_url.is_none();
    tracing::info!(roles = ?roles, mode = if embedded { "embedded" } else { "amqp" }, "starting visionq");

    let (role_stop_tx, role_stop) = crate::shutdown::channel();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut results_state, mut ingest_state) = (None, None);
    let model_ready = Arc::new(AtomicBool::new(model.is_some()));
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let mut store = None;
    // Frames ingest publishes, held for the evidence store (see `evidence_keeper`).
    let mut frame_hold = None;

    // The results role checks `?class=` against the model's class names.
    // (Several models: any of their class names.)
    let classes = model.as_ref().map(|m| {
        let mut names = m.names.clone();
        for extra in &station_models {
            names.extend(extra.names.iter().filter(|n| !m.names.contains(n)).cloned());
        }
        names
    });
    let classes = classes.filter(|names| !names.is_empty());
    // A model from the repository can be switched while serving (crate::model_routes).
    let controls: Vec<_> = model
        .iter()
        .chain(&station_models)
        .filter_map(|m| visionq_infer_worker::ModelControl::new(config.clone(), m, metrics.clone(), broker.clone()))
        .collect();
    let models_state =
        Arc::new(crate::model_routes::ModelsState { controls: controls.clone(), serving: model.as_ref().map(|m| m.info.clone()) });

    if roles.contains(&Role::Results) {
        let url = config.database_url();
        let s = visionq_results::open_store(&url).await.with_context(|| format!("opening the store at {}", redact_url(&url)))?;
        tracing::info!(store = redact_url(&url), "store ready");
        let decider = Arc::new(visionq_decide::Decider::load(config.events.rules_file.as_deref(), classes.clone())?);
        if decider.enabled() {
            let rules = decider.clone();
            reload_on_sighup("decision rules", move || rules.reload().map(|()| String::new()));
            // The expectations set over the API before a restart.
            let n = visionq_results::expectations::load(&s, &decider).await.context("loading the stations' expectations")?;
            tracing::info!(expectations = n, "decisions on");
            let (s4, m, stop) = (s.clone(), metrics.clone(), role_stop.clone());
            tasks.spawn(async move {
                visionq_results::review::run(s4, m, stop.wait()).await;
                Ok(())
            });
        }
        let keeper = match decider.enabled() {
            true => evidence_keeper(&config, &roles, &metrics, &decider, &mut frame_hold, &role_stop)?,
            false => None,
        };
        let drift = visionq_results::drift::Drift::start(config.drift.clone(), metrics.clone(), s.clone()).await;
        let parts = visionq_results::api::ResultsParts {
            drift: drift.clone(),
            store: s.clone(),
            metrics: metrics.clone(),
            config: config.clone(),
            auth: auth.clone(),
            classes: classes.clone(),
            decider: decider.clone(),
            keeper: keeper.clone(),
        };
        // Events out: the outbox, and a delivery loop per sink (on shutdown each finishes
        // the attempt in flight; what is left waits in the outbox for the next start).
        let (c, m) = (config.clone(), metrics.clone());
        let events = tokio::task::spawn_blocking(move || visionq_events::Events::open(&c, m))
            .await?
            .with_context(|| format!("setting up the event sinks (outbox {})", config.outbox_path().display()))?;
        if let Some(ev) = &events {
            tracing::info!(outbox = %config.outbox_path().display(), sinks = ev.sinks().len(), "events outbox open");
            let events = ev.clone();
            reload_on_sighup("events configuration", move || {
                events.reload_from_file().map(|r| format!("{} rules, {} lines, {} zones", r.rules, r.lines, r.zones))
            });
            for delivery in ev.loops(|| role_stop.clone().wait()) {
                tasks.spawn(async move {
                    delivery.await;
                    Ok(())
                });
            }
        }
        results_state = Some(ReadSide::start(&broker, parts, events.clone()).await?);
        let (b, m, c, stop) = (broker.clone(), metrics.clone(), config.clone(), role_stop.clone());
        let s2 = s.clone();
        tasks.spawn(async move {
            let outlets = visionq_results::Outlets { keeper, events, drift: Some(drift) };
            visionq_results::run(b, s2, m, c, decider, outlets, stop.wait()).await.map_err(anyhow::Error::from)
        });
        let (s3, c, stop) = (s.clone(), config.clone(), role_stop.clone());
        tasks.spawn(async move {
            visionq_results::retention::run(s3, c, stop.wait()).await;
            Ok(())
        });
        store = Some(s);
    }
    if let Some(model) = model {
        let (b, m, c, stop) = (broker.clone(), metrics.clone(), config.clone(), role_stop.clone());
        // Each model under its control's slot (a plain model file: a slot of its own).
        let served: Vec<_> = std::iter::once(model)
            .chain(station_models)
            .map(|model| {
                let slot = controls.iter().find(|c| c.name() == model.info.name).map(|c| c.slot());
                let slot = slot.unwrap_or_else(|| visionq_infer_worker::Slot::new(model.info.name.clone()));
                (model, slot)
            })
            .collect();
        tasks.spawn(async move { visionq_infer_worker::run_models(b, m, c, served, stop.wait()).await.map_err(anyhow::Error::from) });
        for control in &controls {
            tokio::spawn(control.clone().follow_events(role_stop.clone().wait()));
        }
    }
    let inline = roles.contains(&Role::Infer) && config.batching.infer_input == visionq_contract::config::InferInput::Frames;
    if roles.contains(&Role::Preprocess) && !inline {
        let (b, m, c, stop) = (broker.clone(), metrics.clone(), config.clone(), role_stop.clone());
        let inputs = visionq_preprocess::Inputs::new(&config, station_inputs);
        tasks.spawn(async move { visionq_preprocess::run(b, m, c, inputs, stop.wait()).await.map_err(anyhow::Error::from) });
    }
    if roles.contains(&Role::Ingest) {
        // Ingest publishes through the dashboard's preview tap: sampled frames reach
        // the results role's dashboard as events (visionq-dashboard says why).
        let broker = match &frame_hold {
            Some(hold) => visionq_results::evidence::FrameHold::tap(hold, broker.clone()),
            None => broker.clone(),
        };
        let broker = visionq_dashboard::PreviewTap::wrap(broker, &config, metrics.clone());
        let waiters = visionq_ingest::Waiters::start(&broker).await?;
        let state = Arc::new(visionq_ingest::IngestState {
            broker: broker.clone(),
            metrics: metrics.clone(),
            config: config.clone(),
            waiters,
            auth: auth.clone(),
            limiter: Default::default(),
            stopping,
            streams: Default::default(),
        });
        ingest_state = Some(state);
    }
    spawn_depth_poller(broker.clone(), metrics.clone(), role_stop.clone());

    let health = Arc::new(crate::process_routes::Health {
        broker: broker.clone(),
        store,
        model_ready,
        needs_model: roles.contains(&Role::Infer),
        metrics: metrics.clone(),
    });
    let tls = match (&config.http.tls_cert_file, &config.http.tls_key_file) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| format!("loading the TLS certificate {} and key {}", cert.display(), key.display()))?,
        ),
        _ => None,
    };
    // The configuration as in effect: the address actually listened on (`--listen`,
    // or the port the system chose for `:0`), not the configured default.
    let mut shown = config.redacted();
    shown.http.listen = bound.to_string();
    let document = crate::openapi::json(&crate::openapi::document(&roles));
    let mut process = crate::process_routes::router(health, Arc::new(shown), auth.clone(), document);
    if roles.contains(&Role::Infer) {
        process = process.merge(crate::model_routes::router(models_state, auth.clone()));
    }
    let open_streams = ingest_state.clone();
    let app = http_app(&roles, results_state, ingest_state, process);
    Ok(Built { config, app, tls, metrics, broker, tasks, role_stop: role_stop_tx, stopping: stopping_tx, open_streams })
}

/// Serves `built` on `listener` until `shutdown`, then drains it; returns when
/// everything has stopped.
pub async fn serve(built: Built, listener: tokio::net::TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let bound = listener.local_addr()?;
    tracing::info!(%bound, scheme = built.scheme(), "HTTP listening");
    let limits = crate::listener::Limits::from_config(&built.config);
    let tls = built.tls.as_ref().map(|t| t.get_inner());
    let http = tokio::spawn(crate::listener::serve(listener, built.app.clone(), tls, limits, built.metrics.clone(), shutdown.clone()));
    shutdown.wait().await;
    drain(built, http).await;
    Ok(())
}

/// The stop after the shutdown signal: no new frames; in embedded mode the
/// in-process queues drain first; requests still waiting get `202 queued` and
/// station sockets close; then the roles stop, within the shutdown deadline.
async fn drain(built: Built, http: tokio::task::JoinHandle<()>) {
    let Built { config, broker, mut tasks, role_stop, stopping, open_streams, .. } = built;
    tracing::info!("shutting down: no new frames");
    let deadline = Duration::from_millis(config.shutdown_timeout_ms);
    if config.broker.amqp_url.is_none() {
        // The in-process queues live in this process: let them drain before the roles stop.
        drain_embedded(&broker, deadline).await;
    }
    // Requests still held for a result get `202 queued`: their frames are in the queue;
    // station sockets are closed (1001), and given a moment to say so before the exit.
    stopping.send_replace(true);
    if let Some(ingest) = &open_streams
        && tokio::time::timeout(Duration::from_secs(2), ingest.streams.closed()).await.is_err()
    {
        tracing::warn!("station sockets still open at the exit");
    }
    role_stop.fire();
    let stop_all = async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Err(e)) => tracing::error!(error = %e, "a role failed"),
                Err(e) => tracing::error!(error = %e, "a role panicked"),
                Ok(Ok(())) => {}
            }
        }
    };
    if tokio::time::timeout(deadline, stop_all).await.is_err() {
        tracing::warn!("roles did not stop within the shutdown deadline");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    tracing::info!("stopped");
}

/// The evidence store's keeper for a results role that makes decisions. The frames'
/// bytes reach it two ways (visionq_results::evidence says why): where ingest runs in
/// this process too, `hold` is set for ingest to publish through; with
/// `evidence_forward_min_score`, the infer-workers send them on with the results.
fn evidence_keeper(
    config: &Config,
    roles: &BTreeSet<Role>,
    metrics: &Arc<Metrics>,
    decider: &visionq_decide::Decider,
    hold: &mut Option<Arc<visionq_results::evidence::FrameHold>>,
    stop: &Shutdown,
) -> anyhow::Result<Option<Arc<visionq_results::evidence::Keeper>>> {
    use visionq_results::evidence::{FrameHold, HOLD_MAX_BYTES, Keeper, SENT_ON_MAX_BYTES};
    let ev = &config.evidence;
    if ev.evidence_max_bytes == 0 {
        return Ok(None);
    }
    let forward = ev.evidence_forward_min_score;
    match (roles.contains(&Role::Ingest), forward, decider.lowest_review()) {
        (false, None, _) => tracing::warn!(
            "evidence: frames needing review are not kept by a results role without ingest in its process unless the infer-workers send their images on: set evidence_forward_min_score (docs/OPERATIONS.md)"
        ),
        (_, Some(min), Some(lowest)) if min > lowest => tracing::warn!(
            evidence_forward_min_score = min,
            lowest_review = lowest,
            "evidence: images are sent on only from evidence_forward_min_score, above the rules' lowest review threshold: frames scoring between them are not kept"
        ),
        _ => {}
    }
    // Without ingest the hold has only the recent images sent on with results.
    let hold_max = if roles.contains(&Role::Ingest) { HOLD_MAX_BYTES } else { SENT_ON_MAX_BYTES };
    let max = hold_max.min(usize::try_from(ev.evidence_max_bytes).unwrap_or(usize::MAX));
    let h = FrameHold::new(max, Duration::from_secs(ev.evidence_recent_s));
    let Some(keeper) = Keeper::open(config, metrics.clone(), Some(h.clone()))
        .with_context(|| format!("opening the evidence store {}", config.evidence_dir().display()))?
    else {
        return Ok(None);
    };
    if roles.contains(&Role::Ingest) {
        *hold = Some(h);
    }
    let (k, interval, stop) = (keeper.clone(), Duration::from_secs(config.retention.retention_interval_s.max(1)), stop.clone());
    tokio::spawn(async move { k.run_pruning(interval, stop.wait()).await });
    Ok(Some(keeper))
}

async fn load_model(config: Config) -> anyhow::Result<visionq_infer_worker::Model> {
    let model = tokio::task::spawn_blocking(move || visionq_infer_worker::Model::load_warmed(&config)).await??;
    Ok(model)
}

/// The models of the repository that stations name, other than `serving`: the
/// active version of each, loaded and warmed.
async fn load_station_models(config: &Config, serving: &str) -> anyhow::Result<Vec<visionq_infer_worker::Model>> {
    let Some(root) = config.model.model_repository.clone() else { return Ok(Vec::new()) };
    let names: std::collections::BTreeSet<String> =
        config.station.values().filter_map(|s| s.model.clone()).filter(|n| n != serving).collect();
    let mut models = Vec::new();
    for name in names {
        let (c, repo) = (config.clone(), visionq_models::Repository::new(&root));
        let model = tokio::task::spawn_blocking(move || {
            let version = repo.active(&name).with_context(|| format!("a station names the model `{name}`"))?;
            let spec = visionq_infer_worker::ModelSpec::version(&version);
            visionq_infer_worker::Model::load_warmed_spec(&c, &spec).with_context(|| format!("loading {}", version.label()))
        })
        .await??;
        tracing::info!(model = %model.info.name, version = %model.info.version, "serving a station's model");
        models.push(model);
    }
    Ok(models)
}

/// The model input of each station that names a model (`[station.<id>] model`):
/// from the model loaded here, else from the `input_size` of its active version's
/// `model.toml` (a preprocess process does not load models).
fn station_inputs<'a>(
    config: &Config,
    loaded: impl Iterator<Item = &'a visionq_infer_worker::Model> + Clone,
) -> anyhow::Result<std::collections::HashMap<String, (u32, u32)>> {
    let mut inputs = std::collections::HashMap::new();
    for (station, s) in &config.station {
        let Some(name) = &s.model else { continue };
        let input = match loaded.clone().find(|m| &m.info.name == name) {
            Some(m) => (m.input_width, m.input_height),
            None => {
                let root = config.model.model_repository.as_ref().context("station models need model_repository")?;
                let version = visionq_models::Repository::new(root).active(name)?;
                let [w, h] = version.manifest.input_size.with_context(|| {
                    format!(
                        "[station.{station}] model = \"{name}\": {} has no input_size in its model.toml, which a preprocess process needs to letterbox that station's frames",
                        version.label()
                    )
                })?;
                (w, h)
            }
        };
        inputs.insert(station.clone(), input);
    }
    Ok(inputs)
}

async fn drain_embedded(broker: &SharedBroker, deadline: Duration) {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let mut pending = 0;
        for q in WorkQueue::ALL {
            pending += broker.depth(q).await.unwrap_or(0);
        }
        if pending == 0 {
            return;
        }
        if tokio::time::Instant::now() >= until {
            tracing::warn!(pending, "shutdown deadline passed with frames still in the in-process queues");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_depth_poller(broker: SharedBroker, metrics: Arc<Metrics>, stop: Shutdown) {
    tokio::spawn(async move {
        let stop = stop.wait();
        tokio::pin!(stop);
        loop {
            for q in WorkQueue::ALL {
                if let Ok(n) = broker.depth(q).await {
                    metrics.queue_depth.with_label_values(&[q.label()]).set(n as i64);
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
}

/// Every role in this process, for the commands that drive a pipeline of their own
/// (`bench`, `demo`, `detect`): embedded unless the config names a broker.
pub struct Local {
    pub base: String,
    trigger: crate::shutdown::Trigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Local {
    pub async fn start(mut config: Config, listen: SocketAddr) -> anyhow::Result<Local> {
        // The local commands talk plain HTTP, without tokens, to their own pipeline
        // on loopback.
        (config.http.tls_cert_file, config.http.tls_key_file, config.http.tokens_file) = (None, None, None);
        let (trigger, shutdown) = crate::shutdown::channel();
        let roles = [Role::Ingest, Role::Preprocess, Role::Infer, Role::Results].into();
        let listener = bind(&config, Some(listen)).await?;
        let addr = listener.local_addr()?;
        let built = build(config, roles, addr).await?;
        let task = tokio::spawn(serve(built, listener, shutdown));
        Ok(Local { base: format!("http://{addr}"), trigger, task })
    }

    /// Lets the pipeline drain (every accepted frame persisted), then stops it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.trigger.fire();
        self.task.await?
    }
}
