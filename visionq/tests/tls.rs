//! TLS on both sides, with certificates made here by openssl: the HTTP side serves
//! HTTPS only when given a certificate (curl, checking it against our CA, posts a
//! real photo and gets its result; a client that never starts its handshake is cut
//! at the header timeout), and the broker link speaks `amqps://` through a
//! TLS endpoint (socat) in front of this machine's RabbitMQ, trusting our CA file —
//! and refuses a broker whose certificate it cannot verify.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `curl ARGS` → (exit code, HTTP status, body).
async fn curl(args: &[&str]) -> (i32, u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test]
async fn the_http_side_serves_https_when_given_a_certificate() {
    let dir = scratch("https");
    let (ca, cert, key) = tls_certificates(&dir);
    let server = Server::start(
        &["run"],
        &[
            ("VISIONQ_TLS_CERT_FILE", cert.display().to_string()),
            ("VISIONQ_TLS_KEY_FILE", key.display().to_string()),
            ("VISIONQ_DATA_DIR", dir.display().to_string()),
            ("VISIONQ_HTTP_HEADER_TIMEOUT_MS", "2000".to_string()),
        ],
    )
    .await;
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    // A connection that never starts its TLS handshake is closed after the header
    // timeout (the handshake counts as part of the first request's head).
    let mut silent = tokio::net::TcpStream::connect(server.base.trim_start_matches("https://")).await.unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(6), tokio::io::AsyncReadExt::read(&mut silent, &mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed by the server without an answer: {read:?}");
    assert!(opened.elapsed() >= Duration::from_millis(1700), "not before the timeout: {:?}", opened.elapsed());
    let url = server.url("/v1/stations/tls-cam/frames?wait_ms=20000");
    let photo = photo("dog.jpg").display().to_string();
    let body = format!("@{photo}");
    let ca = ca.display().to_string();
    let (code, status, body) = curl(&["--cacert", &ca, "-H", "content-type: image/jpeg", "--data-binary", &body, &url]).await;
    assert_eq!((code, status), (0, 200), "{body}");
    let result: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(result["status"], "ok");
    assert!(classes(&result).contains(&"dog".to_string()), "{result}");
    // A client that does not trust our CA is refused by its own TLS check (curl 60).
    let (code, _, _) = curl(&[&server.url("/livez")]).await;
    assert_eq!(code, 60, "an unknown issuer is not trusted");
    // Plain HTTP gets no answer from an HTTPS-only port.
    let (code, status, _) = curl(&[&server.url("/livez").replace("https://", "http://")]).await;
    assert!(code != 0 || status != 200, "plain HTTP is not served");
    server.stop().await;
}

/// socat terminating TLS on a free port, forwarding to this machine's RabbitMQ.
struct TlsFront {
    /// Killed on drop.
    _child: tokio::process::Child,
    port: u16,
}

impl TlsFront {
    async fn start(cert: &Path, key: &Path) -> TlsFront {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen =
            format!("OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0", cert.display(), key.display());
        let child = tokio::process::Command::new("socat")
            .args([listen.as_str(), "TCP:127.0.0.1:5672"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("socat runs (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "socat did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        TlsFront { _child: child, port }
    }
}

#[tokio::test]
async fn the_broker_link_speaks_amqps_and_verifies_the_broker() {
    let dir = scratch("amqps");
    let (ca, cert, key) = tls_certificates(&dir);
    let front = TlsFront::start(&cert, &key).await;
    let url = format!("amqps://guest:guest@localhost:{}/%2f", front.port);
    let prefix = unique("vq-amqps");
    let db = TestDb::new("amqps").await;
    let mut env = amqp_env(&prefix, &db.url);
    env.retain(|(k, _)| *k != "VISIONQ_AMQP_URL");
    env.push(("VISIONQ_AMQP_URL", url.clone()));
    env.push(("VISIONQ_AMQP_TLS_CA_FILE", ca.display().to_string()));
    let server = Server::start(&["run"], &env).await;
    let c = reqwest::Client::new();
    let (status, result) = post_jpeg(&c, &server.url("/v1/stations/amqps-cam/frames?wait_ms=30000"), photo_bytes("person.jpg")).await;
    assert_eq!((status, &result["status"]), (200, &Value::from("ok")), "{result}");
    assert!(classes(&result).contains(&"person".to_string()), "{result}");
    server.stop().await;

    // Without our CA the same broker is not trusted: the process never gets to
    // listening, and its log says why.
    let log = repo().join("target/test-logs").join(format!("{}.log", unique("amqps-untrusted")));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["ingest", "--listen", "127.0.0.1:0"])
        .env("VISIONQ_AMQP_URL", &url)
        .env("VISIONQ_QUEUE_PREFIX", &prefix)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
            assert!(!text.contains("listening"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no certificate error in the log:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().await.unwrap();
    drop(front);
    delete_topology(&prefix).await;
}
