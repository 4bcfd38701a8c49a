//! Shared by the fuzz tests of preprocess and ingest (included by path): the real
//! photo the mutations start from, and the case count.

use std::path::PathBuf;

/// The asset cache: VISIONQ_CACHE_DIR, else the repository's `.cache/visionq`.
pub fn cache() -> PathBuf {
    std::env::var_os("VISIONQ_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.cache/visionq")))
}

/// dog.jpg from the asset cache (768×576, baseline).
pub fn photo() -> Vec<u8> {
    let p = cache().join("photos/dog.jpg");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run `python3 tools/assets.py`)", p.display()))
}

/// Cases per property: PROPTEST_CASES, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
