//! Model activation in RabbitMQ mode (issue 16): an activation made on one process
//! is followed by the other infer replica on the same broker and repository, a
//! replica started afterwards serves the activated version, a candidate started or
//! ended on one replica is started or ended on the other, and a rollback from the
//! command line reaches them all; the results stored in PostgreSQL name the version.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn visionq(args: &[&str], repo: &Path, env: &[(&str, String)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(args)
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_MODEL_REPOSITORY", repo)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("visionq runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

async fn serving(server: &Server) -> String {
    let list: Value = reqwest::get(server.url("/v1/models")).await.unwrap().json().await.unwrap();
    list["models"][0]["serving"].as_str().unwrap_or_default().to_string()
}

/// Waits until every server serves `version`.
async fn all_serve(servers: &[&Server], version: &str) {
    for _ in 0..300 {
        let mut now = Vec::new();
        for s in servers {
            now.push(serving(s).await);
        }
        if now.iter().all(|v| v == version) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every replica serves {version}");
}

/// Waits until every server runs `version` as its candidate (None: none).
async fn candidate_everywhere(servers: &[&Server], version: Option<&str>) {
    for _ in 0..300 {
        let mut now = Vec::new();
        for s in servers {
            let list: Value = reqwest::get(s.url("/v1/models")).await.unwrap().json().await.unwrap();
            now.push(list["models"][0]["candidate"]["version"].as_str().map(str::to_string));
        }
        if now.iter().all(|v| v.as_deref() == version) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every replica runs the candidate {version:?}");
}

/// Posts `n` photos through `server`; returns the versions the results name.
async fn post_some(server: &Server, n: usize) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for i in 0..n {
        let photo = ["dog.jpg", "horses.jpg", "person.jpg", "eagle.jpg"][i % 4];
        let (status, r) = post_jpeg(&client, &server.url("/v1/stations/line-amqp/frames?wait_ms=60000"), photo_bytes(photo)).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["model"]["name"], "yolo", "{r}");
        out.push((r["frame_id"].as_str().unwrap().to_string(), r["model"]["version"].as_str().unwrap().to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_follow_an_activation_and_a_new_replica_serves_the_active_version() {
    let repo = scratch("models-amqp").join("models");
    let m = model();
    visionq(&["model", "add", m.to_str().unwrap(), "--name", "yolo", "--version", "1"], &repo, &[]);
    visionq(&["model", "add", m.to_str().unwrap(), "--name", "yolo", "--version", "2"], &repo, &[]);

    let prefix = unique("models");
    let db = TestDb::new("models").await;
    let mut env = amqp_env(&prefix, &db.url);
    env.push(("VISIONQ_MODEL_REPOSITORY", repo.display().to_string()));
    let a = Server::start(&["run"], &env).await;
    let b = Server::start(&["infer"], &env).await;
    all_serve(&[&a, &b], "1").await;

    // Activated on one process; the other replica follows.
    let client = reqwest::Client::new();
    let r = client.post(a.url("/v1/models/yolo/activate")).json(&json!({"version": "2"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    all_serve(&[&a, &b], "2").await;
    let on_two = post_some(&a, 8).await;
    assert!(on_two.iter().all(|(_, v)| v == "2"), "both replicas run 2: {on_two:?}");

    // A candidate started on one replica is recorded and run by the other; ended on
    // that other one, it ends on the first too.
    let r = client.post(a.url("/v1/models/yolo/candidate")).json(&json!({"version": "1", "mode": "shadow"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    candidate_everywhere(&[&a, &b], Some("1")).await;
    let on_two_shadowed = post_some(&a, 8).await;
    assert!(on_two_shadowed.iter().all(|(_, v)| v == "2"), "a shadow run publishes nothing: {on_two_shadowed:?}");
    let r = client.delete(b.url("/v1/models/yolo/candidate")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    candidate_everywhere(&[&a, &b], None).await;
    let list: Value = reqwest::get(a.url("/v1/models")).await.unwrap().json().await.unwrap();
    assert_eq!(list["models"][0]["last_candidate"]["reason"], "ended_elsewhere", "{list}");

    // A replica started after the activation serves it from the start.
    let c = Server::start(&["infer"], &env).await;
    assert_eq!(serving(&c).await, "2");

    // A rollback from the command line is announced to all of them.
    let out = visionq(&["model", "rollback", "yolo"], &repo, &env);
    assert!(out.contains("yolo:1 is active") && out.contains("announced"), "{out}");
    all_serve(&[&a, &b, &c], "1").await;
    let on_one = post_some(&a, 8).await;
    assert!(on_one.iter().all(|(_, v)| v == "1"), "{on_one:?}");

    c.stop().await;
    b.stop().await;
    a.stop().await;
    let pg = db.client().await;
    for (frame_id, version) in on_two.iter().chain(&on_two_shadowed).chain(&on_one) {
        let row = pg.query_one("SELECT model_name, model_version FROM frames WHERE frame_id::text = $1", &[frame_id]).await.unwrap();
        let (name, stored): (String, String) = (row.get(0), row.get(1));
        assert_eq!((name.as_str(), &stored), ("yolo", version), "{frame_id}");
    }
    let n: i64 = pg.query_one("SELECT count(*) FROM frames WHERE station = 'line-amqp'", &[]).await.unwrap().get(0);
    assert_eq!(n, 24, "every frame stored once");
    delete_topology(&prefix).await;
}
