//! `visionq model list | add | activate | rollback | info`: the model repository
//! from the command line (issue 16). A version is loaded (and, to be activated,
//! warmed up) on this machine before it is added or activated, so a file that does
//! not load is refused here rather than by the workers. Activation records the
//! version in the repository, which running infer workers on it compare with what
//! they serve every few seconds; with a broker configured (`VISIONQ_AMQP_URL`) it is
//! also announced, and they switch to it at once.

use std::path::{Path, PathBuf};

use anyhow::Context;
use visionq_contract::Config;
use visionq_contract::topology::{EVENT_KIND_HEADER, MODEL_EVENT, model_routing_key};
use visionq_infer_worker::{Model, ModelSpec};
use visionq_models::{Manifest, Repository};
use visionq_queue::Envelope;

#[derive(clap::Args)]
pub struct AddArgs {
    /// The ONNX file.
    pub file: PathBuf,
    /// Model name (1-64 of A-Z a-z 0-9 _ -).
    #[arg(long)]
    pub name: String,
    /// Version (1-64 of A-Z a-z 0-9 . _ -); a version is never replaced.
    #[arg(long)]
    pub version: String,
    /// A model.toml to put beside it (class names, layout, thresholds); by default
    /// one is written with what is read from the file.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

fn repository(config: &Config) -> anyhow::Result<Repository> {
    let root =
        config.model.model_repository.as_ref().context("no model repository: set model_repository (VISIONQ_MODEL_REPOSITORY)")?;
    Ok(Repository::new(root))
}

pub fn list(config: &Config) -> anyhow::Result<()> {
    let repo = repository(config)?;
    let entries = repo.list()?;
    if entries.is_empty() {
        println!("no models in {} (`visionq model add FILE --name NAME --version VERSION`)", repo.root().display());
    }
    for e in entries {
        let active = e.track.as_ref().map(|t| t.active.as_str());
        println!("{}", e.name);
        for v in &e.versions {
            let mark = if Some(v.as_str()) == active { "* " } else { "  " };
            println!("  {mark}{v}");
        }
        match &e.track {
            Some(t) => println!(
                "  active {} since {}; rollback goes to {}",
                t.active,
                t.activated_at,
                t.previous.last().map_or("(none)", |s| s)
            ),
            None => println!("  no active version"),
        }
    }
    Ok(())
}

async fn load(config: &Config, spec: ModelSpec, warm: bool) -> anyhow::Result<Model> {
    let c = config.clone();
    let path = spec.path.clone();
    let model =
        tokio::task::spawn_blocking(move || if warm { Model::load_warmed_spec(&c, &spec) } else { Model::load_spec(&c, &spec) })
            .await?
            .with_context(|| format!("{} does not load", path.display()))?;
    Ok(model)
}

pub async fn add(config: &Config, args: AddArgs) -> anyhow::Result<()> {
    let repo = repository(config)?;
    let manifest = match &args.manifest {
        Some(path) => Manifest::parse(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?, path)?,
        None => Manifest::default(),
    };
    // Loaded first: a file that does not load never enters the repository.
    let probe = ModelSpec { path: args.file.clone(), info: None, manifest: manifest.clone() };
    let model = load(config, probe, false).await?;
    let manifest = Manifest {
        input_size: Some([model.input_width, model.input_height]),
        input_format: Some(model.input_format.name().to_string()),
        layout: Some(model.layout.name().to_string()),
        ..manifest
    };
    let v = repo.add(&args.file, &args.name, &args.version, &manifest)?;
    println!("added {} at {}", v.label(), v.dir.display());
    if !repo.state()?.models.contains_key(&args.name) {
        repo.record_activation(&args.name, &args.version)?;
        println!("{} is the first version of {}: it is active", args.version, args.name);
    }
    Ok(())
}

pub async fn activate(config: &Config, name: &str, version: &str) -> anyhow::Result<()> {
    let repo = repository(config)?;
    let v = repo.version(name, version)?;
    load(config, ModelSpec::version(&v), true).await?;
    repo.record_activation(name, version)?;
    println!("{} is active", v.label());
    announce(config, name, version).await
}

pub async fn rollback(config: &Config, name: &str) -> anyhow::Result<()> {
    let repo = repository(config)?;
    let v = repo.rollback_target(name)?;
    load(config, ModelSpec::version(&v), true).await?;
    repo.record_rollback(name, &v.version)?;
    println!("rolled back: {} is active", v.label());
    announce(config, name, &v.version).await
}

/// Tells running workers (RabbitMQ mode); says how they learn of it otherwise.
async fn announce(config: &Config, name: &str, version: &str) -> anyhow::Result<()> {
    if config.broker.amqp_url.is_none() {
        println!("running workers on this repository switch to it within a few seconds");
        return Ok(());
    }
    let broker = crate::compose::broker(config).await?;
    let body = serde_json::json!({ "name": name, "version": version }).to_string();
    broker.publish_event(&model_routing_key(name), Envelope::new(body).with_header(EVENT_KIND_HEADER, MODEL_EVENT)).await?;
    println!("announced to the running infer workers");
    Ok(())
}

/// What visionq reads from a model: the configured one, or `NAME[:VERSION]` of the
/// repository (the active version when no version is given).
pub async fn info(config: Config, which: Option<String>) -> anyhow::Result<()> {
    let spec = match which {
        None => ModelSpec::from_config(&config)?,
        Some(which) => {
            let repo = repository(&config)?;
            let v = match which.split_once(':') {
                Some((name, version)) => repo.version(name, version)?,
                None => repo.active(&which)?,
            };
            ModelSpec::version(&v)
        }
    };
    let model = load(&config, spec, false).await?;
    print_info(&model, &model.spec.path);
    Ok(())
}

fn print_info(model: &Model, path: &Path) {
    println!("name      {}", model.info.name);
    println!("version   {}", model.info.version);
    println!("file      {}", path.display());
    println!("input     {}x{} ({:?} batch, {:?})", model.input_width, model.input_height, model.batch, model.input_format);
    println!("layout    {}", model.layout.name());
    println!("classes   {} ({})", model.names.len(), model.names.iter().take(8).cloned().collect::<Vec<_>>().join(", "));
}
