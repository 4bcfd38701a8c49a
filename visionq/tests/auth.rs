//! Who may do what, on the real binary: tokens made with `visionq token new`, a
//! station, an operator and an admin token, every refusal with its status (no token,
//! wrong token, another station's token, an operator token on ingest), the read side
//! and the dashboard behind operator tokens, per-station rate limits and deadlines,
//! secrets kept out of logs and out of `/v1/config`, and a server that refuses to
//! start open on a network address.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;

struct Tokens {
    cam1: String,
    cam2: String,
    operator: String,
    admin: String,
}

fn tokens(dir: &Path) -> (PathBuf, Tokens) {
    let file = dir.join("tokens.toml");
    let t = Tokens {
        cam1: new_token(&file, &["--scope", "station", "--station", "l1-cam1"]),
        cam2: new_token(&file, &["--scope", "station", "--station", "l1-cam2", "--station", "live"]),
        operator: new_token(&file, &["--scope", "operator", "--name", "control-room"]),
        admin: new_token(&file, &["--scope", "admin"]),
    };
    (file, t)
}

async fn post(client: &reqwest::Client, url: &str, token: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut r = client.post(url).header("content-type", "image/jpeg").body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = client.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_caller_gets_exactly_what_its_token_allows() {
    let dir = scratch("auth");
    let (file, t) = tokens(&dir);
    // A database URL with a password, from a file as a mounted secret would be:
    // neither the log nor /v1/config may show it.
    let db = TestDb::new("auth").await;
    let secret = "pw-s3cret-7f3a";
    let db_url_file = dir.join("database-url");
    std::fs::write(&db_url_file, db.url.replace("postgres@", &format!("postgres:{secret}@"))).unwrap();
    let server = Server::start(
        &["run"],
        &[
            ("VISIONQ_TOKENS_FILE", file.display().to_string()),
            ("VISIONQ_DATABASE_URL_FILE", db_url_file.display().to_string()),
            ("VISIONQ_DATA_DIR", dir.display().to_string()),
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let frames = |station: &str| server.url(&format!("/v1/stations/{station}/frames?wait_ms=20000"));
    let dog = photo_bytes("dog.jpg");

    // Ingest: each refusal with its status and, on 401, the Bearer challenge.
    let r = post(&c, &frames("l1-cam1"), None, dog.clone()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"visionq\"");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unauthenticated");
    let r = post(&c, &frames("l1-cam1"), Some("vq_not-a-real-token"), dog.clone()).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let r = post(&c, &frames("l1-cam1"), Some(&t.cam2), dog.clone()).await;
    assert_eq!(r.status(), 403, "another station's token");
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("l1-cam2"));
    let r = post(&c, &frames("l1-cam1"), Some(&t.operator), dog.clone()).await;
    assert_eq!(r.status(), 403, "an operator token on ingest");
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("read-only"));
    // A refused request never reached the queue: only now does the first frame go in.
    let r = post(&c, &frames("l1-cam1"), Some(&t.cam1), dog.clone()).await;
    assert_eq!(r.status(), 200);
    let mine: Value = r.json().await.unwrap();
    assert_eq!(mine["status"], "ok", "{mine}");
    let r = post(&c, &frames("l1-cam2"), Some(&t.cam2), photo_bytes("person.jpg")).await;
    assert_eq!(r.status(), 200);
    let theirs: Value = r.json().await.unwrap();

    // The read side: a station reads its own frames and history, nobody else's.
    let frame = |v: &Value| server.url(&format!("/v1/frames/{}", v["frame_id"].as_str().unwrap()));
    assert_eq!(get(&c, &frame(&mine), None).await.0, 401);
    assert_eq!(get(&c, &frame(&mine), Some(&t.cam1)).await.0, 200);
    assert_eq!(get(&c, &frame(&theirs), Some(&t.cam1)).await.0, 404, "another station's frame reads as missing");
    assert_eq!(get(&c, &frame(&theirs), Some(&t.operator)).await.0, 200);
    let history = |s: &str| server.url(&format!("/v1/stations/{s}/results"));
    let (status, page) = get(&c, &history("l1-cam1"), Some(&t.cam1)).await;
    assert_eq!((status, page["results"].as_array().map(Vec::len)), (200, Some(1)));
    assert_eq!(get(&c, &history("l1-cam2"), Some(&t.cam1)).await.0, 403);
    assert_eq!(get(&c, &server.url("/v1/stations/l1-cam2/counts"), Some(&t.cam1)).await.0, 403);
    assert_eq!(get(&c, &history("l1-cam2"), Some(&t.operator)).await.0, 200);
    assert_eq!(get(&c, &history("l1-cam2"), Some("vq_wrong")).await.0, 401);

    // The dashboard: the page and its config are open, the plant's data is not.
    assert_eq!(c.get(server.url("/")).send().await.unwrap().status(), 200);
    let (status, cfg) = get(&c, &server.url("/v1/dashboard/config"), None).await;
    assert_eq!((status, &cfg["auth"]["required"]), (200, &Value::Bool(true)));
    assert_eq!(get(&c, &server.url("/v1/dashboard/stations"), None).await.0, 401);
    assert_eq!(get(&c, &server.url("/v1/dashboard/stations"), Some(&t.cam1)).await.0, 403, "stations see no dashboard");
    let (status, snapshot) = get(&c, &server.url(&format!("/v1/dashboard/stations?token={}", t.operator)), None).await;
    assert_eq!(status, 200, "?token= serves where a browser cannot set headers");
    assert!(snapshot["stations"].as_array().unwrap().iter().any(|s| s["station"] == "l1-cam1"), "{snapshot}");
    assert_eq!(c.get(server.url("/v1/stations/l1-cam1/latest.jpg")).send().await.unwrap().status(), 401);
    // The WebSocket: refused before the upgrade without a token, served with one.
    assert_eq!(get(&c, &server.url("/v1/dashboard/stream"), None).await.0, 401);
    assert_eq!(get(&c, &server.url("/v1/stream"), Some(&t.cam1)).await.0, 403, "all stations' stream needs an operator");
    let ws = server.base.replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws}/v1/dashboard/stream?token={}", t.operator)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
    let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(first["type"], "snapshot");
    let bad = tokio_tungstenite::connect_async(format!("{ws}/v1/dashboard/stream?token=vq_wrong")).await;
    assert!(bad.is_err(), "a wrong token gets no WebSocket");

    // Admin routes: the self-test and the effective configuration.
    let selftest = server.url("/v1/selftest");
    assert_eq!(c.post(&selftest).bearer_auth(&t.operator).send().await.unwrap().status(), 403);
    assert_eq!(c.post(&selftest).bearer_auth(&t.cam1).send().await.unwrap().status(), 403);
    assert_eq!(c.post(&selftest).send().await.unwrap().status(), 401);
    assert_eq!(c.post(&selftest).bearer_auth(&t.admin).send().await.unwrap().status(), 200);

    // The stations seen: an operator sees every camera (not the self-test's station,
    // whose frame was just stored), a station token only its own station.
    let names = |v: &Value| -> Vec<String> {
        v["stations"].as_array().unwrap().iter().map(|s| s["station"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(get(&c, &server.url("/v1/stations"), None).await.0, 401);
    let (status, all) = get(&c, &server.url("/v1/stations"), Some(&t.operator)).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(names(&all), ["l1-cam1", "l1-cam2"]);
    let cam1 = &all["stations"][0];
    assert_eq!((cam1["frames"].as_u64(), cam1["last_status"].as_str()), (Some(1), Some("ok")), "{cam1}");
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let skew = time(&cam1["last_frame_at"]) - time(&mine["received_at"]);
    assert!(skew.num_microseconds().unwrap().abs() <= 1, "last_frame_at is the frame's received_at: {cam1}");
    let (status, own) = get(&c, &server.url("/v1/stations"), Some(&t.cam1)).await;
    assert_eq!((status, names(&own)), (200, vec!["l1-cam1".to_string()]));
    assert_eq!(get(&c, &server.url("/v1/stations?limit=5"), Some(&t.operator)).await.0, 400, "it takes no parameters");
    assert_eq!(get(&c, &server.url("/v1/config"), Some(&t.operator)).await.0, 403);
    let (status, config) = get(&c, &server.url("/v1/config"), Some(&t.admin)).await;
    assert_eq!(status, 200);
    let shown = config.to_string();
    assert!(shown.contains("postgres:***@"), "{shown}");
    assert!(!shown.contains(secret), "the database password is not shown");
    // Health and metrics stay open for probes and Prometheus.
    assert_eq!(c.get(server.url("/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(server.url("/metrics")).send().await.unwrap().status(), 200);

    let metrics = server.metrics().await;
    for code in ["unauthenticated", "invalid_token", "forbidden"] {
        assert!(metrics.contains(&format!("reason=\"{code}\"")), "refusals counted by reason: {code}");
    }
    let log = server.log.clone();
    server.stop().await;
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("authentication on"), "the log says auth is on");
    for (what, s) in [("password", secret), ("station token", &t.cam1), ("operator token", &t.operator), ("admin token", &t.admin)] {
        assert!(!log.contains(s), "the log shows the {what}");
    }
    drop(db);
}

#[tokio::test]
async fn stations_have_their_own_rate_limits_and_deadlines() {
    let dir = scratch("limits");
    let cfg = dir.join("visionq.toml");
    std::fs::write(
        &cfg,
        "rate_limit_fps = 1\nrate_limit_burst = 2\n\
         [station.fast]\nrate_limit_fps = 100\nrate_limit_burst = 20\n\
         [station.live]\ndeadline_ms = 1\nrate_limit_fps = 0\n",
    )
    .unwrap();
    let server = Server::start(&["--config", cfg.to_str().unwrap(), "run"], &[("VISIONQ_DATA_DIR", dir.display().to_string())]).await;
    let c = reqwest::Client::new();
    let small = photo_bytes("person.jpg");
    let url = |s: &str| server.url(&format!("/v1/stations/{s}/frames"));

    // The default: a burst of 2, then 1 frame/s; the refusal says when to come back.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = post(&c, &url("slow"), None, small.clone()).await;
        let status = r.status().as_u16();
        if status == 429 {
            let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            assert_eq!(r.json::<Value>().await.unwrap()["code"], "rate_limited");
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..2], &[202, 202], "{statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
    // Another station is not held back by this one, and its own limit is higher.
    for _ in 0..10 {
        assert_eq!(post(&c, &url("fast"), None, small.clone()).await.status(), 202);
    }
    // After a second the slow station may post again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post(&c, &url("slow"), None, small.clone()).await.status(), 202);

    // `live` has a 1 ms default deadline: its frames are reported expired (decoding
    // alone takes longer); `audit` has none, and completes. `?deadline_ms=` still wins.
    let wait = |s: &str, extra: &str| server.url(&format!("/v1/stations/{s}/frames?wait_ms=30000{extra}"));
    for _ in 0..3 {
        let r: Value = post(&c, &wait("live", ""), None, small.clone()).await.json().await.unwrap();
        assert_eq!(r["status"], "expired", "{r}");
    }
    let r: Value = post(&c, &wait("live", "&deadline_ms=60000"), None, small.clone()).await.json().await.unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    let r: Value = post(&c, &wait("fast", ""), None, small.clone()).await.json().await.unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("reason=\"rate_limited\""), "rate-limit refusals are counted");
    server.stop().await;
}

#[tokio::test]
async fn auth_cannot_be_off_on_a_network_address() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["run", "--listen", "0.0.0.0:0"])
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_DATA_DIR", scratch("open"))
        .env_remove("VISIONQ_TOKENS_FILE")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("refuses quickly").unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback") && stderr.contains("VISIONQ_TOKENS_FILE"), "{stderr}");
    // A tokens file that is not valid stops the start too, with the reason.
    let bad = scratch("badtokens").join("tokens.toml");
    std::fs::write(&bad, "[[token]]\nname = \"x\"\nscope = \"operator\"\nsha256 = \"abc\"\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_DATA_DIR", scratch("badtokens-data"))
        .env("VISIONQ_TOKENS_FILE", &bad)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn tokens_rotate_on_sighup_without_a_restart() {
    let dir = scratch("rotate");
    let file = dir.join("tokens.toml");
    let old = new_token(&file, &["--scope", "station", "--station", "cam"]);
    let server = Server::start(
        &["run"],
        &[("VISIONQ_TOKENS_FILE", file.display().to_string()), ("VISIONQ_DATA_DIR", dir.display().to_string())],
    )
    .await;
    let c = reqwest::Client::new();
    let url = server.url("/v1/stations/cam/frames");
    let dog = photo_bytes("dog.jpg");
    assert_eq!(post(&c, &url, Some(&old), dog.clone()).await.status(), 202);

    // The new file holds only a new token; SIGHUP swaps it in.
    let next = dir.join("next.toml");
    let new = new_token(&next, &["--scope", "station", "--station", "cam"]);
    std::fs::rename(&next, &file).unwrap();
    let hup = |s: &Server| {
        let pid = s.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    };
    hup(&server);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while post(&c, &url, Some(&old), dog.clone()).await.status() != 401 {
        assert!(std::time::Instant::now() < deadline, "the old token still works after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(&c, &url, Some(&new), dog.clone()).await.status(), 202);

    // A broken file is refused and the tokens in use stay.
    std::fs::write(&file, "[[token]]\nname = \"x\"\n").unwrap();
    hup(&server);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&server.log).unwrap().contains("not reloaded") {
        assert!(std::time::Instant::now() < deadline, "no log line about the refused file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(&c, &url, Some(&new), dog.clone()).await.status(), 202);
    assert_eq!(post(&c, &url, Some(&old), dog).await.status(), 401);
    server.stop().await;
}
