//! The model, the ONNX Runtime library and the photos: `visionq model fetch` and
//! the commands that need them run the project's set-up script
//! (`tools/assets.py`: pinned versions, sha256-checked, cached under `cache_dir`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use visionq_contract::Config;

/// The set-up script: `VISIONQ_ASSETS_SCRIPT`, else `tools/assets.py` of the source tree
/// this binary was built from.
fn script() -> PathBuf {
    std::env::var_os("VISIONQ_ASSETS_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/assets.py")))
}

/// Runs the set-up script (quick when everything is cached already).
pub fn fetch(config: &Config) -> anyhow::Result<()> {
    let script = script();
    if !script.exists() {
        bail!("{} is missing: run this from a visionq checkout, or set VISIONQ_ASSETS_SCRIPT", script.display());
    }
    let status = Command::new("python3")
        .arg(&script)
        .arg("--cache")
        .arg(&config.cache_dir)
        .status()
        .context("running python3 (needed once, to fetch and convert the model)")?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// `visionq run`: fetches the default model and ONNX Runtime into the cache when
/// they are the configured ones and missing (a model or runtime named by the
/// configuration is never fetched: its absence is reported when it is loaded).
pub fn ensure_runtime(config: &Config) -> anyhow::Result<()> {
    let runtime_default = config.runtime.ort_dylib_path.is_none() && std::env::var_os("ORT_DYLIB_PATH").is_none();
    let missing =
        (config.model.file.is_none() && !config.model_path().exists()) || (runtime_default && !config.ort_dylib_path().exists());
    if !missing {
        return Ok(());
    }
    eprintln!("visionq: fetching the default model and ONNX Runtime into {}", config.cache_dir.display());
    fetch(config)
}

/// Fetches the model, the runtime and the photos unless they are there already.
pub fn ensure(config: &Config) -> anyhow::Result<()> {
    let needed = [config.model_path(), config.ort_dylib_path(), config.cache_dir.join("photos/dog.jpg")];
    if needed.iter().all(|p| p.exists()) {
        return Ok(());
    }
    eprintln!("visionq: fetching the model, ONNX Runtime and photos into {}", config.cache_dir.display());
    fetch(config)
}
