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
use crate::model::Model;
use crate::runner::{Batch, Done, Out, run_batches, run_stream};
use crate::serving::{Candidate, EngineIn, Item, PassStats, Plan, Routed, Routes, Side, Slot, Starter, Tag};
use crate::swap::Lane;

/// Boxes from model-input pixels to the original image (pixels and 0–1).
pub fn to_detections(
    candidates: &[crate::decode::Candidate],
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
    /// Which model name (slot) serves which station, and which engine runs a frame.
    routes: Routes,
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

/// A tensor message whose size the model it is routed to cannot take.
fn check_tensor(engine: &EngineIn, t: &TensorMessage) -> Result<(), BadMessage> {
    let lb = &t.meta.letterbox;
    if (lb.input_width, lb.input_height) != engine.input || t.tensor.len() != engine.tensor_len() {
        return Err(BadMessage(format!(
            "tensor is {}x{} ({} bytes) but the model takes {}x{}; set input_size to match the model",
            lb.input_width,
            lb.input_height,
            t.tensor.len(),
            engine.input.0,
            engine.input.1
        )));
    }
    Ok(())
}

/// What a delivery became on its way to a batch: a tensor ready to run, or the
/// failure that ends it (with the frame, when its metadata could be read).
type Fed = Result<TensorMessage, (Option<FrameMeta>, Failure)>;

/// Turns one delivery into a batch item, or settles it as failed or expired.
async fn feed_one(shared: Arc<Shared>, d: Delivery) {
    feed_in_span(shared, d).instrument(frame_span(Stage::Infer)).await
}

/// [`feed_one`] inside the delivery's [`frame_span`].
#[allow(clippy::result_large_err)] // prepare_frame's error, moved once per failed frame
async fn feed_in_span(shared: Arc<Shared>, d: Delivery) {
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
    // The station's model, and whether a candidate version takes the frame.
    let routed = match frame {
        None => None,
        Some(f) => match shared.routes.route(&f.station, f.frame_id.as_bytes()) {
            Some(r) => Some(r),
            // Shutting down: the frame goes back to its queue.
            None => return d.settle(Fate::Requeue).await,
        },
    };
    let fed: Fed = match (parsed, &routed) {
        (Err(bad), _) => Err((None, bad.failure())),
        (Ok(Ok(tensor)), Some(r)) => match check_tensor(&r.engine, &tensor) {
            Ok(()) => Ok(tensor),
            Err(bad) => Err((Some(tensor.meta.frame), bad.failure())),
        },
        (Ok(Err(frame)), Some(r)) => {
            let metrics = shared.metrics.clone();
            let pool = shared.pool.clone().expect("inline preprocessing has its pool");
            let keep_original = shared.forward_min_score.is_some() || shared.chains.is_some();
            let input = r.engine.input;
            pool.run(move |pre| prepare_frame(pre, frame, &metrics, keep_original, input))
                .await
                .map_err(|(f, e)| (Some(f), e.failure()))
        }
        (Ok(_), None) => unreachable!("a frame whose metadata was read is routed"),
    };
    match (fed, routed) {
        (Ok(TensorMessage { mut meta, tensor, original }), Some(Routed { slot, engine, tag })) => {
            if shared.config.batching.infer_input == InferInput::Tensors {
                // From the tensor's publish to its arrival here (the batch wait is
                // its own stage).
                let waited_ms = elapsed_ms(meta.preprocessed_at, Utc::now());
                shared.metrics.observe_stage(Stage::QueueWaitTensors, waited_ms / 1e3);
                meta.frame.timings_ms.insert("queue_wait_tensors".into(), waited_ms);
            }
            let tag = match tag {
                // A shadow copy never holds the frame back: when the candidate's queue
                // is full, this frame is not shadowed.
                Tag::Paired(c) => {
                    let copy = Item {
                        delivery: None,
                        slot: slot.clone(),
                        tag: Tag::Shadow(c.clone()),
                        meta: meta.clone(),
                        tensor: tensor.clone(),
                        original: None,
                        ready_at: Instant::now(),
                    };
                    match c.engine.tx.try_send(copy) {
                        Ok(()) => Tag::Paired(c),
                        Err(_) => {
                            c.skipped();
                            Tag::Active
                        }
                    }
                }
                t => t,
            };
            let item = Item { delivery: Some(d), slot, tag, meta, tensor, original, ready_at: Instant::now() };
            // The batcher only goes away on shutdown; the delivery then returns to the queue.
            let _ = engine.tx.send(item).await;
        }
        (Err((frame, failure)), _) => {
            // A frame that cannot be preprocessed counts as the preprocessing's
            // failure, wherever it ran.
            let fate = fail(&shared.broker, &shared.metrics, Stage::Preprocess, (source, &d.envelope), frame.as_ref(), failure).await;
            d.settle(fate).await;
        }
        (Ok(_), None) => unreachable!("a frame whose metadata was read is routed"),
    }
}

/// The candidate a batch ran on (all of a batch's items share their engine).
fn batch_candidate(items: &[Item]) -> Option<(Arc<Slot>, Arc<Candidate>)> {
    let first = items.first()?;
    match &first.tag {
        Tag::Canary(c) | Tag::Shadow(c) => Some((first.slot.clone(), c.clone())),
        Tag::Active | Tag::Paired(_) => None,
    }
}

/// Publishes one batch's results, labelled with the model that ran the batch, then
/// settles its inputs. A shadow batch's results are only compared with the active
/// version's, never published.
async fn publish(shared: Arc<Shared>, done: Done) {
    let n = done.items.len();
    let candidate = batch_candidate(&done.items);
    let candidates = match done.outcome {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, batch = n, model = %done.served.info.name, version = %done.served.info.version, "forward pass failed; requeueing the batch");
            if let Some((slot, c)) = &candidate {
                slot.judge(c, &shared.config, &shared.metrics);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            for item in done.items {
                if let Some(d) = item.delivery {
                    d.settle(Fate::Requeue).await;
                }
            }
            drop(done.held);
            return;
        }
    };
    let m = &shared.metrics;
    let shadow = matches!(candidate.as_ref().map(|(_, c)| &c.plan), Some(Plan::Shadow { .. }));
    if !shadow {
        m.batch_size.observe(n as f64);
        m.observe_stage(Stage::Inference, done.inference_seconds);
    }
    let served = done.served.clone();
    let class_name = |id: u32| served.class_name(id);
    let mut pending = JoinSet::new();
    for ((item, found), waited) in done.items.into_iter().zip(candidates).zip(done.batch_wait_seconds) {
        let t0 = Instant::now();
        let frame = &item.meta.frame;
        let mut detections = to_detections(&found, &item.meta.letterbox, frame.width, frame.height, class_name);
        let (name, version) = (&served.info.name, &served.info.version);
        m.model_frames_total.with_label_values(&[name, version, item.tag.route()]).inc();
        match &item.tag {
            Tag::Shadow(c) => {
                c.pair(frame.frame_id.as_bytes(), Side::Candidate, detections, m);
                continue;
            }
            Tag::Paired(c) => c.pair(frame.frame_id.as_bytes(), Side::Active, detections.clone(), m),
            Tag::Active | Tag::Canary(_) => {}
        }
        let Some(delivery) = item.delivery else { continue };
        // Each stage is timed where it happens, so the stages do not overlap and
        // add up to the frame's time in the pipeline.
        let mut timings = frame.timings_ms.clone();
        timings.insert("batch_wait".into(), waited * 1e3);
        timings.insert("inference".into(), done.inference_seconds * 1e3);
        for d in &detections {
            m.detections_total.with_label_values(&[&d.class_name]).inc();
            m.detection_score.with_label_values(&[name]).observe(d.score as f64);
        }
        let postprocess_s = t0.elapsed().as_secs_f64();
        m.observe_stage(Stage::Postprocess, postprocess_s);
        timings.insert("postprocess".into(), postprocess_s * 1e3);
        let span = frame_span(Stage::Infer);
        record_frame(&span, frame, delivery.envelope.header(TRACEPARENT_HEADER));
        let found = detections.len();
        let original = original_to_forward(item.original.as_ref(), &detections, shared.forward_min_score).cloned();
        let (info, shared) = (served.info.clone(), shared.clone());
        let latency = m.model_latency_seconds.with_label_values(&[name, version]);
        let received_at = frame.received_at;
        let (meta, kept) = (item.meta, item.original);
        let publish = async move {
            // The second stage (model chains), if any: the result waits for all its crops.
            let frame = &meta.frame;
            let chained = crate::chained::complete(shared.chains.as_deref(), frame, kept.as_ref(), &mut detections, &mut timings);
            if let Err(failure) = chained.await {
                let source = (input_queue(&shared.config), &delivery.envelope);
                let fate = fail(&shared.broker, &shared.metrics, Stage::Infer, source, Some(frame), failure).await;
                delivery.settle(fate).await;
                return;
            }
            let result = FrameResult::detected(frame, info, detections, timings, n as u32);
            let fate = match publish_result(&shared.broker, &result, &delivery.envelope, original.as_ref()).await {
                Ok(()) => {
                    FrameDone { stage: Stage::Infer, detections: Some(found) }.emit(&shared.metrics);
                    latency.observe(elapsed_ms(received_at, Utc::now()) / 1e3);
                    Fate::Ack
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish a result; requeueing its input");
                    Fate::Requeue
                }
            };
            delivery.settle(fate).await;
        };
        pending.spawn(publish.instrument(span));
    }
    while pending.join_next().await.is_some() {}
    if let Some((slot, c)) = &candidate {
        slot.judge(c, &shared.config, &shared.metrics);
    }
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
    let slot = Slot::new(model.info.name.clone());
    run_models(broker, metrics, config, vec![(model, slot)], shutdown).await
}

/// An engine of the worker: a batcher and its inference thread(s) for one model.
struct Engine {
    input: Arc<EngineIn>,
    batcher: tokio::task::JoinHandle<()>,
    runners: Vec<std::thread::JoinHandle<()>>,
}

/// The queue the worker consumes (a failed frame is dead-lettered from it).
fn input_queue(config: &Config) -> WorkQueue {
    match config.batching.infer_input {
        InferInput::Tensors => WorkQueue::Tensors,
        InferInput::Frames => WorkQueue::Frames,
    }
}

/// The largest batch the worker gathers for `model` under `config` (what a new
/// version of it must take too).
pub(crate) fn batch_limit(model: &Model, config: &Config) -> usize {
    model.max_batch(config.batching.max_batch_size).min(config.batching.max_batch_size.max(1)).max(1)
}

/// Starts a batcher and one inference thread per model (each its own stream) on `lanes`.
fn start_engine(
    models: Vec<Model>,
    lanes: Vec<Arc<Lane>>,
    config: &Config,
    metrics: &Arc<Metrics>,
    done_tx: mpsc::Sender<Done>,
) -> Engine {
    let first = &models[0];
    let limit = batch_limit(first, config);
    let input = (first.input_width, first.input_height);
    let label = format!("{}:{}", first.info.name, first.info.version);
    let streams = models.len();
    let stats = Arc::new(PassStats::default());
    let (item_tx, item_rx) = mpsc::channel::<Item>(limit * 2);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
    let (running_tx, running_rx) = tokio::sync::watch::channel(0usize);
    let wait = Duration::from_millis(config.batching.max_batch_wait_ms);
    let batcher = tokio::spawn(batcher(item_rx, batch_tx, limit, wait, streams, running_rx));
    let rt = tokio::runtime::Handle::current();
    let out = Out { done: done_tx, metrics: metrics.clone(), running: running_tx, stats: stats.clone() };
    let mut runners = Vec::new();
    if streams == 1 {
        let (model, lane) = (models.into_iter().next().expect("one model"), lanes[0].clone());
        let spawn = std::thread::Builder::new().name("visionq-infer".into());
        runners.push(spawn.spawn(move || run_batches(model, batch_rx, out, rt, lane)).expect("spawning the inference thread"));
    } else {
        let shared_batches = Arc::new(tokio::sync::Mutex::new(batch_rx));
        for (i, (model, lane)) in models.into_iter().zip(lanes).enumerate() {
            let (rt, b, out) = (rt.clone(), shared_batches.clone(), out.clone());
            let spawn = std::thread::Builder::new().name(format!("visionq-infer-{i}"));
            runners.push(spawn.spawn(move || run_stream(model, b, out, rt, lane)).expect("spawning an inference thread"));
        }
    }
    tracing::info!(model = label, max_batch = limit, streams, wait_ms = config.batching.max_batch_wait_ms, "engine started");
    Engine { input: Arc::new(EngineIn { tx: item_tx, input, stats }), batcher, runners }
}

/// [`run`] for several models, each under its [`Slot`] (the first serves every
/// station that names no model), each batched on its own engine. A slot's models
/// are switched between two batches (see [`crate::ModelControl`]), and a candidate
/// version runs beside the active one on an engine of its own.
pub async fn run_models(
    broker: SharedBroker,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    served: Vec<(Model, Arc<Slot>)>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    assert!(!served.is_empty(), "an infer-worker serves at least one model");
    let source = input_queue(&config);
    let _gpu = (config.runtime.execution_provider == visionq_contract::config::ExecutionProvider::Cuda)
        .then(|| crate::gpu::export(metrics.clone(), config.runtime.cuda_device_id.max(0) as u32, Duration::from_secs(1)))
        .flatten();
    let pool = match config.batching.infer_input {
        InferInput::Tensors => None,
        InferInput::Frames => {
            // Each frame is letterboxed at its model's input (see `prepare_frame`).
            let (w, h) = (served[0].0.input_width, served[0].0.input_height);
            let options = visionq_preprocess::PreprocessOptions::from_config(&config);
            let pool =
                PreprocessPool::new(config.preprocess.preprocess_concurrency, move || Preprocessor::with_options(w, h, options));
            Some(Arc::new(pool.expect("spawning the preprocessing threads")))
        }
    };
    // Enough prefetch to fill, for each model, the batch being gathered, the one
    // running and the one publishing.
    let limits: usize = served.iter().map(|(m, _)| batch_limit(m, &config)).sum();
    let prefetch = (limits * 3 + config.preprocess.preprocess_concurrency).min(u16::MAX as usize) as u16;
    let mut deliveries = broker.consume(source, prefetch).await?;
    tracing::info!(
        queue = source.label(),
        models = served.len(),
        wait_ms = config.batching.max_batch_wait_ms,
        "infer-worker consuming"
    );

    let (done_tx, mut done_rx) = mpsc::channel::<Done>(4);
    let mut engines = Vec::new();
    let mut slots = Vec::new();
    for (model, slot) in served {
        metrics.model_info.with_label_values(&[&model.info.name, &model.info.version]).set(1.0);
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
        let lanes = slot.switch.open(models.len());
        let engine = start_engine(models, lanes, &config, &metrics, done_tx.clone());
        // A candidate version gets an engine of its own, with one stream.
        let (c, m, d) = (config.clone(), metrics.clone(), done_tx.clone());
        let starter: Starter = Arc::new(move |model: Model| {
            let lane = Arc::new(Lane::default());
            let engine = start_engine(vec![model], vec![lane], &c, &m, d.clone());
            // It stops once the candidate ends and its last frames are done.
            drop(engine.runners);
            engine.input
        });
        slot.open(engine.input.clone(), starter);
        engines.push(engine);
        slots.push(slot);
    }
    drop(done_tx);
    let shared = Arc::new(Shared {
        broker: broker.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        routes: Routes::new(&slots, &config),
        pool,
        forward_min_score: config.evidence.evidence_forward_min_score,
        chains: crate::chained::start(&config, &metrics).await,
    });

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
        let sh = shared.clone();
        feeders.spawn(async move {
            feed_one(sh, d).await;
            drop(permit);
        });
    }
    // Shutdown: no new deliveries; finish what was taken, batch by batch.
    let deadline = Duration::from_millis(config.shutdown_timeout_ms);
    let drain = async {
        while feeders.join_next().await.is_some() {}
        // The slots let go of their engines (a candidate's too): each batcher ends
        // with its last batch, each inference thread after it.
        for slot in &slots {
            slot.close();
        }
        drop(shared);
        for engine in engines {
            drop(engine.input);
            let _ = engine.batcher.await;
            let runners = engine.runners;
            let _ = tokio::task::spawn_blocking(move || runners.into_iter().for_each(|r| drop(r.join()))).await;
        }
        let _ = publisher.await;
    };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        tracing::warn!("infer-worker shutdown deadline passed; unsettled inputs will be redelivered");
    }
    drop(deliveries);
    Ok(())
}
