//! What a first-time user does from the README works as written: the JSON example
//! posts a real photo, and `visionq config` lists every key, set or not.

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
