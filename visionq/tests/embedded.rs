//! Embedded mode: the whole pipeline in one process with no service reachable (the
//! commands run in a network namespace of their own, with only loopback), checked
//! against an independent reference run of the same model and against RabbitMQ mode.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const CONF: f64 = 0.25;

/// `visionq ARGS` with the embedded defaults (no broker, SQLite in `data`).
fn visionq(args: &[&str], data: &Path, extra_env: &[(&str, String)], isolated: bool) -> Output {
    let bin = env!("CARGO_BIN_EXE_visionq");
    let mut cmd = if isolated {
        // A network namespace with only loopback: no RabbitMQ or PostgreSQL can be reached.
        let mut c = Command::new("unshare");
        c.args(["--net", "bash", "-c", r#"ip link set lo up && exec "$0" "$@""#, bin]);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .env_remove("VISIONQ_AMQP_URL")
        .env_remove("VISIONQ_DATABASE_URL")
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_MODEL", model())
        .env("VISIONQ_DATA_DIR", data)
        .env("RUST_LOG", "warn");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("visionq runs")
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn by_name(lines: &[Value]) -> BTreeMap<String, Value> {
    lines
        .iter()
        .map(|v| (Path::new(v["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned(), v.clone()))
        .collect()
}

/// Every detection of `a` clearly above the threshold has a partner in `b`: same
/// class, IoU ≥ 0.9, score within 0.02. (A box within 0.02 of the threshold may be
/// on one side of it in one run and on the other in the other.)
fn all_matched(a: &[Value], b: &[Value], what: &str) {
    for d in a.iter().filter(|d| d["score"].as_f64().unwrap() >= CONF + 0.02) {
        let partner = b.iter().find(|e| {
            e["class_name"] == d["class_name"]
                && iou(box_of(d), box_of(e)) >= 0.9
                && (e["score"].as_f64().unwrap() - d["score"].as_f64().unwrap()).abs() <= 0.02
        });
        assert!(partner.is_some(), "{what}: no partner for {d} among {b:?}");
    }
}

/// The independent reference (onnxruntime in Python, its own letterbox, decode, NMS).
fn reference(model: &Path, files: &[PathBuf]) -> Vec<Value> {
    let out = Command::new(cache().join("venv/bin/python"))
        .arg(repo().join("tools/reference_detect.py"))
        .arg(model)
        .args(files)
        .output()
        .expect("reference runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn photos_dir() -> PathBuf {
    photo("dog.jpg").parent().unwrap().to_path_buf()
}

#[test]
fn detect_needs_no_service_agrees_with_the_reference_and_fills_sqlite() {
    let tmp = scratch("detect");
    let broken = tmp.join("broken.jpg");
    std::fs::write(&broken, b"this is not a JPEG").unwrap();
    let out = tmp.join("results.jsonl");
    let run =
        visionq(&["detect", photos_dir().to_str().unwrap(), broken.to_str().unwrap(), "-o", out.to_str().unwrap()], &tmp, &[], true);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "one image failed, so the exit code says so: {stderr}");
    assert!(
        stderr.contains("FAILED") && stderr.contains("broken.jpg") && stderr.contains("not a JPEG, PNG or WebP image"),
        "{stderr}"
    );

    let lines = jsonl(&out);
    let ours = by_name(&lines);
    assert_eq!(ours["broken.jpg"]["status"], "error");
    let jpegs: Vec<_> = ours.keys().filter(|k| *k != "broken.jpg").cloned().collect();
    assert_eq!(jpegs.len(), 10, "every image of the photo set (9 JPEGs and a PNG): {jpegs:?}");
    for (name, want) in [
        ("dog.jpg", &["bicycle", "dog"][..]),
        ("person.jpg", &["dog", "horse", "person"]),
        ("horses.jpg", &["horse"]),
        ("giraffe.jpg", &["giraffe"]),
        ("eagle.jpg", &["bird"]),
        ("kite.jpg", &["kite", "person"]),
        ("bus.jpg", &["bus", "person"]),
        ("zidane.jpg", &["person"]),
    ] {
        assert_eq!(ours[name]["status"], "ok");
        let found = classes(&ours[name]);
        for c in want {
            assert!(found.iter().any(|f| f == c), "{name}: {c} among {found:?}");
        }
    }
    assert!(classes(&ours["dog.jpg"]).iter().any(|c| c == "car" || c == "truck"));

    // The independent reference: onnxruntime in Python with its own letterbox, decode, NMS.
    let files: Vec<PathBuf> = jpegs.iter().map(|n| photos_dir().join(n)).collect();
    let reference = reference(&model(), &files);
    let mut compared = 0;
    for r in &reference {
        let name = Path::new(r["image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
        let (a, b) = (ours[&name]["detections"].as_array().unwrap(), r["detections"].as_array().unwrap());
        all_matched(a, b, &format!("{name}: ours vs reference"));
        all_matched(b, a, &format!("{name}: reference vs ours"));
        compared += a.len();
    }
    assert!(compared >= 20, "enough boxes compared: {compared}");

    // The SQLite record is complete: one frame row per image, every detection.
    let db = rusqlite::Connection::open(tmp.join("visionq.db")).unwrap();
    let frames: i64 = db.query_row("SELECT count(*) FROM frames WHERE station = 'batch'", [], |r| r.get(0)).unwrap();
    assert_eq!(frames, 10, "the broken file was refused, so it has no frame row");
    for name in &jpegs {
        let v = &ours[name];
        let id = v["frame_id"].as_str().unwrap();
        let (status, n): (String, i64) = db
            .query_row(
                "SELECT status, (SELECT count(*) FROM detections d WHERE d.frame_id = f.frame_id) FROM frames f WHERE frame_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(status, "ok");
        assert_eq!(n as usize, v["detections"].as_array().unwrap().len(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_and_rabbitmq_modes_give_identical_detections() {
    let photos = photos_dir();
    let detections = |tmp: PathBuf, env: Vec<(&'static str, String)>| {
        let photos = photos.clone();
        tokio::task::spawn_blocking(move || {
            let out = tmp.join("out.jsonl");
            let run = visionq(&["detect", photos.to_str().unwrap(), "-o", out.to_str().unwrap()], &tmp, &env, false);
            assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
            by_name(&jsonl(&out))
                .into_iter()
                .map(|(k, v)| {
                    let d: Vec<(String, String, String)> = v["detections"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| (d["class_name"].to_string(), d["score"].to_string(), d["box_px"].to_string()))
                        .collect();
                    (k, d)
                })
                .collect::<HashMap<_, _>>()
        })
    };
    let prefix = unique("modes");
    let embedded = detections(scratch("embedded"), vec![]).await.unwrap();
    let amqp = detections(scratch("amqp"), vec![("VISIONQ_AMQP_URL", AMQP_URL.to_string()), ("VISIONQ_QUEUE_PREFIX", prefix.clone())])
        .await
        .unwrap();
    delete_topology(&prefix).await;
    // The photo folder: 9 JPEGs and a PNG.
    assert_eq!(embedded.len(), 10);
    assert!(embedded.values().map(Vec::len).sum::<usize>() >= 20);
    assert_eq!(embedded, amqp, "same frames, same detections, bit for bit");
}

#[test]
fn demo_runs_with_no_service_and_records_every_frame() {
    let tmp = scratch("demo");
    let run = visionq(&["demo", "--listen", "127.0.0.1:0", "--stations", "2", "--rate", "2", "--duration", "3"], &tmp, &[], true);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("dashboard and API at http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("12 posted, 12 with results, 0 errors"), "{stdout}");
    assert!(stdout.contains("person"), "detections per class: {stdout}");
    assert!(stdout.contains(&format!("sqlite://{}", tmp.join("visionq.db").display())), "{stdout}");
    let db = rusqlite::Connection::open(tmp.join("visionq.db")).unwrap();
    let per_station: Vec<(String, i64)> = db
        .prepare("SELECT station, count(*) FROM frames WHERE status = 'ok' GROUP BY station ORDER BY station")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(per_station, vec![("demo-1".to_string(), 6), ("demo-2".to_string(), 6)]);
}

/// `visionq detect` over the photo set with `model`, returning results by file name.
fn detect_with(model: &Path, input_size: u32, tag: &str) -> BTreeMap<String, Value> {
    let tmp = scratch(tag);
    let out = tmp.join("out.jsonl");
    let env = [("VISIONQ_MODEL", model.display().to_string()), ("VISIONQ_INPUT_SIZE", input_size.to_string())];
    let run = visionq(&["detect", photos_dir().to_str().unwrap(), "-o", out.to_str().unwrap()], &tmp, &env, false);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    by_name(&jsonl(&out))
}

#[test]
fn a_uint8_input_model_gives_the_same_detections_as_the_float_one() {
    let float = detect_with(&model(), 416, "f32");
    let u8_model = cache().join("models/yolov3-tiny-u8.onnx");
    let u8 = detect_with(&u8_model, 416, "u8");
    assert_eq!(float.len(), 10, "the 9 JPEGs and the PNG");
    for (name, f) in &float {
        assert_eq!(f["detections"], u8[name]["detections"], "{name}");
    }
}

#[test]
fn a_fixed_batch_yolov8_model_runs_and_agrees_with_the_reference() {
    let fall = cache().join("models/fall-detection-yolov8.onnx");
    let ours = detect_with(&fall, 640, "fall");
    // Photos of people, the model's domain; on the animal photos it reports unstable
    // low-score boxes whose edges move with the resampling filter.
    let files: Vec<PathBuf> = ["person.jpg", "zidane.jpg", "bus.jpg"].iter().map(|n| photos_dir().join(n)).collect();
    assert_eq!(ours.len(), 10, "every photo (9 JPEGs and a PNG) ran through the fixed-batch model");
    let reference = reference(&fall, &files);
    let mut boxes = 0;
    for r in &reference {
        let name = Path::new(r["image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
        let v = &ours[&name];
        assert_eq!(v["model"]["name"], "fall-detection-yolov8", "{v}");
        let (a, b) = (v["detections"].as_array().unwrap(), r["detections"].as_array().unwrap());
        assert!(a.iter().all(|d| d["class_name"] == "Normal" || d["class_name"] == "Fall"), "{name}: {a:?}");
        all_matched(a, b, &format!("{name}: ours vs reference"));
        all_matched(b, a, &format!("{name}: reference vs ours"));
        boxes += a.len();
    }
    assert!(boxes >= 4, "the fall model found people: {boxes}");
}

#[test]
fn asking_for_cuda_where_it_cannot_run_fails_loudly() {
    // This test binary is the CPU build on a machine without a GPU: CUDA must be
    // refused with the reason, never replaced by the CPU in silence.
    let tmp = scratch("cuda");
    let run = visionq(
        &["detect", photo("dog.jpg").to_str().unwrap(), "-o", "-"],
        &tmp,
        &[("VISIONQ_EXECUTION_PROVIDER", "cuda".into())],
        false,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "CUDA asked for, none available: must not succeed: {stderr}");
    assert!(stderr.contains("CUDA execution provider was asked for but is not usable"), "{stderr}");
    assert!(run.stdout.is_empty(), "no results were produced on the CPU instead");
}

/// The stages in a result's `timings_ms` are timed where they happen and do not
/// overlap: together they never exceed what the station waited for the answer, in
/// either way of feeding the infer-worker. (They did: `queue_wait_tensors` was read
/// after the pass and counted the batch wait and the inference a second time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_stages_do_not_overlap_and_add_up_to_at_most_the_wait() {
    for input in ["tensors", "frames"] {
        let data = scratch(&format!("stages-{input}"));
        let env = [("VISIONQ_DATA_DIR", data.display().to_string()), ("VISIONQ_INFER_INPUT", input.to_string())];
        let server = Server::start(&["run"], &env).await;
        let client = reqwest::Client::new();
        let url = server.url("/v1/stations/stages-1/frames?wait_ms=30000");
        for i in 0..6 {
            let t0 = std::time::Instant::now();
            let (status, result) = post_jpeg(&client, &url, photo_bytes("dog.jpg")).await;
            let waited_ms = t0.elapsed().as_secs_f64() * 1e3;
            assert_eq!(status, 200, "{result}");
            let t = result["timings_ms"].as_object().expect("timings_ms");
            for stage in ["receive", "queue_wait_frames", "decode", "resize", "batch_wait", "inference", "postprocess"] {
                let v = t.get(stage).and_then(Value::as_f64).unwrap_or_else(|| panic!("{input}: no {stage} in {t:?}"));
                assert!(v >= 0.0, "{input}: {stage} = {v}");
            }
            assert_eq!(t.contains_key("queue_wait_tensors"), input == "tensors", "{input}: {t:?}");
            assert!(!t.contains_key("batch_size"), "{input}: the batch size is not a time: {t:?}");
            let batch = result["batch_size"].as_u64().unwrap_or_else(|| panic!("{input}: no batch_size in {result}"));
            assert!((1..=8).contains(&batch), "{input}: batch_size {batch}");
            let sum: f64 = t.values().filter_map(Value::as_f64).sum();
            if i > 0 {
                assert!(sum <= waited_ms + 1.0, "{input}: stages add up to {sum:.1} ms, the station waited {waited_ms:.1} ms: {t:?}");
            }
        }
        server.stop().await;
    }
}

/// A process given fewer cores than the machine has (`taskset`, a container's CPU
/// set) keeps every thread on them: ONNX Runtime left to itself starts one
/// intra-op thread per core of the machine and pins each to its core, and on the
/// 16-core GPU host a `taskset -c 0,1` run was measured using 12.9 cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_process_keeps_its_inference_threads_on_its_cores() {
    let data = scratch("pinned");
    let log = repo().join("target/test-logs").join(format!("{}.log", unique("pinned")));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut child = tokio::process::Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_visionq"), "run", "--listen", "127.0.0.1:0"])
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_MODEL", model())
        .env("VISIONQ_DATA_DIR", &data)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("taskset runs visionq");
    let base = wait_listening(&mut child, &log).await;
    let (status, result) =
        post_jpeg(&reqwest::Client::new(), &format!("{base}/v1/stations/pinned-1/frames?wait_ms=30000"), photo_bytes("dog.jpg")).await;
    assert_eq!(status, 200, "{result}");
    let pid = child.id().unwrap();
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("").trim().to_string();
        assert_eq!(allowed, "0", "thread {} ({}) may run on CPUs {allowed}", task.display(), comm.trim());
        threads += 1;
    }
    assert!(threads > 3, "read {threads} threads");
    let _ = child.kill().await;
}
