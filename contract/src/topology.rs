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
/// On a tensor or result message that carries its frame's original image after
/// its own body (`evidence_forward_min_score`): the image's length in bytes, as a
/// decimal number. The body is the message's own bytes, then the image's.
pub const ORIGINAL_HEADER: &str = "x-visionq-original";
/// W3C trace context carried across stages.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Header naming what an event on the events exchange is; absent on results (the
/// original kind), [`PREVIEW_EVENT`] on a frame preview.
pub const EVENT_KIND_HEADER: &str = "x-visionq-event";
/// A frame preview for the dashboard: JPEG body, [`META_HEADER`] with its `FrameMeta`.
pub const PREVIEW_EVENT: &str = "preview";
/// A model version was activated (or rolled back to): JSON body `{"name", "version"}`;
/// every infer-worker serving that name follows it.
pub const MODEL_EVENT: &str = "model";

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

/// The events a subscriber takes, as topic patterns on the routing keys (AMQP's:
/// words split at `.`, `*` one word, `#` any number): every completed result (and
/// review), every frame preview. Station ids may hold dots, hence `#`.
pub const RESULT_EVENTS: &str = "result.#";
pub const PREVIEW_EVENTS: &str = "preview.#";
/// Every model activation (`model.<name>`).
pub const MODEL_EVENTS: &str = "model.#";

/// Whether `routing_key` matches the topic `pattern` (AMQP topic exchange rules).
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&w, rest)) => k.split_first().is_some_and(|(&kw, krest)| (w == "*" || w == kw) && go(rest, krest)),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = routing_key.split('.').collect();
    go(&p, &k)
}

/// Routing key of a completed result on [`Topology::events_exchange`].
pub fn event_routing_key(station: &str) -> String {
    format!("result.{station}")
}

/// Routing key of a model activation on [`Topology::events_exchange`].
pub fn model_routing_key(name: &str) -> String {
    format!("model.{name}")
}

/// Routing key of a frame preview on [`Topology::events_exchange`].
pub fn preview_routing_key(station: &str) -> String {
    format!("preview.{station}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_match_as_amqp_matches_them() {
        assert!(topic_matches(RESULT_EVENTS, &event_routing_key("cam-1")));
        assert!(topic_matches(RESULT_EVENTS, &event_routing_key("line.1.cam")), "station ids may hold dots");
        assert!(!topic_matches(RESULT_EVENTS, &preview_routing_key("cam-1")));
        assert!(topic_matches(PREVIEW_EVENTS, &preview_routing_key("cam-1")));
        assert!(topic_matches(MODEL_EVENTS, &model_routing_key("yolo")) && !topic_matches(RESULT_EVENTS, &model_routing_key("yolo")));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("result.*", "result.a") && !topic_matches("result.*", "result.a.b"));
        assert!(!topic_matches("result.*", "result"));
        assert!(topic_matches("result.#", "result"), "# takes zero words too");
    }
}
