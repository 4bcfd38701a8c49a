//! RabbitMQ through lapin. One connection per process, re-opened on demand after a
//! failure; a confirm-mode channel for publishing; one channel per consumer, each
//! driven by a task that reconnects with backoff, so a consumer stream survives a
//! broker restart. Every (re)connect declares the topology idempotently: quorum work
//! queues with a length limit (`reject-publish`, so a full queue refuses the publish
//! and ingest can answer 503), a delivery limit and a dead-letter exchange.
//! `amqps://` URLs speak TLS (rustls, the system's roots plus an optional CA bundle).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, mpsc};
use visionq_contract::topology::{ERROR_HEADER, Topology};

use crate::{Broker, Deliveries, Delivery, Envelope, Events, QueueError, Settle, WorkQueue};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Queue arguments that must agree with `rabbitmq/definitions.json`.
#[derive(Debug, Clone)]
pub struct QueueLimits {
    pub frames_max_length: u32,
    pub tensors_max_length: u32,
    pub results_max_length: u32,
    pub max_deliveries: u32,
}

impl QueueLimits {
    fn max_length(&self, q: WorkQueue) -> u32 {
        match q {
            WorkQueue::Frames => self.frames_max_length,
            WorkQueue::Tensors => self.tensors_max_length,
            WorkQueue::Results => self.results_max_length,
        }
    }
}

struct Link {
    connection: Connection,
    publish: Channel,
}

struct Inner {
    url: String,
    /// PEM CA bundle trusted for `amqps://` besides the system's roots.
    tls_ca_pem: Option<String>,
    topology: Topology,
    limits: QueueLimits,
    link: Mutex<Option<Link>>,
    /// Held while a message is handed to the publishing channel. lapin numbers a
    /// publish for its confirm before it queues the frames, so two tasks publishing
    /// at once can reach the broker in the other order than they were numbered, and
    /// each is then told the other's confirm: a frame nacked by a full queue was
    /// answered 202, one stored was answered 503. One at a time keeps both in step.
    publish_order: Mutex<()>,
}

pub struct AmqpBroker {
    inner: std::sync::Arc<Inner>,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl AmqpBroker {
    /// Connects and declares the topology; fails if the broker cannot be reached now.
    pub async fn connect(url: &str, topology: Topology, limits: QueueLimits) -> Result<Self, QueueError> {
        Self::connect_tls(url, None, topology, limits).await
    }

    /// As [`connect`](Self::connect); an `amqps://` URL speaks TLS, verifying the
    /// broker's certificate against the system's roots and `tls_ca_pem` (PEM).
    pub async fn connect_tls(
        url: &str,
        tls_ca_pem: Option<String>,
        topology: Topology,
        limits: QueueLimits,
    ) -> Result<Self, QueueError> {
        let broker = AmqpBroker {
            inner: std::sync::Arc::new(Inner {
                url: url.to_string(),
                tls_ca_pem,
                topology,
                limits,
                link: Mutex::new(None),
                publish_order: Mutex::new(()),
            }),
        };
        broker.inner.publish_channel().await?;
        Ok(broker)
    }

    /// Deletes this topology's queues and exchanges (tests clean up with it).
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let ch = self.inner.publish_channel().await?;
        let t = &self.inner.topology;
        for q in WorkQueue::ALL.iter().map(|q| t.queue(*q)).chain([t.dead_letter_queue()]) {
            ch.queue_delete(q.into(), Default::default()).await.map_err(unavailable)?;
        }
        for x in [t.work_exchange(), t.dead_letter_exchange(), t.events_exchange()] {
            ch.exchange_delete(x.into(), Default::default()).await.map_err(unavailable)?;
        }
        Ok(())
    }
}

impl Inner {
    /// The publishing channel, re-opening the connection if it was lost.
    async fn publish_channel(&self) -> Result<Channel, QueueError> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.connection.status().connected() && l.publish.status().connected() {
                return Ok(l.publish.clone());
            }
            tracing::warn!("broker connection lost; reconnecting");
        }
        *link = None;
        let tls = OwnedTLSConfig { identity: None, cert_chain: self.tls_ca_pem.clone() };
        let runtime = lapin::runtime::default_runtime().map_err(unavailable)?;
        let properties = ConnectionProperties::default().with_connection_name("visionq".into());
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_with_config(&self.url, properties, tls, runtime))
            .await
            .map_err(|_| QueueError::Unavailable("timed out connecting to the broker".into()))?
            .map_err(unavailable)?;
        let publish = connection.create_channel().await.map_err(unavailable)?;
        publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(unavailable)?;
        declare_topology(&publish, &self.topology, &self.limits).await?;
        tracing::info!("connected to the broker");
        *link = Some(Link { connection, publish: publish.clone() });
        Ok(publish)
    }

    /// A fresh channel on the shared connection (for a consumer).
    async fn new_channel(&self) -> Result<Channel, QueueError> {
        self.publish_channel().await?;
        let link = self.link.lock().await;
        let l = link.as_ref().ok_or_else(|| unavailable("connection closed"))?;
        l.connection.create_channel().await.map_err(unavailable)
    }

    async fn publish_confirmed(
        &self,
        exchange: String,
        routing_key: String,
        message: &Envelope,
        full: &'static str,
    ) -> Result<(), QueueError> {
        let ch = self.publish_channel().await?;
        let order = self.publish_order.lock().await;
        let confirm = ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &message.body,
                properties(message),
            )
            .await
            .map_err(unavailable)?;
        drop(order);
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| QueueError::Unavailable("no publisher confirm in time".into()))?
            .map_err(unavailable)?;
        if confirmation.is_nack() {
            // With `x-overflow: reject-publish` a full queue nacks the publish.
            return Err(QueueError::Full(full));
        }
        if let Some(returned) = confirmation.take_message() {
            return Err(QueueError::Unavailable(format!("message unroutable: {}", returned.reply_text)));
        }
        Ok(())
    }
}

fn properties(message: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in &message.headers {
        headers.insert(ShortString::from(k.as_str()), AMQPValue::LongString(LongString::from(v.as_bytes())));
    }
    BasicProperties::default().with_delivery_mode(2).with_headers(headers)
}

fn envelope(properties: &BasicProperties, body: Vec<u8>) -> (Envelope, Option<u32>) {
    let mut e = Envelope::new(body);
    let mut count = None;
    if let Some(h) = properties.headers() {
        for (k, v) in h.inner() {
            match v {
                AMQPValue::LongString(s) => {
                    e.headers.insert(k.to_string(), String::from_utf8_lossy(s.as_bytes()).into_owned());
                }
                // Quorum queues count redeliveries here.
                AMQPValue::LongLongInt(n) if k.as_str() == "x-delivery-count" => count = Some(*n as u32 + 1),
                AMQPValue::LongUInt(n) if k.as_str() == "x-delivery-count" => count = Some(*n + 1),
                _ => {}
            }
        }
    }
    (e, count)
}

async fn declare_topology(ch: &Channel, t: &Topology, limits: &QueueLimits) -> Result<(), QueueError> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let declare_exchange = |name: String, kind: ExchangeKind| ch.exchange_declare(name.into(), kind, durable, FieldTable::default());
    declare_exchange(t.work_exchange(), ExchangeKind::Direct).await.map_err(unavailable)?;
    declare_exchange(t.dead_letter_exchange(), ExchangeKind::Fanout).await.map_err(unavailable)?;
    declare_exchange(t.events_exchange(), ExchangeKind::Topic).await.map_err(unavailable)?;

    let queue_durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let mut dead_args = FieldTable::default();
    dead_args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    ch.queue_declare(t.dead_letter_queue().into(), queue_durable, dead_args).await.map_err(unavailable)?;
    ch.queue_bind(
        t.dead_letter_queue().into(),
        t.dead_letter_exchange().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(unavailable)?;

    for q in WorkQueue::ALL {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(limits.max_length(q) as i64));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(t.dead_letter_exchange().into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limits.max_deliveries as i64));
        let name = t.queue(q);
        ch.queue_declare(name.clone().into(), queue_durable, args).await.map_err(unavailable)?;
        ch.queue_bind(name.clone().into(), t.work_exchange().into(), name.into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

struct AmqpSettle {
    acker: lapin::Acker,
    inner: std::sync::Arc<Inner>,
    queue: WorkQueue,
}

#[async_trait::async_trait]
impl Settle for AmqpSettle {
    async fn ack(&self) -> Result<(), QueueError> {
        self.acker.ack(BasicAckOptions::default()).await.map(drop).map_err(|e| QueueError::Settle(e.to_string()))
    }

    async fn requeue(&self) -> Result<(), QueueError> {
        self.acker
            .nack(BasicNackOptions { requeue: true, ..Default::default() })
            .await
            .map(drop)
            .map_err(|e| QueueError::Settle(e.to_string()))
    }

    async fn dead_letter(&self, envelope: &Envelope, reason: &str) -> Result<(), QueueError> {
        // Publish the copy with its reason first (confirmed), then ack: at worst the
        // message is dead-lettered twice, never lost.
        let mut copy = envelope.clone();
        copy.headers.insert(ERROR_HEADER.into(), reason.to_string());
        copy.headers.insert("x-visionq-queue".into(), self.inner.topology.queue(self.queue));
        self.inner.publish_confirmed(self.inner.topology.dead_letter_exchange(), String::new(), &copy, "dead").await?;
        self.ack().await
    }
}

/// Runs `attach` (open a channel and start consuming) and forwards what it yields,
/// again and again with backoff, until the receiving side is dropped.
async fn pump<T, F, Fut>(tx: mpsc::Sender<T>, what: String, mut attach: F)
where
    T: Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(lapin::Consumer, Box<dyn Fn(lapin::message::Delivery) -> T + Send>), QueueError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attach().await {
            Ok((mut consumer, wrap)) => {
                backoff = Duration::from_millis(100);
                tracing::debug!(what, "consuming");
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        next = consumer.next() => match next {
                            Some(Ok(d)) => {
                                if tx.send(wrap(d)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(what, error = %e, "consumer failed; reconnecting");
                                break;
                            }
                            None => {
                                tracing::warn!(what, "consumer cancelled; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(what, error = %e, "cannot consume; retrying"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[async_trait::async_trait]
impl Broker for AmqpBroker {
    async fn publish(&self, queue: WorkQueue, message: Envelope) -> Result<(), QueueError> {
        let t = &self.inner.topology;
        self.inner.publish_confirmed(t.work_exchange(), t.queue(queue), &message, queue.label()).await
    }

    async fn consume(&self, queue: WorkQueue, prefetch: u16) -> Result<Deliveries, QueueError> {
        let (tx, rx) = mpsc::channel::<Delivery>(prefetch.max(1) as usize);
        let inner = self.inner.clone();
        // Fail now if the broker is not there at all; later outages are ridden out.
        inner.publish_channel().await?;
        tokio::spawn(pump(tx, inner.topology.queue(queue), move || {
            let inner = inner.clone();
            async move {
                let ch = inner.new_channel().await?;
                ch.basic_qos(prefetch.max(1), BasicQosOptions::default()).await.map_err(unavailable)?;
                let consumer = ch
                    .basic_consume(
                        inner.topology.queue(queue).into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(unavailable)?;
                let wrap = Box::new(move |d: lapin::message::Delivery| {
                    let (envelope, count) = envelope(&d.properties, d.data);
                    let redelivered = d.redelivered || count.is_some_and(|c| c > 1);
                    let settle = AmqpSettle { acker: d.acker, inner: inner.clone(), queue };
                    Delivery::new(envelope, redelivered, count.unwrap_or(1 + redelivered as u32), Box::new(settle))
                }) as Box<dyn Fn(lapin::message::Delivery) -> Delivery + Send>;
                Ok((consumer, wrap))
            }
        }));
        Ok(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|d| (d, rx)) }).boxed())
    }

    async fn publish_event(&self, routing_key: &str, message: Envelope) -> Result<(), QueueError> {
        let ch = self.inner.publish_channel().await?;
        // Best effort: no confirm awaited; the store is the record. It is numbered
        // for a confirm all the same (the channel is in confirm mode): in order too.
        let _order = self.inner.publish_order.lock().await;
        ch.basic_publish(
            self.inner.topology.events_exchange().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &message.body,
            properties(&message),
        )
        .await
        .map(drop)
        .map_err(unavailable)
    }

    async fn subscribe_events(&self, topics: &[&str]) -> Result<Events, QueueError> {
        let (tx, rx) = mpsc::channel::<Envelope>(4096);
        let inner = self.inner.clone();
        inner.publish_channel().await?;
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        tokio::spawn(pump(tx, "events".to_string(), move || {
            let (inner, topics) = (inner.clone(), topics.clone());
            async move {
                let ch = inner.new_channel().await?;
                let q = ch
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(unavailable)?;
                for topic in &topics {
                    let exchange = inner.topology.events_exchange();
                    ch.queue_bind(
                        q.name().clone(),
                        exchange.into(),
                        topic.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(unavailable)?;
                }
                let consumer = ch
                    .basic_consume(
                        q.name().clone(),
                        "".into(),
                        BasicConsumeOptions { no_ack: true, ..Default::default() },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(unavailable)?;
                let wrap = Box::new(|d: lapin::message::Delivery| envelope(&d.properties, d.data).0)
                    as Box<dyn Fn(lapin::message::Delivery) -> Envelope + Send>;
                Ok((consumer, wrap))
            }
        }));
        Ok(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed())
    }

    async fn depth(&self, queue: WorkQueue) -> Result<u64, QueueError> {
        let ch = self.inner.new_channel().await?;
        let q = ch
            .queue_declare(
                self.inner.topology.queue(queue).into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        let _ = ch.close(200, "done".into()).await;
        Ok(q.message_count() as u64)
    }

    async fn is_ready(&self) -> bool {
        self.inner.publish_channel().await.is_ok()
    }
}
