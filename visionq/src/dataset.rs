//! `visionq dataset export`: the frames kept in the evidence store as a labelled
//! dataset (YOLO or COCO), reviewers' corrections applied (`visionq-evidence`).

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use visionq_contract::Config;
use visionq_contract::config::valid_station_id;
use visionq_evidence::export::{Format, export};
use visionq_evidence::{Bounds, LocalDir, Query};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Frames received at or after this instant: RFC 3339 (2026-12-01T08:00:00Z) or a
    /// date (2026-12-01, midnight UTC).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Frames received before this instant (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// Only this station's frames.
    #[arg(long)]
    station: Option<String>,
    /// `yolo` (images/, labels/*.txt, data.yaml) or `coco` (images/, annotations.json).
    #[arg(long, default_value = "yolo", value_parser = |s: &str| s.parse::<Format>())]
    format: Format,
    /// Folder to write the dataset into (created; refused when not empty).
    dir: PathBuf,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| format!("`{s}` is neither an RFC 3339 instant nor a date (YYYY-MM-DD)"))
}

pub async fn run(config: Config, args: ExportArgs) -> anyhow::Result<()> {
    if let Some(s) = &args.station {
        anyhow::ensure!(valid_station_id(s), "`{s}` is not a station id (1-64 of A-Z a-z 0-9 . _ -)");
    }
    if let (Some(a), Some(b)) = (args.since, args.until) {
        anyhow::ensure!(a < b, "--since ({a}) must be before --until ({b})");
    }
    let root = config.evidence_dir();
    anyhow::ensure!(root.is_dir(), "no evidence store at {} (evidence_dir)", root.display());
    // Only read: pruning is the job of the process that keeps the frames.
    let store = LocalDir::open(&root, Bounds { max_bytes: u64::MAX, max_age: None })?;
    let query = Query { since: args.since, until: args.until, station: args.station };
    let summary =
        export(&store, &query, args.format, &args.dir).await.with_context(|| format!("exporting to {}", args.dir.display()))?;
    println!(
        "{} images, {} boxes, {} classes ({}) written to {}; {} frames left out as rejected by review",
        summary.images,
        summary.boxes,
        summary.classes.len(),
        summary.classes.join(", "),
        args.dir.display(),
        summary.rejected
    );
    Ok(())
}
