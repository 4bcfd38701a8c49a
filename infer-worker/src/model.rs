//! The model on ONNX Runtime: loading (runtime library, execution provider,
//! metadata), batch assembly from u8 tensors, the forward pass and decoding.
//!
//! Inputs and outputs live in buffers allocated once per batch size and reused,
//! bound to the session through I/O binding; on CUDA the inputs are pinned host
//! memory (outputs too with `pinned_output`), so their copy to the device is a DMA
//! transfer. A model whose input is
//! uint8 NHWC (`tools/u8_input.py` adds that prefix) takes the u8 tensors as they
//! are: assembly is a memcpy, a quarter of the float bytes cross the bus, and the
//! scaling to float happens on the device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynTensor, Tensor, TensorElementType, ValueType};
use visionq_contract::{Config, ModelInfo};
use visionq_models::{Manifest, Repository, Version};

use crate::decode::{Candidate, Layout, candidates, nms, parse_names};
use crate::error::InferError;

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads the ONNX Runtime library once per process.
pub(crate) fn environment(dylib: &Path) -> Result<&'static ort::environment::Environment, InferError> {
    let env = ENVIRONMENT.get_or_init(|| {
        if !dylib.exists() {
            return Err("file not found".to_string());
        }
        ort::init_from(dylib).map_err(|e| e.to_string())?.with_name("visionq").build().map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|message| InferError::Runtime { path: dylib.into(), message: message.clone() })
}

/// Whether the model takes any batch size or a fixed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchDim {
    Dynamic,
    Fixed(usize),
}

pub struct Model {
    /// One session per batch bucket (`buckets[i]` runs on `sessions[i]`), or one
    /// session for every size when `buckets` is empty: a CUDA session re-plans its
    /// convolutions on every change of input shape, so on CUDA no session ever
    /// sees two shapes.
    sessions: Vec<Session>,
    /// Batch sizes a pass runs at, ascending; empty: any (the pass is the batch).
    buckets: Arc<[usize]>,
    input_name: String,
    output_name: String,
    pub input_format: InputFormat,
    /// Pinned host memory on CUDA (per `pinned_input` / `pinned_output`), ordinary
    /// memory on the CPU.
    input_alloc: Allocator,
    output_alloc: Allocator,
    /// Two sets of buffers, so one batch is assembled while the other runs.
    slots: [HashMap<usize, Slot>; 2],
    pub input_width: u32,
    pub input_height: u32,
    pub batch: BatchDim,
    pub layout: Layout,
    pub names: Vec<String>,
    pub info: ModelInfo,
    /// What it was loaded from (another stream of the same model loads the same).
    pub spec: ModelSpec,
    /// Per-image output shape `[a, b]`.
    out_dims: (usize, usize),
    conf: f32,
    iou: f32,
    max_detections: usize,
}

/// `sha256:` and the first 12 hex digits of the file's digest.
fn content_version(path: &Path) -> Result<String, InferError> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(|e| InferError::Load { path: path.into(), message: e.to_string() })?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| InferError::Load { path: path.into(), message: e.to_string() })?;
    let digest = hasher.finalize();
    Ok(format!("sha256:{}", digest.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>()))
}

/// A plain file's name and version: the metadata's `model_name`, else the file
/// name; the declared `model_version`, else the ONNX model version when set, else
/// the file's content, so a different set of weights never shares a version.
fn file_info(meta: &ort::session::ModelMetadata<'_>, path: &Path) -> Result<ModelInfo, InferError> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(ModelInfo {
        name: meta.custom("model_name").unwrap_or(stem),
        version: meta
            .custom("model_version")
            .or_else(|| meta.version().filter(|v| *v > 0 && *v < i64::MAX).map(|v| v.to_string()))
            .map_or_else(|| content_version(path), Ok)?,
    })
}

/// How the model takes its images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// float32 `[N, 3, H, W]`, RGB scaled to 0–1 (the usual export).
    F32Nchw,
    /// uint8 `[N, H, W, 3]`, RGB: the u8 tensors as preprocess emits them.
    U8Nhwc,
}

/// What filling a batch buffer needs to know of the model's input.
#[derive(Debug, Clone)]
struct InputShape {
    format: InputFormat,
    width: usize,
    height: usize,
    batch: BatchDim,
    /// Batch buckets of a dynamic-batch model (empty: none).
    buckets: Arc<[usize]>,
}

impl InputShape {
    /// Batch size of one forward pass over `images` images: the model's fixed
    /// batch, the smallest bucket that holds them, or the images themselves.
    fn pass_size(&self, images: usize) -> usize {
        match self.batch {
            BatchDim::Fixed(n) => n,
            BatchDim::Dynamic => bucket_for(&self.buckets, images),
        }
    }
}

/// Which session runs a pass of `n` (the one session when there are no buckets).
fn session_index(buckets: &[usize], n: usize) -> usize {
    buckets.iter().position(|b| *b == n).unwrap_or(0)
}

/// The smallest bucket holding `images` (the largest when none does), or `images`
/// when there are no buckets.
fn bucket_for(buckets: &[usize], images: usize) -> usize {
    match buckets.iter().find(|b| **b >= images) {
        Some(b) => *b,
        None => buckets.last().copied().unwrap_or(images),
    }
}

/// A batch size's reusable input buffer and its binding (output buffer bound).
struct Slot {
    input: DynTensor,
    /// Bound as the output: the pass writes here, and it stays readable until the
    /// slot's next pass.
    output: Tensor<f32>,
    binding: IoBinding,
}

fn dims(t: &ValueType) -> Option<Vec<i64>> {
    match t {
        ValueType::Tensor { shape, .. } => Some(shape.iter().copied().collect()),
        _ => None,
    }
}

fn element(t: &ValueType) -> Option<TensorElementType> {
    match t {
        ValueType::Tensor { ty, .. } => Some(*ty),
        _ => None,
    }
}

/// ONNX Runtime's intra-op threads: `configured`, or else the cores this process may
/// use. Left to itself ONNX Runtime takes one thread per core of the machine and pins
/// each to its core, ignoring the process's CPU affinity and its container's CPU
/// quota: pinned to 2 of 16 cores (`taskset`), the process was measured using 12.9
/// cores, and in a pod limited to 2 CPUs on a big node its threads would fight over
/// the quota.
pub fn intra_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Which file to load, and what the model repository says of it.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub path: PathBuf,
    /// The repository's `name:version`; None: read from the file.
    pub info: Option<ModelInfo>,
    /// The version's `model.toml` (empty for a plain file).
    pub manifest: Manifest,
}

impl ModelSpec {
    /// A plain model file, described by itself.
    pub fn file(path: impl Into<PathBuf>) -> ModelSpec {
        ModelSpec { path: path.into(), info: None, manifest: Manifest::default() }
    }

    /// A version of the model repository.
    pub fn version(v: &Version) -> ModelSpec {
        ModelSpec {
            path: v.model_file(),
            info: Some(ModelInfo { name: v.name.clone(), version: v.version.clone() }),
            manifest: v.manifest.clone(),
        }
    }

    /// What this configuration serves: the active version of `model_name` in
    /// `model_repository` when one is set, else the `model` file.
    pub fn from_config(config: &Config) -> Result<ModelSpec, InferError> {
        match &config.model.model_repository {
            None => Ok(ModelSpec::file(config.model_path())),
            Some(root) => {
                let repo = Repository::new(root);
                let name = repo.serving_name(config.model.model_name.as_deref())?;
                Ok(ModelSpec::version(&repo.active(&name)?))
            }
        }
    }
}

impl Model {
    /// Loads the model the configuration names (see [`ModelSpec::from_config`]).
    pub fn load(config: &Config) -> Result<Model, InferError> {
        Model::load_spec(config, &ModelSpec::from_config(config)?)
    }

    pub fn load_spec(config: &Config, spec: &ModelSpec) -> Result<Model, InferError> {
        let path = spec.path.clone();
        let manifest = &spec.manifest;
        if !path.exists() {
            return Err(InferError::MissingModel(path));
        }
        let env = environment(&config.ort_dylib_path())?;
        let load = |e: ort::Error| InferError::Load { path: path.clone(), message: e.to_string() };
        let open = || -> Result<Session, InferError> {
            let mut builder = Session::builder(env).map_err(load)?;
            builder = builder.with_intra_threads(intra_threads(config.runtime.infer_threads)).map_err(|e| load(e.into()))?;
            if !config.runtime.infer_spinning {
                builder = builder.with_intra_op_spinning(false).map_err(|e| load(e.into()))?;
            }
            builder = crate::provider::configure(builder, config)?;
            builder.commit_from_file(&path).map_err(load)
        };
        let session = open()?;

        let input = session.inputs().first().ok_or_else(|| InferError::Unsupported("no input".into()))?;
        let in_dims = dims(input.dtype()).unwrap_or_default();
        let in_type = element(input.dtype());
        let (input_format, n, h, w) = match (in_type, &in_dims[..]) {
            (Some(TensorElementType::Float32), &[n, 3, h, w]) => (InputFormat::F32Nchw, n, h, w),
            (Some(TensorElementType::Uint8), &[n, h, w, 3]) => (InputFormat::U8Nhwc, n, h, w),
            _ => {
                return Err(InputFormat::unsupported(in_type, &in_dims));
            }
        };
        if h <= 0 || w <= 0 {
            return Err(InferError::Unsupported(format!("input shape {in_dims:?} has no fixed H and W")));
        }
        if let Some([mw, mh]) = manifest.input_size
            && (i64::from(mw), i64::from(mh)) != (w, h)
        {
            return Err(InferError::Unsupported(format!("model.toml says input_size [{mw}, {mh}] but the file takes {w}x{h}")));
        }
        if let Some(f) = &manifest.input_format
            && f != input_format.name()
        {
            return Err(InferError::Unsupported(format!(
                "model.toml says input_format {f} but the file takes {}",
                input_format.name()
            )));
        }
        let batch = if n > 0 { BatchDim::Fixed(n as usize) } else { BatchDim::Dynamic };
        let buckets: Arc<[usize]> = match batch {
            BatchDim::Fixed(_) => Arc::from(Vec::new()),
            BatchDim::Dynamic => Arc::from(config.batch_buckets(config.batching.max_batch_size)),
        };
        let input_name = input.name().to_string();

        let output = session.outputs().first().ok_or_else(|| InferError::Unsupported("no output".into()))?;
        let output_name = output.name().to_string();
        let out = dims(output.dtype()).unwrap_or_default();
        let [_, a, b] = out[..] else {
            return Err(InferError::Unsupported(format!("output shape {out:?} is not [N, a, b]")));
        };
        if a <= 0 || b <= 0 {
            return Err(InferError::Unsupported(format!("output shape {out:?} has dynamic box dimensions")));
        }
        let (a, b) = (a as usize, b as usize);

        let meta = session.metadata().map_err(load)?;
        let names = match &manifest.names {
            Some(n) => n.clone(),
            None => meta.custom("names").and_then(|s| parse_names(&s)).unwrap_or_default(),
        };
        let classes = (!names.is_empty()).then_some(names.len());
        let declared = manifest.layout.clone().or_else(|| config.model.model_layout.clone()).or_else(|| meta.custom("layout"));
        let layout = match declared {
            Some(l) => Layout::parse(&l).ok_or_else(|| InferError::Unsupported(format!("unknown layout `{l}`")))?,
            None => Layout::infer(a, b, classes)
                .ok_or_else(|| InferError::Unsupported(format!("cannot tell the layout of output {out:?}")))?,
        };
        let info = match &spec.info {
            Some(info) => Ok(info.clone()),
            None => file_info(&meta, &path),
        }?;
        drop(meta);
        // Pinned host buffers on CUDA (DMA copies), unless turned off per side.
        let pinned = |on: bool, kind| -> Result<Allocator, InferError> {
            if config.runtime.execution_provider != visionq_contract::config::ExecutionProvider::Cuda || !on {
                return Ok(Allocator::default());
            }
            MemoryInfo::new(AllocationDevice::CUDA_PINNED, config.runtime.cuda_device_id, AllocatorType::Device, kind)
                .and_then(|info| Allocator::new(&session, info))
                .map_err(|e| InferError::CudaUnavailable(format!("no pinned host allocator: {e}")))
        };
        let input_alloc = pinned(config.runtime.pinned_input, MemoryType::CPUInput)?;
        let output_alloc = pinned(config.runtime.pinned_output, MemoryType::CPUOutput)?;
        // One more session per further bucket: each keeps one input shape for good.
        let mut sessions = vec![session];
        for _ in 1..buckets.len() {
            sessions.push(open()?);
        }
        tracing::info!(
            model = %path.display(), name = info.name, version = info.version, layout = layout.name(),
            input = ?in_dims, input_format = ?input_format, output = ?out, classes = names.len(),
            provider = config.runtime.execution_provider.as_str(), batch_buckets = ?buckets, "model loaded"
        );
        Ok(Model {
            sessions,
            buckets,
            input_name,
            output_name,
            input_format,
            input_alloc,
            output_alloc,
            slots: [HashMap::new(), HashMap::new()],
            input_width: w as u32,
            input_height: h as u32,
            batch,
            layout,
            names,
            info,
            spec: spec.clone(),
            out_dims: (a, b),
            conf: manifest.conf_threshold.unwrap_or(config.model.conf_threshold),
            iou: manifest.iou_threshold.unwrap_or(config.model.iou_threshold),
            max_detections: config.model.max_detections,
        })
    }

    /// Loads the model ready to serve: on CUDA every batch size gets its kernels chosen
    /// before the first frame; on the CPU one small pass checks the model runs at all.
    pub fn load_warmed(config: &Config) -> Result<Model, InferError> {
        Model::load_warmed_spec(config, &ModelSpec::from_config(config)?)
    }

    /// [`Self::load_warmed`] of `spec`.
    pub fn load_warmed_spec(config: &Config, spec: &ModelSpec) -> Result<Model, InferError> {
        let mut model = Model::load_spec(config, spec)?;
        let sizes = if config.runtime.execution_provider == visionq_contract::config::ExecutionProvider::Cuda {
            config.batching.max_batch_size
        } else {
            1
        };
        let t0 = std::time::Instant::now();
        model.warm_up(sizes)?;
        tracing::info!(batch_sizes = sizes, ms = t0.elapsed().as_millis() as u64, "model warmed up");
        Ok(model)
    }

    /// Largest batch one forward pass takes (`preferred` for dynamic models, at most
    /// the largest bucket).
    pub fn max_batch(&self, preferred: usize) -> usize {
        match (self.batch, self.buckets.last()) {
            (BatchDim::Dynamic, Some(largest)) => preferred.min(*largest),
            (BatchDim::Dynamic, None) => preferred,
            (BatchDim::Fixed(n), _) => n,
        }
    }

    pub fn class_name(&self, id: u32) -> String {
        self.names.get(id as usize).cloned().unwrap_or_else(|| format!("class_{id}"))
    }

    /// Bytes of one u8 HWC input tensor.
    pub fn tensor_len(&self) -> usize {
        self.input_width as usize * self.input_height as usize * 3
    }

    /// Runs the model on u8 HWC tensors (each [`Self::tensor_len`] bytes): one forward
    /// pass per batch (per image for fixed-batch models). Returns detections per
    /// image in model-input pixels, after threshold and NMS.
    pub fn detect(&mut self, tensors: &[&[u8]]) -> Result<Vec<Vec<Candidate>>, InferError> {
        let chunk = self.max_batch(tensors.len().max(1));
        let mut all = Vec::with_capacity(tensors.len());
        for part in tensors.chunks(chunk) {
            all.extend(self.forward(part)?);
        }
        Ok(all)
    }

    /// Runs one forward pass at each batch size up to `max_batch` in both buffer sets
    /// (CUDA picks its kernels per shape on first use: do that before the first frame,
    /// and [`Self::run_overlapped`] needs every buffer made).
    pub fn warm_up(&mut self, max_batch: usize) -> Result<(), InferError> {
        let blank = vec![114u8; self.tensor_len()];
        let sizes: Vec<usize> = match self.batch {
            BatchDim::Fixed(n) => vec![n],
            BatchDim::Dynamic if !self.buckets.is_empty() => self.buckets.to_vec(),
            BatchDim::Dynamic => (1..=max_batch.max(1)).collect(),
        };
        for n in sizes {
            let views = vec![&blank[..]; n];
            for set in 0..2 {
                let n = self.assemble_in(set, &views)?;
                self.execute_in(set, n, |_, _| ())?;
            }
        }
        Ok(())
    }

    fn input_shape(&self) -> InputShape {
        InputShape {
            format: self.input_format,
            width: self.input_width as usize,
            height: self.input_height as usize,
            batch: self.batch,
            buckets: self.buckets.clone(),
        }
    }

    /// Batch size of one forward pass over `images` images.
    pub fn pass_size(&self, images: usize) -> usize {
        self.input_shape().pass_size(images)
    }

    /// Copies `tensors` into buffer set 0; returns the pass size.
    pub fn assemble(&mut self, tensors: &[&[u8]]) -> Result<usize, InferError> {
        self.assemble_in(0, tensors)
    }

    /// Copies `tensors` into the batch buffer of `set` (0 or 1) for their pass size,
    /// made on first use. The pass binds it.
    pub fn assemble_in(&mut self, set: usize, tensors: &[&[u8]]) -> Result<usize, InferError> {
        let n = self.pass_size(tensors.len());
        if !self.slots[set].contains_key(&n) {
            let slot = self.new_slot(n)?;
            self.slots[set].insert(n, slot);
        }
        self.assembler(set).assemble(tensors)
    }

    fn new_slot(&self, n: usize) -> Result<Slot, InferError> {
        let run = |e: ort::Error| InferError::Run(format!("allocating batch buffers: {e}"));
        let (w, h) = (self.input_width as usize, self.input_height as usize);
        let input = match self.input_format {
            InputFormat::F32Nchw => Tensor::<f32>::new(&self.input_alloc, [n, 3, h, w]).map_err(run)?.upcast(),
            InputFormat::U8Nhwc => Tensor::<u8>::new(&self.input_alloc, [n, h, w, 3]).map_err(run)?.upcast(),
        };
        let (a, b) = self.out_dims;
        let mut output = Tensor::<f32>::new(&self.output_alloc, [n, a, b]).map_err(run)?;
        let mut binding = self.sessions[session_index(&self.buckets, n)].create_binding().map_err(run)?;
        binding.bind_output(self.output_name.as_str(), &mut output).map_err(run)?;
        Ok(Slot { input, output, binding })
    }

    fn assembler(&mut self, set: usize) -> Assembler<'_> {
        let (shape, decoder) = (self.input_shape(), self.decoder());
        Assembler { slots: &mut self.slots[set], shape, decoder }
    }

    /// One forward pass over the batch assembled in set 0.
    pub fn execute<R>(&mut self, n: usize, decode: impl FnOnce(&[f32], (usize, usize)) -> R) -> Result<R, InferError> {
        self.execute_in(0, n, decode)
    }

    /// One forward pass over the batch of size `n` assembled in `set`; `decode` gets
    /// the output (`[n, a, b]`, host memory) and its per-image dimensions.
    pub fn execute_in<R>(&mut self, set: usize, n: usize, decode: impl FnOnce(&[f32], (usize, usize)) -> R) -> Result<R, InferError> {
        let session = &mut self.sessions[session_index(&self.buckets, n)];
        let slot = self.slots[set].get_mut(&n).ok_or_else(|| InferError::Run(format!("no batch of {n} assembled")))?;
        pass(session, &self.input_name, slot)?;
        read_output(slot, self.out_dims, n, decode)
    }

    /// Detections of the last pass of size `n` in `set`, for its first `images` images.
    pub fn decode_in(&self, set: usize, n: usize, images: usize) -> Result<Vec<Vec<Candidate>>, InferError> {
        let slot = self.slots[set].get(&n).ok_or_else(|| InferError::Run(format!("no batch of {n} assembled")))?;
        let d = self.decoder();
        read_output(slot, self.out_dims, n, |data, dims| d.decode(data, dims, images))
    }

    fn decoder(&self) -> Decoder {
        Decoder { layout: self.layout, conf: self.conf, iou: self.iou, max_detections: self.max_detections, out_dims: self.out_dims }
    }

    fn forward(&mut self, tensors: &[&[u8]]) -> Result<Vec<Vec<Candidate>>, InferError> {
        let n = self.assemble(tensors)?;
        let d = self.decoder();
        self.execute(n, |data, dims| d.decode(data, dims, tensors.len()))
    }

    /// Runs the pass assembled in `set` (size `n`) on this thread while `meanwhile` runs
    /// on another, given the other buffer set — to decode the previous pass's output
    /// ([`Assembler::decode`]) and assemble the next batch — and a flag raised when the
    /// pass is done. The device then waits neither on assembly nor on decoding. The
    /// pass's own output is read afterwards ([`Self::decode_in`], or `meanwhile` of the
    /// next pass). Buffers must exist (see [`Self::warm_up`]).
    pub fn run_overlapped<M: Send>(
        &mut self,
        set: usize,
        n: usize,
        meanwhile: impl FnOnce(&mut Assembler<'_>, &PassDone) -> M + Send,
    ) -> (Result<(), InferError>, f64, M) {
        let (shape, decoder) = (self.input_shape(), self.decoder());
        let [s0, s1] = &mut self.slots;
        let (current, other) = if set == 0 { (s0, s1) } else { (s1, s0) };
        let mut assembler = Assembler { slots: other, shape, decoder };
        let Some(slot) = current.get_mut(&n) else {
            let m = meanwhile(&mut assembler, &PassDone::already());
            return (Err(InferError::Run(format!("no batch of {n} assembled"))), 0.0, m);
        };
        let session = &mut self.sessions[session_index(&self.buckets, n)];
        let input_name = self.input_name.as_str();
        let done = PassDone { flag: AtomicBool::new(false), notify: tokio::sync::Notify::new() };
        // The pass stays on this (long-lived) thread: ONNX Runtime's CUDA provider keeps
        // per-thread handles, and a new thread per pass would pay for new ones each time.
        std::thread::scope(|scope| {
            let done = &done;
            let other = scope.spawn(move || meanwhile(&mut assembler, done));
            let t0 = std::time::Instant::now();
            let r = pass(session, input_name, slot);
            let secs = t0.elapsed().as_secs_f64();
            done.flag.store(true, Ordering::Release);
            done.notify.notify_one();
            match other.join() {
                Ok(m) => (r, secs, m),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Output decoding: threshold, layout, class-aware NMS, per image in parallel (the
/// scan and NMS of a batch then take about one image's time).
#[derive(Debug, Clone, Copy)]
struct Decoder {
    layout: Layout,
    conf: f32,
    iou: f32,
    max_detections: usize,
    out_dims: (usize, usize),
}

impl Decoder {
    fn decode(&self, data: &[f32], (a, b): (usize, usize), images: usize) -> Vec<Vec<Candidate>> {
        use rayon::prelude::*;
        let d = *self;
        (0..images)
            .into_par_iter()
            .map(|i| {
                let c = candidates(d.layout, &data[i * a * b..(i + 1) * a * b], a, b, d.conf);
                if d.layout == Layout::Yolov10 { c } else { nms(c, d.iou, d.max_detections) }
            })
            .collect()
    }
}

/// Binds the input and runs the pass; the output lands in the slot's bound buffer.
/// Done on the thread that runs the pass: ONNX Runtime's CUDA provider keeps
/// per-thread state, and binding from a short-lived thread costs a new one each time.
fn pass(session: &mut Session, input_name: &str, slot: &mut Slot) -> Result<(), InferError> {
    let run = |e: ort::Error| InferError::Run(e.to_string());
    slot.binding.bind_input(input_name, &slot.input).map_err(run)?;
    session.run_binding(&slot.binding).map_err(run)?;
    Ok(())
}

fn read_output<R>(
    slot: &Slot,
    (a, b): (usize, usize),
    n: usize,
    decode: impl FnOnce(&[f32], (usize, usize)) -> R,
) -> Result<R, InferError> {
    let (shape, data) = slot.output.try_extract_tensor::<f32>().map_err(|e| InferError::Run(e.to_string()))?;
    if shape.len() != 3 || shape[1] as usize != a || shape[2] as usize != b || data.len() != n * a * b {
        return Err(InferError::Run(format!("unexpected output shape {shape:?}")));
    }
    Ok(decode(data, (a, b)))
}

/// Raised when a pass of [`Model::run_overlapped`] is over: poll `is_done`, or await
/// `notified` (a notification sent before the wait began is kept).
pub struct PassDone {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl PassDone {
    fn already() -> PassDone {
        PassDone { flag: AtomicBool::new(true), notify: tokio::sync::Notify::new() }
    }

    pub fn is_done(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub async fn notified(&self) {
        if !self.is_done() {
            self.notify.notified().await;
        }
    }
}

/// Fills one buffer set's batch buffers (those already made) and binds them.
pub struct Assembler<'m> {
    slots: &'m mut HashMap<usize, Slot>,
    shape: InputShape,
    decoder: Decoder,
}

impl Assembler<'_> {
    /// Detections of this set's last pass of size `n`, for its first `images` images.
    pub fn decode(&self, n: usize, images: usize) -> Result<Vec<Vec<Candidate>>, InferError> {
        let slot = self.slots.get(&n).ok_or_else(|| InferError::Run(format!("no batch of {n} ran")))?;
        let d = self.decoder;
        read_output(slot, d.out_dims, n, |data, dims| d.decode(data, dims, images))
    }

    /// Copies `tensors` into the buffer of their pass size; returns the pass size.
    /// Fails when that buffer was never made.
    pub fn assemble(&mut self, tensors: &[&[u8]]) -> Result<usize, InferError> {
        let n = self.shape.pass_size(tensors.len());
        if tensors.len() > n {
            return Err(InferError::Run(format!("{} images do not fit a pass of {n}", tensors.len())));
        }
        let run = |e: ort::Error| InferError::Run(e.to_string());
        let slot = self.slots.get_mut(&n).ok_or_else(|| InferError::Run(format!("no buffer for a batch of {n}")))?;
        match self.shape.format {
            InputFormat::F32Nchw => {
                let (_, data) = slot.input.try_extract_tensor_mut::<f32>().map_err(run)?;
                fill_nchw(data, tensors, self.shape.width, self.shape.height);
            }
            InputFormat::U8Nhwc => {
                let (_, data) = slot.input.try_extract_tensor_mut::<u8>().map_err(run)?;
                fill_nhwc(data, tensors);
            }
        }
        // Bound by the thread that runs the pass (see `pass`).
        Ok(n)
    }
}

impl InputFormat {
    /// As `model.toml` writes it.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::F32Nchw => "f32_nchw",
            InputFormat::U8Nhwc => "u8_nhwc",
        }
    }

    fn unsupported(ty: Option<TensorElementType>, dims: &[i64]) -> InferError {
        InferError::Unsupported(format!("input {ty:?} {dims:?} is neither float32 [N, 3, H, W] nor uint8 [N, H, W, 3]"))
    }
}

/// u8 HWC RGB images into an f32 NCHW batch buffer scaled to 0–1; slots past the images are zeroed.
pub fn fill_nchw(out: &mut [f32], tensors: &[&[u8]], w: usize, h: usize) {
    let plane = w * h;
    let mut chunks = out.chunks_exact_mut(3 * plane);
    for (img, dst) in tensors.iter().zip(&mut chunks) {
        let (r, rest) = dst.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in img.chunks_exact(3).enumerate() {
            r[i] = px[0] as f32 * (1.0 / 255.0);
            g[i] = px[1] as f32 * (1.0 / 255.0);
            b[i] = px[2] as f32 * (1.0 / 255.0);
        }
    }
    for rest in chunks {
        rest.fill(0.0);
    }
}

/// u8 HWC images back to back into a u8 NHWC batch buffer; slots past the images are
/// zeroed. The images are copied in parallel: one thread's memcpy of a batch of 8
/// (4 MB at 416×416) is a noticeable share of a GPU forward pass.
pub fn fill_nhwc(out: &mut [u8], tensors: &[&[u8]]) {
    use rayon::prelude::*;
    let len = tensors.first().map_or(0, |t| t.len()).max(1);
    out.par_chunks_mut(len).enumerate().for_each(|(i, dst)| match tensors.get(i) {
        Some(img) => dst.copy_from_slice(img),
        None => dst.fill(0),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_assembly_is_planar_and_scaled() {
        let a = [255u8, 0, 51, 0, 255, 102];
        let mut out = vec![7.0f32; 2 * 3 * 2];
        fill_nchw(&mut out, &[&a], 2, 1);
        let expected = [1.0, 0.0, 0.0, 1.0, 0.2, 0.4];
        assert!(out[..6].iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", &out[..6]);
        assert!(out[6..].iter().all(|v| *v == 0.0), "padding slot stays zero");
    }

    #[test]
    fn nhwc_assembly_is_a_copy_and_zeroes_the_rest() {
        let (a, b) = ([1u8, 2, 3], [4u8, 5, 6]);
        let mut out = vec![9u8; 9];
        fill_nhwc(&mut out, &[&a, &b]);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 0, 0, 0]);
    }
}
