//! The model on ONNX Runtime: loading (runtime library, execution provider,
//! metadata), batch assembly from u8 tensors, the forward pass and decoding.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::{Tensor, ValueType};
use visionq_contract::{Config, ModelInfo};

use crate::decode::{candidates, nms, parse_names, Candidate, Layout};

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("cannot load ONNX Runtime from {path}: {message} (run `visionq model fetch`, or set ORT_DYLIB_PATH)")]
    Runtime { path: PathBuf, message: String },
    #[error("model file {0} does not exist (run `visionq model fetch`, or set VISIONQ_MODEL)")]
    MissingModel(PathBuf),
    #[error("cannot load model {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("the CUDA execution provider was asked for but is not usable: {0}")]
    CudaUnavailable(String),
    #[error("inference failed: {0}")]
    Run(String),
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads the ONNX Runtime library once per process.
fn environment(dylib: &Path) -> Result<&'static ort::environment::Environment, InferError> {
    let env = ENVIRONMENT.get_or_init(|| {
        if !dylib.exists() {
            return Err("file not found".to_string());
        }
        ort::init_from(dylib)
            .map_err(|e| e.to_string())?
            .with_name("visionq")
            .build()
            .map_err(|e| e.to_string())
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
    session: Session,
    input_name: String,
    pub input_width: u32,
    pub input_height: u32,
    pub batch: BatchDim,
    pub layout: Layout,
    pub names: Vec<String>,
    pub info: ModelInfo,
    /// Per-image output shape `[a, b]`.
    out_dims: (usize, usize),
    conf: f32,
    iou: f32,
    max_detections: usize,
}

fn dims(t: &ValueType) -> Option<Vec<i64>> {
    match t {
        ValueType::Tensor { shape, .. } => Some(shape.iter().copied().collect()),
        _ => None,
    }
}

impl Model {
    pub fn load(config: &Config) -> Result<Model, InferError> {
        let path = config.model_path();
        if !path.exists() {
            return Err(InferError::MissingModel(path));
        }
        let env = environment(&config.ort_dylib_path())?;
        let load = |e: ort::Error| InferError::Load { path: path.clone(), message: e.to_string() };
        let mut builder = Session::builder(env).map_err(load)?;
        if config.infer_threads > 0 {
            builder = builder.with_intra_threads(config.infer_threads).map_err(|e| load(e.into()))?;
        }
        builder = crate::provider::configure(builder, config)?;
        let session = builder.commit_from_file(&path).map_err(load)?;

        let input = session.inputs().first().ok_or_else(|| InferError::Unsupported("no input".into()))?;
        let in_dims = dims(input.dtype()).unwrap_or_default();
        let [n, c, h, w] = in_dims[..] else {
            return Err(InferError::Unsupported(format!("input shape {in_dims:?} is not [N, 3, H, W]")));
        };
        if c != 3 || h <= 0 || w <= 0 {
            return Err(InferError::Unsupported(format!("input shape {in_dims:?} is not [N, 3, H, W] with a fixed H and W")));
        }
        let batch = if n > 0 { BatchDim::Fixed(n as usize) } else { BatchDim::Dynamic };
        let input_name = input.name().to_string();

        let output = session.outputs().first().ok_or_else(|| InferError::Unsupported("no output".into()))?;
        let out = dims(output.dtype()).unwrap_or_default();
        let [_, a, b] = out[..] else {
            return Err(InferError::Unsupported(format!("output shape {out:?} is not [N, a, b]")));
        };
        if a <= 0 || b <= 0 {
            return Err(InferError::Unsupported(format!("output shape {out:?} has dynamic box dimensions")));
        }
        let (a, b) = (a as usize, b as usize);

        let meta = session.metadata().map_err(load)?;
        let names = meta.custom("names").and_then(|s| parse_names(&s)).unwrap_or_default();
        let classes = (!names.is_empty()).then_some(names.len());
        let declared = config.model_layout.clone().or_else(|| meta.custom("layout"));
        let layout = match declared {
            Some(l) => Layout::parse(&l).ok_or_else(|| InferError::Unsupported(format!("unknown layout `{l}`")))?,
            None => Layout::infer(a, b, classes)
                .ok_or_else(|| InferError::Unsupported(format!("cannot tell the layout of output {out:?}")))?,
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let info = ModelInfo {
            name: meta.custom("model_name").unwrap_or(stem),
            version: meta.custom("model_version").or_else(|| meta.version().map(|v| v.to_string())).unwrap_or_else(|| "unversioned".into()),
        };
        drop(meta);
        tracing::info!(
            model = %path.display(), name = info.name, version = info.version, layout = layout.name(),
            input = ?in_dims, output = ?out, classes = names.len(), provider = config.execution_provider,
            "model loaded"
        );
        Ok(Model {
            session,
            input_name,
            input_width: w as u32,
            input_height: h as u32,
            batch,
            layout,
            names,
            info,
            out_dims: (a, b),
            conf: config.conf_threshold,
            iou: config.iou_threshold,
            max_detections: config.max_detections,
        })
    }

    /// Largest batch one forward pass takes (`preferred` for dynamic models).
    pub fn max_batch(&self, preferred: usize) -> usize {
        match self.batch {
            BatchDim::Dynamic => preferred,
            BatchDim::Fixed(n) => n,
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

    fn forward(&mut self, tensors: &[&[u8]]) -> Result<Vec<Vec<Candidate>>, InferError> {
        let (w, h) = (self.input_width as usize, self.input_height as usize);
        let n = match self.batch {
            BatchDim::Fixed(n) => n,
            BatchDim::Dynamic => tensors.len(),
        };
        let input = assemble_nchw(tensors, n, w, h);
        let value = Tensor::from_array(([n, 3, h, w], input)).map_err(|e| InferError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => value])
            .map_err(|e| InferError::Run(e.to_string()))?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(|e| InferError::Run(e.to_string()))?;
        let (a, b) = self.out_dims;
        if shape.len() != 3 || shape[1] as usize != a || shape[2] as usize != b || data.len() < tensors.len() * a * b {
            return Err(InferError::Run(format!("unexpected output shape {shape:?}")));
        }
        Ok((0..tensors.len())
            .map(|i| {
                let c = candidates(self.layout, &data[i * a * b..(i + 1) * a * b], a, b, self.conf);
                if self.layout == Layout::Yolov10 { c } else { nms(c, self.iou, self.max_detections) }
            })
            .collect())
    }
}

/// u8 HWC RGB images into one f32 NCHW batch scaled to 0–1; slots past the images stay 0.
pub fn assemble_nchw(tensors: &[&[u8]], n: usize, w: usize, h: usize) -> Vec<f32> {
    let plane = w * h;
    let mut out = vec![0f32; n * 3 * plane];
    for (img, dst) in tensors.iter().zip(out.chunks_exact_mut(3 * plane)) {
        let (r, rest) = dst.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in img.chunks_exact(3).enumerate() {
            r[i] = px[0] as f32 * (1.0 / 255.0);
            g[i] = px[1] as f32 * (1.0 / 255.0);
            b[i] = px[2] as f32 * (1.0 / 255.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_assembly_is_planar_and_scaled() {
        let a = [255u8, 0, 51, 0, 255, 102];
        let out = assemble_nchw(&[&a], 2, 2, 1);
        assert_eq!(out.len(), 2 * 3 * 2);
        let expected = [1.0, 0.0, 0.0, 1.0, 0.2, 0.4];
        assert!(out[..6].iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", &out[..6]);
        assert!(out[6..].iter().all(|v| *v == 0.0), "padding slot stays zero");
    }
}
