//! Names of the broker topology. `rabbitmq/definitions.json` declares the same
//! objects for operators; every role also declares them idempotently at start.

/// Names of the broker objects, all under one prefix (`visionq` by default; tests
/// use a unique prefix each so they never share a queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub prefix: String,
}

impl Default for Topology {
    fn default() -> Self {
        Topology { prefix: "visionq".into() }
    }
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology { prefix: prefix.into() }
    }

    /// The direct exchange the work queues are bound to (routing key = queue name).
    pub fn work_exchange(&self) -> String {
        self.prefix.clone()
    }

    /// A work queue's name on the broker, also its routing key on [`Self::work_exchange`].
    pub fn queue(&self, q: WorkQueue) -> String {
        format!("{}.{}", self.prefix, q.label())
    }

    /// Fanout exchange for messages that can never succeed, and the queue that keeps them.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Topic exchange for completed results (routing key `result.<station>`): ingest
    /// listens for the frames it holds a request for, results for its WebSocket clients.
    /// It also carries sampled frame previews for the dashboard (`preview.<station>`,
    /// marked by [`EVENT_KIND_HEADER`]).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
}

/// Header carrying the JSON metadata of a frame or tensor message.
pub const META_HEADER: &str = "x-visionq-meta";
/// Header a dead-lettered message carries: why it can never succeed.
pub const ERROR_HEADER: &str = "x-visionq-error";
/// W3C trace context carried across stages.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Header naming what an event on the events exchange is; absent on results (the
/// original kind), [`PREVIEW_EVENT`] on a frame preview.
pub const EVENT_KIND_HEADER: &str = "x-visionq-event";
/// A frame preview for the dashboard: JPEG body, [`META_HEADER`] with its `FrameMeta`.
pub const PREVIEW_EVENT: &str = "preview";

/// The work queues between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkQueue {
    /// Raw JPEG frames from ingest.
    Frames,
    /// Model-ready u8 tensors from preprocess.
    Tensors,
    /// Finished results (detections or an error) to persist.
    Results,
}

impl WorkQueue {
    pub const ALL: [WorkQueue; 3] = [WorkQueue::Frames, WorkQueue::Tensors, WorkQueue::Results];

    /// Short name, for metrics and the in-process queue.
    pub fn label(self) -> &'static str {
        match self {
            WorkQueue::Frames => "frames",
            WorkQueue::Tensors => "tensors",
            WorkQueue::Results => "results",
        }
    }
}

/// Routing key of a completed result on [`Topology::events_exchange`].
pub fn event_routing_key(station: &str) -> String {
    format!("result.{station}")
}

/// Routing key of a frame preview on [`Topology::events_exchange`].
pub fn preview_routing_key(station: &str) -> String {
    format!("preview.{station}")
}
