//! The broker-side poison message, against the real RabbitMQ on 127.0.0.1:5672: a
//! message whose consumer dies with it every time (taken, never settled, the
//! connection gone) is not redelivered forever. The quorum queue counts its
//! deliveries and, past `x-delivery-limit` (visionq's `max_deliveries`), moves it
//! through the dead-letter exchange into the dead queue, where `x-death` says why.
//! (The worker-side poison message, a frame that can never be decoded, is
//! visionq/tests/faults.rs `a_corrupt_frame_is_dead_lettered_once_with_its_reason`.)

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::types::{AMQPValue, FieldTable};
use visionq_contract::topology::Topology;
use visionq_queue::amqp::{AmqpBroker, QueueLimits};
use visionq_queue::{Broker, Envelope, WorkQueue};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const MAX_DELIVERIES: u32 = 3;

fn limits() -> QueueLimits {
    QueueLimits { frames_max_length: 100, tensors_max_length: 100, results_max_length: 100, max_deliveries: MAX_DELIVERIES }
}

fn prefix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t{}_{}_poison", std::process::id(), nanos % 100_000)
}

/// Ready messages of a queue (passive declare).
async fn ready(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(queue.into(), lapin::options::QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

fn field<'a>(t: &'a FieldTable, name: &str) -> Option<&'a AMQPValue> {
    t.inner().iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn number(v: Option<&AMQPValue>) -> Option<i64> {
    match v? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(*n as i64),
        AMQPValue::LongUInt(n) => Some(*n as i64),
        AMQPValue::ShortInt(n) => Some(*n as i64),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_consumer_keeps_dying_is_dead_lettered_after_the_delivery_limit() {
    let prefix = prefix();
    let topology = Topology::new(prefix.clone());
    let broker = AmqpBroker::connect(AMQP_URL, topology.clone(), limits()).await.expect("RabbitMQ at 127.0.0.1:5672");
    broker.publish(WorkQueue::Frames, Envelope::new(&b"poison"[..]).with_header("x-test", "poison-1")).await.unwrap();
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let (frames, dead) = (topology.queue(WorkQueue::Frames), topology.dead_letter_queue());

    // Each life: a consumer of its own (its own connection) takes the message and
    // dies without settling it; the broker takes it back when the connection goes.
    let mut counts = Vec::new();
    for life in 1..=20 {
        let consumer = AmqpBroker::connect(AMQP_URL, topology.clone(), limits()).await.unwrap();
        let mut deliveries = consumer.consume(WorkQueue::Frames, 1).await.unwrap();
        let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), deliveries.next()).await else {
            break; // no longer delivered
        };
        assert_eq!(d.envelope.header("x-test"), Some("poison-1"));
        assert_eq!(d.delivery_count, life, "the broker counts every delivery");
        assert_eq!(d.redelivered, life > 1);
        counts.push(d.delivery_count);
        drop((d, deliveries, consumer));
        // Back in the queue, or gone to the dead queue.
        let until = Instant::now() + Duration::from_secs(10);
        while ready(&ch, &frames).await + ready(&ch, &dead).await == 0 {
            assert!(Instant::now() < until, "the message neither came back nor was dead-lettered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("poison: delivered {} times ({counts:?}), then no more", counts.len());
    // x-delivery-limit = N: the message is delivered N + 1 times (N redeliveries), then dead-lettered.
    assert_eq!(counts.len() as u32, MAX_DELIVERIES + 1, "bounded by the delivery limit: {counts:?}");
    assert_eq!(ready(&ch, &frames).await, 0, "not redelivered any more");

    let m = ch
        .basic_get(dead.as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message is in the dead queue");
    assert_eq!(&m.delivery.data[..], b"poison");
    let h = m.delivery.properties.headers().clone().expect("dead letter headers");
    assert_eq!(text(field(&h, "x-test")).as_deref(), Some("poison-1"), "its own headers are kept");
    let reason = text(field(&h, "x-first-death-reason"));
    assert_eq!(reason.as_deref(), Some("delivery_limit"), "{h:?}");
    assert_eq!(text(field(&h, "x-first-death-queue")), Some(frames.clone()));
    let Some(AMQPValue::FieldArray(deaths)) = field(&h, "x-death") else { panic!("x-death: {h:?}") };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else { panic!("x-death: {deaths:?}") };
    assert_eq!(text(field(death, "reason")).as_deref(), Some("delivery_limit"));
    assert_eq!(text(field(death, "queue")), Some(frames.clone()));
    assert_eq!(number(field(death, "count")), Some(1));
    assert!(field(&h, "x-visionq-error").is_none(), "no worker decided this: the broker did");
    eprintln!(
        "poison: in {dead} with x-first-death-reason = {}, x-death[0] = {{reason: {}, queue: {}, count: {}}}",
        reason.unwrap_or_default(),
        text(field(death, "reason")).unwrap_or_default(),
        text(field(death, "queue")).unwrap_or_default(),
        number(field(death, "count")).unwrap_or_default()
    );

    broker.delete_topology().await.unwrap();
}
