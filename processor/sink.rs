//! Kafka out: violations (keyed by their deterministic id, Confluent-framed
//! Avro) and dead letters (the original payload, with the reason and the
//! source coordinates in headers). [`Sink::publish`] returns only when the
//! broker has acknowledged every record, so the pipeline can commit input
//! offsets after it.

use std::time::Duration;

use apache_avro::Schema as AvroSchema;
use futures::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;
use crate::decode::{confluent_frame, Headers};
use crate::evidence::EvidenceRecord;
use crate::published::{Bound, BOUND_HEADER};
use crate::source::BrokerHealth;
use crate::violation::{Violation, VIOLATION_SCHEMA_ID};
use std::sync::Arc;

/// A record that could not be decoded, on its way to the dead-letter topic.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The original record's headers, kept so it can be replayed as it was.
    pub headers: Headers,
    pub reason: &'static str,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
    #[error("cannot encode violation {id}: {message}")]
    Encode { id: String, message: String },
    #[error("{topic}: cannot read its partitions ({source}); create the evidence topic with as many partitions as the deploy topic")]
    Metadata { topic: String, source: KafkaError },
    #[error("{topic}: delivery failed after librdkafka's retries: {source}")]
    Delivery { topic: String, source: KafkaError },
}

/// Reports producer errors to the pipeline's [`BrokerHealth`]; runs on
/// librdkafka's thread, so it is heard even while a tick waits for acks.
pub struct SinkContext(Arc<BrokerHealth>);

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::forward_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.note(&error, reason);
    }
}

pub struct Sink {
    producer: FutureProducer<SinkContext>,
    violations_topic: String,
    dead_letter_topic: String,
    evidence_topic: String,
    /// Partitions of the evidence topic, looked up at its first use.
    evidence_partitions: Option<i32>,
    schema: AvroSchema,
}

impl Sink {
    pub fn new(config: &Config, schema: AvroSchema, health: Arc<BrokerHealth>) -> Result<Sink, SinkError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        for (k, v) in &config.producer_properties {
            client.set(k, v);
        }
        let producer = client.create_with_context(SinkContext(health)).map_err(SinkError::Create)?;
        Ok(Sink {
            producer,
            violations_topic: config.violations_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            evidence_topic: config.evidence_topic.clone(),
            evidence_partitions: None,
            schema,
        })
    }

    /// The evidence topic's partition count, asked once; while the brokers
    /// cannot be reached it waits, as publishing does. A topic that does not
    /// exist is an error that says so.
    pub fn evidence_partitions(&mut self) -> Result<i32, SinkError> {
        if let Some(n) = self.evidence_partitions {
            return Ok(n);
        }
        let topic = self.evidence_topic.clone();
        let missing = |source| SinkError::Metadata { topic: topic.clone(), source };
        let client = rdkafka::producer::Producer::client(&self.producer);
        loop {
            match client.fetch_metadata(Some(&topic), Duration::from_secs(10)) {
                Ok(metadata) => {
                    let t = metadata.topics().first();
                    let n = t.map_or(0, |t| t.partitions().len()) as i32;
                    if n == 0 || t.and_then(|t| t.error()).is_some() {
                        return Err(missing(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)));
                    }
                    self.evidence_partitions = Some(n);
                    return Ok(n);
                }
                Err(e) => {
                    tracing::warn!(%topic, error = %e, "cannot read the evidence topic's partitions yet; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Sends everything and waits for every acknowledgement.
    /// Each violation carries its bound (`bounds`, in the same order) and
    /// every evidence record `evidence_bound` as a header (see `published`).
    pub async fn publish(
        &self,
        violations: &[Violation],
        bounds: &[Option<Arc<Bound>>],
        dead: &[DeadLetter],
        evidence: &[EvidenceRecord],
        evidence_bound: Option<&Bound>,
    ) -> Result<(), SinkError> {
        let evidence_bound = evidence_bound.map(Bound::header);
        let mut deliveries = Vec::with_capacity(violations.len() + dead.len() + evidence.len());
        for e in evidence {
            let payload = serde_json::to_vec(e)
                .map_err(|err| SinkError::Encode { id: e.evidence_id.clone(), message: err.to_string() })?;
            let sequence = e.sequence.to_string();
            let headers = with_bound(
                OwnedHeaders::new()
                    .insert(Header { key: "vigil.hash", value: Some(e.hash.as_str()) })
                    .insert(Header { key: "vigil.sequence", value: Some(sequence.as_str()) }),
                evidence_bound.as_deref(),
            );
            let record = FutureRecord::to(&self.evidence_topic)
                .key(&e.evidence_id)
                .payload(&payload)
                .partition(e.partition)
                .headers(headers);
            deliveries.push((self.evidence_topic.as_str(), self.enqueue(record).await?));
        }
        for (i, v) in violations.iter().enumerate() {
            let bound = bounds.get(i).and_then(Option::as_ref).map(|b| b.header());
            let datum =
                v.to_avro(&self.schema).map_err(|e| SinkError::Encode { id: v.id.clone(), message: e.to_string() })?;
            let payload = confluent_frame(VIOLATION_SCHEMA_ID, &datum);
            let headers = with_bound(
                OwnedHeaders::new()
                    .insert(Header { key: "control_id", value: Some(v.control_id.as_str()) })
                    .insert(Header { key: "severity", value: Some(v.severity.as_str()) })
                    .insert(Header { key: "vigil.status", value: Some(v.status.as_str()) }),
                bound.as_deref(),
            );
            let record = FutureRecord::to(&self.violations_topic).key(&v.id).payload(&payload).headers(headers);
            deliveries.push((self.violations_topic.as_str(), self.enqueue(record).await?));
        }
        for d in dead {
            let partition = d.partition.to_string();
            let offset = d.offset.to_string();
            let original = d.headers.iter().map(|(key, value)| Header { key: key.as_str(), value: value.as_deref() });
            let headers = original
                .fold(OwnedHeaders::new_with_capacity(d.headers.len() + 5), OwnedHeaders::insert)
                .insert(Header { key: "vigil.error", value: Some(d.error.as_str()) })
                .insert(Header { key: "vigil.reason", value: Some(d.reason) })
                .insert(Header { key: "vigil.source.topic", value: Some(d.source_topic.as_str()) })
                .insert(Header { key: "vigil.source.partition", value: Some(partition.as_str()) })
                .insert(Header { key: "vigil.source.offset", value: Some(offset.as_str()) });
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.dead_letter_topic).headers(headers);
            if let Some(k) = &d.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &d.payload {
                record = record.payload(p.as_slice());
            }
            deliveries.push((self.dead_letter_topic.as_str(), self.enqueue(record).await?));
        }
        let (topics, futures): (Vec<&str>, Vec<_>) = deliveries.into_iter().unzip();
        for (topic, result) in topics.into_iter().zip(join_all(futures).await) {
            let failed = match result {
                Ok(Ok(_)) => continue,
                Ok(Err((source, _))) => source,
                Err(_) => KafkaError::Canceled,
            };
            return Err(SinkError::Delivery { topic: topic.to_string(), source: failed });
        }
        Ok(())
    }

    /// Hands a record to librdkafka (which copies it), waiting while its
    /// queue is full.
    async fn enqueue<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
        &self,
        mut record: FutureRecord<'_, K, P>,
    ) -> Result<DeliveryFuture, SinkError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, rejected)) => {
                    return Err(SinkError::Delivery { topic: rejected.topic.to_string(), source })
                }
            }
        }
    }
}

/// `headers` with the record's bound, when it has one.
fn with_bound(headers: OwnedHeaders, bound: Option<&str>) -> OwnedHeaders {
    match bound {
        Some(bound) => headers.insert(Header { key: BOUND_HEADER, value: Some(bound) }),
        None => headers,
    }
}
