//! `visionq`: one binary, a subcommand per role. Logic lives in the role crates and
//! in this crate's modules; this file only parses the command line.

mod assets;
mod bench;
mod bench_decode;
mod bench_infer;
mod bench_journal;
mod bench_latency;
mod bench_matrix;
mod camera;
mod compose;
mod dataset;
mod demo;
mod detect;
mod embedded;
mod fallback;
mod listener;
mod loadgen;
mod model_cmd;
mod model_routes;
mod openapi;
mod proc_stat;
mod process_routes;
mod role;
mod shutdown;
mod soak;
mod station_agent;
mod token;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use compose::Role;
use visionq_contract::Config;

/// A queue-driven, batching YOLO inference pipeline.
///
/// Configuration: defaults, then `--config FILE` (TOML, keys as in
/// `visionq config`), then `VISIONQ_*` environment variables — for example
/// VISIONQ_AMQP_URL (unset: embedded, in-process queues), VISIONQ_DATABASE_URL
/// (postgres://… or sqlite://PATH; unset: SQLite under the data dir),
/// VISIONQ_MODEL, VISIONQ_STATIONS, VISIONQ_MAX_BATCH_SIZE, VISIONQ_MAX_BATCH_WAIT_MS,
/// VISIONQ_INFER_INPUT (tensors | frames), VISIONQ_EXECUTION_PROVIDER (cpu | cuda).
#[derive(Parser)]
#[command(name = "visionq", version, about, long_about)]
struct Cli {
    /// TOML config file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every role in one process (embedded unless VISIONQ_AMQP_URL is set).
    Run(Listen),
    /// HTTP ingest: POST /v1/stations/{station}/frames.
    Ingest(Listen),
    /// Decode and letterbox frames into tensors.
    Preprocess(Listen),
    /// Batched inference on the model.
    Infer(Listen),
    /// Persist results; serve the history API and the live stream.
    Results(Listen),
    /// Start the embedded pipeline, replay real photos as simulated stations, print a summary.
    Demo(demo::DemoArgs),
    /// Batch job: every image under PATHs through the pipeline, results as JSON Lines.
    Detect(detect::DetectArgs),
    /// Load generator: stations posting real photos, printing throughput and latency.
    Bench(bench::BenchArgs),
    /// Inference benchmark: raw ONNX Runtime ceiling, the infer-worker per max batch, end to end.
    BenchInfer(bench_infer::InferBenchArgs),
    /// End-to-end matrix (preprocess concurrency × tensors/inline × max batch), one
    /// `visionq run` child per row: results/s, latency, pass under load, CPU, GPU.
    BenchMatrix(bench_matrix::MatrixArgs),
    /// The CPU path's latency targets in one run: isolated decode, pass and ceiling,
    /// then idle, paced (9 x 1.67/s) and saturated latency and throughput beside them.
    BenchLatency(bench_latency::LatencyBenchArgs),
    /// The embedded frames journal alone: frames/s it commits on this disk, durable and process.
    BenchJournal(bench_journal::JournalBenchArgs),
    /// Preprocessing alone: libjpeg-turbo against nvJPEG (pixels compared), frames/s and CPU per thread count.
    BenchDecode(bench_decode::DecodeBenchArgs),
    /// Model and runtime set-up.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Print the effective configuration (secrets redacted) as TOML.
    Config,
    /// Print the OpenAPI document of the whole HTTP API (docs/openapi.json), or with
    /// --result-schema the JSON Schema of a result (docs/result.schema.json).
    Openapi {
        /// The result's JSON Schema instead of the API's document.
        #[arg(long)]
        result_schema: bool,
    },
    /// Edge agent beside a camera: capture, spool on disk, stream to the station's WebSocket.
    Station(station_agent::StationArgs),
    /// API tokens for stations, operators, reviewers and admins.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Datasets from the frames kept for review (the evidence store).
    #[command(subcommand)]
    Dataset(DatasetCommand),
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Write the kept frames as a labelled dataset (YOLO or COCO), reviews applied.
    Export(dataset::ExportArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token: prints it once, and the entry (its hash) for the tokens file.
    New(token::NewArgs),
}

#[derive(clap::Args)]
struct Listen {
    /// HTTP address (health, metrics and the role's API).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Fetch the default model (converted from Darknet), ONNX Runtime and the photos.
    Fetch,
    /// Load a model and print what visionq reads from it: the configured one, or
    /// NAME[:VERSION] of the model repository (its active version without one).
    Info {
        #[arg(value_name = "NAME[:VERSION]")]
        model: Option<String>,
    },
    /// The model repository's models, their versions and the active ones.
    List,
    /// Copy an ONNX file into the model repository as a new version (loaded first:
    /// a file that does not load is refused). The first version of a name is active.
    Add(model_cmd::AddArgs),
    /// Make a version the active one (loaded and warmed up first; refused if it
    /// does not). With VISIONQ_AMQP_URL set the running infer workers switch to it.
    Activate { name: String, version: String },
    /// Go back to the version active before the active one.
    Rollback { name: String },
}

fn roles(command: &Command) -> Option<BTreeSet<Role>> {
    Some(match command {
        Command::Run(_) => [Role::Ingest, Role::Preprocess, Role::Infer, Role::Results].into(),
        Command::Ingest(_) => [Role::Ingest].into(),
        Command::Preprocess(_) => [Role::Preprocess].into(),
        Command::Infer(_) => [Role::Infer].into(),
        Command::Results(_) => [Role::Results].into(),
        _ => return None,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    // The commands a person runs and reads (a progress bar, a summary) log only
    // warnings by default; the roles log what they do.
    let default_level = match cli.command {
        Command::Detect(_) | Command::Demo(_) | Command::Dataset(_) | Command::Station(_) => "warn",
        _ => "info",
    };
    visionq_contract::telemetry::init_logging(config.log_format, default_level);
    for name in &config.unknown_env {
        tracing::warn!(variable = name, "{name} names no configuration key and is ignored (`visionq config` lists the keys)");
    }
    if let Some(roles) = roles(&cli.command) {
        let (Command::Run(l) | Command::Ingest(l) | Command::Preprocess(l) | Command::Infer(l) | Command::Results(l)) = &cli.command
        else {
            unreachable!("roles() only answers for role commands")
        };
        // Every role in one process: fetch the default model and runtime as detect does.
        if matches!(cli.command, Command::Run(_)) {
            assets::ensure_runtime(&config)?;
        }
        let (trigger, shutdown) = shutdown::channel();
        shutdown::on_signals(trigger);
        let listener = compose::bind(&config, l.listen).await?;
        let bound = listener.local_addr()?;
        let built = compose::build(config, roles, bound).await?;
        // Printed once the roles are up: scripts and tests wait for this line.
        println!("visionq listening on {}://{bound}", built.scheme());
        return compose::serve(built, listener, shutdown).await;
    }
    match cli.command {
        Command::Bench(args) => bench::run(config, args).await,
        Command::Demo(args) => demo::run(config, args).await,
        Command::BenchInfer(args) => bench_infer::run(config, args).await,
        Command::BenchMatrix(args) => bench_matrix::run(config, args).await,
        Command::BenchLatency(args) => bench_latency::run(config, args).await,
        Command::BenchJournal(args) => bench_journal::run(config, args).await,
        Command::BenchDecode(args) => bench_decode::run(config, args).await,
        Command::Station(args) => station_agent::run(config, args).await,
        Command::Detect(args) => {
            if !detect::run(config, args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Model(ModelCommand::Fetch) => assets::fetch(&config),
        Command::Model(ModelCommand::Info { model }) => model_cmd::info(config, model).await,
        Command::Model(ModelCommand::List) => model_cmd::list(&config),
        Command::Model(ModelCommand::Add(args)) => model_cmd::add(&config, args).await,
        Command::Model(ModelCommand::Activate { name, version }) => model_cmd::activate(&config, &name, &version).await,
        Command::Model(ModelCommand::Rollback { name }) => model_cmd::rollback(&config, &name).await,
        Command::Config => {
            let shown = config.redacted();
            // Every key: the unset ones (no default) as comments, since TOML has no null.
            for key in shown.unset_keys() {
                println!("# {key} = (unset)");
            }
            print!("{}", toml::to_string(&shown)?);
            Ok(())
        }
        Command::Token(TokenCommand::New(args)) => token::new(args),
        Command::Dataset(DatasetCommand::Export(args)) => dataset::run(config, args).await,
        Command::Openapi { result_schema } => {
            match result_schema {
                false => openapi::print(),
                true => openapi::print_result_schema(),
            }
            Ok(())
        }
        _ => unreachable!("role commands are handled above"),
    }
}
