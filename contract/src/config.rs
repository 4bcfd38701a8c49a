//! Configuration every role reads: defaults in code, overridden by a TOML file
//! (`--config FILE`), overridden by `VISIONQ_`-prefixed environment variables
//! (`VISIONQ_MAX_BATCH_SIZE=4` sets `max_batch_size`). Units are in the names.
//!
//! The keys are flat; the fields are grouped into sections by the role that reads
//! them (`config.batching.max_batch_size`), each flattened into [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

pub const ENV_PREFIX: &str = "VISIONQ_";

/// The directory keys: a relative one is resolved when the configuration is loaded
/// (against the config file's folder when the file set it, else the working
/// directory), so every part of the process, `visionq config` and `/v1/config` see
/// the same absolute path.
const DIR_KEYS: [&str; 4] = ["cache_dir", "data_dir", "evidence_dir", "model_repository"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    /// NVIDIA GPUs through ONNX Runtime's CUDA provider (the `cuda` build).
    Cuda,
}

impl ExecutionProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per event, for log shippers.
    Json,
}

/// Where inference input comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InferInput {
    /// Preprocessed tensors from separate preprocess workers.
    Tensors,
    /// Raw frames, preprocessed on the worker's own CPU threads ("inline").
    Frames,
}

/// The batch sizes a forward pass is run at. A GPU session re-plans its kernels
/// (cuDNN) whenever its input shape changes, which costs far more than a pass, so on
/// CUDA a pass never changes a session's shape: each bucket size gets its own session
/// and a short batch is padded up to the next bucket.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchShapes {
    /// `buckets` on CUDA, `exact` on the CPU.
    Auto,
    /// A pass is as large as its batch, on one session (the CPU: padding costs compute).
    Exact,
    /// Powers of two up to `max_batch_size` (and the max itself), one session each.
    Buckets,
    /// Every pass padded to `max_batch_size`: one session, one shape.
    Max,
}

/// How the embedded mode keeps an accepted frame until its result is stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// In the frames journal (`<data_dir>/frames-journal.db`), fsynced before the
    /// 202: the frame survives kill -9 and a power cut, and is done after a restart.
    Durable,
    /// In the journal, written but not fsynced per frame: survives kill -9, not a
    /// power cut (for disks where an fsync is slow).
    Process,
    /// In memory only: a crash loses what was queued. For throwaway runs.
    Memory,
}

/// Whether a JPEG's EXIF Orientation tag is applied before detection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExifOrientation {
    /// The image is turned as a viewer shows it (phones and browsers write the tag
    /// instead of turning the pixels); boxes and the reported size are the turned image's.
    #[default]
    Apply,
    /// The pixels as stored: for cameras whose tag is known to be wrong.
    Ignore,
}

/// What one station may override (`[station.<id>]` in the config file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StationSettings {
    /// This station's default frame deadline (ms; 0: none), instead of `frame_deadline_ms`.
    pub deadline_ms: Option<u64>,
    /// This station's rate limit (frames/s; 0: none), instead of `rate_limit_fps`.
    pub rate_limit_fps: Option<f64>,
    /// Frames it may post at once above the rate, instead of `rate_limit_burst`.
    pub rate_limit_burst: Option<u32>,
    /// `apply` or `ignore` this station's EXIF orientation, instead of `exif_orientation`.
    pub exif_orientation: Option<ExifOrientation>,
    /// The model of `model_repository` this station's frames run on (its active
    /// version), instead of `model_name`. An infer-worker serves every model its
    /// stations name, each batched on its own; the preprocess role letterboxes the
    /// station's frames at that model's `input_size` (from its `model.toml`).
    pub model: Option<String>,
}

/// The whole configuration. Its keys are flat — `max_batch_size = 4` in a file,
/// `VISIONQ_MAX_BATCH_SIZE=4` in the environment, `"max_batch_size": 4` in `GET /v1/config`
/// — while the fields are grouped by the part of the pipeline that reads them: each
/// section is `#[serde(flatten)]`ed, so a section's keys are the configuration's own
/// (`config.batching.max_batch_size`). The few keys every role reads stay at the top.
///
/// Serde's flatten has no `deny_unknown_fields`: unknown keys are found by
/// [`Config::load_from`] against the defaults' keys and `OPTIONAL_KEYS` instead.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Config {
    // `#[schema(default)]` on a section: no `default` object for it in the OpenAPI
    // document (each section's schema gives its keys' defaults, and a whole-section
    // default would carry the machine's `preprocess_concurrency`).
    #[serde(flatten)]
    #[schema(default)]
    pub broker: BrokerConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub database: DatabaseConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub http: HttpConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub ingest: IngestConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub model: ModelConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub runtime: RuntimeConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub batching: BatchingConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub preprocess: PreprocessConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub decode: DecodeConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub retention: RetentionConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub evidence: EvidenceConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub dashboard: DashboardConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub events: EventsConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub drift: DriftConfig,
    #[serde(flatten)]
    #[schema(default)]
    pub chain: ChainConfig,
    // The keys every role reads.
    /// Where fetched models, the runtime and photos are cached.
    #[schema(value_type = String)]
    pub cache_dir: PathBuf,
    /// Where the embedded store keeps its file and the frames journal (default:
    /// `<cache_dir>/data`).
    #[schema(value_type = String)]
    pub data_dir: PathBuf,
    /// Stations allowed to post; empty accepts any well-formed station id.
    #[serde(deserialize_with = "string_or_list")]
    pub stations: Vec<String>,
    /// Per-station overrides: `[station.l1-cam1]` with `deadline_ms`, `rate_limit_fps`,
    /// `rate_limit_burst`, `exif_orientation`.
    pub station: BTreeMap<String, StationSettings>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Deadline for finishing in-flight work on shutdown.
    pub shutdown_timeout_ms: u64,
    /// `VISIONQ_*` environment variables that name no configuration key (a typo, or
    /// a key that was renamed): ignored, and warned about once logging is up. A file
    /// key of that kind is refused instead, since a file is checked in with care.
    #[serde(skip)]
    pub unknown_env: Vec<String>,
    /// The config file this was read from (`--config`), read again by a reload of
    /// the event sinks, rules, lines and zones.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// The broker: RabbitMQ, or in embedded mode the in-process queue and its frames
/// journal. Read by `visionq`'s composition, which opens the broker and hands these
/// limits to the `queue` crate (the dashboard only asks whether `amqp_url` is set).
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct BrokerConfig {
    /// `amqp://…` or `amqps://…`; unset means the in-process queue (embedded mode).
    #[schema(value_type = Option<String>)]
    pub amqp_url: Option<SecretUrl>,
    /// A file holding the AMQP URL (a mounted secret); read when `amqp_url` is unset.
    #[schema(value_type = Option<String>)]
    pub amqp_url_file: Option<PathBuf>,
    /// PEM CA bundle that signs the broker's certificate, for `amqps://` (unset: the
    /// system's roots).
    #[schema(value_type = Option<String>)]
    pub amqp_tls_ca_file: Option<PathBuf>,
    /// Prefix of every broker object (exchanges, queues).
    pub queue_prefix: String,
    /// Queue length limits (messages); beyond them publishes are refused (backpressure).
    pub frames_max_length: u32,
    pub tensors_max_length: u32,
    pub results_max_length: u32,
    /// Deliveries of one message before it is dead-lettered as poison.
    pub max_deliveries: u32,
    /// Embedded mode: `durable` (default), `process` or `memory` (see [`Durability`]).
    pub durability: Durability,
}

/// The results store (PostgreSQL, SQLite, SQL Server) and how results are written to it.
/// Read by the results role (`results` crate) and the `visionq` commands that open the store.
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `postgres://…`, `sqlite://PATH`; unset means `sqlite://<data_dir>/visionq.db`.
    #[schema(value_type = Option<String>)]
    pub database_url: Option<SecretUrl>,
    /// A file holding the database URL (a mounted secret); read when `database_url` is unset.
    #[schema(value_type = Option<String>)]
    pub database_url_file: Option<PathBuf>,
    pub results_batch_size: usize,
    /// How long the results consumer waits for more results before writing a batch;
    /// 0 writes what is there at once (batches still grow under load, since results
    /// arriving during a write are taken together), so a waiting station is answered
    /// without a timer's delay.
    pub results_batch_wait_ms: u64,
}

/// Every role's HTTP listener: address, TLS, tokens and the slow-client limits. Read by
/// `visionq`'s composition where it binds and serves (and by ingest for the idle timeout
/// of its WebSockets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct HttpConfig {
    /// HTTP listen address of ingest/results.
    pub listen: String,
    /// PEM certificate chain and private key: when both are set the HTTP side speaks
    /// HTTPS only.
    #[schema(value_type = Option<String>)]
    pub tls_cert_file: Option<PathBuf>,
    #[schema(value_type = Option<String>)]
    pub tls_key_file: Option<PathBuf>,
    /// TOML file of `[[token]]` entries (name, scope, stations, sha256); unset turns
    /// authentication off, which only a loopback listener may do. `visionq token new`
    /// makes entries.
    #[schema(value_type = Option<String>)]
    pub tokens_file: Option<PathBuf>,
    /// Every role's HTTP listener (docs/OPERATIONS.md, "Slow clients and connection
    /// limits"): a request's headers must arrive within this of its first byte (a
    /// TLS handshake within this of the accept), else the connection is closed.
    pub http_header_timeout_ms: u64,
    /// A request's body must arrive within this of its headers; else `408
    /// body_timeout` and the connection is closed.
    pub http_body_timeout_ms: u64,
    /// A kept-alive connection with no request for this long is closed, and so are a
    /// new connection that sends nothing and one whose client stopped reading a
    /// response for this long.
    pub http_idle_timeout_ms: u64,
    /// Connections one process holds open at most; beyond it a connection gets `503
    /// too_many_connections` with `Retry-After` (HTTPS: is closed) at accept.
    pub http_max_connections: usize,
}

/// What the ingest role accepts and how fast: body and image limits, waits, deadlines
/// and rate limits (per-station overrides are `Config::station`). Read by the `ingest`
/// crate; `max_pixels` also bounds the decoders (preprocess, dashboard previews).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct IngestConfig {
    pub max_body_bytes: usize,
    pub max_pixels: u64,
    pub max_dimension: u32,
    /// Upper bound on `?wait_ms=`; on a station's WebSocket, how long a frame's slot
    /// in the window waits for its result before it is answered `timeout`.
    pub max_wait_ms: u64,
    /// Frames a station's WebSocket (`/v1/stations/{station}/ws`) may have in flight
    /// — sent, not yet answered — at most; a client may ask for fewer with
    /// `?window=`. A frame beyond it is refused (`window_full`), never buffered.
    pub stream_window: usize,
    /// Default deadline of a live frame after its receipt (0: none); a station can
    /// set its own per request with `?deadline_ms=`. Frames past it are reported
    /// `expired` instead of run.
    pub frame_deadline_ms: u64,
    /// Sent in `Retry-After` when the pipeline cannot take a frame.
    pub retry_after_s: u64,
    /// Frames per second one station may post, per ingest process (0: no limit);
    /// beyond it, `429` with `Retry-After`.
    pub rate_limit_fps: f64,
    /// Frames a station may post at once above its rate (0: one second's worth).
    pub rate_limit_burst: u32,
}

/// Which model is served and how its output is read into detections. Read by the
/// infer-worker (`infer-worker` crate, with `models` for the repository).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ModelConfig {
    /// ONNX model file; unset means the default model in the cache. Ignored when
    /// `model_repository` is set.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "model")]
    pub file: Option<PathBuf>,
    /// A model repository (`<dir>/<name>/<version>/model.onnx` with its `model.toml`,
    /// the active version per name in `<dir>/active.toml`): when set, the infer role
    /// serves the active version of `model_name` instead of `model`, and versions are
    /// activated and rolled back without a restart (`visionq model activate`,
    /// `POST /v1/models/{name}/activate`). A relative path resolves like `cache_dir`.
    /// An infer process with a repository serves those admin routes, so it checks
    /// tokens (`tokens_file`) as ingest and results do, unless it listens on loopback.
    #[schema(value_type = Option<String>)]
    pub model_repository: Option<PathBuf>,
    /// The model in `model_repository` this process serves; unset: the repository's
    /// only model.
    pub model_name: Option<String>,
    /// Overrides the output layout read from the model: `yolov5`, `yolov8`, `yolov10`.
    pub model_layout: Option<String>,
    pub conf_threshold: f32,
    pub iou_threshold: f32,
    pub max_detections: usize,
    /// Frames a candidate version (a canary or a shadow run, `POST
    /// /v1/models/{name}/candidate`) runs before it is judged against the lines
    /// below; crossing one ends it automatically, with the reason logged, counted
    /// (`visionq_model_rollbacks_total`) and shown in `GET /v1/models`.
    pub candidate_min_frames: u64,
    /// The candidate's share of frames whose forward pass failed, above which it ends.
    pub candidate_max_error_rate: f64,
    /// The candidate's mean pass time per frame over the active version's, above
    /// which it ends.
    pub candidate_max_latency_ratio: f64,
    /// A shadow candidate's agreement with the active version (F1 of its boxes
    /// IoU-matched to the active version's), below which it ends; 0: not judged.
    pub candidate_min_agreement: f64,
}

/// ONNX Runtime and the device it runs on. Read by the infer-worker; `execution_provider`
/// and `cuda_device_id` also by preprocess (nvJPEG on the same GPU).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RuntimeConfig {
    /// `libonnxruntime.so`; unset means `ORT_DYLIB_PATH`, then the cache.
    #[schema(value_type = Option<String>)]
    pub ort_dylib_path: Option<PathBuf>,
    /// `cpu` or `cuda`.
    pub execution_provider: ExecutionProvider,
    pub cuda_device_id: i32,
    /// On CUDA: the batch input buffers in pinned (page-locked) host memory, so the
    /// copy to the device is a DMA transfer.
    pub pinned_input: bool,
    /// On CUDA: the output buffers pinned too. Off by default: ONNX Runtime 1.31
    /// refuses to copy a CUDA output into a bound pinned buffer (CopyTensorAsync).
    pub pinned_output: bool,
    /// ONNX Runtime intra-op threads; 0: the cores this process may use (its CPU
    /// affinity and its container's CPU quota), not every core of the machine.
    pub infer_threads: usize,
    /// Whether ONNX Runtime's idle intra-op threads spin waiting for work (its
    /// default) instead of sleeping: spinning saves a wake-up per pass but burns
    /// cores that decoding could use on a small machine.
    pub infer_spinning: bool,
    /// Inference streams: sessions of the model run by as many threads, so passes
    /// overlap on the device (each stream holds its own sessions and buffers).
    pub infer_streams: usize,
    /// On CUDA: how cuDNN picks each convolution's algorithm, `exhaustive` (benchmark
    /// them all, once per input shape), `heuristic` or `default`.
    pub cudnn_conv_algo_search: String,
    /// On CUDA: whether convolutions and matrix products may use TensorFloat-32 (10
    /// mantissa bits, on tensor cores), ONNX Runtime's own default. Off: full float32,
    /// as the CPU computes.
    pub cuda_tf32: bool,
}

/// How the infer-worker gathers frames into forward passes. Read by the infer-worker's
/// batcher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct BatchingConfig {
    pub infer_input: InferInput,
    pub max_batch_size: usize,
    pub max_batch_wait_ms: u64,
    /// Which input shapes the device sees (see [`BatchShapes`]); `auto`: `buckets` on
    /// CUDA, `exact` on the CPU.
    pub batch_shapes: BatchShapes,
}

/// How a frame becomes the model's input tensor. Read by preprocess workers, and by the
/// infer-worker's inline preprocessing (`infer_input = "frames"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct PreprocessConfig {
    /// Side of the square model input, used by preprocess workers. A process that
    /// loads the model takes the model's own when this is left unset, and refuses to
    /// start when it is set to another; infer-workers refuse tensors of another size.
    pub input_size: u32,
    /// Whether `input_size` was set (file or environment) rather than defaulted.
    #[serde(skip)]
    pub input_size_set: bool,
    /// How the model was trained to see its input (README, "What the model sees"):
    /// `linear` (OpenCV INTER_LINEAR) or `antialias` (Pillow's bilinear).
    pub resize_filter: String,
    /// `letterbox` (aspect kept, grey 114 bars) or `stretch` (whole input).
    pub input_fit: String,
    /// `rgb` or `bgr`.
    pub channel_order: String,
    /// `apply` (default) turns a JPEG by its EXIF Orientation tag before detection, so
    /// boxes are in the image as a viewer shows it; `ignore` takes the pixels as stored.
    pub exif_orientation: ExifOrientation,
    /// Frames decoded at once (default: one per CPU of the machine).
    #[schema(default)] // the default depends on the machine: none in the OpenAPI document
    pub preprocess_concurrency: usize,
}

/// Where and how JPEGs are decoded (libjpeg-turbo or nvJPEG on the GPU). Read by the
/// `preprocess` crate's decoders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DecodeConfig {
    /// JPEG decode at 1/2, 1/4, 1/8 size when that still covers the model input:
    /// `off` or `auto`.
    pub decode_scale: String,
    /// Where JPEGs are decoded: `auto` (the default: nvJPEG with the letterbox on
    /// the GPU when `execution_provider = "cuda"` and both start, else libjpeg-turbo
    /// on the CPU), `cpu` (always libjpeg-turbo) or `nvjpeg` (the GPU's JPEG decoder
    /// through nvJPEG; refuses to start without it). Progressive, greyscale and
    /// cut-off JPEGs are always decoded on the CPU.
    pub jpeg_decoder: String,
    /// Threads feeding nvJPEG (each its own handle and CUDA stream).
    pub nvjpeg_threads: usize,
    /// JPEGs decoded in one nvJPEG batch, at most. Small batches keep the GPU's
    /// JPEG engines busiest: 4 gave 3,586 results/s where 32 gave 1,114
    /// (BENCHMARKS.md, "The nvJPEG batch bound").
    pub nvjpeg_max_batch: usize,
    /// With nvJPEG: letterbox on the GPU too (chroma upsampled and converted as
    /// libjpeg-turbo does, then resized into the model input there), so only the
    /// model input comes back to the host; `false` copies the whole decoded image
    /// back and letterboxes on the CPU.
    pub nvjpeg_letterbox: bool,
}

/// How long stored results are kept. Read by the results role's retention task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RetentionConfig {
    /// Results older than this many days (by `received_at`) are deleted; 0 keeps all.
    pub retention_days: u32,
    /// Frames deleted per transaction by retention.
    pub retention_chunk: usize,
    /// How often the results role runs retention.
    pub retention_interval_s: u64,
}

/// Frames kept for review and retraining, and their bounds. Read by the results role
/// (`evidence` crate) and `visionq dataset export`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct EvidenceConfig {
    /// Where frames kept for review and retraining go: each frame's original image
    /// and a JSON sidecar with its result and decision (read by `visionq dataset
    /// export`). Unset: `<data_dir>/evidence`.
    #[schema(value_type = Option<String>)]
    pub evidence_dir: Option<PathBuf>,
    /// Bytes of kept frames (images and sidecars together) at most; beyond it the
    /// oldest are deleted. 0 keeps no frames.
    pub evidence_max_bytes: u64,
    /// Days a kept frame stays at most (by its `received_at`); 0: no age bound.
    pub evidence_max_days: u32,
    /// Seconds a frame's image stays in the results process's memory after its
    /// result when it was not kept (a frame ingest published in the same process,
    /// or an image an infer-worker sent on), so that a reviewer who reviews a
    /// recent frame by its id (the live dashboard) still gets its image kept;
    /// within the hold's 256 MiB (64 MiB without ingest). 0: dropped at its result.
    pub evidence_recent_s: u64,
    /// Distributed mode: the lowest detection score at which an infer-worker sends
    /// a frame's original image on with its result, so a results role without
    /// ingest in its process can keep it (preprocess then carries every frame's
    /// image on the tensors queue). Set it at or below the lowest `review`
    /// threshold of the rules file; the results role warns at start when it is
    /// above. Unset: images are not sent on.
    pub evidence_forward_min_score: Option<f32>,
}

/// The dashboard: box colours, previews, the stations it follows. Read by the
/// `dashboard` crate (in the results role; previews are sent by ingest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DashboardConfig {
    /// Score at or above which the dashboard shows a box as accepted (green).
    pub accept_threshold: f32,
    /// Below this score the dashboard shows a box dim (amber); between it and
    /// `accept_threshold`, orange.
    pub dashboard_low_threshold: f32,
    /// Ingest sends a station's frame to the dashboard at most this often (per
    /// ingest process); the other frames are processed but not previewed.
    pub dashboard_preview_interval_ms: u64,
    /// Frames larger than this are previewed as a JPEG re-encoded at most 640 px on
    /// its long side (so are frames turned by their EXIF orientation, and PNG/WebP ones).
    pub dashboard_preview_max_bytes: usize,
    /// Stations the results role keeps a latest frame and counters for; beyond it the
    /// station seen longest ago is forgotten.
    pub dashboard_max_stations: usize,
    /// Bytes of preview JPEGs the results role holds at most, all stations together.
    pub dashboard_store_max_bytes: usize,
    /// The dashboard marks a station stalled when its last result is older than this.
    pub dashboard_stale_after_ms: u64,
    /// Other roles' `/metrics` URLs the dashboard's pipeline view adds to the results
    /// role's own (distributed mode: ingest, preprocess, infer-worker).
    #[serde(deserialize_with = "string_or_list")]
    pub dashboard_metrics_urls: Vec<String>,
}

/// Model drift: each model version's scores and detections per frame at each
/// station, against the baseline it set there. Read by the results role
/// (`visionq_results::drift`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DriftConfig {
    /// Frames a model version's first results at a station take to set its baseline
    /// there (stored in the results database, kept across restarts and replicas).
    pub drift_baseline_frames: usize,
    /// The rolling window compared with the baseline: a station's last this many
    /// frames of the version.
    pub drift_window_frames: usize,
    /// The window drifts when the population stability index of its detection
    /// scores (10 bins of 0.1) against the baseline's reaches this (0.1: a shift
    /// worth a look; 0.25: a large one).
    pub drift_max_psi: f64,
    /// … or when its detections per frame reach this many times the baseline's, or
    /// fall to its inverse (1.5: 50 % more, or a third fewer).
    pub drift_max_detections_ratio: f64,
}

/// Decisions, event sinks, alert rules and tracking (lines, zones). Read by the results
/// role: `rules_file` by its decisions (`decide`), the rest by the `events` crate
/// (reloaded from `config_file`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct EventsConfig {
    /// TOML file of decision rules (thresholds, `[rules.<name>]` label maps and
    /// catalogues, `[station.<id>] rules = …`); unset: no decisions are made.
    #[schema(value_type = Option<String>)]
    pub rules_file: Option<PathBuf>,
    /// Where results go as events (`[[sink]]` tables: webhooks and MQTT brokers,
    /// each with its filter and retry bounds; see [`crate::sink::SinkConfig`] and
    /// docs/EVENTS.md). Events wait in the outbox (`<data_dir>/outbox.db`) until
    /// their sink took them: a receiver outage or a restart delays them, never loses
    /// them. File only (no environment variable).
    pub sink: Vec<crate::sink::SinkConfig>,
    /// Alert rules (`[[rule]]` tables: a class seen in N of a station's last M
    /// frames, a decision outcome, a station silent; each with its severity and
    /// cool-down; see [`crate::alert::AlertRule`] and docs/EVENTS.md). Alerts and
    /// their resolutions go to the sinks that take `alert` events and are shown on
    /// the dashboard. File only (no environment variable).
    pub rule: Vec<crate::alert::AlertRule>,
    /// Counting lines (`[[line]]` tables: a tripwire per station in normalised
    /// coordinates, crossings counted per direction; see [`crate::track::CountLine`]
    /// and docs/EVENTS.md). Objects are tracked on the stations a line or a zone is
    /// drawn on. File only (no environment variable).
    pub line: Vec<crate::track::CountLine>,
    /// Zones (`[[zone]]` tables: a polygon per station, entries, exits and dwell
    /// times; see [`crate::track::Zone`]). File only (no environment variable).
    pub zone: Vec<crate::track::Zone>,
    /// Tracking: the overlap (IoU, 0-1) a detection needs with a track's last box,
    /// same class, to continue that track.
    pub track_iou: f32,
    /// Tracking: seconds a track lives without being seen before it is let go.
    pub track_max_gap_s: f64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            amqp_url: None,
            amqp_url_file: None,
            amqp_tls_ca_file: None,
            queue_prefix: "visionq".into(),
            frames_max_length: 10_000,
            tensors_max_length: 2_000,
            results_max_length: 100_000,
            max_deliveries: 5,
            durability: Durability::Durable,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { database_url: None, database_url_file: None, results_batch_size: 64, results_batch_wait_ms: 0 }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            tls_cert_file: None,
            tls_key_file: None,
            tokens_file: None,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            http_idle_timeout_ms: 60_000,
            http_max_connections: 1_024,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: 8 * 1024 * 1024,
            max_pixels: 40_000_000,
            max_dimension: 16_384,
            max_wait_ms: 30_000,
            stream_window: 8,
            frame_deadline_ms: 0,
            retry_after_s: 2,
            rate_limit_fps: 0.0,
            rate_limit_burst: 0,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            file: None,
            model_repository: None,
            model_name: None,
            model_layout: None,
            conf_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 300,
            candidate_min_frames: 200,
            candidate_max_error_rate: 0.02,
            candidate_max_latency_ratio: 3.0,
            candidate_min_agreement: 0.5,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            ort_dylib_path: None,
            execution_provider: ExecutionProvider::Cpu,
            cuda_device_id: 0,
            pinned_input: true,
            pinned_output: false,
            infer_threads: 0,
            infer_spinning: true,
            infer_streams: 1,
            cudnn_conv_algo_search: "exhaustive".into(),
            cuda_tf32: true,
        }
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig { infer_input: InferInput::Tensors, max_batch_size: 8, max_batch_wait_ms: 5, batch_shapes: BatchShapes::Auto }
    }
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        PreprocessConfig {
            input_size: 416,
            input_size_set: false,
            resize_filter: "linear".into(),
            input_fit: "letterbox".into(),
            channel_order: "rgb".into(),
            exif_orientation: ExifOrientation::Apply,
            preprocess_concurrency: cpus,
        }
    }
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            decode_scale: "off".into(),
            jpeg_decoder: "auto".into(),
            nvjpeg_threads: 4,
            nvjpeg_max_batch: 4,
            nvjpeg_letterbox: true,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { retention_days: 0, retention_chunk: 5_000, retention_interval_s: 3_600 }
    }
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            evidence_dir: None,
            evidence_max_bytes: 2 * 1024 * 1024 * 1024,
            evidence_max_days: 30,
            evidence_recent_s: 300,
            evidence_forward_min_score: None,
        }
    }
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            accept_threshold: 0.85,
            dashboard_low_threshold: 0.65,
            dashboard_preview_interval_ms: 500,
            dashboard_preview_max_bytes: 1024 * 1024,
            dashboard_max_stations: 256,
            dashboard_store_max_bytes: 64 * 1024 * 1024,
            dashboard_stale_after_ms: 10_000,
            dashboard_metrics_urls: Vec::new(),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            rules_file: None,
            sink: Vec::new(),
            rule: Vec::new(),
            line: Vec::new(),
            zone: Vec::new(),
            track_iou: 0.3,
            track_max_gap_s: 2.0,
        }
    }
}

/// Model chains (issue 22): a second model on the crops of chosen detections, run by
/// the infer-worker before it publishes a frame's result. Read by the infer-worker
/// (the `chain` crate); preprocess workers send each frame's original image on with
/// its tensor while a chain is configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ChainConfig {
    /// Chains (`[[chain]]` tables: name, kind `classifier` or `text`, model file,
    /// stations, classes, min_score, max_crops, region, margin_px, input_size,
    /// channels, mean, std, keep_aspect, fit_inside, labels, top_k, dict_file; see
    /// [`crate::chain::ChainSpec`] and the README). File only (no environment variable).
    pub chain: Vec<crate::chain::ChainSpec>,
    /// Most crops in one pass of a chain's model (crops of several frames).
    pub chain_max_batch_size: usize,
    /// How long a chain's batch waits for more crops after its first.
    pub chain_max_batch_wait_ms: u64,
    /// On CUDA: whether the chains' models may compute in TensorFloat-32 like the
    /// detector (`cuda_tf32`). Off by default: in full float32 a chain's scores, which
    /// decisions are made from, are the CPU's (measured: BENCHMARKS.md).
    pub chain_cuda_tf32: bool,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig { chain: Vec::new(), chain_max_batch_size: 16, chain_max_batch_wait_ms: 2, chain_cuda_tf32: false }
    }
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig { drift_baseline_frames: 500, drift_window_frames: 500, drift_max_psi: 0.25, drift_max_detections_ratio: 1.5 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker: BrokerConfig::default(),
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            ingest: IngestConfig::default(),
            model: ModelConfig::default(),
            runtime: RuntimeConfig::default(),
            batching: BatchingConfig::default(),
            preprocess: PreprocessConfig::default(),
            decode: DecodeConfig::default(),
            retention: RetentionConfig::default(),
            evidence: EvidenceConfig::default(),
            dashboard: DashboardConfig::default(),
            events: EventsConfig::default(),
            drift: DriftConfig::default(),
            chain: ChainConfig::default(),
            cache_dir: PathBuf::from(".cache/visionq"),
            data_dir: PathBuf::from(".cache/visionq/data"),
            stations: Vec::new(),
            station: BTreeMap::new(),
            log_format: LogFormat::Text,
            shutdown_timeout_ms: 20_000,
            unknown_env: Vec::new(),
            config_file: None,
        }
    }
}

/// Debug output is the redacted configuration (see [`Config::redacted`]): a
/// `{config:?}` in a log line or a panic message never shows a password.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = serde_json::to_string(&self.redacted()).map_err(|_| std::fmt::Error)?;
        write!(f, "Config {shown}")
    }
}

/// Debug output of the sections holding a secret URL is redacted too (`{config.broker:?}`).
impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = serde_json::to_string(&self.redacted()).map_err(|_| std::fmt::Error)?;
        write!(f, "BrokerConfig {shown}")
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = serde_json::to_string(&self.redacted()).map_err(|_| std::fmt::Error)?;
        write!(f, "DatabaseConfig {shown}")
    }
}

impl BrokerConfig {
    /// This section with the password in `amqp_url` hidden.
    pub fn redacted(&self) -> BrokerConfig {
        BrokerConfig { amqp_url: self.amqp_url.as_ref().map(SecretUrl::redacted), ..self.clone() }
    }
}

impl DatabaseConfig {
    /// This section with the password in `database_url` hidden.
    pub fn redacted(&self) -> DatabaseConfig {
        DatabaseConfig { database_url: self.database_url.as_ref().map(SecretUrl::redacted), ..self.clone() }
    }
}

impl EventsConfig {
    /// This section with the sinks' secrets hidden.
    pub fn redacted(&self) -> EventsConfig {
        EventsConfig { sink: self.sink.iter().map(|s| s.redacted()).collect(), ..self.clone() }
    }
}

impl Config {
    /// Defaults, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    pub fn load_from(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut input_size_set = false;
        // Where each directory key was set: relative paths resolve against the config
        // file's folder when the file set them, else against the working directory.
        let mut dirs_from_file: Vec<String> = Vec::new();
        let mut data_dir_set = false;
        let mut unknown_env = Vec::new();
        let mut table = match toml::Table::try_from(Config::default()) {
            Ok(t) => t,
            Err(e) => return Err(ConfigError::Invalid(e.to_string())),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
            let from_file: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
            for (k, v) in from_file {
                if !table.contains_key(&k) && !OPTIONAL_KEYS.contains(&k.as_str()) {
                    return Err(ConfigError::Invalid(format!("unknown key `{k}` in {}", path.display())));
                }
                input_size_set |= k == "input_size";
                data_dir_set |= k == "data_dir";
                if DIR_KEYS.contains(&k.as_str()) {
                    dirs_from_file.push(k.clone());
                }
                table.insert(k, v);
            }
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            let key = key.to_ascii_lowercase();
            if table.contains_key(&key) || OPTIONAL_KEYS.contains(&key.as_str()) {
                input_size_set |= key == "input_size";
                data_dir_set |= key == "data_dir";
                dirs_from_file.retain(|k| *k != key);
                table.insert(key, env_value(&value));
            } else if !OTHER_VARIABLES.contains(&name.as_str()) {
                unknown_env.push(name.clone());
            }
        }
        // serde names a bad choice (`unknown variant `gpu`…`) but not its key: find it.
        let values = table.clone();
        let mut config: Config = table.try_into().map_err(|e: toml::de::Error| {
            let message = e.message().to_string();
            let bad = message.strip_prefix("unknown variant `").and_then(|rest| rest.split('`').next());
            match bad.and_then(|bad| values.iter().find(|(_, v)| v.as_str() == Some(bad))) {
                Some((key, _)) => ConfigError::Invalid(format!("{key}: {message}")),
                None => ConfigError::Invalid(message),
            }
        })?;
        config.broker.amqp_url = secret(config.broker.amqp_url.take(), config.broker.amqp_url_file.as_deref())?;
        config.database.database_url = secret(config.database.database_url.take(), config.database.database_url_file.as_deref())?;
        config.preprocess.input_size_set = input_size_set;
        unknown_env.sort();
        config.unknown_env = unknown_env;
        config.config_file = file.map(Path::to_path_buf);
        let file_dir = file.and_then(Path::parent).filter(|d| !d.as_os_str().is_empty());
        for (key, dir) in [("cache_dir", &mut config.cache_dir), ("data_dir", &mut config.data_dir)] {
            let base = match (dirs_from_file.iter().any(|k| k == key), file_dir) {
                (true, Some(d)) => d.to_path_buf(),
                _ => PathBuf::new(),
            };
            *dir =
                std::path::absolute(base.join(&*dir)).map_err(|e| ConfigError::Invalid(format!("{key} `{}`: {e}", dir.display())))?;
        }
        // data_dir follows cache_dir unless it is set itself.
        if !data_dir_set {
            config.data_dir = config.cache_dir.join("data");
        }
        for (key, dir) in
            [("evidence_dir", &mut config.evidence.evidence_dir), ("model_repository", &mut config.model.model_repository)]
        {
            let Some(d) = dir.take() else { continue };
            let base = match (dirs_from_file.iter().any(|k| k == key), file_dir) {
                (true, Some(f)) => f.to_path_buf(),
                _ => PathBuf::new(),
            };
            let absolute =
                std::path::absolute(base.join(&d)).map_err(|e| ConfigError::Invalid(format!("{key} `{}`: {e}", d.display())))?;
            *dir = Some(absolute);
        }
        config.validate()?;
        Ok(config)
    }

    /// Takes the input side of the model this process loaded (`width`×`height`) where
    /// `input_size` was left unset; refuses one set to a size the model does not take.
    /// (A model with a non-square input is left alone: only inline preprocessing,
    /// which letterboxes to the model's own shape, can feed it.)
    pub fn adopt_model_input(&mut self, model: &Path, width: u32, height: u32) -> Result<(), ConfigError> {
        if width != height || width == self.preprocess.input_size {
            return Ok(());
        }
        if self.preprocess.input_size_set {
            return Err(ConfigError::Invalid(format!(
                "input_size is {} but the model {} takes {width}x{height}: set input_size to {width}, or leave it unset to take the model's",
                self.preprocess.input_size,
                model.display()
            )));
        }
        self.preprocess.input_size = width;
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.batching.max_batch_size == 0 || self.batching.max_batch_size > 256 {
            return bad("max_batch_size must be 1..=256");
        }
        if !(0.0..=1.0).contains(&self.model.conf_threshold) || !(0.0..=1.0).contains(&self.model.iou_threshold) {
            return bad("conf_threshold and iou_threshold must be within 0..1");
        }
        let m = &self.model;
        let lines_ok = m.candidate_min_frames > 0
            && (0.0..=1.0).contains(&m.candidate_max_error_rate)
            && m.candidate_max_latency_ratio.is_finite()
            && m.candidate_max_latency_ratio > 1.0
            && (0.0..=1.0).contains(&m.candidate_min_agreement);
        if !lines_ok {
            return bad(
                "candidate_min_frames must be at least 1, candidate_max_error_rate and candidate_min_agreement within 0..1, candidate_max_latency_ratio above 1",
            );
        }
        for (station, s) in &self.station {
            if let Some(name) = &s.model
                && self.model.model_repository.is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "[station.{station}] model = \"{name}\" names a model of the repository, but model_repository is not set"
                )));
            }
        }
        if self.evidence.evidence_forward_min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            return bad("evidence_forward_min_score must be within 0..1");
        }
        if !(0.0..=1.0).contains(&self.dashboard.accept_threshold)
            || !(0.0..=1.0).contains(&self.dashboard.dashboard_low_threshold)
            || self.dashboard.dashboard_low_threshold > self.dashboard.accept_threshold
        {
            return bad("dashboard_low_threshold and accept_threshold must be within 0..1, low <= accept");
        }
        if self.http.http_header_timeout_ms == 0 || self.http.http_body_timeout_ms == 0 || self.http.http_idle_timeout_ms == 0 {
            return bad("http_header_timeout_ms, http_body_timeout_ms and http_idle_timeout_ms must be at least 1");
        }
        if self.http.http_max_connections == 0 {
            return bad("http_max_connections must be at least 1");
        }
        if self.ingest.stream_window == 0 || self.ingest.stream_window > 1024 {
            return bad("stream_window must be 1..=1024");
        }
        if self.chain.chain_max_batch_size == 0 || self.chain.chain_max_batch_size > 256 {
            return bad("chain_max_batch_size must be 1..=256");
        }
        for (i, c) in self.chain.chain.iter().enumerate() {
            c.check().map_err(ConfigError::Invalid)?;
            if self.chain.chain[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError::Invalid(format!("two [[chain]] tables are named `{}`", c.name)));
            }
        }
        if !(10..=1_000_000).contains(&self.drift.drift_baseline_frames) || !(10..=1_000_000).contains(&self.drift.drift_window_frames)
        {
            return bad("drift_baseline_frames and drift_window_frames must be between 10 and 1000000");
        }
        if !(self.drift.drift_max_psi.is_finite() && self.drift.drift_max_psi > 0.0) {
            return bad("drift_max_psi must be above 0");
        }
        if !(self.drift.drift_max_detections_ratio.is_finite() && self.drift.drift_max_detections_ratio > 1.0) {
            return bad("drift_max_detections_ratio must be above 1");
        }
        if self.dashboard.dashboard_max_stations == 0 {
            return bad("dashboard_max_stations must be at least 1");
        }
        if !matches!(self.runtime.cudnn_conv_algo_search.as_str(), "exhaustive" | "heuristic" | "default") {
            return bad("cudnn_conv_algo_search must be `exhaustive`, `heuristic` or `default`");
        }
        if self.preprocess.input_size < 32 || !self.preprocess.input_size.is_multiple_of(32) {
            return bad("input_size must be a positive multiple of 32");
        }
        for (key, value, allowed) in [
            ("resize_filter", &self.preprocess.resize_filter, &["linear", "antialias"][..]),
            ("input_fit", &self.preprocess.input_fit, &["letterbox", "stretch"]),
            ("channel_order", &self.preprocess.channel_order, &["rgb", "bgr"]),
            ("decode_scale", &self.decode.decode_scale, &["off", "auto"]),
            ("jpeg_decoder", &self.decode.jpeg_decoder, &["cpu", "nvjpeg", "auto"]),
        ] {
            if !allowed.contains(&value.as_str()) {
                return Err(ConfigError::Invalid(format!("{key} must be one of {allowed:?}, not `{value}`")));
            }
        }
        if !(1..=64).contains(&self.decode.nvjpeg_threads) || !(1..=64).contains(&self.decode.nvjpeg_max_batch) {
            return bad("nvjpeg_threads and nvjpeg_max_batch must be between 1 and 64");
        }
        if self.database.results_batch_size == 0 || self.preprocess.preprocess_concurrency == 0 {
            return bad("results_batch_size and preprocess_concurrency must be at least 1");
        }
        for s in self.stations.iter().chain(self.station.keys()) {
            if !valid_station_id(s) {
                return Err(ConfigError::Invalid(format!("station id `{s}` is not valid")));
            }
        }
        let rates = std::iter::once(self.ingest.rate_limit_fps).chain(self.station.values().filter_map(|s| s.rate_limit_fps));
        for r in rates {
            if !r.is_finite() || r < 0.0 {
                return Err(ConfigError::Invalid(format!("rate_limit_fps must be a number >= 0, not {r}")));
            }
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            return bad("tls_cert_file and tls_key_file go together: set both for HTTPS, or neither");
        }
        let sinks = self.events.sink.iter().map(|s| (s.name.as_str(), s.problem()));
        let rules = self.events.rule.iter().map(|r| (r.name.as_str(), r.problem()));
        named_tables("sinks", sinks)?;
        named_tables("rules", rules)?;
        if !(self.events.track_iou > 0.0 && self.events.track_iou <= 1.0) {
            return bad("track_iou must be above 0 and at most 1");
        }
        if !(self.events.track_max_gap_s.is_finite() && self.events.track_max_gap_s > 0.0 && self.events.track_max_gap_s <= 3600.0) {
            return bad("track_max_gap_s must be above 0 and at most 3600");
        }
        let lines = self.events.line.iter().map(|l| (l.name.as_str(), l.problem()));
        let zones = self.events.zone.iter().map(|z| (z.name.as_str(), z.problem()));
        named_tables("lines or zones", lines.chain(zones))
    }

    /// This configuration with the passwords in its URLs hidden (for `Debug`, `visionq config`
    /// and `GET /v1/config`).
    pub fn redacted(&self) -> Config {
        Config { broker: self.broker.redacted(), database: self.database.redacted(), events: self.events.redacted(), ..self.clone() }
    }

    /// The outbox events wait in until their sink took them.
    pub fn outbox_path(&self) -> PathBuf {
        self.data_dir.join("outbox.db")
    }

    /// The keys without a default that this configuration leaves unset (TOML has no
    /// null, so `visionq config` prints them as comments, to list every key).
    pub fn unset_keys(&self) -> Vec<&'static str> {
        let shown = toml::Table::try_from(self).unwrap_or_default();
        OPTIONAL_KEYS.iter().copied().filter(|k| !shown.contains_key(*k)).collect()
    }

    /// Where kept frames go (`evidence_dir`, else `<data_dir>/evidence`).
    pub fn evidence_dir(&self) -> PathBuf {
        self.evidence.evidence_dir.clone().unwrap_or_else(|| self.data_dir.join("evidence"))
    }

    /// The default deadline (ms, 0: none) of a frame of `station`.
    pub fn deadline_ms(&self, station: &str) -> u64 {
        self.station.get(station).and_then(|s| s.deadline_ms).unwrap_or(self.ingest.frame_deadline_ms)
    }

    /// Whether `station`'s frames are turned by their EXIF orientation.
    pub fn exif_orientation(&self, station: &str) -> ExifOrientation {
        self.station.get(station).and_then(|s| s.exif_orientation).unwrap_or(self.preprocess.exif_orientation)
    }

    /// `station`'s rate limit as (frames/s, burst); None when it has none.
    pub fn rate_limit(&self, station: &str) -> Option<(f64, u32)> {
        let own = self.station.get(station);
        let fps = own.and_then(|s| s.rate_limit_fps).unwrap_or(self.ingest.rate_limit_fps);
        if fps <= 0.0 {
            return None;
        }
        let burst = own.and_then(|s| s.rate_limit_burst).unwrap_or(self.ingest.rate_limit_burst);
        Some((fps, if burst == 0 { fps.ceil().max(1.0) as u32 } else { burst }))
    }

    /// The database URL, with the embedded default filled in: the plain text, with
    /// its password, for opening the store (print it through [`redact_url`]).
    pub fn database_url(&self) -> String {
        match &self.database.database_url {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}", self.data_dir.join("visionq.db").display()),
        }
    }

    /// The batch sizes passes run at, ascending; empty means any size (`exact`).
    pub fn batch_buckets(&self, max_batch: usize) -> Vec<usize> {
        let max = max_batch.max(1);
        let policy = match self.batching.batch_shapes {
            BatchShapes::Auto if self.runtime.execution_provider == ExecutionProvider::Cuda => BatchShapes::Buckets,
            BatchShapes::Auto => BatchShapes::Exact,
            other => other,
        };
        match policy {
            BatchShapes::Exact | BatchShapes::Auto => Vec::new(),
            BatchShapes::Max => vec![max],
            BatchShapes::Buckets => {
                let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2)).take_while(|n| *n < max).collect();
                sizes.push(max);
                sizes
            }
        }
    }

    pub fn model_path(&self) -> PathBuf {
        self.model.file.clone().unwrap_or_else(|| self.cache_dir.join("models/yolov3-tiny.onnx"))
    }

    pub fn ort_dylib_path(&self) -> PathBuf {
        self.runtime
            .ort_dylib_path
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            // tools/assets.py links the library of the version it pins here, so the
            // version is written in one place (assets.py's ORT_VERSION).
            .unwrap_or_else(|| self.cache_dir.join("onnxruntime/libonnxruntime.so"))
    }

    /// Whether a station id is accepted: configured, or any well-formed id when none are.
    pub fn station_known(&self, station: &str) -> bool {
        listed(&self.stations, station)
    }
}

/// Tables of a `[[kind]]` array (sinks, rules): each one usable (its problem, if
/// any, refuses the configuration) and each name used once.
fn named_tables<'a>(kind: &str, tables: impl Iterator<Item = (&'a str, Option<String>)>) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for (name, problem) in tables {
        if let Some(problem) = problem {
            return Err(ConfigError::Invalid(problem));
        }
        if !names.insert(name) {
            return Err(ConfigError::Invalid(format!("two {kind} are named `{name}`")));
        }
    }
    Ok(())
}

/// `VISIONQ_*` variables that are read elsewhere, not configuration keys.
const OTHER_VARIABLES: &[&str] = &["VISIONQ_ASSETS_SCRIPT"];

/// Keys without a default value (their default is "unset").
const OPTIONAL_KEYS: &[&str] = &[
    "amqp_url",
    "amqp_url_file",
    "amqp_tls_ca_file",
    "database_url",
    "database_url_file",
    "tls_cert_file",
    "tls_key_file",
    "tokens_file",
    "rules_file",
    "evidence_dir",
    "evidence_forward_min_score",
    "model",
    "model_repository",
    "model_name",
    "ort_dylib_path",
    "model_layout",
];

/// A secret given directly, or else read from `file` (surrounding whitespace trimmed).
fn secret(direct: Option<SecretUrl>, file: Option<&Path>) -> Result<Option<SecretUrl>, ConfigError> {
    match (direct, file) {
        (Some(v), _) => Ok(Some(v)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
            Ok(Some(SecretUrl::new(text.trim())))
        }
        (None, None) => Ok(None),
    }
}

pub use crate::names::{listed, named_table_problem, valid_station_id};

/// The station id the self-test (`POST /v1/selftest`) posts as. Reserved: no camera
/// may post as it, so its stored results are the self-test's and nothing else's;
/// the dashboard and the all-stations stream leave it out.
pub const SELFTEST_STATION: &str = "selftest";

/// An environment value as TOML: integers, floats and booleans by their look, else a string.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
        OneOrMany::Many(v) => v,
    })
}

/// A URL with its password replaced, for logs.
/// A URL that may hold a password (the broker's, the database's). Printed — `{:?}`,
/// `{}`, a log field — it shows the password as `***`; the plain text comes only
/// from [`SecretUrl::expose`], for the one call that connects. It serialises as the
/// plain URL (the config file's own form, read back by the loader); `/v1/config` and
/// `visionq config` show [`Config::redacted`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL with its password, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The same URL with its password hidden.
    pub fn redacted(&self) -> SecretUrl {
        SecretUrl(redact_url(&self.0))
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> SecretUrl {
        SecretUrl::new(url)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return redact_connection_string(url) };
    // No user info: a JDBC-style `…;password=…` may still carry one.
    let Some((creds, host)) = rest.rsplit_once('@') else { return redact_connection_string(url) };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// An ADO.NET-style `Key=Value;…` connection string with its password hidden.
fn redact_connection_string(s: &str) -> String {
    s.split(';')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if matches!(k.trim().to_ascii_lowercase().as_str(), "password" | "pwd") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events tables k8s/overlays/events mounts into the results pod load as a
    /// config file (a broken example would keep the pod from starting).
    #[test]
    fn the_k8s_events_overlays_config_file_loads() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/overlays/events/visionq.toml"));
        let c = Config::load_from(Some(path), env(&[])).unwrap();
        assert_eq!((c.events.sink.len(), c.events.rule.len(), c.events.line.len()), (1, 1, 1));
        assert_eq!(c.config_file.as_deref(), Some(path));
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn directories_resolve_predictably() {
        let cwd = std::env::current_dir().unwrap();
        // Defaults: under the working directory; data_dir follows cache_dir.
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!((c.cache_dir.clone(), c.data_dir.clone()), (cwd.join(".cache/visionq"), cwd.join(".cache/visionq/data")));
        let c = Config::load_from(None, env(&[("VISIONQ_CACHE_DIR", "/srv/vq-cache")])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/vq-cache/data"), "data_dir follows VISIONQ_CACHE_DIR");
        let c = Config::load_from(None, env(&[("VISIONQ_CACHE_DIR", "/srv/c"), ("VISIONQ_DATA_DIR", "rel/data")])).unwrap();
        assert_eq!(c.data_dir, cwd.join("rel/data"), "a relative variable: against the working directory");
        // From a file: relative to the file's folder; a variable still wins.
        let dir = std::env::temp_dir().join(format!("vq-dirs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("visionq.toml");
        std::fs::write(&file, "cache_dir = \"cache\"\n").unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!((c.cache_dir.clone(), c.data_dir.clone()), (dir.join("cache"), dir.join("cache/data")));
        std::fs::write(&file, "data_dir = \"d\"\n").unwrap();
        let c = Config::load_from(Some(&file), env(&[("VISIONQ_CACHE_DIR", "c")])).unwrap();
        assert_eq!((c.cache_dir.clone(), c.data_dir.clone()), (cwd.join("c"), dir.join("d")));
        let c = Config::load_from(Some(&file), env(&[("VISIONQ_DATA_DIR", "/abs/d")])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/abs/d"));
        // The evidence folder: under the data dir unless set, then resolved as the others.
        assert_eq!(c.evidence_dir(), PathBuf::from("/abs/d/evidence"));
        std::fs::write(&file, "evidence_dir = \"kept\"\n").unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(c.evidence_dir(), dir.join("kept"));
        let c = Config::load_from(Some(&file), env(&[("VISIONQ_EVIDENCE_DIR", "ev")])).unwrap();
        assert_eq!(c.evidence_dir(), cwd.join("ev"));
        // The model repository likewise.
        std::fs::write(&file, "model_repository = \"models\"\nmodel_name = \"parts\"\n").unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!((c.model.model_repository, c.model.model_name.as_deref()), (Some(dir.join("models")), Some("parts")));
        let c = Config::load_from(Some(&file), env(&[("VISIONQ_MODEL_REPOSITORY", "m")])).unwrap();
        assert_eq!(c.model.model_repository, Some(cwd.join("m")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("visionq-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "max_batch_size = 4\nmax_batch_wait_ms = 9\nstations = [\"a\", \"b\"]\n").unwrap();
        let c =
            Config::load_from(Some(&file), env(&[("VISIONQ_MAX_BATCH_SIZE", "2"), ("VISIONQ_AMQP_URL", "amqp://x"), ("OTHER", "1")]))
                .unwrap();
        assert_eq!(c.batching.max_batch_size, 2);
        assert_eq!(c.batching.max_batch_wait_ms, 9);
        assert_eq!(c.stations, vec!["a", "b"]);
        assert_eq!(c.broker.amqp_url.as_ref().map(SecretUrl::expose), Some("amqp://x"));
        assert_eq!(c.model.conf_threshold, 0.25);
    }

    #[test]
    fn a_bad_choice_is_refused_by_its_key() {
        for (var, value, key) in
            [("VISIONQ_EXECUTION_PROVIDER", "gpu", "execution_provider"), ("VISIONQ_LOG_FORMAT", "xml", "log_format")]
        {
            let e = Config::load_from(None, [(var.to_string(), value.to_string())]).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(&format!("`{value}`")), "{e}");
        }
        let c = Config::load_from(None, [("VISIONQ_EXECUTION_PROVIDER".to_string(), "cuda".to_string())]).unwrap();
        assert_eq!(c.runtime.execution_provider, ExecutionProvider::Cuda);
    }

    #[test]
    fn stations_from_env_are_comma_separated() {
        let c = Config::load_from(None, env(&[("VISIONQ_STATIONS", "l1-cam1, l1-cam2")])).unwrap();
        assert!(c.station_known("l1-cam2"));
        assert!(!c.station_known("l9"));
    }

    #[test]
    fn invalid_values_are_refused_with_the_reason() {
        let e = Config::load_from(None, env(&[("VISIONQ_MAX_BATCH_SIZE", "0")])).unwrap_err();
        assert!(e.to_string().contains("max_batch_size"), "{e}");
        let e = Config::load_from(None, env(&[("VISIONQ_MAX_BATCH_SIZE", "many")])).unwrap_err();
        assert!(e.to_string().contains("invalid"), "{e}");
    }

    #[test]
    fn stations_override_deadline_and_rate_limit() {
        let dir = std::env::temp_dir().join(format!("visionq-cfg-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "frame_deadline_ms = 1000\nrate_limit_fps = 5\n[station.live-cam]\ndeadline_ms = 200\nrate_limit_fps = 30\nrate_limit_burst = 4\n[station.audit]\ndeadline_ms = 0\nrate_limit_fps = 0\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!((c.deadline_ms("live-cam"), c.deadline_ms("audit"), c.deadline_ms("other")), (200, 0, 1000));
        assert_eq!(c.rate_limit("live-cam"), Some((30.0, 4)));
        assert_eq!(c.rate_limit("audit"), None);
        assert_eq!(c.rate_limit("other"), Some((5.0, 5)));
        assert_eq!(c.exif_orientation("live-cam"), ExifOrientation::Apply, "applied by default");
        std::fs::write(&file, "exif_orientation = \"ignore\"\n[station.phone]\nexif_orientation = \"apply\"\n").unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!((c.exif_orientation("phone"), c.exif_orientation("other")), (ExifOrientation::Apply, ExifOrientation::Ignore));
        let c = Config::load_from(None, env(&[("VISIONQ_EXIF_ORIENTATION", "ignore")])).unwrap();
        assert_eq!(c.exif_orientation("any"), ExifOrientation::Ignore);
        assert!(Config::load_from(None, env(&[("VISIONQ_EXIF_ORIENTATION", "rotate")])).is_err());
        std::fs::write(&file, "[station.cam]\ndeadline_msec = 1\n").unwrap();
        assert!(Config::load_from(Some(&file), env(&[])).is_err(), "unknown per-station key is refused");
        std::fs::write(&file, "[station.\"bad id\"]\ndeadline_ms = 1\n").unwrap();
        assert!(Config::load_from(Some(&file), env(&[])).unwrap_err().to_string().contains("bad id"));
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("visionq-cfg-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("amqp-url");
        std::fs::write(&file, "amqp://svc:s3cret@rabbit:5672/%2f\n").unwrap();
        let c = Config::load_from(None, env(&[("VISIONQ_AMQP_URL_FILE", file.to_str().unwrap())])).unwrap();
        assert_eq!(c.broker.amqp_url.as_ref().map(SecretUrl::expose), Some("amqp://svc:s3cret@rabbit:5672/%2f"));
        let e = Config::load_from(None, env(&[("VISIONQ_DATABASE_URL_FILE", "/nonexistent/db-url")])).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/db-url"), "{e}");
        let e = Config::load_from(None, env(&[("VISIONQ_TLS_CERT_FILE", "/x.pem")])).unwrap_err();
        assert!(e.to_string().contains("tls_key_file"), "{e}");
    }

    #[test]
    fn the_input_size_comes_from_the_model_unless_set_to_agree() {
        let model = Path::new("fall-detection-yolov8.onnx");
        let mut c = Config::load_from(None, env(&[])).unwrap();
        c.adopt_model_input(model, 640, 640).unwrap();
        assert_eq!(c.preprocess.input_size, 640, "unset: the model's");
        let mut c = Config::load_from(None, env(&[("VISIONQ_INPUT_SIZE", "640")])).unwrap();
        c.adopt_model_input(model, 640, 640).unwrap();
        let mut c = Config::load_from(None, env(&[("VISIONQ_INPUT_SIZE", "416")])).unwrap();
        let e = c.adopt_model_input(model, 640, 640).unwrap_err().to_string();
        assert!(e.contains("input_size is 416") && e.contains("640x640") && e.contains("fall-detection"), "{e}");
        let mut c = Config::load_from(None, env(&[])).unwrap();
        c.adopt_model_input(model, 640, 480).unwrap();
        assert_eq!(c.preprocess.input_size, 416, "a non-square model changes nothing");
    }

    #[test]
    fn optional_keys_are_exactly_the_keys_unset_by_default() {
        use std::collections::BTreeSet;
        let all: BTreeSet<String> = match serde_json::to_value(Config::default()).unwrap() {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("{other}"),
        };
        let with_default: BTreeSet<String> = toml::Table::try_from(Config::default()).unwrap().keys().cloned().collect();
        let unset: BTreeSet<String> = all.difference(&with_default).cloned().collect();
        let listed: BTreeSet<String> = OPTIONAL_KEYS.iter().map(|k| k.to_string()).collect();
        assert_eq!(unset, listed, "OPTIONAL_KEYS must list the keys without a default");
    }

    /// The configuration's keys — in a file, as `VISIONQ_<KEY>` and in `GET /v1/config` —
    /// are the flat names operators use; grouping the fields into sections must not
    /// change one of them. (Written from the flat struct before it was grouped.)
    #[test]
    fn the_config_keys_are_the_flat_names_they_always_were() {
        use std::collections::BTreeSet;
        const KEYS: &[&str] = &[
            "accept_threshold",
            "amqp_tls_ca_file",
            "amqp_url",
            "amqp_url_file",
            "batch_shapes",
            "cache_dir",
            "candidate_max_error_rate",
            "candidate_max_latency_ratio",
            "candidate_min_agreement",
            "candidate_min_frames",
            "chain",
            "chain_cuda_tf32",
            "chain_max_batch_size",
            "chain_max_batch_wait_ms",
            "channel_order",
            "conf_threshold",
            "cuda_device_id",
            "cuda_tf32",
            "cudnn_conv_algo_search",
            "dashboard_low_threshold",
            "dashboard_max_stations",
            "dashboard_metrics_urls",
            "dashboard_preview_interval_ms",
            "dashboard_preview_max_bytes",
            "dashboard_stale_after_ms",
            "dashboard_store_max_bytes",
            "data_dir",
            "database_url",
            "database_url_file",
            "decode_scale",
            "drift_baseline_frames",
            "drift_max_detections_ratio",
            "drift_max_psi",
            "drift_window_frames",
            "durability",
            "evidence_dir",
            "evidence_forward_min_score",
            "evidence_max_bytes",
            "evidence_max_days",
            "evidence_recent_s",
            "execution_provider",
            "exif_orientation",
            "frame_deadline_ms",
            "frames_max_length",
            "http_body_timeout_ms",
            "http_header_timeout_ms",
            "http_idle_timeout_ms",
            "http_max_connections",
            "infer_input",
            "infer_spinning",
            "infer_streams",
            "infer_threads",
            "input_fit",
            "input_size",
            "iou_threshold",
            "jpeg_decoder",
            "line",
            "listen",
            "log_format",
            "max_batch_size",
            "max_batch_wait_ms",
            "max_body_bytes",
            "max_deliveries",
            "max_detections",
            "max_dimension",
            "max_pixels",
            "max_wait_ms",
            "model",
            "model_layout",
            "model_name",
            "model_repository",
            "nvjpeg_letterbox",
            "nvjpeg_max_batch",
            "nvjpeg_threads",
            "ort_dylib_path",
            "pinned_input",
            "pinned_output",
            "preprocess_concurrency",
            "queue_prefix",
            "rate_limit_burst",
            "rate_limit_fps",
            "resize_filter",
            "results_batch_size",
            "results_batch_wait_ms",
            "results_max_length",
            "retention_chunk",
            "retention_days",
            "retention_interval_s",
            "retry_after_s",
            "rule",
            "rules_file",
            "shutdown_timeout_ms",
            "sink",
            "station",
            "stations",
            "stream_window",
            "tensors_max_length",
            "tls_cert_file",
            "tls_key_file",
            "tokens_file",
            "track_iou",
            "track_max_gap_s",
            "zone",
        ];
        let mut keys: BTreeSet<String> = toml::Table::try_from(Config::default()).unwrap().keys().cloned().collect();
        keys.extend(OPTIONAL_KEYS.iter().map(|k| k.to_string()));
        let expected: BTreeSet<String> = KEYS.iter().map(|k| k.to_string()).collect();
        assert_eq!(keys, expected);
        let json = serde_json::to_value(Config::default().redacted()).unwrap();
        let json: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(json, expected, "/v1/config's JSON keys");
    }

    /// Each section reads its keys from the flat file and the flat environment as the
    /// flat struct did: one key of every section from a file, some overridden by
    /// variables (numbers, floats written as integers, enums, lists, paths and
    /// optional keys, all through serde's flatten), every other key at its default.
    #[test]
    fn every_section_loads_its_keys_from_the_file_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("visionq-cfg-sections-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("visionq.toml");
        std::fs::write(
            &file,
            r#"
durability = "process"
results_batch_wait_ms = 3
listen = "0.0.0.0:9000"
rate_limit_fps = 5
model = "m.onnx"
execution_provider = "cuda"
max_batch_size = 4
exif_orientation = "ignore"
nvjpeg_max_batch = 2
retention_days = 7
evidence_max_days = 3
dashboard_metrics_urls = ["http://infer:9090/metrics"]
track_iou = 0.5
log_format = "json"
stations = ["cam-1"]
"#,
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("VISIONQ_QUEUE_PREFIX", "plant1"),
                ("VISIONQ_DATABASE_URL", "postgres://app:pw@db/visionq"),
                ("VISIONQ_TLS_CERT_FILE", "/tls/cert.pem"),
                ("VISIONQ_TLS_KEY_FILE", "/tls/key.pem"),
                ("VISIONQ_MAX_WAIT_MS", "1500"),
                ("VISIONQ_CONF_THRESHOLD", "0"),
                ("VISIONQ_MODEL_NAME", "parts"),
                ("VISIONQ_CUDA_DEVICE_ID", "1"),
                ("VISIONQ_MAX_BATCH_SIZE", "16"),
                ("VISIONQ_INFER_INPUT", "frames"),
                ("VISIONQ_INPUT_SIZE", "640"),
                ("VISIONQ_NVJPEG_LETTERBOX", "false"),
                ("VISIONQ_RETENTION_CHUNK", "10"),
                ("VISIONQ_EVIDENCE_MAX_BYTES", "1000"),
                ("VISIONQ_DASHBOARD_METRICS_URLS", "http://a/metrics, http://b/metrics"),
                ("VISIONQ_TRACK_MAX_GAP_S", "4"),
                ("VISIONQ_SHUTDOWN_TIMEOUT_MS", "100"),
            ]),
        )
        .unwrap();
        let d = Config::default();
        assert_eq!(c.broker, BrokerConfig { durability: Durability::Process, queue_prefix: "plant1".into(), ..d.broker.clone() });
        let database_url = Some("postgres://app:pw@db/visionq".into());
        assert_eq!(c.database, DatabaseConfig { results_batch_wait_ms: 3, database_url, ..d.database.clone() });
        let (tls_cert_file, tls_key_file) = (Some(PathBuf::from("/tls/cert.pem")), Some(PathBuf::from("/tls/key.pem")));
        assert_eq!(c.http, HttpConfig { listen: "0.0.0.0:9000".into(), tls_cert_file, tls_key_file, ..d.http.clone() });
        assert_eq!(c.ingest, IngestConfig { rate_limit_fps: 5.0, max_wait_ms: 1500, ..d.ingest.clone() });
        let model =
            ModelConfig { file: Some("m.onnx".into()), model_name: Some("parts".into()), conf_threshold: 0.0, ..d.model.clone() };
        assert_eq!(c.model, model);
        assert_eq!(c.runtime, RuntimeConfig { execution_provider: ExecutionProvider::Cuda, cuda_device_id: 1, ..d.runtime.clone() });
        assert_eq!(c.batching, BatchingConfig { max_batch_size: 16, infer_input: InferInput::Frames, ..d.batching.clone() });
        let preprocess = PreprocessConfig {
            exif_orientation: ExifOrientation::Ignore,
            input_size: 640,
            input_size_set: true,
            ..d.preprocess.clone()
        };
        assert_eq!(c.preprocess, preprocess);
        assert_eq!(c.decode, DecodeConfig { nvjpeg_max_batch: 2, nvjpeg_letterbox: false, ..d.decode.clone() });
        assert_eq!(c.retention, RetentionConfig { retention_days: 7, retention_chunk: 10, ..d.retention.clone() });
        assert_eq!(c.evidence, EvidenceConfig { evidence_max_days: 3, evidence_max_bytes: 1000, ..d.evidence.clone() });
        let dashboard_metrics_urls = vec!["http://a/metrics".to_string(), "http://b/metrics".to_string()];
        assert_eq!(c.dashboard, DashboardConfig { dashboard_metrics_urls, ..d.dashboard.clone() });
        assert_eq!(c.events, EventsConfig { track_iou: 0.5, track_max_gap_s: 4.0, ..d.events.clone() });
        assert_eq!((c.log_format, c.shutdown_timeout_ms, c.stations.clone()), (LogFormat::Json, 100, vec!["cam-1".to_string()]));
        assert!(c.unknown_env.is_empty(), "{:?}", c.unknown_env);
        // The JSON of /v1/config is as flat as the file.
        let json = serde_json::to_value(c.redacted()).unwrap();
        assert_eq!(
            (&json["max_batch_size"], &json["listen"], &json["durability"]),
            (&16.into(), &"0.0.0.0:9000".into(), &"process".into())
        );
        assert_eq!((&json["database_url"], &json["model"]), (&"postgres://app:***@db/visionq".into(), &"m.onnx".into()));
        // A key no section has is still refused in a file, even one that looks like a section's.
        std::fs::write(&file, "batching = 4\n").unwrap();
        let e = Config::load_from(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(e.contains("unknown key `batching`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_visionq_variables_are_collected_and_others_left_alone() {
        let c = Config::load_from(
            None,
            env(&[
                ("VISIONQ_MAX_BATCH_SIZE", "4"),
                ("VISIONQ_MAX_BATCH", "4"),
                ("VISIONQ_MODLE", "x.onnx"),
                ("HOME", "/root"),
                ("VISIONQ_ASSETS_SCRIPT", "a.py"),
            ]),
        )
        .unwrap();
        assert_eq!(c.batching.max_batch_size, 4);
        assert_eq!(c.unknown_env, ["VISIONQ_MAX_BATCH", "VISIONQ_MODLE"]);
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let c = Config {
            broker: BrokerConfig { amqp_url: Some("amqp://guest:s3cret-amqp@host:5672/%2f".into()), ..Default::default() },
            database: DatabaseConfig { database_url: Some("postgres://app:s3cret-pg@db/visionq".into()), ..Default::default() },
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("amqp://guest:***@host:5672/%2f") && shown.contains("max_batch_size"), "{shown}");
        let sections = format!("{:?} {:?}", c.broker, c.database);
        assert!(!sections.contains("s3cret") && sections.contains("postgres://app:***@db/visionq"), "{sections}");
        // The URL itself, however it is printed; the plain text only by asking for it.
        let url = c.broker.amqp_url.clone().unwrap();
        for printed in [format!("{url}"), format!("{url:?}"), format!("{:?}", c.broker.amqp_url)] {
            assert!(!printed.contains("s3cret") && printed.contains("guest:***@host"), "{printed}");
        }
        assert_eq!(url.expose(), "amqp://guest:s3cret-amqp@host:5672/%2f");
        // Written to a file and read back (the loader's own round trip), it keeps its password.
        let text = toml::to_string(&c.broker).unwrap();
        assert!(text.contains("s3cret-amqp"), "{text}");
        let back: BrokerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.amqp_url.as_ref().map(SecretUrl::expose), Some(url.expose()));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("amqp://guest:secret@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url("Server=tcp:h,1433;User Id=sa;Password=s3cret;Encrypt=true"),
            "Server=tcp:h,1433;User Id=sa;Password=***;Encrypt=true"
        );
        assert_eq!(redact_url("jdbc:sqlserver://h:1433;user=sa;password=s3cret"), "jdbc:sqlserver://h:1433;user=sa;password=***");
    }
    #[test]
    fn batch_buckets_keep_cuda_sessions_at_fixed_shapes() {
        let mut c = Config::default();
        assert!(c.batch_buckets(8).is_empty(), "CPU: a pass is its batch");
        c.runtime.execution_provider = ExecutionProvider::Cuda;
        assert_eq!(c.batch_buckets(8), [1, 2, 4, 8]);
        assert_eq!(c.batch_buckets(12), [1, 2, 4, 8, 12]);
        assert_eq!(c.batch_buckets(1), [1]);
        c.batching.batch_shapes = BatchShapes::Max;
        assert_eq!(c.batch_buckets(16), [16]);
        c.batching.batch_shapes = BatchShapes::Exact;
        assert!(c.batch_buckets(16).is_empty());
        let c = Config::load_from(None, [("VISIONQ_BATCH_SHAPES".to_string(), "max".to_string())]).unwrap();
        assert_eq!(c.batching.batch_shapes, BatchShapes::Max);
        let e = Config::load_from(None, [("VISIONQ_CUDNN_CONV_ALGO_SEARCH".to_string(), "fast".to_string())]).unwrap_err();
        assert!(e.to_string().contains("cudnn_conv_algo_search"), "{e}");
    }
}
