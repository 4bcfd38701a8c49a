//! What a first-time user does from the README works as written: the JSON example
//! posts a real photo, `visionq config` lists every key, set or not, and `visionq
//! run` fetches what it is missing.

mod common;

use common::*;
use serde_json::Value;

/// The README's fenced block that posts JSON, as a shell script.
fn readme_json_example() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines.iter().position(|l| l.contains("> frame.json")).expect("the README's JSON example");
    let mut script = vec![lines[start]];
    for l in &lines[start + 1..] {
        script.push(l);
        if !l.ends_with('\\') {
            break;
        }
    }
    script.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_json_example_posts_a_photo_as_written() {
    let data = scratch("first-time");
    let server = Server::start(&["run"], &[("VISIONQ_DATA_DIR", data.display().to_string())]).await;
    // Run in a directory holding dog.jpg, against this server, by bash as a user would paste it.
    std::fs::copy(photo("dog.jpg"), data.join("dog.jpg")).unwrap();
    let script = readme_json_example().replace("http://127.0.0.1:8080", &server.base);
    assert!(script.contains("--data @frame.json"), "{script}");
    let out = std::process::Command::new("bash").args(["-euo", "pipefail", "-c", &script]).current_dir(&data).output().unwrap();
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(reply["status"], "queued", "{reply}");
    let id = reply["frame_id"].as_str().unwrap();
    let c = reqwest::Client::new();
    let mut stored = Value::Null;
    for _ in 0..100 {
        let r = c.get(server.url(&format!("/v1/frames/{id}"))).send().await.unwrap();
        if r.status() == 200 {
            stored = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stored["captured_at"], "2026-11-23T10:00:00Z", "{stored}");
    assert!(classes(&stored).contains(&"dog".to_string()), "{stored}");
    server.stop().await;
}

#[test]
fn visionq_config_lists_unset_keys_too() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .arg("config")
        .env_remove("VISIONQ_AMQP_URL")
        .env_remove("VISIONQ_DATABASE_URL")
        .env_remove("VISIONQ_MODEL")
        .env_remove("VISIONQ_TOKENS_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for key in ["amqp_url", "database_url", "model", "tokens_file", "tls_cert_file"] {
        assert!(text.lines().any(|l| l == format!("# {key} = (unset)")), "{key} is listed:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("max_batch_size = ")), "{text}");
    // What it prints (comments included) reads back as a config file.
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    assert!(parsed.contains_key("listen"));
}

/// `visionq run` with nothing in its cache fetches the default model and runtime
/// (through the set-up script, as `detect` does) and starts. The script here is a
/// stand-in that links the assets this machine already has into the empty cache,
/// and leaves a mark: the fetching itself is `tools/assets.py`'s own business.
#[tokio::test]
async fn run_fetches_missing_assets_then_serves() {
    let tmp = scratch("run-fetch");
    let empty_cache = tmp.join("cache");
    let script = tmp.join("fake-assets.py");
    let mark = tmp.join("fetched");
    std::fs::write(
        &script,
        format!(
            "import os, sys\n\
             cache = sys.argv[sys.argv.index('--cache') + 1]\n\
             for rel in ('models/yolov3-tiny.onnx', 'onnxruntime/libonnxruntime.so'):\n\
             \x20   os.makedirs(os.path.dirname(os.path.join(cache, rel)), exist_ok=True)\n\
             \x20   os.symlink(os.path.join({real:?}, rel), os.path.join(cache, rel))\n\
             open({mark:?}, 'w').write(cache)\n",
            real = cache().display().to_string(),
            mark = mark.display().to_string()
        ),
    )
    .unwrap();
    let log = tmp.join("run.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env_remove("VISIONQ_AMQP_URL")
        .env_remove("VISIONQ_DATABASE_URL")
        .env_remove("VISIONQ_MODEL")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("VISIONQ_TOKENS_FILE")
        .env("VISIONQ_CACHE_DIR", &empty_cache)
        .env("VISIONQ_ASSETS_SCRIPT", &script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = wait_listening(&mut child, &log).await;
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), empty_cache.display().to_string(), "the set-up script ran for the cache");
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "the fetched model is loaded");
    // The store went to the data dir under the cache: data_dir follows VISIONQ_CACHE_DIR.
    let (status, _) =
        post_jpeg(&reqwest::Client::new(), &format!("{base}/v1/stations/cam-1/frames?wait_ms=20000"), photo_bytes("dog.jpg")).await;
    assert_eq!(status, 200);
    assert!(empty_cache.join("data/visionq.db").exists(), "the SQLite store is under <cache_dir>/data");
    child.kill().await.unwrap();
}
