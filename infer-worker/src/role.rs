//! The infer-worker role: a feeder turns deliveries into batch items (parsing
//! tensors, or preprocessing frames inline), a batcher groups them, one task runs
//! the forward passes on a blocking thread, and a publisher sends the results and
//! settles the inputs. The stages are joined by small channels, so batch k+1 is
//! gathered while batch k runs and batch k−1's results are published.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use visionq_contract::config::InferInput;
use visionq_contract::message::{elapsed_ms, ImageSize};
use visionq_contract::topology::{META_HEADER, TRACEPARENT_HEADER};
use visionq_contract::{Config, Detection, FrameResult, Letterbox, Metrics, ModelInfo, ResultStatus, TensorMeta};
use visionq_preprocess::{expire_frame, fail_frame, frame_from_envelope, FrameError, Preprocessor};
use visionq_queue::{publish_when_room, Delivery, Envelope, Fate, QueueError, SharedBroker, WorkQueue};

use crate::decode::Candidate;
use crate::model::{InferError, Model};

struct Item {
    delivery: Delivery,
    meta: TensorMeta,
    tensor: Bytes,
    ready_at: Instant,
}

struct Batch {
    items: Vec<Item>,
    started_at: Instant,
}

impl Batch {
    /// The items' u8 tensors, in order.
    fn tensors(&self) -> Vec<&[u8]> {
        self.items.iter().map(|i| &i.tensor[..]).collect()
    }
}

struct Done {
    items: Vec<Item>,
    outcome: Result<Vec<Vec<Candidate>>, InferError>,
    inference_seconds: f64,
    batch_wait_seconds: Vec<f64>,
}

/// Boxes from model-input pixels to the original image (pixels and 0–1).
pub fn to_detections(
    candidates: &[Candidate],
    letterbox: &Letterbox,
    width: u32,
    height: u32,
    class_name: impl Fn(u32) -> String,
) -> Vec<Detection> {
    candidates
        .iter()
        .map(|c| {
            let px = letterbox.to_image(c.bbox, width, height);
            let (w, h) = (width.max(1) as f32, height.max(1) as f32);
            Detection {
                class_id: c.class_id,
                class_name: class_name(c.class_id),
                score: c.score,
                bbox: [px[0] / w, px[1] / h, px[2] / w, px[3] / h],
                box_px: px,
            }
        })
        .collect()
}

struct Shared {
    broker: SharedBroker,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    info: ModelInfo,
    tensor_len: usize,
    input_size: (u32, u32),
}

/// Why a tensor message cannot be used, if it cannot.
fn tensor_item(shared: &Shared, d: &Delivery) -> Result<TensorMeta, FrameError> {
    let raw = d.envelope.header(META_HEADER).ok_or_else(|| FrameError::Meta(format!("missing {META_HEADER}")))?;
    let meta: TensorMeta = serde_json::from_str(raw).map_err(|e| FrameError::Meta(e.to_string()))?;
    let lb = &meta.letterbox;
    if (lb.input_width, lb.input_height) != shared.input_size || d.envelope.body.len() != shared.tensor_len {
        return Err(FrameError::Meta(format!(
            "tensor is {}x{} ({} bytes) but the model takes {}x{}; set input_size to match the model",
            lb.input_width, lb.input_height, d.envelope.body.len(), shared.input_size.0, shared.input_size.1
        )));
    }
    Ok(meta)
}

/// Turns one delivery into a batch item, or settles it as failed.
async fn feed_one(shared: Arc<Shared>, d: Delivery, items: mpsc::Sender<Item>) {
    // A live frame already past its deadline is not run: it is reported expired.
    let frame = match shared.config.infer_input {
        InferInput::Tensors => serde_json::from_str::<TensorMeta>(d.envelope.header(META_HEADER).unwrap_or("")).ok().map(|m| m.frame),
        InferInput::Frames => frame_from_envelope(&d.envelope).ok(),
    };
    if let Some(late_ms) = frame.as_ref().and_then(|f| f.late_ms(Utc::now())) {
        let frame = frame.expect("checked above");
        let fate = expire_frame(&shared.broker, &shared.metrics, "infer", &d.envelope, &frame, late_ms).await;
        d.settle(fate).await;
        return;
    }
    let prepared = match shared.config.infer_input {
        InferInput::Tensors => tensor_item(&shared, &d).map(|m| (m, d.envelope.body.clone())).map_err(|e| {
            let frame = serde_json::from_str::<TensorMeta>(d.envelope.header(META_HEADER).unwrap_or("")).ok().map(|m| m.frame);
            (frame, e)
        }),
        InferInput::Frames => {
            let env = d.envelope.clone();
            let (w, h) = shared.input_size;
            let max_pixels = shared.config.max_pixels;
            let metrics = shared.metrics.clone();
            tokio::task::spawn_blocking(move || {
                let mut frame = frame_from_envelope(&env).map_err(|e| (None, e))?;
                metrics.observe_stage("queue_wait_frames", elapsed_ms(frame.published_at, Utc::now()) / 1e3);
                let p = INLINE.with(|cell| {
                    let mut slot = cell.borrow_mut();
                    let pre = slot.get_or_insert_with(|| Preprocessor::new(w, h, max_pixels));
                    pre.prepare(&env.body)
                });
                let p = p.map_err(|e| (Some(frame.clone()), FrameError::from(e)))?;
                metrics.observe_stage("decode", p.decode_seconds);
                metrics.observe_stage("resize", p.resize_seconds);
                frame.timings_ms.insert("decode".into(), p.decode_seconds * 1e3);
                frame.timings_ms.insert("resize".into(), p.resize_seconds * 1e3);
                let meta = TensorMeta { frame, letterbox: p.letterbox, preprocessed_at: Utc::now() };
                Ok((meta, Bytes::from(p.tensor)))
            })
            .await
            .expect("preprocess does not panic")
        }
    };
    match prepared {
        Ok((meta, tensor)) => {
            if shared.config.infer_input == InferInput::Tensors {
                let waited = elapsed_ms(meta.preprocessed_at, Utc::now()) / 1e3;
                shared.metrics.observe_stage("queue_wait_tensors", waited);
            }
            let item = Item { delivery: d, meta, tensor, ready_at: Instant::now() };
            // The batcher only goes away on shutdown; the delivery then returns to the queue.
            let _ = items.send(item).await;
        }
        Err((frame, err)) => {
            let source = match shared.config.infer_input {
                InferInput::Tensors => WorkQueue::Tensors,
                InferInput::Frames => WorkQueue::Frames,
            };
            let fate = fail_frame(&shared.broker, &shared.metrics, (source, &d.envelope), frame, &err).await;
            d.settle(fate).await;
        }
    }
}

thread_local! {
    static INLINE: std::cell::RefCell<Option<Preprocessor>> = const { std::cell::RefCell::new(None) };
}

/// Publishes one batch's results, then settles its inputs.
async fn publish(shared: Arc<Shared>, done: Done, names: Arc<Vec<String>>) {
    let n = done.items.len();
    let candidates = match done.outcome {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, batch = n, "forward pass failed; requeueing the batch");
            tokio::time::sleep(Duration::from_millis(500)).await;
            for item in done.items {
                item.delivery.settle(Fate::Requeue).await;
            }
            shared.metrics.in_flight.with_label_values(&["infer"]).sub(n as i64);
            return;
        }
    };
    let m = &shared.metrics;
    m.batch_size.observe(n as f64);
    m.observe_stage("inference", done.inference_seconds);
    let class_name = |id: u32| names.get(id as usize).cloned().unwrap_or_else(|| format!("class_{id}"));
    let mut pending = JoinSet::new();
    for ((item, found), waited) in done.items.into_iter().zip(candidates).zip(done.batch_wait_seconds) {
        let t0 = Instant::now();
        let frame = &item.meta.frame;
        let detections = to_detections(&found, &item.meta.letterbox, frame.width, frame.height, class_name);
        let mut timings = frame.timings_ms.clone();
        if shared.config.infer_input == InferInput::Tensors {
            timings.insert("queue_wait_tensors".into(), elapsed_ms(item.meta.preprocessed_at, Utc::now()));
        }
        timings.insert("queue_wait_frames".into(), elapsed_ms(frame.published_at, item.meta.preprocessed_at));
        timings.insert("batch_wait".into(), waited * 1e3);
        timings.insert("inference".into(), done.inference_seconds * 1e3);
        timings.insert("batch_size".into(), n as f64);
        for d in &detections {
            m.detections_total.with_label_values(&[&d.class_name]).inc();
            m.detection_score.with_label_values(&[&shared.info.name]).observe(d.score as f64);
        }
        let postprocess_s = t0.elapsed().as_secs_f64();
        m.observe_stage("postprocess", postprocess_s);
        timings.insert("postprocess".into(), postprocess_s * 1e3);
        let traceparent = item.delivery.envelope.header(TRACEPARENT_HEADER);
        tracing::debug!(
            frame_id = %frame.frame_id,
            station = frame.station,
            detections = detections.len(),
            trace_id = traceparent.and_then(visionq_contract::telemetry::trace_id),
            "frame inferred"
        );
        let result = FrameResult {
            frame_id: frame.frame_id,
            station: frame.station.clone(),
            status: ResultStatus::Ok,
            error: None,
            image: ImageSize { width: frame.width, height: frame.height },
            model: shared.info.clone(),
            detections,
            timings_ms: timings,
            captured_at: frame.captured_at,
            received_at: frame.received_at,
            completed_at: Utc::now(),
        };
        let body = serde_json::to_vec(&result).expect("result serialises");
        let mut out = Envelope::new(body);
        if let Some(tp) = traceparent {
            out.headers.insert(TRACEPARENT_HEADER.into(), tp.to_string());
        }
        let shared = shared.clone();
        pending.spawn(async move {
            let fate = match publish_when_room(&*shared.broker, WorkQueue::Results, out).await {
                Ok(()) => {
                    shared.metrics.stage_frames_total.with_label_values(&["infer", "ok"]).inc();
                    Fate::Ack
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish a result; requeueing its input");
                    Fate::Requeue
                }
            };
            item.delivery.settle(fate).await;
        });
    }
    while pending.join_next().await.is_some() {}
    shared.metrics.in_flight.with_label_values(&["infer"]).sub(n as i64);
}

/// Gathers items into batches: up to `max` or `wait` after the first, whichever first.
async fn batcher(mut items: mpsc::Receiver<Item>, batches: mpsc::Sender<Batch>, max: usize, wait: Duration) {
    while let Some(first) = items.recv().await {
        let deadline = tokio::time::Instant::now() + wait;
        let mut batch = vec![first];
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, items.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        if batches.send(Batch { items: batch, started_at: Instant::now() }).await.is_err() {
            return;
        }
    }
}

/// The inference thread: runs each batch's forward pass while, on a helper thread,
/// the previous batch's output is decoded and the next batch assembled into the other
/// buffer set — so the device waits on neither.
fn run_batches(
    mut model: Model,
    mut batches: mpsc::Receiver<Batch>,
    done: mpsc::Sender<Done>,
    m: Arc<Metrics>,
    rt: tokio::runtime::Handle,
) {
    let mut set = 0;
    // A batch already assembled into `set`: pass size, assembly seconds.
    let mut ready: Option<(Batch, usize, f64)> = None;
    // The batch whose pass ran last, in the other set, not decoded yet: pass size,
    // pass seconds, pass outcome. Decoded during the next pass.
    let mut pending: Option<(Batch, usize, f64, Result<(), InferError>)> = None;
    loop {
        let (batch, n, assemble_s) = match ready.take() {
            Some(r) => r,
            None => {
                let Some(batch) = batches.blocking_recv() else { break };
                let t0 = Instant::now();
                let views = batch.tensors();
                match model.assemble_in(set, &views) {
                    Ok(n) => (batch, n, t0.elapsed().as_secs_f64()),
                    Err(e) => {
                        if done.blocking_send(finished(batch, Err(e), 0.0, &m)).is_err() {
                            break;
                        }
                        continue;
                    }
                }
            }
        };
        m.observe_stage("assemble", assemble_s);
        let previous = pending.take();
        let (passed, pass_s, (decoded, next)) = model.run_overlapped(set, n, |assembler, pass_done| {
            // While the device runs: decode the previous pass, then take the next batch
            // if it comes before this pass ends.
            let decoded = previous.map(|(b, pn, ps, r)| {
                let out = r.and_then(|()| assembler.decode(pn, b.items.len()));
                (b, out, ps)
            });
            let next = rt.block_on(async {
                tokio::select! {
                    biased;
                    _ = pass_done.notified() => None,
                    b = batches.recv() => b,
                }
            });
            let next = next.map(|next| {
                let t0 = Instant::now();
                let views = next.tensors();
                let assembled = assembler.assemble(&views);
                (next, assembled, t0.elapsed().as_secs_f64())
            });
            (decoded, next)
        });
        tracing::info!(
            batch = batch.items.len(),
            pass_ms = (pass_s * 1e4).round() / 10.0,
            assemble_ms = (assemble_s * 1e4).round() / 10.0,
            "batch done"
        );
        if let Some((b, out, ps)) = decoded {
            if done.blocking_send(finished(b, out, ps, &m)).is_err() {
                break;
            }
        }
        match next {
            Some((next, Ok(next_n), secs)) => {
                // This pass is decoded during the next one.
                pending = Some((batch, n, pass_s, passed));
                set ^= 1;
                ready = Some((next, next_n, secs));
            }
            other => {
                // No next batch in the other set: decode this pass now.
                let outcome = passed.and_then(|()| model.decode_in(set, n, batch.items.len()));
                if done.blocking_send(finished(batch, outcome, pass_s, &m)).is_err() {
                    break;
                }
                // A batch came but had no buffer there yet: make one and use it.
                if let Some((next, Err(_), _)) = other {
                    let t0 = Instant::now();
                    let views = next.tensors();
                    match model.assemble_in(set ^ 1, &views) {
                        Ok(next_n) => {
                            set ^= 1;
                            ready = Some((next, next_n, t0.elapsed().as_secs_f64()));
                        }
                        Err(e) => {
                            if done.blocking_send(finished(next, Err(e), 0.0, &m)).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A batch whose pass is over (or never happened), for the publisher; counted in
/// flight until the publisher has settled it.
fn finished(batch: Batch, outcome: Result<Vec<Vec<Candidate>>, InferError>, secs: f64, m: &Metrics) -> Done {
    m.in_flight.with_label_values(&["infer"]).add(batch.items.len() as i64);
    let batch_wait_seconds = batch.items.iter().map(|i| (batch.started_at - i.ready_at).as_secs_f64()).collect();
    Done { items: batch.items, outcome, inference_seconds: secs, batch_wait_seconds }
}

/// Consumes until `shutdown`, then finishes the batches in flight.
pub async fn run(
    broker: SharedBroker,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    model: Model,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    let max_batch = model.max_batch(config.max_batch_size).min(config.max_batch_size.max(1));
    // A fixed-batch model takes its own batch size per pass (padded when short).
    let batch_limit = max_batch.max(1);
    let source = match config.infer_input {
        InferInput::Tensors => WorkQueue::Tensors,
        InferInput::Frames => WorkQueue::Frames,
    };
    metrics.model_info.with_label_values(&[&model.info.name, &model.info.version]).set(1.0);
    let shared = Arc::new(Shared {
        broker: broker.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        info: model.info.clone(),
        tensor_len: model.tensor_len(),
        input_size: (model.input_width, model.input_height),
    });
    let names = Arc::new(model.names.clone());
    // Enough prefetch to fill the batch being gathered, the one running and the one publishing.
    let prefetch = (batch_limit * 3 + config.preprocess_concurrency).min(u16::MAX as usize) as u16;
    let mut deliveries = broker.consume(source, prefetch).await?;
    tracing::info!(queue = source.label(), max_batch = batch_limit, wait_ms = config.max_batch_wait_ms, "infer-worker consuming");

    let (item_tx, item_rx) = mpsc::channel::<Item>(batch_limit * 2);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(1);
    let batcher = tokio::spawn(batcher(item_rx, batch_tx, batch_limit, Duration::from_millis(config.max_batch_wait_ms)));

    let m = metrics.clone();
    let runner = std::thread::Builder::new()
        .name("visionq-infer".into())
        .spawn({
            let rt = tokio::runtime::Handle::current();
            move || run_batches(model, batch_rx, done_tx, m, rt)
        })
        .expect("spawning the inference thread");
    let sh = shared.clone();
    let publisher = tokio::spawn(async move {
        while let Some(done) = done_rx.recv().await {
            publish(sh.clone(), done, names.clone()).await;
        }
    });

    let feed_slots = Arc::new(Semaphore::new(config.preprocess_concurrency.max(1)));
    let mut feeders = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = feed_slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let d = tokio::select! {
            _ = &mut shutdown => break,
            d = deliveries.next() => match d { Some(d) => d, None => break },
        };
        while feeders.try_join_next().is_some() {}
        let (sh, tx) = (shared.clone(), item_tx.clone());
        feeders.spawn(async move {
            feed_one(sh, d, tx).await;
            drop(permit);
        });
    }
    // Shutdown: no new deliveries; finish what was taken, batch by batch.
    let deadline = Duration::from_millis(config.shutdown_timeout_ms);
    let drain = async {
        while feeders.join_next().await.is_some() {}
        drop(item_tx);
        let _ = batcher.await;
        let _ = tokio::task::spawn_blocking(move || runner.join()).await;
        let _ = publisher.await;
    };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        tracing::warn!("infer-worker shutdown deadline passed; unsettled inputs will be redelivered");
    }
    drop(deliveries);
    Ok(())
}
