//! `visionq detect` as a person meets it: results in the order the paths were
//! given, a missing path reported while the others still run (and a failing exit
//! code at the end), no log lines or colour codes when the output is piped, and a
//! progress bar only on a terminal.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// The images `detect` finds in the photo folder (JPEG, PNG, WebP).
fn photo_count() -> usize {
    let dir = photo("dog.jpg").parent().unwrap().to_path_buf();
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let p = e.as_ref().unwrap().path();
            matches!(p.extension().and_then(|x| x.to_str()), Some("jpg" | "jpeg" | "png" | "webp"))
        })
        .count()
}

/// `visionq detect ARGS` in embedded mode, stdout and stderr piped.
fn detect(args: &[&str], data: &Path, rust_log: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_visionq"));
    cmd.arg("detect")
        .args(args)
        .env_remove("VISIONQ_AMQP_URL")
        .env_remove("VISIONQ_DATABASE_URL")
        .env_remove("NO_COLOR")
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_MODEL", model())
        .env("VISIONQ_DATA_DIR", data);
    match rust_log {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd.output().expect("visionq runs")
}

/// The photos in an order that is neither by name nor by size, with a missing path in the middle.
fn inputs(missing: &Path) -> Vec<String> {
    let mut paths: Vec<String> =
        ["zidane.jpg", "horses.jpg", "bus.jpg", "scream.jpg"].iter().map(|n| photo(n).display().to_string()).collect();
    paths.push(missing.display().to_string());
    paths.extend(["person.jpg", "eagle.jpg", "dog.jpg", "kite.jpg", "giraffe.jpg"].iter().map(|n| photo(n).display().to_string()));
    paths
}

#[test]
fn results_in_input_order_and_a_missing_path_does_not_stop_the_rest() {
    let tmp = scratch("detect-order");
    let missing = tmp.join("no-such-photo.jpg");
    let paths = inputs(&missing);
    let mut args: Vec<&str> = paths.iter().map(String::as_str).collect();
    args.extend(["--concurrency", "8"]);
    let run = detect(&args, &tmp, None);
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert_eq!(run.status.code(), Some(1), "a missing path fails the run, at the end: {stderr}");
    assert!(stderr.contains(&format!("{} does not exist", missing.display())), "the missing path is reported: {stderr}");

    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let order: Vec<&str> = lines.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(order, paths, "one line per path, in the order given");
    for v in &lines {
        let expected = if v["path"] == missing.display().to_string() { "error" } else { "ok" };
        assert_eq!(v["status"], expected, "{v}");
    }
    assert!(classes(&lines[7]).contains(&"dog".to_string()), "dog.jpg's own result on its line: {}", lines[7]);
    assert!(stderr.contains("ok 9, failed 1"), "{stderr}");
}

#[test]
fn piped_output_has_no_log_lines_no_colour_and_no_bar() {
    let tmp = scratch("detect-piped");
    let photos = photo("dog.jpg").parent().unwrap().display().to_string();
    // By default the batch job logs only warnings: its summary is not drowned.
    let quiet = detect(&[&photos], &tmp, None);
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(quiet.status.success(), "{stderr}");
    assert!(!stderr.contains(" INFO ") && !stderr.contains("batch done"), "no info lines by default:\n{stderr}");
    let n = photo_count();
    assert!(stderr.contains(&format!("visionq detect: {n} images")), "the summary: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no terminal codes (colours, bar) when piped:\n{stderr:?}");
    assert!(stderr.contains(&format!("progress: {n}/{n} images")), "a plain progress line instead of the bar: {stderr}");

    // Logs asked for are written, still without colour codes.
    let verbose = detect(&[&photos], &tmp, Some("info"));
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert!(verbose.status.success(), "{stderr}");
    assert!(stderr.contains(" INFO ") && stderr.contains("starting visionq"), "RUST_LOG=info logs:\n{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes in piped logs:\n{stderr:?}");
}

#[test]
fn on_a_terminal_the_progress_bar_is_drawn() {
    let tmp = scratch("detect-tty");
    let out = tmp.join("out.jsonl");
    // `script` gives the command a pseudo-terminal; its stdout is what the terminal showed.
    let command = format!(
        "RUST_LOG= NO_COLOR= VISIONQ_CACHE_DIR={} VISIONQ_MODEL={} VISIONQ_DATA_DIR={} {} detect {} -o {}",
        cache().display(),
        model().display(),
        tmp.display(),
        env!("CARGO_BIN_EXE_visionq"),
        photo("dog.jpg").parent().unwrap().display(),
        out.display()
    );
    let run = Command::new("script").args(["-qefc", &command, "/dev/null"]).env_remove("VISIONQ_AMQP_URL").output().unwrap();
    let screen = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{screen}");
    let n = photo_count();
    assert!(screen.contains(&format!("/{n} images")), "the bar counts images: {screen:?}");
    assert!(screen.contains('\u{1b}'), "drawn with terminal codes: {screen:?}");
    assert!(!screen.contains("progress: "), "no plain progress lines on a terminal: {screen:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), n);
}
