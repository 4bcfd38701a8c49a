//! The HTTP listener of every role. It accepts connections up to
//! `http_max_connections` (beyond it: `503 too_many_connections` with `Retry-After`,
//! or a plain close on HTTPS), serves each with hyper (HTTP/1.1, HTTP/2, WebSocket
//! upgrades) and closes the connections of clients that are too slow or silent:
//!
//! - **header**: a request's headers not in within `http_header_timeout_ms` of their
//!   first byte (a TLS handshake within as long of the accept);
//! - **body**: a body not in within `http_body_timeout_ms` of its headers — the body
//!   fails with [`BodyTimedOut`], the handler answers `408 body_timeout` and the
//!   connection is closed after it. A gRPC request's body is a stream of messages
//!   that may last as long as the call: it fails only when no message came for
//!   `http_idle_timeout_ms`;
//! - **idle**: no request on a kept-alive connection for `http_idle_timeout_ms`, nor
//!   a first one on a new connection. A client's connection pool opens connections
//!   it may not use at once (one made for a request that a freed connection took
//!   first); closing such a connection at the header timeout raced the client's first
//!   request on it, which then got no answer (seen in the SIGKILL fault test);
//! - **send**: a client that stopped reading a response for as long.
//!
//! A request being handled is never cut (a station waiting for its result with
//! `?wait_ms=` is silent, legitimately); an upgraded connection (WebSocket) is the
//! handler's. Each open connection holds one slot, released when its socket closes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use visionq_contract::http::BodyTimedOut;
use visionq_contract::{Config, Metrics};

use crate::shutdown::Shutdown;

/// Refusals (beyond the connection cap) being written at once; beyond these a
/// connection over the cap is closed without an answer.
const REFUSALS_AT_ONCE: usize = 64;
/// How long a refusal waits for the request's head, and then for the client to close.
const REFUSAL_STEP: Duration = Duration::from_secs(1);
/// The most of a request's head a refusal reads.
const REFUSAL_HEAD_BYTES: usize = 8 * 1024;

/// The listener's limits (`http_*` keys of the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
    pub max_connections: usize,
    pub retry_after_s: u64,
}

impl Limits {
    pub fn from_config(c: &Config) -> Limits {
        Limits {
            header: Duration::from_millis(c.http.http_header_timeout_ms),
            body: Duration::from_millis(c.http.http_body_timeout_ms),
            idle: Duration::from_millis(c.http.http_idle_timeout_ms),
            max_connections: c.http.http_max_connections,
            retry_after_s: c.ingest.retry_after_s,
        }
    }
}

/// Why a connection was closed by the listener (the `reason` of `visionq_http_slow_clients_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Header,
    Idle,
    Send,
}

impl Expired {
    fn label(self) -> &'static str {
        match self {
            Expired::Header => "header",
            Expired::Idle => "idle",
            Expired::Send => "send",
        }
    }
}

/// What one connection is doing, as its socket and its requests tell.
#[derive(Debug)]
struct ConnState {
    /// Requests whose headers are in and whose response has not been sent whole.
    in_flight: usize,
    /// Requests started on this connection.
    served: u64,
    /// Handed to a WebSocket (or another upgrade): no longer the listener's.
    upgraded: bool,
    /// First byte read while no request was in flight (the next request's head).
    head_since: Option<Instant>,
    /// The last response finished.
    idle_since: Instant,
    /// A write the client's socket could not take yet, since.
    write_stalled_since: Option<Instant>,
}

impl ConnState {
    fn new(now: Instant) -> ConnState {
        ConnState { in_flight: 0, served: 0, upgraded: false, head_since: None, idle_since: now, write_stalled_since: None }
    }

    /// When the connection is to be closed if nothing changes before, and why.
    fn deadline(&self, l: &Limits) -> Option<(Instant, Expired)> {
        if self.upgraded {
            return None;
        }
        if let Some(t) = self.write_stalled_since {
            return Some((t + l.idle, Expired::Send));
        }
        if self.in_flight > 0 {
            return None;
        }
        // A new connection is idle since its accept (`idle_since`) until its first byte.
        match self.head_since {
            Some(t) => Some((t + l.header, Expired::Header)),
            None => Some((self.idle_since + l.idle, Expired::Idle)),
        }
    }
}

/// A connection's state, shared by its socket, its requests and its watchdog.
struct Watch {
    state: Mutex<ConnState>,
    changed: Notify,
}

impl Watch {
    fn new() -> Arc<Watch> {
        Arc::new(Watch { state: Mutex::new(ConnState::new(Instant::now())), changed: Notify::new() })
    }

    /// Applies `f`; wakes the watchdog when `f` says the deadline may be earlier now.
    fn update(&self, f: impl FnOnce(&mut ConnState, Instant) -> bool) {
        let earlier = f(&mut self.state.lock().expect("connection state lock"), Instant::now());
        if earlier {
            self.changed.notify_one();
        }
    }

    /// Resolves when the connection has been too slow or silent for its limits.
    async fn expired(&self, limits: &Limits) -> Expired {
        loop {
            let deadline = self.state.lock().expect("connection state lock").deadline(limits);
            match deadline {
                None => self.changed.notified().await,
                Some((at, why)) if Instant::now() >= at => return why,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// One slot of `http_max_connections`, held as long as the socket is open.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.http_connections.dec();
    }
}

/// The socket, telling the connection's [`Watch`] when bytes come in and when the
/// client stops taking what is written.
struct WatchedIo<I> {
    io: I,
    watch: Arc<Watch>,
    _slot: Slot,
}

impl<I> WatchedIo<I> {
    fn wrote<T>(&self, r: &Poll<io::Result<T>>) {
        self.watch.update(|s, now| match (r.is_pending(), s.write_stalled_since) {
            (true, None) => {
                s.write_stalled_since = Some(now);
                true
            }
            (false, Some(_)) => {
                s.write_stalled_since = None;
                false
            }
            _ => false,
        });
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.update(|s, now| {
                let starts_a_head = s.in_flight == 0 && s.head_since.is_none() && !s.upgraded;
                if starts_a_head {
                    s.head_since = Some(now);
                }
                starts_a_head
            });
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, data);
        this.wrote(&r);
        r
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A request in flight on its connection, from its headers until its response
/// body is sent whole (or dropped).
struct InFlight(Arc<Watch>);

impl InFlight {
    fn start(watch: Arc<Watch>) -> InFlight {
        watch.update(|s, _| {
            s.in_flight += 1;
            s.served += 1;
            s.head_since = None;
            false
        });
        InFlight(watch)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|s, now| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = now;
            }
            s.in_flight == 0
        });
    }
}

/// A request body that fails with [`BodyTimedOut`] when it is not in by its deadline.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    after: Duration,
    /// A stream's body (gRPC): each frame received moves the deadline this far on.
    slide: Option<Duration>,
    /// Made on the first wait: most bodies are in before they are read.
    sleep: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let (Some(Ok(_)), Some(slide)) = (&frame, this.slide) {
                this.deadline = Instant::now() + slide;
                if let Some(sleep) = this.sleep.as_mut() {
                    sleep.as_mut().reset(this.deadline);
                }
            }
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.metrics.http_slow_clients_total.with_label_values(&["body"]).inc();
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut { after: this.slide.unwrap_or(this.after) }))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The app as one connection's hyper service: requests counted in flight, bodies timed.
#[derive(Clone)]
struct ConnService {
    app: TowerToHyperService<Router>,
    watch: Arc<Watch>,
    body_timeout: Duration,
    /// Between two messages of a gRPC request's body at most.
    idle_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(self.watch.clone());
        let connect = req.method() == Method::CONNECT;
        let grpc = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/grpc"));
        let slide = grpc.then_some(self.idle_timeout);
        let (after, metrics) = (self.body_timeout, self.metrics.clone());
        let deadline = Instant::now() + slide.unwrap_or(after);
        let req = req.map(|inner| Body::new(TimedBody { inner, deadline, after, slide, sleep: None, metrics }));
        let (watch, answer) = (self.watch.clone(), self.app.call(req));
        Box::pin(async move {
            let response = answer.await?;
            let status = response.status();
            if status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
                watch.update(|s, _| {
                    s.upgraded = true;
                    false
                });
            }
            Ok(response.map(|inner| Body::new(TrackedBody { inner, _in_flight: in_flight })))
        })
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) within `limits` until `shutdown`;
/// then stops accepting, lets each connection finish its request and returns when
/// all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let answers = Arc::new(Refusal::new(&limits));
    let acceptor = tls.map(TlsAcceptor::from);
    let (closing_tx, closing_rx) = watch::channel(false);
    let app = TowerToHyperService::new(app);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut stop => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors (EMFILE) or memory: let connections close.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.http_connections_refused_total.inc();
            match (refusing.clone().try_acquire_owned(), &acceptor) {
                (Ok(refusal_slot), None) => drop(tokio::spawn(refuse(tcp, answers.clone(), refusal_slot))),
                _ => drop(tcp),
            }
            continue;
        };
        metrics.http_connections.inc();
        let slot = Slot { _permit: permit, metrics: metrics.clone() };
        let watch = Watch::new();
        let service = ConnService {
            app: app.clone(),
            watch: watch.clone(),
            body_timeout: limits.body,
            idle_timeout: limits.idle,
            metrics: metrics.clone(),
        };
        let (limits, metrics, closing, acceptor) = (limits.clone(), metrics.clone(), closing_rx.clone(), acceptor.clone());
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return connection(tcp, slot, watch, service, &limits, &metrics, closing).await;
            };
            match tokio::time::timeout(limits.header, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => connection(tls, slot, watch, service, &limits, &metrics, closing).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => metrics.http_slow_clients_total.with_label_values(&[Expired::Header.label()]).inc(),
            }
        });
    }
    drop(listener);
    closing_tx.send_replace(true);
    drop(closing_rx);
    // Every connection task holds a receiver: this resolves once all have ended.
    closing_tx.closed().await;
}

/// Serves one connection until it ends, expires or is closed for shutdown.
async fn connection<I>(
    io: I,
    slot: Slot,
    watch: Arc<Watch>,
    service: ConnService,
    limits: &Limits,
    metrics: &Metrics,
    mut closing: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(WatchedIo { io, watch: watch.clone(), _slot: slot });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Extended CONNECT: WebSockets over HTTP/2.
    builder.http2().enable_connect_protocol();
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            why = watch.expired(limits) => {
                metrics.http_slow_clients_total.with_label_values(&[why.label()]).inc();
                tracing::debug!(reason = why.label(), "closing a slow or silent connection");
                return;
            }
            _ = closing.wait_for(|c| *c), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The answers a connection over the cap gets, written without hyper.
struct Refusal {
    busy: Vec<u8>,
    alive: Vec<u8>,
}

impl Refusal {
    fn new(limits: &Limits) -> Refusal {
        let body = serde_json::json!({
            "error": format!(
                "this process has its {} connections open (http_max_connections); retry later",
                limits.max_connections
            ),
            "code": "too_many_connections",
        })
        .to_string();
        let busy = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            limits.retry_after_s,
            body.len()
        );
        // Liveness is answered even when full: the process is alive, and a probe
        // refused would get it restarted for being busy.
        let alive = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 3\r\n\r\nok\n";
        Refusal { busy: busy.into_bytes(), alive: alive.as_bytes().to_vec() }
    }
}

/// Answers a connection over the cap: reads its request's head (briefly), answers
/// 503 (200 to `GET /livez`), and closes once the client has read it.
async fn refuse(mut tcp: TcpStream, answers: Arc<Refusal>, _refusal_slot: OwnedSemaphorePermit) {
    let mut head = Vec::new();
    let _ = tokio::time::timeout(REFUSAL_STEP, read_head(&mut tcp, &mut head)).await;
    let alive = head.starts_with(b"GET /livez ") || head.starts_with(b"GET /livez?");
    let answer = if alive { &answers.alive } else { &answers.busy };
    if tokio::time::timeout(REFUSAL_STEP, tcp.write_all(answer)).await.is_err() {
        return;
    }
    let _ = tcp.shutdown().await;
    // Closing with unread bytes (the rest of a body) would reset the connection and
    // could destroy the answer before the client read it: read until it closes.
    let _ = tokio::time::timeout(REFUSAL_STEP, async {
        let mut sink = [0u8; 4096];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Reads until the end of a request's head, EOF, or [`REFUSAL_HEAD_BYTES`].
async fn read_head(tcp: &mut TcpStream, head: &mut Vec<u8>) {
    let mut buf = [0u8; 2048];
    while head.len() < REFUSAL_HEAD_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            max_connections: 4,
            retry_after_s: 2,
        }
    }

    #[test]
    fn a_connection_expires_by_what_it_is_doing() {
        let l = limits();
        let t0 = Instant::now();
        let s = |f: &dyn Fn(&mut ConnState)| {
            let mut s = ConnState::new(t0);
            f(&mut s);
            s.deadline(&l)
        };
        let secs = |n| t0 + Duration::from_secs(n);
        assert_eq!(s(&|_| {}), Some((secs(60), Expired::Idle)), "a new connection, silent: the idle timeout");
        assert_eq!(
            s(&|c| c.head_since = Some(secs(3))),
            Some((secs(13), Expired::Header)),
            "the first request's header timer runs from its first byte"
        );
        let served = |c: &mut ConnState| {
            c.served = 1;
            c.idle_since = secs(5);
        };
        assert_eq!(s(&served), Some((secs(65), Expired::Idle)), "kept alive, silent: the idle timeout");
        assert_eq!(
            s(&|c| {
                served(c);
                c.head_since = Some(secs(20));
            }),
            Some((secs(30), Expired::Header)),
            "a next request begun: its headers within the header timeout"
        );
        assert_eq!(
            s(&|c| {
                served(c);
                c.in_flight = 1;
            }),
            None,
            "a request being handled is never cut"
        );
        assert_eq!(
            s(&|c| {
                c.in_flight = 1;
                c.write_stalled_since = Some(secs(7));
            }),
            Some((secs(67), Expired::Send)),
            "a client that stopped reading its response"
        );
        assert_eq!(
            s(&|c| {
                c.upgraded = true;
                c.write_stalled_since = Some(secs(7));
            }),
            None,
            "an upgraded connection is the WebSocket's"
        );
    }

    #[test]
    fn the_refusal_is_a_json_503_with_retry_after() {
        let r = Refusal::new(&limits());
        let text = String::from_utf8(r.busy).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("\r\nretry-after: 2\r\n") && head.contains("\r\nconnection: close\r\n"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_connections");
        assert!(v["error"].as_str().unwrap().contains("4 connections"), "{v}");
        assert!(String::from_utf8(r.alive).unwrap().ends_with("\r\n\r\nok\n"));
    }
}
