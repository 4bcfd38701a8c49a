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
use tracing::{Instrument, Span};
use visionq_contract::config::InferInput;
use visionq_contract::instrument::{Emit, FrameDone, Stage, frame_span, record_frame};
use visionq_contract::message::elapsed_ms;
use visionq_contract::topology::TRACEPARENT_HEADER;
use visionq_contract::{Config, Detection, FrameMeta, FrameResult, Letterbox, Metrics};
use visionq_preprocess::{PreprocessPool, Preprocessor, prepare_frame};
use visionq_queue::{Delivery, Fate, QueueError, SharedBroker, WorkQueue};
use visionq_stage::{BadMessage, Failure, FrameMessage, TensorMessage, expire, fail, publish_result};

use crate::batcher::batcher;
use crate::decode::Candidate;
use crate::model::Model;
use crate::runner::{Batch, Done, Item, run_batches, run_stream};
use crate::swap::Switch;

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
                track_id: None,
                classification: None,
                text: None,
            }
        })
        .collect()
}

struct Shared {
    broker: SharedBroker,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    tensor_len: usize,
    input_size: (u32, u32),
    /// Inline preprocessing's threads (frames input only).
    pool: Option<Arc<PreprocessPool>>,
    /// `evidence_forward_min_score`: a frame's original image goes on with its
    /// result when a detection scores at least this.
    forward_min_score: Option<f32>,
    /// Model chains (`[[chain]]`): a second model on chosen detections' crops.
    chains: Option<Arc<crate::chained::Chained>>,
}

/// The original image a result carries on for the evidence store: only where a
/// detection scores at or above `min_score`, the lowest score at which the results
/// role's rules could keep the frame (a frame with nothing that high is never in a
/// review band nor decided `needs_review`).
pub fn original_to_forward<'a>(original: Option<&'a Bytes>, detections: &[Detection], min_score: Option<f32>) -> Option<&'a Bytes> {
    let min = min_score?;
    original.filter(|_| detections.iter().any(|d| d.score >= min))
}

/// A tensor message whose size the model cannot take.
fn check_tensor(shared: &Shared, t: &TensorMessage) -> Result<(), BadMessage> {
    let lb = &t.meta.letterbox;
    if (lb.input_width, lb.input_height) != shared.input_size || t.tensor.len() != shared.tensor_len {
        return Err(BadMessage(format!(
            "tensor is {}x{} ({} bytes) but the model takes {}x{}; set input_size to match the model",
            lb.input_width,
            lb.input_height,
            t.tensor.len(),
            shared.input_size.0,
            shared.input_size.1
        )));
    }
    Ok(())
}

/// What a delivery became on its way to a batch: a tensor ready to run, or the
/// failure that ends it (with the frame, when its metadata could be read).
type Fed = Result<TensorMessage, (Option<FrameMeta>, Failure)>;

/// Turns one delivery into a batch item, or settles it as failed or expired.
async fn feed_one(shared: Arc<Shared>, d: Delivery, items: mpsc::Sender<Item>) {
    feed_in_span(shared, d, items).instrument(frame_span(Stage::Infer)).await
}

/// [`feed_one`] inside the delivery's [`frame_span`].
#[allow(clippy::result_large_err)] // prepare_frame's error, moved once per failed frame
async fn feed_in_span(shared: Arc<Shared>, d: Delivery, items: mpsc::Sender<Item>) {
    // The metadata is read once, here; a live frame already past its deadline is
    // not run: it is reported expired.
    let (source, parsed) = match shared.config.batching.infer_input {
        InferInput::Tensors => (WorkQueue::Tensors, TensorMessage::from_envelope(&d.envelope).map(Ok)),
        InferInput::Frames => (WorkQueue::Frames, FrameMessage::from_envelope(&d.envelope).map(Err)),
    };
    let frame = match &parsed {
        Ok(Ok(t)) => Some(&t.meta.frame),
        Ok(Err(f)) => Some(&f.meta),
        Err(_) => None,
    };
    if let Some(frame) = frame {
        record_frame(&Span::current(), frame, d.envelope.header(TRACEPARENT_HEADER));
    }
    if let Some(frame) = frame
        && let Some(late_ms) = frame.late_ms(Utc::now())
    {
        let fate = expire(&shared.broker, &shared.metrics, Stage::Infer, &d.envelope, frame, late_ms).await;
        d.settle(fate).await;
        return;
    }
    let fed: Fed = match parsed {
        Err(bad) => Err((None, bad.failure())),
        Ok(Ok(tensor)) => match check_tensor(&shared, &tensor) {
            Ok(()) => Ok(tensor),
            Err(bad) => Err((Some(tensor.meta.frame), bad.failure())),
        },
        Ok(Err(frame)) => {
            let metrics = shared.metrics.clone();
            let pool = shared.pool.clone().expect("inline preprocessing has its pool");
            let keep_original = shared.forward_min_score.is_some() || shared.chains.is_some();
            pool.run(move |pre| prepare_frame(pre, frame, &metrics, keep_original)).await.map_err(|(f, e)| (Some(f), e.failure()))
        }
    };
    match fed {
        Ok(TensorMessage { mut meta, tensor, original }) => {
            if shared.config.batching.infer_input == InferInput::Tensors {
                // From the tensor's publish to its arrival here (the batch wait is
                // its own stage).
                let waited_ms = elapsed_ms(meta.preprocessed_at, Utc::now());
                shared.metrics.observe_stage(Stage::QueueWaitTensors, waited_ms / 1e3);
                meta.frame.timings_ms.insert("queue_wait_tensors".into(), waited_ms);
            }
            let item = Item { delivery: d, meta, tensor, original, ready_at: Instant::now() };
            // The batcher only goes away on shutdown; the delivery then returns to the queue.
            let _ = items.send(item).await;
        }
        Err((frame, failure)) => {
            // A frame that cannot be preprocessed counts as the preprocessing's
            // failure, wherever it ran.
            let fate = fail(&shared.broker, &shared.metrics, Stage::Preprocess, (source, &d.envelope), frame.as_ref(), failure).await;
            d.settle(fate).await;
        }
    }
}

/// Publishes one batch's results, labelled with the model that ran the batch, then
/// settles its inputs.
async fn publish(shared: Arc<Shared>, done: Done) {
    let n = done.items.len();
    let candidates = match done.outcome {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, batch = n, "forward pass failed; requeueing the batch");
            tokio::time::sleep(Duration::from_millis(500)).await;
            for item in done.items {
                item.delivery.settle(Fate::Requeue).await;
            }
            drop(done.held);
            return;
        }
    };
    let m = &shared.metrics;
    m.batch_size.observe(n as f64);
    m.observe_stage(Stage::Inference, done.inference_seconds);
    let served = done.served.clone();
    let class_name = |id: u32| served.class_name(id);
    let mut pending = JoinSet::new();
    for ((item, found), waited) in done.items.into_iter().zip(candidates).zip(done.batch_wait_seconds) {
        let t0 = Instant::now();
        let frame = &item.meta.frame;
        let mut detections = to_detections(&found, &item.meta.letterbox, frame.width, frame.height, class_name);
        // Each stage is timed where it happens, so the stages do not overlap and
        // add up to the frame's time in the pipeline.
        let mut timings = frame.timings_ms.clone();
        timings.insert("batch_wait".into(), waited * 1e3);
        timings.insert("inference".into(), done.inference_seconds * 1e3);
        for d in &detections {
            m.detections_total.with_label_values(&[&d.class_name]).inc();
            m.detection_score.with_label_values(&[&served.info.name]).observe(d.score as f64);
        }
        let postprocess_s = t0.elapsed().as_secs_f64();
        m.observe_stage(Stage::Postprocess, postprocess_s);
        timings.insert("postprocess".into(), postprocess_s * 1e3);
        let span = frame_span(Stage::Infer);
        record_frame(&span, frame, item.delivery.envelope.header(TRACEPARENT_HEADER));
        let found = detections.len();
        let original = original_to_forward(item.original.as_ref(), &detections, shared.forward_min_score).cloned();
        let (info, shared) = (served.info.clone(), shared.clone());
        let publish = async move {
            // The second stage (model chains), if any: the result waits for all its crops.
            let frame = &item.meta.frame;
            let chained =
                crate::chained::complete(shared.chains.as_deref(), frame, item.original.as_ref(), &mut detections, &mut timings);
            if let Err(failure) = chained.await {
                let source = (crate::chained::input_queue(&shared.config), &item.delivery.envelope);
                let fate = fail(&shared.broker, &shared.metrics, Stage::Infer, source, Some(frame), failure).await;
                item.delivery.settle(fate).await;
                return;
            }
            let result = FrameResult::detected(frame, info, detections, timings, n as u32);
            let fate = match publish_result(&shared.broker, &result, &item.delivery.envelope, original.as_ref()).await {
                Ok(()) => {
                    FrameDone { stage: Stage::Infer, detections: Some(found) }.emit(&shared.metrics);
                    Fate::Ack
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish a result; requeueing its input");
                    Fate::Requeue
                }
            };
            item.delivery.settle(fate).await;
        };
        pending.spawn(publish.instrument(span));
    }
    while pending.join_next().await.is_some() {}
    // Out of flight once every result of the batch is published and its input settled.
    drop(done.held);
}

/// Consumes until `shutdown`, then finishes the batches in flight.
pub async fn run(
    broker: SharedBroker,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    model: Model,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    run_switchable(broker, metrics, config, model, Arc::new(Switch::default()), shutdown).await
}

/// [`run`], switching to the models handed over on `switch` between two batches
/// (see [`crate::ModelControl`]).
pub async fn run_switchable(
    broker: SharedBroker,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    model: Model,
    switch: Arc<Switch>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    let max_batch = model.max_batch(config.batching.max_batch_size).min(config.batching.max_batch_size.max(1));
    // A fixed-batch model takes its own batch size per pass (padded when short).
    let batch_limit = max_batch.max(1);
    let source = match config.batching.infer_input {
        InferInput::Tensors => WorkQueue::Tensors,
        InferInput::Frames => WorkQueue::Frames,
    };
    metrics.model_info.with_label_values(&[&model.info.name, &model.info.version]).set(1.0);
    let _gpu = (config.runtime.execution_provider == visionq_contract::config::ExecutionProvider::Cuda)
        .then(|| crate::gpu::export(metrics.clone(), config.runtime.cuda_device_id.max(0) as u32, Duration::from_secs(1)))
        .flatten();
    let shared = Arc::new(Shared {
        broker: broker.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        tensor_len: model.tensor_len(),
        input_size: (model.input_width, model.input_height),
        pool: match config.batching.infer_input {
            InferInput::Tensors => None,
            InferInput::Frames => {
                let (w, h) = (model.input_width, model.input_height);
                let options = visionq_preprocess::PreprocessOptions::from_config(&config);
                let pool =
                    PreprocessPool::new(config.preprocess.preprocess_concurrency, move || Preprocessor::with_options(w, h, options));
                Some(Arc::new(pool.expect("spawning the preprocessing threads")))
            }
        },
        forward_min_score: config.evidence.evidence_forward_min_score,
        chains: crate::chained::start(&config, &metrics).await,
    });
    // Enough prefetch to fill the batch being gathered, the one running and the one publishing.
    let prefetch = (batch_limit * 3 + config.preprocess.preprocess_concurrency).min(u16::MAX as usize) as u16;
    let mut deliveries = broker.consume(source, prefetch).await?;
    tracing::info!(
        queue = source.label(),
        max_batch = batch_limit,
        wait_ms = config.batching.max_batch_wait_ms,
        "infer-worker consuming"
    );

    // More streams: more sessions of the same model, each on its own thread.
    let streams = config.runtime.infer_streams.max(1);
    let spec = model.spec.clone();
    let mut models = vec![model];
    for _ in 1..streams {
        let (c, spec) = (config.clone(), spec.clone());
        let extra =
            tokio::task::spawn_blocking(move || Model::load_warmed_spec(&c, &spec)).await.expect("model loading does not panic");
        match extra {
            Ok(m) => models.push(m),
            Err(e) => {
                tracing::error!(error = %e, "cannot load another inference stream; running with fewer");
                break;
            }
        }
    }
    let streams = models.len();
    let mut lanes = switch.open(streams);

    let (item_tx, item_rx) = mpsc::channel::<Item>(batch_limit * 2);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(streams);
    let (running_tx, running_rx) = tokio::sync::watch::channel(0usize);
    let wait = Duration::from_millis(config.batching.max_batch_wait_ms);
    let batcher = tokio::spawn(batcher(item_rx, batch_tx, batch_limit, wait, streams, running_rx));

    let rt = tokio::runtime::Handle::current();
    let mut runners = Vec::new();
    if streams == 1 {
        let (m, rt, model, lane) = (metrics.clone(), rt.clone(), models.pop().expect("one model"), lanes.remove(0));
        let spawn = std::thread::Builder::new().name("visionq-infer".into());
        runners.push(
            spawn
                .spawn(move || run_batches(model, batch_rx, done_tx, m, rt, running_tx, lane))
                .expect("spawning the inference thread"),
        );
    } else {
        let shared_batches = Arc::new(tokio::sync::Mutex::new(batch_rx));
        for (i, (model, lane)) in models.into_iter().zip(lanes).enumerate() {
            let (m, rt, b, d, r) = (metrics.clone(), rt.clone(), shared_batches.clone(), done_tx.clone(), running_tx.clone());
            let spawn = std::thread::Builder::new().name(format!("visionq-infer-{i}"));
            runners.push(spawn.spawn(move || run_stream(model, b, d, m, rt, r, lane)).expect("spawning an inference thread"));
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
            publishing.spawn(publish(sh.clone(), done));
        }
        while publishing.join_next().await.is_some() {}
    });

    // Tensors need no work to become batch items; frames are preprocessed here, at
    // most `preprocess_concurrency` at a time.
    let feed_limit = match config.batching.infer_input {
        InferInput::Tensors => prefetch as usize,
        InferInput::Frames => config.preprocess.preprocess_concurrency,
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
