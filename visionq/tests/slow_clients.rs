//! Slow and idle clients against a real `visionq run` over real TCP sockets: 200
//! connections that send headers and two bytes of a 100 KB body and fall silent,
//! connections that stop inside their headers, connect and say nothing (closed as
//! idle, like a kept-alive connection), or keep a connection alive and idle — all
//! closed by the server after its timeouts while
//! stations keep being served; and the connection cap refusing with `503
//! too_many_connections` and `Retry-After`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_MS: u64 = 2_000;
const BODY_MS: u64 = 3_000;
const IDLE_MS: u64 = 3_000;

fn env(tag: &str, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("VISIONQ_DATA_DIR", scratch(tag).display().to_string()),
        ("VISIONQ_DURABILITY", "memory".to_string()),
        ("VISIONQ_HTTP_HEADER_TIMEOUT_MS", HEADER_MS.to_string()),
        ("VISIONQ_HTTP_BODY_TIMEOUT_MS", BODY_MS.to_string()),
        ("VISIONQ_HTTP_IDLE_TIMEOUT_MS", IDLE_MS.to_string()),
    ];
    env.extend(extra.iter().cloned());
    env
}

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// A number from the server's /metrics (0 when the series is absent).
async fn gauge(server: &Server, series: &str) -> f64 {
    metric_value(&server.metrics().await, series).unwrap_or(0.0)
}

fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id().unwrap())).unwrap().count()
}

/// Reads what the server sends until it closes the connection: (bytes, when closed).
/// A reset counts as closed.
async fn until_closed(mut s: TcpStream, within: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|_| (got, Instant::now()))
}

/// Sends `GET path` on an open connection (kept alive) and reads the answer:
/// (status, body). A connection closed without an answer reads as status 0.
async fn get_on(s: &mut TcpStream, path: &str) -> (u16, String) {
    if s.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse::<usize>().expect("a content-length"));
                let length = length.expect("answers here carry a content-length");
                if got.len() >= end + 4 + length {
                    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                    return (status, String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned());
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return (0, String::from_utf8_lossy(&got).into_owned()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.unwrap_or((0, "no answer within 5 s".into()))
}

/// The value of an unlabelled series in a /metrics text.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' '))).and_then(|v| v.trim().parse().ok())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slow {
    /// Headers of a 100 KB frame and its first two bytes, then silence.
    Body,
    /// Half a request head, then silence.
    Header,
    /// Connects and sends nothing.
    Silent,
    /// One request answered, then the connection kept alive and idle.
    Idle,
}

async fn open(addr: &str, kind: Slow, i: usize) -> (Slow, TcpStream, Instant) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    match kind {
        Slow::Body => {
            let head = format!(
                "POST /v1/stations/slow-{i}/frames HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\ncontent-length: 102400\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&[0xFF, 0xD8]).await.unwrap();
        }
        Slow::Header => s.write_all(b"POST /v1/stations/slow/frames HTTP/1.1\r\nhost: x\r\n").await.unwrap(),
        Slow::Silent => {}
        Slow::Idle => {
            s.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            while !got.ends_with(b"ok\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "livez answered before the idle wait");
                got.extend_from_slice(&buf[..n]);
            }
        }
    }
    (kind, s, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_connections_are_closed_while_frames_keep_being_served() {
    let server = Server::start(&["run"], &env("slow", &[])).await;
    let addr = addr(&server);
    let fds_before = open_fds(&server);

    let mut plan = vec![Slow::Body; 200];
    plan.extend([Slow::Header; 20]);
    plan.extend([Slow::Silent; 20]);
    plan.extend([Slow::Idle; 20]);
    let mut opening = tokio::task::JoinSet::new();
    for (i, kind) in plan.iter().enumerate() {
        let (addr, kind) = (addr.clone(), *kind);
        opening.spawn(async move { open(&addr, kind, i).await });
    }
    let conns = opening.join_all().await;
    let held = gauge(&server, "visionq_http_connections").await;
    assert!(held >= 260.0, "the slow connections are open on the server: {held}");
    assert!(open_fds(&server) >= fds_before + 260, "each holds a descriptor");

    // Stations keep posting while the slow connections sit there, past every timeout.
    let client = reqwest::Client::new();
    let dog = photo_bytes("dog.jpg");
    let served = {
        let (client, base) = (client.clone(), server.base.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let until = Instant::now() + Duration::from_millis(BODY_MS + 3_000);
            let mut i = 0;
            while Instant::now() < until {
                let query = if i % 2 == 0 { "?wait_ms=20000" } else { "" };
                let url = format!("{base}/v1/stations/steady-{}/frames{query}", i % 3);
                let t0 = Instant::now();
                let (status, body) = post_jpeg(&client, &url, dog.clone()).await;
                statuses.push((status, t0.elapsed(), body));
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            statuses
        })
    };

    let mut closing = tokio::task::JoinSet::new();
    for (kind, s, opened) in conns {
        closing.spawn(async move { (kind, opened, until_closed(s, Duration::from_secs(15)).await) });
    }
    for (kind, opened, closed) in closing.join_all().await {
        let (got, at) = closed.unwrap_or_else(|| panic!("a {kind:?} connection was still open 15 s later"));
        let after = at.duration_since(opened);
        let text = String::from_utf8_lossy(&got);
        let limit = Duration::from_millis(match kind {
            Slow::Body => BODY_MS,
            Slow::Header => HEADER_MS,
            // A new connection that sends nothing is idle (a client pool's spare).
            Slow::Silent | Slow::Idle => IDLE_MS,
        });
        assert!(after + Duration::from_millis(300) >= limit, "{kind:?} closed after {after:?}, before its timeout {limit:?}");
        match kind {
            Slow::Body => {
                assert!(text.starts_with("HTTP/1.1 408 "), "{kind:?}: {text}");
                assert!(text.contains("\"code\":\"body_timeout\""), "{kind:?}: {text}");
                assert!(text.to_ascii_lowercase().contains("connection: close"), "{kind:?}: {text}");
            }
            _ => assert!(got.is_empty(), "{kind:?}: nothing more is sent: {text}"),
        }
    }

    let statuses = served.await.unwrap();
    assert!(statuses.len() >= 10, "{} frames posted", statuses.len());
    for (i, (status, took, body)) in statuses.iter().enumerate() {
        let expected = if i % 2 == 0 { 200 } else { 202 };
        assert_eq!(*status, expected, "frame {i} ({took:?}): {body}");
        if expected == 200 {
            assert_eq!(body["status"], "ok", "{body}");
        }
    }

    let metrics = server.metrics().await;
    let count = |reason: &str| -> f64 {
        let series = format!("visionq_http_slow_clients_total{{reason=\"{reason}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&series)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
    };
    assert_eq!(count("body"), 200.0, "{metrics}");
    assert_eq!(count("header"), 20.0, "{metrics}");
    assert!(count("idle") >= 40.0, "{metrics}");
    let open_now = gauge(&server, "visionq_http_connections").await;
    assert!(open_now <= 5.0, "only this scrape's and the client pool's connections are open: {open_now}");
    let fds_after = open_fds(&server);
    assert!(fds_after <= fds_before + 10, "descriptors given back: {fds_before} before, {fds_after} after");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_cap_get_503_with_retry_after_and_liveness_still_answers() {
    let long = [
        ("VISIONQ_HTTP_MAX_CONNECTIONS", "20".to_string()),
        ("VISIONQ_HTTP_HEADER_TIMEOUT_MS", "60000".to_string()),
        ("VISIONQ_HTTP_IDLE_TIMEOUT_MS", "60000".to_string()),
    ];
    let server = Server::start(&["run"], &env("cap", &long)).await;
    let addr = addr(&server);
    // One connection per request, so that each one meets the cap afresh.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let frame_url = server.url("/v1/stations/cam-1/frames");
    let (status, body) = post_jpeg(&client, &frame_url, photo_bytes("dog.jpg")).await;
    assert_eq!(status, 202, "{body}");
    // That connection closed: only a scrape's own is open.
    let settled = Instant::now();
    while gauge(&server, "visionq_http_connections").await > 1.0 {
        assert!(settled.elapsed() < Duration::from_secs(5), "the server let go of closed connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Fill the 20 slots with connections of our own, and know that they are ours: a
    // connection the server has not yet let go of (the last scrape's) would take a
    // slot, refuse one of ours and free its slot a moment later. So the last one
    // opened asks /metrics on a kept-alive connection until the server says it holds
    // 20; when that probe is itself refused, another connection replaces it.
    let mut held = Vec::new();
    let full_by = Instant::now() + Duration::from_secs(20);
    loop {
        while held.len() < 20 {
            held.push(TcpStream::connect(&addr).await.unwrap());
        }
        let probe = held.last_mut().unwrap();
        let (status, body) = get_on(probe, "/metrics").await;
        if status == 200 && metric_value(&body, "visionq_http_connections") == Some(20.0) {
            break;
        }
        assert!(Instant::now() < full_by, "the server never held our 20 connections: {status} {body}");
        if status != 200 {
            held.pop(); // refused (and closed) by the cap: one of the slots was not ours yet
        }
        // A silent one refused earlier has its 503 waiting (after the refusal's one-second
        // wait for a request head) or is closed: let it go, a new one takes its place.
        held.retain(|c| matches!(c.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client.post(&frame_url).header("content-type", "image/jpeg").body(photo_bytes("dog.jpg")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"), "{:?}", r.headers());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "too_many_connections", "{body}");
    assert!(body["error"].as_str().unwrap().contains("20 connections"), "{body}");
    let r = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "not ready while full");
    let r = client.get(server.url("/livez")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap().as_str()), (200, "ok\n"), "alive while full");

    drop(held);
    let freed = Instant::now();
    let mut last = (0, serde_json::Value::Null);
    while freed.elapsed() < Duration::from_secs(5) {
        last = post_jpeg(&client, &frame_url, photo_bytes("dog.jpg")).await;
        if last.0 == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 202, "slots freed when the silent clients left: {}", last.1);
    let refused = gauge(&server, "visionq_http_connections_refused_total").await;
    assert!(refused >= 3.0, "{refused}");
    server.stop().await;
}
