//! The gRPC front door (`visionq.v1.Detector`, `proto/visionq/v1/detector.proto`):
//! `Detect` for one frame and `DetectStream` for a station's frames on one call,
//! beside the standard `grpc.health.v1` service. Another door to the same ingest as
//! the frames route and the station WebSocket: every frame goes through
//! [`crate::admit`]'s checks and [`publish_frame`], so a frame refused here is
//! refused there with the same code. The routes are served by the ingest router on
//! the ingest port (HTTP/2, cleartext or TLS).

mod convert;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;
use visionq_contract::FrameMeta;
use visionq_contract::instrument::{InFlight, Stage};

use self::convert::{deadline_exceeded, refused_reply, status_of};
use crate::admit::{Arrival, Door, check_rate, check_station, count_accepted, count_refused, frame_meta, valid_frame_key};
use crate::body::{check_size, transport_limit};
use crate::pipeline::{Waited, publish_frame, wait_result};
use crate::refusal::{Refusal, token};
use crate::state::IngestState;
use crate::waiters::Waiting;

/// The code generated from the `.proto` (tonic and prost).
pub mod pb {
    tonic::include_proto!("visionq.v1");
}

use pb::detector_server::{Detector, DetectorServer};
use pb::{DetectRequest, DetectResult, StreamReply, stream_reply};

/// Replies queued for a stream's client at most; beyond it no more frames are read
/// until the client reads its answers.
const OUTBOX: usize = 64;
/// The metadata key a stream may name its station with before its first frame.
const STATION_METADATA: &str = "visionq-station";

/// The gRPC services as routes of the ingest router: `visionq.v1.Detector` and
/// `grpc.health.v1.Health` (serving until the process stops taking frames).
pub fn routes(state: Arc<IngestState>) -> axum::Router {
    let limit = transport_limit(state.config.ingest.max_body_bytes);
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut stopping = state.stopping.clone();
    tokio::spawn(async move {
        reporter.set_serving::<DetectorServer<Grpc>>().await;
        if stopping.wait_for(|s| *s).await.is_ok() {
            reporter.set_not_serving::<DetectorServer<Grpc>>().await;
            reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        }
    });
    let detector = DetectorServer::new(Grpc { state }).max_decoding_message_size(limit).max_encoding_message_size(usize::MAX);
    // Routes by service name, as gRPC paths are (`/<package.Service>/<Method>`).
    axum::Router::new()
        .route_service(&format!("/{}/{{*method}}", <DetectorServer<Grpc> as tonic::server::NamedService>::NAME), detector)
        .route_service("/grpc.health.v1.Health/{*method}", health)
}

/// The `visionq.v1.Detector` service over ingest's state.
pub struct Grpc {
    state: Arc<IngestState>,
}

/// The call's deadline (`grpc-timeout`: an integer and a unit, H M S m u n).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A frame's optional fields as the frames route reads them.
fn frame_details(req: &DetectRequest) -> Result<(Option<DateTime<Utc>>, Option<&str>), Refusal> {
    let captured_at = match req.captured_at.as_str() {
        "" => None,
        s => Some(DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| {
            Refusal::new(axum::http::StatusCode::BAD_REQUEST, "bad_parameter", format!("captured_at `{s}` is not RFC 3339: {e}"))
                .param("captured_at")
        })?),
    };
    let key = match req.key.as_str() {
        "" => None,
        k if valid_frame_key(k) => Some(k),
        _ => {
            let message = "key must be 1-128 printable ASCII characters";
            return Err(Refusal::new(axum::http::StatusCode::BAD_REQUEST, "bad_idempotency_key", message).param("key"));
        }
    };
    Ok((captured_at, key))
}

/// A frame's checks after its station's: rate, size, details, header and limits.
fn check_frame(state: &IngestState, station: &str, req: &DetectRequest, received_at: DateTime<Utc>) -> Result<FrameMeta, Refusal> {
    check_rate(state, station)?;
    check_size(&req.image, state.config.ingest.max_body_bytes)?;
    let (captured_at, key) = frame_details(req)?;
    let arrival = Arrival {
        station,
        image: &req.image,
        received_at,
        captured_at,
        deadline_ms: (req.deadline_ms > 0).then_some(req.deadline_ms),
        key,
    };
    frame_meta(&state.config, arrival)
}

#[tonic::async_trait]
impl Detector for Grpc {
    async fn detect(&self, request: Request<DetectRequest>) -> Result<Response<DetectResult>, Status> {
        let received_at = Utc::now();
        let state = &self.state;
        let headers = request.metadata().clone().into_headers();
        let req = request.into_inner();
        let accepted = async {
            check_station(state, &req.station, token(&headers))?;
            let meta = check_frame(state, &req.station, &req, received_at)?;
            let waiting = state.waiters.wait_for(meta.frame_id);
            publish_frame(state, &meta, req.image.clone(), None).await?;
            count_accepted(state, Door::Grpc, &req.station);
            Ok::<_, Refusal>((meta.frame_id, waiting))
        };
        let (frame_id, mut waiting) = accepted.await.map_err(|r| {
            count_refused(state, &r);
            status_of(&r)
        })?;
        let max_wait = Duration::from_millis(state.config.ingest.max_wait_ms);
        // The answer must reach the client before its deadline does: a margin of 5 %
        // (20 ms at least) for the way back.
        let before_deadline = |t: Duration| t.saturating_sub((t / 20).max(Duration::from_millis(20)));
        let wait = grpc_timeout(&headers).map_or(max_wait, |t| before_deadline(t).min(max_wait));
        match wait_result(state, wait, &mut waiting.rx).await {
            Waited::Result(result) => Ok(Response::new(convert::result(&result))),
            Waited::TimedOut => Err(deadline_exceeded(frame_id, wait)),
            Waited::Stopping => {
                let message = format!("the server is stopping; the frame was accepted and completes: GET /v1/frames/{frame_id}");
                Err(convert::with_frame_id(Status::unavailable(message), frame_id))
            }
        }
    }

    type DetectStreamStream = Pin<Box<dyn Stream<Item = Result<StreamReply, Status>> + Send>>;

    async fn detect_stream(&self, request: Request<Streaming<DetectRequest>>) -> Result<Response<Self::DetectStreamStream>, Status> {
        let headers = request.metadata().clone().into_headers();
        let named = headers.get(STATION_METADATA).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut inbound = request.into_inner();
        let state = self.state.clone();
        // The call's station: named in its metadata, or its first frame's. Who may
        // post for it is the call's question, answered before any frame is taken.
        let first = match named {
            Some(_) => None,
            None => match inbound.message().await? {
                Some(first) => Some(first),
                None => return Ok(Response::new(Box::pin(futures_util::stream::empty()))),
            },
        };
        let station = named.unwrap_or_else(|| first.as_ref().map(|f| f.station.clone()).unwrap_or_default());
        if let Err(r) = check_station(&state, &station, token(&headers)) {
            count_refused(&state, &r);
            return Err(status_of(&r));
        }
        let (tx, rx) = mpsc::channel(OUTBOX);
        tokio::spawn(StreamSession::new(state, station, tx).run(first, inbound));
        let replies = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// The answer a frame in flight on a stream is waiting for.
type Outcome = Pin<Box<dyn Future<Output = StreamReply> + Send>>;

/// The client is gone: the call was cancelled or its replies are no longer read.
struct Gone;

/// One `DetectStream` call: frames read while fewer than the window are in flight,
/// each answered `accepted` then `result` (or `timeout`), or `refused`.
struct StreamSession {
    state: Arc<IngestState>,
    station: String,
    window: usize,
    /// Frames read so far: a frame's default client id.
    seq: u64,
    tx: mpsc::Sender<Result<StreamReply, Status>>,
    in_flight: FuturesUnordered<Outcome>,
}

impl StreamSession {
    fn new(state: Arc<IngestState>, station: String, tx: mpsc::Sender<Result<StreamReply, Status>>) -> StreamSession {
        let window = state.config.ingest.stream_window.max(1);
        StreamSession { state, station, window, seq: 0, tx, in_flight: FuturesUnordered::new() }
    }

    async fn run(mut self, first: Option<DetectRequest>, mut inbound: Streaming<DetectRequest>) {
        let state = self.state.clone();
        let _open = state.streams.enter();
        tracing::info!(station = self.station, window = self.window, "gRPC station stream opened");
        let mut stopping = state.stopping.clone();
        let mut reading = true;
        let ended = 'session: {
            if let Some(first) = first
                && self.on_frame(first).await.is_err()
            {
                break 'session "client gone";
            }
            loop {
                if !reading && self.in_flight.is_empty() {
                    break 'session "closed by the client";
                }
                tokio::select! {
                    true = async { stopping.wait_for(|s| *s).await.is_ok() } => {
                        let message = "the server is stopping; accepted frames complete (GET /v1/frames/{frame_id})";
                        let _ = self.tx.send(Err(Status::unavailable(message))).await;
                        break 'session "server stopping";
                    }
                    Some(answer) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                        if self.send(answer).await.is_err() {
                            break 'session "client gone";
                        }
                    }
                    message = inbound.message(), if reading && self.in_flight.len() < self.window => match message {
                        Ok(Some(req)) => if self.on_frame(req).await.is_err() {
                            break 'session "client gone";
                        },
                        // Half-closed: the frames in flight are still answered.
                        Ok(None) => reading = false,
                        Err(status) => {
                            tracing::debug!(station = self.station, error = %status, "gRPC station stream broken");
                            let _ = self.tx.send(Err(status)).await;
                            break 'session "broken";
                        }
                    },
                }
            }
        };
        tracing::info!(station = self.station, ended, unanswered = self.in_flight.len(), "gRPC station stream closed");
    }

    async fn send(&mut self, reply: StreamReply) -> Result<(), Gone> {
        self.tx.send(Ok(reply)).await.map_err(|_| Gone)
    }

    /// A frame read from the stream: its checks, its publish, then its answer in flight.
    async fn on_frame(&mut self, req: DetectRequest) -> Result<(), Gone> {
        let received_at = Utc::now();
        self.seq += 1;
        let client_id = if req.client_id.is_empty() { self.seq.to_string() } else { req.client_id.clone() };
        let published = async {
            if !req.station.is_empty() && req.station != self.station {
                let message = format!("this stream is station `{}`'s; a frame for `{}` needs its own call", self.station, req.station);
                return Err(Refusal::new(axum::http::StatusCode::BAD_REQUEST, "station_mismatch", message).param("station"));
            }
            let meta = check_frame(&self.state, &self.station, &req, received_at)?;
            let waiting = self.state.waiters.wait_for(meta.frame_id);
            publish_frame(&self.state, &meta, req.image.clone(), None).await?;
            count_accepted(&self.state, Door::Grpc, &self.station);
            Ok((meta.frame_id, waiting))
        };
        match published.await {
            Ok((frame_id, waiting)) => {
                let counted = InFlight::new(&self.state.metrics, Stage::IngestGrpc, 1);
                self.in_flight.push(Box::pin(outcome(self.state.clone(), client_id.clone(), frame_id, waiting, counted)));
                self.send(StreamReply { client_id, reply: Some(stream_reply::Reply::Accepted(frame_id.to_string())) }).await
            }
            Err(r) => {
                count_refused(&self.state, &r);
                self.send(refused_reply(client_id, &r)).await
            }
        }
    }
}

/// Waits for a stream frame's result, up to `max_wait_ms`.
async fn outcome(state: Arc<IngestState>, client_id: String, frame_id: Uuid, mut waiting: Waiting, _counted: InFlight) -> StreamReply {
    let wait = Duration::from_millis(state.config.ingest.max_wait_ms);
    let reply = match tokio::time::timeout(wait, &mut waiting.rx).await {
        Ok(Ok(result)) => stream_reply::Reply::Result(convert::result(&result)),
        _ => stream_reply::Reply::Timeout(frame_id.to_string()),
    };
    StreamReply { client_id, reply: Some(reply) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut h = HeaderMap::new();
        for (v, d) in [("5S", Duration::from_secs(5)), ("250m", Duration::from_millis(250)), ("2M", Duration::from_secs(120))] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["", "S", "5", "5x", "-1S"] {
            h.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&h), None, "{bad:?}");
        }
    }
}
