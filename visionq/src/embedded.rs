//! The in-process broker of the embedded mode and its frames journal: where the
//! journal lives, how a frame's id is found in a frame and in a result, and what a
//! restart found there.

use std::sync::Arc;

use anyhow::Context;
use visionq_contract::Config;
use visionq_contract::config::Durability;
use visionq_contract::topology::META_HEADER;
use visionq_queue::journal::{Journal, Sync};
use visionq_queue::memory::{Durable, MemoryBroker};
use visionq_queue::{Envelope, SharedBroker, WorkQueue};

/// The journal's file in the data dir.
pub const JOURNAL_FILE: &str = "frames-journal.db";

#[derive(serde::Deserialize)]
struct FrameId {
    frame_id: String,
}

/// The frame id in a frame (its metadata header).
fn frame_key(e: &Envelope) -> Option<String> {
    serde_json::from_str::<FrameId>(e.header(META_HEADER)?).ok().map(|m| m.frame_id)
}

/// The frame id a result completes (its JSON body).
fn result_key(e: &Envelope) -> Option<String> {
    serde_json::from_slice::<FrameId>(&e.body).ok().map(|r| r.frame_id)
}

/// The in-process broker; with `durability` other than `memory`, frames are
/// journaled and what the last run left is queued again.
pub async fn broker(config: &Config) -> anyhow::Result<SharedBroker> {
    let c = config.clone();
    let limits = move |q: WorkQueue| match q {
        WorkQueue::Frames => c.broker.frames_max_length as usize,
        WorkQueue::Tensors => c.broker.tensors_max_length as usize,
        WorkQueue::Results => c.broker.results_max_length as usize,
    };
    let sync = match config.broker.durability {
        Durability::Memory => {
            tracing::info!("durability = memory: accepted frames are lost if the process dies");
            return Ok(Arc::new(MemoryBroker::new(limits, config.broker.max_deliveries)));
        }
        Durability::Durable => Sync::Full,
        Durability::Process => Sync::Normal,
    };
    let path = config.data_dir.join(JOURNAL_FILE);
    let (p, replays) = (path.clone(), config.broker.max_deliveries);
    let (journal, recovered) = tokio::task::spawn_blocking(move || Journal::open(&p, sync, replays))
        .await?
        .with_context(|| "opening the frames journal (set durability = \"memory\" to run without one)")?;
    let (again, given_up) = (recovered.frames.len(), recovered.given_up);
    if again > 0 || given_up > 0 {
        tracing::warn!(
            journal = %path.display(),
            queued_again = again,
            given_up,
            "frames accepted by the last run and not completed are queued again"
        );
    }
    tracing::info!(journal = %path.display(), durability = ?config.broker.durability, "frames journal open");
    let durable = Durable { journal, frame_key: Arc::new(frame_key), result_key: Arc::new(result_key) };
    Ok(Arc::new(MemoryBroker::durable(limits, config.broker.max_deliveries, durable, recovered)))
}
