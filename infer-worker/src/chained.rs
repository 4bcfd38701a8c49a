//! Model chains in the infer-worker (issue 22): the second stage runs here, between
//! decoding a frame's detections and publishing its result — no extra queue hop, the
//! crops are never serialised, and the second model gets the same runtime and
//! execution provider as the detector. The chain crate does the work; this file
//! opens its sessions and turns its outcome into the frame's result or failure.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ort::session::Session;
use visionq_chain::{Chains, Opener};
use visionq_contract::message::Timings;
use visionq_contract::{Config, Detection, FrameMeta, Metrics};
use visionq_stage::Failure;

use crate::error::InferError;
use crate::model::{environment, intra_threads};

/// Sessions for the chain models: the detector's runtime, threads and provider, in
/// TensorFloat-32 on CUDA only where `chain_cuda_tf32` says so.
fn opener(config: &Config) -> Result<Opener, InferError> {
    let env = environment(&config.ort_dylib_path())?;
    let mut config = config.clone();
    config.runtime.cuda_tf32 = config.chain.chain_cuda_tf32;
    Ok(Arc::new(move |path: &Path| -> Result<Session, String> {
        let mut builder = Session::builder(env).map_err(|e| e.to_string())?;
        builder = builder.with_intra_threads(intra_threads(config.runtime.infer_threads)).map_err(|e| e.to_string())?;
        if !config.runtime.infer_spinning {
            builder = builder.with_intra_op_spinning(false).map_err(|e| e.to_string())?;
        }
        builder = crate::provider::configure(builder, &config).map_err(|e| e.to_string())?;
        builder.commit_from_file(path).map_err(|e| e.to_string())
    }))
}

/// Loads the `[[chain]]` models of `config` (blocking). None: no chains configured.
pub fn load_chains(config: &Config) -> Result<Option<visionq_chain::Loaded>, InferError> {
    if config.chain.chain.is_empty() {
        return Ok(None);
    }
    visionq_chain::load(config, &opener(config)?).map_err(|e| InferError::Unsupported(e.to_string()))
}

/// A worker's chains: running, or the reason they could not load (every frame a
/// chain would take then fails with it).
pub(crate) struct Chained {
    chains: Result<Chains, String>,
    config: Arc<Config>,
}

/// Loads and starts the chains of `config` (None: none configured).
pub(crate) async fn start(config: &Arc<Config>, metrics: &Arc<Metrics>) -> Option<Arc<Chained>> {
    let c = config.clone();
    let loaded = tokio::task::spawn_blocking(move || load_chains(&c)).await.expect("loading chains does not panic");
    let chains = match loaded {
        Ok(None) => return None,
        Ok(Some(loaded)) => Ok(Chains::start(loaded, config, metrics.clone())),
        Err(e) => {
            tracing::error!(error = %e, "model chains cannot load; frames they would take get error results");
            Err(e.to_string())
        }
    };
    Some(Arc::new(Chained { chains, config: config.clone() }))
}

/// Runs `chained` on a frame's detections: their outputs attached and the second
/// stage's time in `timings` (`chain`), or the failure that gives the frame an error
/// result — never a partial `ok`.
pub(crate) async fn complete(
    chained: Option<&Chained>,
    frame: &FrameMeta,
    original: Option<&Bytes>,
    detections: &mut [Detection],
    timings: &mut Timings,
) -> Result<(), Failure> {
    let Some(chained) = chained else { return Ok(()) };
    let failure = |reason: String| Failure { reason, label: "chain_failed" };
    let chains = match &chained.chains {
        Ok(chains) => chains,
        Err(reason) => {
            let takes = chained
                .config
                .chain
                .chain
                .iter()
                .any(|s| s.runs_for(&frame.station) && !visionq_chain::crop::select(s, detections).is_empty());
            return if takes { Err(failure(reason.clone())) } else { Ok(()) };
        }
    };
    match chains.apply(frame, original, detections).await {
        Ok(Some(applied)) => {
            timings.insert("chain".into(), applied.seconds * 1e3);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(failure(e.to_string())),
    }
}
