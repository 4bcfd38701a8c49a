//! `GET /v1/stations/{station}/ws`: a station's frames over one WebSocket, their
//! answers back on it as each completes (docs/STREAMING.md). Another front door to
//! the same ingest: the station and its token are checked before the upgrade, and
//! every frame goes through the frames route's checks ([`crate::admit`]) and its
//! publish ([`publish_frame`]). Flow control is the socket's window
//! ([`window::Window`]); the session never holds more than the window's frames
//! in flight, one frame waiting for a slot (`mode=newest`), and a bounded outbox.

mod messages;
mod window;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use futures_util::stream::{FuturesUnordered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;
use visionq_contract::FrameMeta;
use visionq_contract::instrument::{InFlight, Stage};
use visionq_contract::params::Params;
use visionq_contract::refusal::ErrorBody;

use self::messages::{ClientId, FrameInfo, Mode, Reply};
use self::window::{Offer, Window};
use crate::admit::{Arrival, Door, check_rate, check_station, count_accepted, count_refused, frame_meta};
use crate::body::{check_size, transport_limit};
use crate::pipeline::publish_frame;
use crate::refusal::{Refusal, token};
use crate::state::IngestState;
use crate::waiters::Waiting;

/// The protocol version the hello announces.
const PROTOCOL: u32 = 1;
/// Replies queued for a client at most; beyond it the session stops reading the
/// client's messages until the client reads its answers.
const OUTBOX: usize = 64;

/// What a socket was opened with.
struct Grant {
    window: usize,
    mode: Mode,
}

/// `?window=`, `?mode=` and `?token=` (for browsers, which cannot set a header on
/// a WebSocket); anything else is refused. The token is read apart, so that the
/// caller is checked before its parameters are.
fn read_query(state: &IngestState, query: Option<&str>) -> (Option<String>, Result<Grant, Refusal>) {
    let mut p = Params::parse(query);
    let token = p.get::<String>("token");
    let mut grant = || -> Result<Grant, Refusal> {
        let window = p.get_in::<usize>("window", 1, state.config.ingest.stream_window)?.unwrap_or(state.config.ingest.stream_window);
        let mode = match p.get::<String>("mode")? {
            None => Mode::Queue,
            Some(m) => Mode::parse(&m).ok_or_else(|| {
                Refusal::new(StatusCode::BAD_REQUEST, "bad_parameter", format!("`mode={m}` is not `queue` or `newest`")).param("mode")
            })?,
        };
        Ok(Grant { window, mode })
    };
    let grant = grant().and_then(|g| p.finish().map(|()| g).map_err(Refusal::from));
    match token {
        Ok(token) => (token, grant),
        Err(e) => (None, Err(e.into())),
    }
}

/// Opens a station's frame stream.
#[utoipa::path(
    get,
    path = "/v1/stations/{station}/ws",
    tag = "ingest",
    params(
        ("station" = String, Path, description = "Station id: 1-64 of A-Z a-z 0-9 . _ -"),
        ("window" = Option<usize>, Query, description = "Frames in flight at once, at most `stream_window` (the default)"),
        ("mode" = Option<String>, Query, description = "`queue` (default): a frame beyond the window is refused; `newest`: it waits for the next slot, replacing (and skipping) an older one waiting"),
        ("token" = Option<String>, Query, description = "The station's token, for clients that cannot send `Authorization`"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol of docs/STREAMING.md"),
        (status = 400, description = "Bad parameter or station id, or not a WebSocket upgrade", body = ErrorBody),
        visionq_http::doc::TokenRefusals,
        (status = 403, description = "Another station's token", body = ErrorBody),
        (status = 404, description = "Station not in the allow-list", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn station_stream(
    State(state): State<Arc<IngestState>>,
    Path(station): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (query_token, grant) = read_query(&state, query.as_deref());
    let presented = token(&headers).map(str::to_string).or(query_token);
    let opened = check_station(&state, &station, presented.as_deref()).and(grant).and_then(|grant| {
        upgrade.map(|u| (u, grant)).map_err(|e| {
            let message = format!("this route is a WebSocket (docs/STREAMING.md): {}", e.body_text());
            Refusal::new(e.status(), "not_a_websocket", message)
        })
    });
    let (upgrade, grant) = match opened {
        Ok(o) => o,
        Err(refusal) => {
            count_refused(&state, &refusal);
            return refusal.into_response();
        }
    };
    // Room for a frame over the limit to be refused (`too_large`) with the stream
    // going on; a message beyond even this closes the socket (1009).
    let limit = transport_limit(state.config.ingest.max_body_bytes);
    upgrade.max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| Session::new(state, station, grant).run(socket))
}

/// A frame checked and ready to publish, with the station's name for it.
struct Ready {
    id: ClientId,
    meta: FrameMeta,
    image: Bytes,
}

/// The answer a frame in flight is waiting for.
type Outcome = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// The client is gone: its socket closed or stopped reading.
struct Gone;

struct Session {
    state: Arc<IngestState>,
    station: String,
    window: Window<Ready>,
    /// The details the next frame carries (a text message before it).
    next_info: Option<FrameInfo>,
    /// Binary messages so far: a frame's default id.
    seq: u64,
    outbox: Option<mpsc::Sender<Message>>,
    in_flight: FuturesUnordered<Outcome>,
}

impl Session {
    fn new(state: Arc<IngestState>, station: String, grant: Grant) -> Session {
        Session {
            state,
            station,
            window: Window::new(grant.window, grant.mode),
            next_info: None,
            seq: 0,
            outbox: None,
            in_flight: FuturesUnordered::new(),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let state = self.state.clone();
        let _open = state.streams.enter();
        let (sink, mut incoming) = socket.split();
        let idle = Duration::from_millis(self.state.config.http.http_idle_timeout_ms);
        let (tx, rx) = mpsc::channel(OUTBOX);
        let writer = tokio::spawn(write(sink, rx, idle));
        self.outbox = Some(tx);
        tracing::info!(station = self.station, window = self.window.size(), "station stream opened");
        let hello = Reply::Hello {
            protocol: PROTOCOL,
            station: self.station.clone(),
            window: self.window.size(),
            mode: self.window.mode(),
            max_frame_bytes: self.state.config.ingest.max_body_bytes,
            max_wait_ms: self.state.config.ingest.max_wait_ms,
        };
        let mut stopping = self.state.stopping.clone();
        let ended = match self.reply(hello).await {
            Err(Gone) => "client gone",
            Ok(()) => loop {
                tokio::select! {
                    true = async { stopping.wait_for(|s| *s).await.is_ok() } => {
                        self.close(close_code::AWAY, "the server is stopping; accepted frames complete (GET /v1/frames/{frame_id})").await;
                        break "server stopping";
                    }
                    Some(answer) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                        if self.answered(answer).await.is_err() {
                            break "client gone";
                        }
                    }
                    message = tokio::time::timeout(idle, incoming.next()) => match message {
                        Err(_) => {
                            self.close(close_code::POLICY, "no message (not even a pong) within the idle timeout").await;
                            break "idle";
                        }
                        Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break "closed by the client",
                        Ok(Some(Err(e))) => {
                            tracing::debug!(station = self.station, error = %e, "station stream broken");
                            self.close(close_code::SIZE, "message too large or malformed").await;
                            break "broken";
                        }
                        Ok(Some(Ok(m))) => if self.on_message(m).await.is_err() {
                            break "client gone";
                        },
                    },
                }
            },
        };
        // A frame still waiting for a slot never entered the pipeline: it is counted,
        // though no one is left to tell. Frames accepted complete without the socket.
        if let Some(held) = self.window.take_held() {
            self.state.metrics.ingest_rejected_total.with_label_values(&["stream_closed"]).inc();
            tracing::debug!(station = self.station, id = %held.id, "held frame dropped with its socket");
        }
        tracing::info!(station = self.station, ended, unanswered = self.window.in_flight(), "station stream closed");
        self.in_flight.clear();
        self.outbox = None;
        let _ = writer.await;
    }

    async fn reply(&mut self, reply: Reply) -> Result<(), Gone> {
        self.send(Message::Text(reply.to_text().into())).await
    }

    async fn send(&mut self, message: Message) -> Result<(), Gone> {
        let outbox = self.outbox.as_ref().ok_or(Gone)?;
        outbox.send(message).await.map_err(|_| Gone)
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Gone> {
        match message {
            Message::Text(text) => {
                if let Some(unsent) = self.next_info.take() {
                    let message = "these details were followed by another text message, not by their frame: they were dropped";
                    let r = Refusal::new(StatusCode::BAD_REQUEST, "no_frame", message);
                    count_refused(&self.state, &r);
                    self.reply(Reply::refused(unsent.id, r)).await?;
                }
                match FrameInfo::parse(&text) {
                    Ok(info) => self.next_info = Some(info),
                    Err(refused) => {
                        let (id, r) = *refused;
                        count_refused(&self.state, &r);
                        self.reply(Reply::refused(id, r)).await?;
                    }
                }
                Ok(())
            }
            Message::Binary(image) => self.on_frame(image).await,
            // Pings are answered by the socket itself; a pong only shows the client is there.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(()),
        }
    }

    /// A binary message: the frame's checks, then the window.
    async fn on_frame(&mut self, image: Bytes) -> Result<(), Gone> {
        let received_at = Utc::now();
        self.seq += 1;
        let info = self.next_info.take().unwrap_or_default();
        let id = info.id.unwrap_or(ClientId::Number(self.seq));
        let newest = id.clone();
        let checked = check_rate(&self.state, &self.station)
            .and_then(|()| check_size(&image, self.state.config.ingest.max_body_bytes))
            .and_then(|()| {
                let arrival = Arrival {
                    station: &self.station,
                    image: &image,
                    received_at,
                    captured_at: info.captured_at,
                    deadline_ms: info.deadline_ms,
                    key: info.key.as_deref(),
                };
                frame_meta(&self.state.config, arrival)
            });
        let meta = match checked {
            Ok(meta) => meta,
            Err(r) => return self.refuse(id, r).await,
        };
        match self.window.offer(Ready { id, meta, image }) {
            Offer::Send(frame) => self.publish(frame).await,
            Offer::Full(frame) => {
                let message = format!(
                    "{} frames are in flight, the socket's window: wait for an answer before sending more (the frame was not taken)",
                    self.window.size()
                );
                self.refuse(frame.id, Refusal::new(StatusCode::TOO_MANY_REQUESTS, "window_full", message)).await
            }
            Offer::Held { skipped: None } => Ok(()),
            Offer::Held { skipped: Some(old) } => {
                self.state.metrics.ingest_rejected_total.with_label_values(&["superseded"]).inc();
                let by = newest;
                let error = format!("frame {by} replaced it while it waited for a slot (mode=newest); it never entered the pipeline");
                self.reply(Reply::Skipped { id: old.id, code: "superseded", by, error }).await
            }
        }
    }

    async fn refuse(&mut self, id: ClientId, refusal: Refusal) -> Result<(), Gone> {
        count_refused(&self.state, &refusal);
        self.reply(Reply::refused(Some(id), refusal)).await
    }

    /// Publishes a frame that holds a slot; when the pipeline refuses it, the slot
    /// goes to the frame waiting, if any.
    async fn publish(&mut self, frame: Ready) -> Result<(), Gone> {
        let mut next = Some(frame);
        while let Some(Ready { id, mut meta, image }) = next.take() {
            // A frame that waited for its slot enters the pipeline now.
            meta.published_at = Utc::now();
            let frame_id = meta.frame_id;
            // Listen before publishing, so a fast result cannot slip past.
            let waiting = self.state.waiters.wait_for(frame_id);
            match publish_frame(&self.state, &meta, image, None).await {
                Ok(()) => {
                    count_accepted(&self.state, Door::Stream, &self.station);
                    // Counted in flight until answered, also when the answer is dropped
                    // with its stream.
                    let counted = InFlight::new(&self.state.metrics, Stage::IngestStream, 1);
                    self.in_flight.push(Box::pin(outcome(self.state.clone(), id.clone(), frame_id, waiting, counted)));
                    self.reply(Reply::Accepted { id, frame_id }).await?;
                }
                Err(r) => {
                    next = self.window.done();
                    self.refuse(id, r).await?;
                }
            }
        }
        Ok(())
    }

    /// A frame in flight was answered: tell the client, and give its slot on.
    async fn answered(&mut self, answer: Reply) -> Result<(), Gone> {
        self.reply(answer).await?;
        match self.window.done() {
            Some(next) => self.publish(next).await,
            None => Ok(()),
        }
    }
}

/// Waits for a frame's result, up to `max_wait_ms`.
async fn outcome(state: Arc<IngestState>, id: ClientId, frame_id: Uuid, mut waiting: Waiting, _counted: InFlight) -> Reply {
    let wait = Duration::from_millis(state.config.ingest.max_wait_ms);
    match tokio::time::timeout(wait, &mut waiting.rx).await {
        Ok(Ok(result)) => Reply::Result { id, result: Box::new(result) },
        _ => {
            let error = format!("no result within {} ms; the frame still completes: GET /v1/frames/{frame_id}", wait.as_millis());
            Reply::Timeout { id, frame_id, error }
        }
    }
}

/// Writes the session's replies to the socket, and a ping every third of the idle
/// timeout (the client's pong shows it is there); gives up on a client that does
/// not take a message within the idle timeout, and ends after a close.
async fn write(mut sink: SplitSink<WebSocket, Message>, mut outbox: mpsc::Receiver<Message>, idle: Duration) {
    let mut ping = tokio::time::interval(idle / 3);
    ping.tick().await;
    loop {
        let message = tokio::select! {
            m = outbox.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = ping.tick() => Message::Ping(Bytes::new()),
        };
        let closing = matches!(message, Message::Close(_));
        match tokio::time::timeout(idle, sink.send(message)).await {
            Ok(Ok(())) if !closing => {}
            _ => return,
        }
    }
    let _ = tokio::time::timeout(idle, sink.close()).await;
}
