//! MQTT delivery (rumqttc): each event is published with QoS 1 to
//! `<topic_prefix>/<station>/<kind>`, and again, retained, to
//! `<topic_prefix>/<station>/state`, so a client subscribing late reads the
//! station's last state at once. An event is delivered when the broker acknowledged
//! both publishes (PUBACK).
//!
//! A connection lives while it is used: a batch's publishes are matched to their
//! acknowledgements by packet id (rumqttc reports each publish's id as it sends it,
//! in the order they were queued), and on any error, a timeout or a connection idle
//! for half its keep-alive the connection is dropped and the next batch makes a new
//! one, so no publish is resent by the client behind the outbox's back (the outbox
//! retries it, under the same event id). With `tls` the connection is MQTTS,
//! verified by the shared rustls set-up (`ca_file` or the system's roots).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use visionq_contract::sink::SinkConfig;

use crate::outbox::Pending;

const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The topic an event of `kind` about `station` goes to.
pub fn event_topic(prefix: &str, station: &str, kind: &str) -> String {
    format!("{prefix}/{station}/{kind}")
}

/// The retained topic of `station`'s last state.
pub fn state_topic(prefix: &str, station: &str) -> String {
    format!("{prefix}/{station}/state")
}

pub struct Mqtt {
    options: MqttOptions,
    prefix: String,
    timeout: Duration,
    capacity: usize,
    connection: Option<(AsyncClient, EventLoop, Instant)>,
}

impl Mqtt {
    /// The sink's client; refused (with the reason) when its TLS set-up cannot be made.
    pub fn new(sink: &SinkConfig) -> Result<Mqtt, String> {
        let mut options = MqttOptions::new(sink.client_id(), sink.host.clone().unwrap_or_default(), sink.port);
        if sink.tls {
            let tls = visionq_contract::tls::client_config(sink.ca_file.as_deref()).map_err(|e| match &sink.ca_file {
                Some(_) => format!("ca_file {e}"),
                None => e,
            })?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        options.set_keep_alive(KEEP_ALIVE).set_clean_session(true);
        options.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        if let Some(user) = &sink.username {
            options.set_credentials(user.clone(), sink.password.clone().unwrap_or_default());
        }
        Ok(Mqtt {
            options,
            prefix: sink.topic_prefix.clone(),
            timeout: Duration::from_millis(sink.timeout_ms),
            capacity: 2 * sink.concurrency + 8,
            connection: None,
        })
    }

    /// A connection that has just been acknowledged by the broker (CONNACK).
    async fn connect(&mut self) -> Result<(AsyncClient, EventLoop), String> {
        if let Some((client, eventloop, used)) = self.connection.take()
            && used.elapsed() < KEEP_ALIVE / 2
        {
            return Ok((client, eventloop));
        }
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), self.capacity);
        let connack = tokio::time::timeout(self.timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("cannot connect: {e}")),
                }
            }
        })
        .await;
        match connack {
            Ok(Ok(())) => Ok((client, eventloop)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no CONNACK in time".into()),
        }
    }

    /// One attempt at each of `events`: Ok for each the broker acknowledged.
    pub async fn send(&mut self, events: &[Pending]) -> Vec<Result<(), String>> {
        let (client, mut eventloop) = match self.connect().await {
            Ok(c) => c,
            Err(e) => return events.iter().map(|_| Err(e.clone())).collect(),
        };
        // Which event each queued publish belongs to, in queue order.
        let mut queued = std::collections::VecDeque::new();
        let mut left = vec![0u32; events.len()];
        let mut failed: Option<String> = None;
        for (i, e) in events.iter().enumerate() {
            // A result is also the station's last state (retained); an alert is not.
            let mut publishes = vec![(event_topic(&self.prefix, &e.station, &e.kind), false)];
            if e.kind == visionq_contract::sink::EventKind::Result.as_str() {
                publishes.push((state_topic(&self.prefix, &e.station), true));
            }
            for (topic, retain) in publishes {
                if let Err(err) = client.try_publish(topic, QoS::AtLeastOnce, retain, e.body.clone().into_bytes()) {
                    failed = Some(format!("cannot queue a publish: {err}"));
                    break;
                }
                queued.push_back(i);
                left[i] += 1;
            }
        }
        let mut by_pkid: HashMap<u16, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        while failed.is_none() && left.iter().any(|n| *n > 0) {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Err(_) => failed = Some("no PUBACK in time".into()),
                Ok(Err(e)) => failed = Some(format!("connection lost: {e}")),
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(i) = queued.pop_front() {
                        by_pkid.insert(pkid, i);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(i) = by_pkid.remove(&ack.pkid) {
                        left[i] = left[i].saturating_sub(1);
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
        let outcomes = left
            .iter()
            .map(|n| match (n, &failed) {
                (0, _) => Ok(()),
                (_, Some(e)) => Err(e.clone()),
                (_, None) => Err("not acknowledged".into()),
            })
            .collect();
        if failed.is_none() {
            self.connection = Some((client, eventloop, Instant::now()));
        } else {
            let _ = client.try_disconnect();
        }
        outcomes
    }
}
