//! All of a worker's chains, applied to one frame: which detections each chain
//! takes, the crops out of the original image, the second stage's outputs attached.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use visionq_contract::chain::ChainSpec;
use visionq_contract::config::ExecutionProvider;
use visionq_contract::{Config, Detection, FrameMeta, Metrics};
use visionq_preprocess::{Preprocessor, orient};

use crate::ChainError;
use crate::crop::{crop_rect, cut, select};
use crate::model::{ChainModel, Opener, Output};
use crate::prep::CropImage;
use crate::runner::ChainRunner;

/// A relative chain file is under `cache_dir`.
fn resolve(config: &Config, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { config.cache_dir.join(p) }
}

/// The chains' models, loaded (blocking: call off the runtime's threads).
pub struct Loaded(Vec<ChainModel>);

/// Loads every `[[chain]]` model of `config`, checking each table first. None: no chains.
pub fn load(config: &Config, open: &Opener) -> Result<Option<Loaded>, ChainError> {
    let specs = &config.chain.chain;
    if specs.is_empty() {
        return Ok(None);
    }
    let mut models = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        spec.check().map_err(|message| ChainError::Load { chain: spec.name.clone(), message })?;
        if specs[..i].iter().any(|s| s.name == spec.name) {
            return Err(ChainError::Load { chain: spec.name.clone(), message: "two chains have this name".into() });
        }
        let dict = spec.dict_file.as_ref().map(|d| resolve(config, d));
        let spec = Arc::new(spec.clone());
        let cuda = config.runtime.execution_provider == ExecutionProvider::Cuda;
        let pad_to = config.chain.chain_max_batch_size;
        models.push(ChainModel::load(spec.clone(), &resolve(config, &spec.model), dict.as_deref(), open, cuda, pad_to)?);
    }
    Ok(Some(Loaded(models)))
}

/// The running chains.
pub struct Chains {
    runners: Vec<ChainRunner>,
    max_pixels: u64,
}

/// What applying the chains to a frame did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    pub crops: usize,
    /// From the decode of the original to the last output attached.
    pub seconds: f64,
}

impl Chains {
    /// Starts a batcher and a thread per chain (inside the runtime).
    pub fn start(loaded: Loaded, config: &Config, metrics: Arc<Metrics>) -> Chains {
        let wait = Duration::from_millis(config.chain.chain_max_batch_wait_ms);
        let max = config.chain.chain_max_batch_size.max(1);
        let runners = loaded.0.into_iter().map(|m| ChainRunner::start(m, max, wait, metrics.clone())).collect();
        Chains { runners, max_pixels: config.ingest.max_pixels }
    }

    /// Whether any chain takes a detection of this frame (its original image is
    /// needed then).
    pub fn wanted(&self, station: &str, detections: &[Detection]) -> bool {
        self.plans(station, detections).next().is_some()
    }

    fn plans<'a>(&'a self, station: &'a str, detections: &'a [Detection]) -> impl Iterator<Item = (&'a ChainRunner, Vec<usize>)> + 'a {
        self.runners
            .iter()
            .filter(move |r| r.spec.runs_for(station))
            .map(move |r| (r, select(&r.spec, detections)))
            .filter(|(_, chosen)| !chosen.is_empty())
    }

    /// Runs the chains on `frame`'s detections: crops from `original` (the image as
    /// posted; turned by the frame's orientation like the detector's input), each
    /// chain's outputs attached to its detections. Ok(None): no chain took any
    /// detection. An error fails the whole frame: a partial result is never `ok`.
    pub async fn apply(
        &self,
        frame: &FrameMeta,
        original: Option<&Bytes>,
        detections: &mut [Detection],
    ) -> Result<Option<Applied>, ChainError> {
        let plans: Vec<(&ChainRunner, Vec<usize>)> = self.plans(&frame.station, detections).collect();
        if plans.is_empty() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let bytes = original.cloned().ok_or(ChainError::NoOriginal)?;
        let (max_pixels, orientation) = (self.max_pixels, frame.orientation);
        let decoded = tokio::task::spawn_blocking(move || {
            let (pixels, w, h) = Preprocessor::new(1, 1, max_pixels).decode(&bytes).map_err(|e| ChainError::Image(e.to_string()))?;
            Ok::<_, ChainError>(orient(pixels, w, h, orientation))
        })
        .await
        .map_err(|e| ChainError::Image(e.to_string()))??;
        let (rgb, width, height) = decoded;
        if (width, height) != (frame.width, frame.height) {
            return Err(ChainError::Image(format!(
                "the original decodes to {width}x{height}, the frame is {}x{}",
                frame.width, frame.height
            )));
        }
        // Crops per chain, with the detection each belongs to (a box with no area
        // inside the image has no crop and gets no output).
        let mut work = Vec::new();
        let mut crops_total = 0;
        for (runner, chosen) in plans {
            let spec: &ChainSpec = &runner.spec;
            let mut owners = Vec::new();
            let mut crops = Vec::new();
            for i in chosen {
                if let Some(r) = crop_rect(detections[i].box_px, spec.region, spec.margin_px, width, height) {
                    crops.push(CropImage { rgb: cut(&rgb, width, r), width: r.width(), height: r.height() });
                    owners.push(i);
                }
            }
            crops_total += crops.len();
            work.push((runner, owners, crops));
        }
        drop(rgb);
        let runs = work.into_iter().map(|(runner, owners, crops)| async move { runner.run(crops).await.map(|out| (owners, out)) });
        for result in futures_util::future::join_all(runs).await {
            let (owners, outputs) = result?;
            for (i, output) in owners.into_iter().zip(outputs) {
                match output {
                    Output::Class(c) => detections[i].classification = Some(c),
                    Output::Text(t) => detections[i].text = Some(t),
                }
            }
        }
        Ok(Some(Applied { crops: crops_total, seconds: t0.elapsed().as_secs_f64() }))
    }
}
