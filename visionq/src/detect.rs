//! `visionq detect PATH...`: the batch job. Every image under the paths is posted
//! to the pipeline's own ingest (the same queues, workers and store as live
//! traffic, not a side path), its result written as one JSON line in the order the
//! paths were given (folders walked in name order), with a progress bar on a
//! terminal and a summary; a path that does not exist is reported and the rest
//! still run; the exit code says whether any image or path failed.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use visionq_contract::Config;
use visionq_contract::config::redact_url;
use visionq_ingest::header::Format;

use crate::compose::Local;
use crate::loadgen::percentile;

#[derive(clap::Args, Debug)]
pub struct DetectArgs {
    /// Image files, or folders searched recursively for .jpg/.jpeg/.png/.webp files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Where the JSON Lines go (`-`: standard output).
    #[arg(long, short, default_value = "-")]
    output: String,
    /// Station id the frames are recorded under.
    #[arg(long, default_value = "batch")]
    station: String,
    /// Frames in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long one image may take before it counts as failed (it is still recorded).
    #[arg(long, default_value_t = 120_000)]
    wait_ms: u64,
    /// Base URL of a running visionq; omit to run the pipeline in this process.
    #[arg(long)]
    url: Option<String>,
}

/// One input: a file to post, or a path given that does not exist (its error line
/// keeps its place in the output).
enum Input {
    File(PathBuf),
    Missing(PathBuf),
}

/// The inputs in order: explicit files as given, folders walked for images (.jpg,
/// .jpeg, .png, .webp), missing paths kept as such.
fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if matches!(
                p.extension().and_then(|x| x.to_str()).map(str::to_ascii_lowercase).as_deref(),
                Some("jpg" | "jpeg" | "png" | "webp")
            ) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            out.extend(files.into_iter().map(Input::File));
        } else if p.exists() {
            out.push(Input::File(p.clone()));
        } else {
            out.push(Input::Missing(p.clone()));
        }
    }
    Ok(out)
}

/// One image's outcome: the result object (with `path`), or why there is none.
async fn detect_one(client: &reqwest::Client, url: &str, path: &Path) -> Result<Value, String> {
    let body = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let format = Format::sniff(&body).ok_or("not a JPEG, PNG or WebP image")?;
    let resp = client
        .post(url)
        .header("content-type", format.mime())
        .body(body)
        .send()
        .await
        .map_err(|e| format!("pipeline unreachable: {e}"))?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.map_err(|e| format!("unreadable answer (HTTP {status}): {e}"))?;
    match status {
        200 if v["status"] == "ok" => Ok(v),
        200 => Err(v["error"].as_str().unwrap_or("the pipeline reported an error").to_string()),
        _ => Err(format!("HTTP {status}: {}", v["error"].as_str().unwrap_or("refused"))),
    }
}

pub async fn run(config: Config, args: DetectArgs) -> anyhow::Result<bool> {
    let inputs = collect(&args.paths)?;
    let missing = inputs.iter().filter(|i| matches!(i, Input::Missing(_))).count();
    for input in &inputs {
        if let Input::Missing(p) = input {
            eprintln!("visionq detect: {} does not exist; going on with the other paths", p.display());
        }
    }
    if inputs.len() == missing {
        if missing == 0 {
            bail!("no .jpg/.jpeg/.png/.webp images under {:?}", args.paths);
        }
        eprintln!("visionq detect: none of the paths exists");
        return Ok(false);
    }
    let local = match &args.url {
        Some(_) => None,
        None => {
            crate::assets::ensure(&config)?;
            // Every request here waits for its result, so no frame is left accepted
            // and unknown: no journal, and a `visionq run` on the same data dir
            // keeps its own.
            let mut local = config.clone();
            local.broker.durability = visionq_contract::config::Durability::Memory;
            Some(Local::start(local, "127.0.0.1:0".parse()?).await?)
        }
    };
    let base = args.url.clone().or_else(|| local.as_ref().map(|l| l.base.clone())).expect("a base URL");
    let url = format!("{}/v1/stations/{}/frames?wait_ms={}", base.trim_end_matches('/'), args.station, args.wait_ms);
    let mut out: Box<dyn Write> = if args.output == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(&args.output).with_context(|| format!("creating {}", args.output))?))
    };

    // The bar only where a person watches; piped, a plain line every 50 images.
    let plain_progress = !std::io::stderr().is_terminal();
    let target = match plain_progress {
        true => indicatif::ProgressDrawTarget::hidden(),
        false => indicatif::ProgressDrawTarget::stderr(),
    };
    let total = inputs.len();
    let bar = indicatif::ProgressBar::with_draw_target(Some(total as u64), target);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} images  {per_sec}  {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let client = reqwest::Client::new();
    let start = Instant::now();
    let (mut ok, mut failures, mut per_class, mut latencies) = (0usize, Vec::new(), BTreeMap::<String, usize>::new(), Vec::new());
    // `buffered`: up to `concurrency` in flight, answers taken in input order.
    let mut answers = futures_util::stream::iter(inputs.into_iter().map(|input| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let t0 = Instant::now();
            match input {
                Input::File(path) => {
                    let r = detect_one(&client, &url, &path).await;
                    (path, r, Some(t0.elapsed().as_secs_f64() * 1e3))
                }
                Input::Missing(path) => (path, Err("no such file or folder".to_string()), None),
            }
        }
    }))
    .buffered(args.concurrency.max(1));
    let mut done = 0usize;
    while let Some((path, r, ms)) = answers.next().await {
        done += 1;
        let line = match r {
            Ok(mut v) => {
                ok += 1;
                latencies.extend(ms);
                for d in v["detections"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    *per_class.entry(d["class_name"].as_str().unwrap_or("?").to_string()).or_default() += 1;
                }
                v["path"] = json!(path.display().to_string());
                v
            }
            Err(reason) => {
                bar.suspend(|| eprintln!("failed: {}: {reason}", path.display()));
                failures.push((path.clone(), reason.clone()));
                json!({"path": path.display().to_string(), "status": "error", "error": reason})
            }
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        bar.inc(1);
        bar.set_message(format!("{} failed", failures.len()));
        if plain_progress && (done.is_multiple_of(50) || done == total) {
            eprintln!("progress: {done}/{total} images, {} failed", failures.len());
        }
    }
    drop(answers);
    out.flush()?;
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(l) = local {
        // Returns once every accepted frame is persisted.
        l.stop().await?;
    }

    latencies.sort_by(f64::total_cmp);
    let images = total - missing;
    eprintln!("visionq detect: {images} images in {elapsed:.1} s ({:.1} images/s)", images as f64 / elapsed);
    eprintln!("  ok {ok}, failed {}", failures.len());
    let classes: Vec<String> = per_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
    eprintln!("  detections: {}", if classes.is_empty() { "none".into() } else { classes.join(", ") });
    eprintln!(
        "  latency ms: p50 {:.1}  p95 {:.1}  max {:.1}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    if args.url.is_none() {
        eprintln!("  results stored in {}", redact_url(&config.database_url()));
    }
    for (path, reason) in &failures {
        eprintln!("  FAILED {}: {reason}", path.display());
    }
    Ok(failures.is_empty())
}
