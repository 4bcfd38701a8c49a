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
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use visionq_contract::config::InferInput;
use visionq_contract::message::{ImageSize, elapsed_ms};
use visionq_contract::topology::{META_HEADER, TRACEPARENT_HEADER};
use visionq_contract::{Config, Detection, FrameResult, Letterbox, Metrics, ModelInfo, ResultStatus, TensorMeta};
use visionq_preprocess::{FrameError, PreprocessPool, Preprocessor, expire_frame, fail_frame, frame_from_envelope};
use visionq_queue::{Delivery, Envelope, Fate, QueueError, SharedBroker, WorkQueue, publish_when_room};

use crate::batcher::batcher;
use crate::decode::Candidate;
use crate::model::Model;
use crate::runner::{Batch, Done, Item, run_batches, run_stream};

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
    /// Inline preprocessing's threads (frames input only).
    pool: Option<Arc<PreprocessPool>>,
}

/// Why a tensor message cannot be used, if it cannot.
fn tensor_item(shared: &Shared, d: &Delivery) -> Result<TensorMeta, FrameError> {
    let raw = d.envelope.header(META_HEADER).ok_or_else(|| FrameError::Meta(format!("missing {META_HEADER}")))?;
    let meta: TensorMeta = serde_json::from_str(raw).map_err(|e| FrameError::Meta(e.to_string()))?;
    let lb = &meta.letterbox;
    if (lb.input_width, lb.input_height) != shared.input_size || d.envelope.body.len() != shared.tensor_len {
        return Err(FrameError::Meta(format!(
            "tensor is {}x{} ({} bytes) but the model takes {}x{}; set input_size to match the model",
            lb.input_width,
            lb.input_height,
            d.envelope.body.len(),
            shared.input_size.0,
            shared.input_size.1
        )));
    }
    Ok(meta)
}

/// Turns one delivery into a batch item, or settles it as failed.
// The inline path's error carries the frame's metadata to its error result; it is
// made once per failed frame, so its size does not matter.
#[allow(clippy::result_large_err)]
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
            let metrics = shared.metrics.clone();
            let pool = shared.pool.clone().expect("inline preprocessing has its pool");
            pool.run(move |pre| {
                let mut frame = frame_from_envelope(&env).map_err(|e| (None, e))?;
                let waited_ms = elapsed_ms(frame.published_at, Utc::now());
                metrics.observe_stage("queue_wait_frames", waited_ms / 1e3);
                frame.timings_ms.insert("queue_wait_frames".into(), waited_ms);
                let p = pre.prepare_oriented(&env.body, frame.orientation).map_err(|e| (Some(frame.clone()), FrameError::from(e)))?;
                metrics.observe_stage("decode", p.decode_seconds);
                metrics.observe_stage("resize", p.resize_seconds);
                frame.timings_ms.insert("decode".into(), p.decode_seconds * 1e3);
                frame.timings_ms.insert("resize".into(), p.resize_seconds * 1e3);
                let meta = TensorMeta { frame, letterbox: p.letterbox, preprocessed_at: Utc::now() };
                Ok((meta, Bytes::from(p.tensor)))
            })
            .await
        }
    };
    match prepared {
        Ok((mut meta, tensor)) => {
            if shared.config.infer_input == InferInput::Tensors {
                // From the tensor's publish to its arrival here (the batch wait is
                // its own stage).
                let waited_ms = elapsed_ms(meta.preprocessed_at, Utc::now());
                shared.metrics.observe_stage("queue_wait_tensors", waited_ms / 1e3);
                meta.frame.timings_ms.insert("queue_wait_tensors".into(), waited_ms);
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
        // Each stage is timed where it happens, so the stages do not overlap and
        // add up to the frame's time in the pipeline.
        let mut timings = frame.timings_ms.clone();
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
            decision: None,
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
    let _gpu = (config.execution_provider == "cuda")
        .then(|| crate::gpu::export(metrics.clone(), config.cuda_device_id.max(0) as u32, Duration::from_secs(1)))
        .flatten();
    let shared = Arc::new(Shared {
        broker: broker.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        info: model.info.clone(),
        tensor_len: model.tensor_len(),
        input_size: (model.input_width, model.input_height),
        pool: match config.infer_input {
            InferInput::Tensors => None,
            InferInput::Frames => {
                let (w, h) = (model.input_width, model.input_height);
                let options = visionq_preprocess::PreprocessOptions::from_config(&config);
                let pool = PreprocessPool::new(config.preprocess_concurrency, move || Preprocessor::with_options(w, h, options));
                Some(Arc::new(pool.expect("spawning the preprocessing threads")))
            }
        },
    });
    let names = Arc::new(model.names.clone());
    // Enough prefetch to fill the batch being gathered, the one running and the one publishing.
    let prefetch = (batch_limit * 3 + config.preprocess_concurrency).min(u16::MAX as usize) as u16;
    let mut deliveries = broker.consume(source, prefetch).await?;
    tracing::info!(queue = source.label(), max_batch = batch_limit, wait_ms = config.max_batch_wait_ms, "infer-worker consuming");

    // More streams: more sessions of the same model, each on its own thread.
    let streams = config.infer_streams.max(1);
    let mut models = vec![model];
    for _ in 1..streams {
        let c = config.clone();
        let extra = tokio::task::spawn_blocking(move || Model::load_warmed(&c)).await.expect("model loading does not panic");
        match extra {
            Ok(m) => models.push(m),
            Err(e) => {
                tracing::error!(error = %e, "cannot load another inference stream; running with fewer");
                break;
            }
        }
    }
    let streams = models.len();

    let (item_tx, item_rx) = mpsc::channel::<Item>(batch_limit * 2);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(streams);
    let (running_tx, running_rx) = tokio::sync::watch::channel(0usize);
    let wait = Duration::from_millis(config.max_batch_wait_ms);
    let batcher = tokio::spawn(batcher(item_rx, batch_tx, batch_limit, wait, streams, running_rx));

    let rt = tokio::runtime::Handle::current();
    let mut runners = Vec::new();
    if streams == 1 {
        let (m, rt, model) = (metrics.clone(), rt.clone(), models.pop().expect("one model"));
        let spawn = std::thread::Builder::new().name("visionq-infer".into());
        runners.push(
            spawn.spawn(move || run_batches(model, batch_rx, done_tx, m, rt, running_tx)).expect("spawning the inference thread"),
        );
    } else {
        let shared_batches = Arc::new(tokio::sync::Mutex::new(batch_rx));
        for (i, model) in models.into_iter().enumerate() {
            let (m, rt, b, d, r) = (metrics.clone(), rt.clone(), shared_batches.clone(), done_tx.clone(), running_tx.clone());
            let spawn = std::thread::Builder::new().name(format!("visionq-infer-{i}"));
            runners.push(spawn.spawn(move || run_stream(model, b, d, m, rt, r)).expect("spawning an inference thread"));
        }
        drop(done_tx);
    }
    // Batches are published concurrently (a few at a time), so a slow publish never
    // holds the device back.
    let sh = shared.clone();
    let publisher = tokio::spawn(async move {
        let mut publishing = JoinSet::new();
        while let Some(done) = done_rx.recv().await {
            while publishing.len() >= 4 {
                publishing.join_next().await;
            }
            publishing.spawn(publish(sh.clone(), done, names.clone()));
        }
        while publishing.join_next().await.is_some() {}
    });

    // Tensors need no work to become batch items; frames are preprocessed here, at
    // most `preprocess_concurrency` at a time.
    let feed_limit = match config.infer_input {
        InferInput::Tensors => prefetch as usize,
        InferInput::Frames => config.preprocess_concurrency,
    };
    let feed_slots = Arc::new(Semaphore::new(feed_limit.max(1)));
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
        let _ = tokio::task::spawn_blocking(move || runners.into_iter().for_each(|r| drop(r.join()))).await;
        let _ = publisher.await;
    };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        tracing::warn!("infer-worker shutdown deadline passed; unsettled inputs will be redelivered");
    }
    drop(deliveries);
    Ok(())
}
