//! The embedded broker and the plumbing around it: a Kafka-protocol broker
//! inside this process, on a loopback port, for `vigil demo` and the tests
//! that need no cluster. Also the helpers the demo and tests use to load a
//! topic and to read one back to its end.
//!
//! The broker is Vigil's own ([`server`], [`api`], [`log`], [`group`]): one
//! node leading every partition, each partition the record batches as
//! producers sent them (compressed or not) in memory, nothing deleted, and
//! Kafka's classic consumer-group protocol. It replaced librdkafka's mock
//! cluster, which keeps at most 5 MiB or 100,000 batches per partition and
//! deletes the oldest beyond that (`max_size`, `max_cnt` in
//! `rdkafka_mock.c`, neither settable): a 1,000,000-event demo stalled when
//! its consumer's offset was deleted under it.

mod api;
mod group;
mod log;
mod server;

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// A Kafka-protocol broker running inside this process (on a thread of its
/// own, so it serves blocking and async callers alike); stopped on drop.
pub struct EmbeddedBroker {
    shared: std::sync::Arc<server::Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    pub fn start() -> anyhow::Result<EmbeddedBroker> {
        let (listener, shared) = server::bind()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let serving = shared.clone();
        let thread = std::thread::Builder::new().name("embedded-broker".into()).spawn(move || {
            if let Err(e) = runtime.block_on(server::serve(listener, serving, stopped)) {
                tracing::error!(error = %e, "the embedded broker stopped");
            }
        })?;
        Ok(EmbeddedBroker { shared, stop, thread: Some(thread) })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.shared.addr.to_string()
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let count = usize::try_from(partitions).ok().filter(|p| *p > 0);
        let count = count.ok_or_else(|| anyhow::anyhow!("topic {name}: {partitions} partitions; give 1 or more"))?;
        let mut state = self.shared.lock();
        if state.topics.contains_key(name) {
            anyhow::bail!("topic {name} exists already");
        }
        state.topics.insert(name.to_string(), (0..count).map(|_| log::Partition::default()).collect());
        Ok(())
    }

    /// Bytes of record batches held, over every partition of every topic.
    pub fn size(&self) -> usize {
        self.shared.lock().topics.values().flatten().map(log::Partition::size).sum()
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A record to load.
pub struct Record {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    /// Record headers (e.g. a binary-mode CloudEvent's `ce_` attributes).
    pub headers: crate::decode::Headers,
}

/// How long the paced producer gathers a partition's records into one
/// request: librdkafka's default, as a producer feeding a live stream
/// keeps it. A record waits in the producer at most this long, and that
/// wait counts in the latency measured (it starts at the hand-over).
const PACED_LINGER_MS: &str = "5";

/// Produces `records` at a steady `rate` per second (a slice every 10 ms)
/// and waits for every ack; returns each record's partition and the instant
/// it was handed to the producer.
pub async fn produce_paced(
    bootstrap: &str,
    records: &[Record],
    rate: usize,
) -> anyhow::Result<Vec<(i32, std::time::Instant)>> {
    send_paced(&paced_producer(bootstrap)?, records, rate).await
}

/// The producer [`send_paced`] sends with: librdkafka's defaults but for
/// the linger a live stream's producer keeps.
pub struct PacedProducer(FutureProducer);

pub fn paced_producer(bootstrap: &str) -> anyhow::Result<PacedProducer> {
    let producer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", PACED_LINGER_MS).create()?;
    Ok(PacedProducer(producer))
}

/// [`produce_paced`] through a producer the caller keeps across calls.
pub async fn send_paced(
    PacedProducer(producer): &PacedProducer,
    records: &[Record],
    rate: usize,
) -> anyhow::Result<Vec<(i32, std::time::Instant)>> {
    let per_slice = (rate / 100).max(1);
    let start = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity(records.len());
    let mut deliveries = Vec::with_capacity(records.len());
    for (n, slice) in records.chunks(per_slice).enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(10 * n as u64)).await;
        for r in slice {
            let record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.payload);
            sent.push(std::time::Instant::now());
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
    }
    let mut out = Vec::with_capacity(records.len());
    for (delivery, at) in deliveries.into_iter().zip(sent) {
        let delivered = delivery.await.map_err(|_| anyhow::anyhow!("the producer was dropped"))?;
        let partition = delivered.map_err(|(e, _)| e)?.partition;
        out.push((partition, at));
    }
    Ok(out)
}

/// Produces every record, in order per key, and waits for every ack.
pub async fn produce_all(bootstrap: &str, records: &[Record]) -> anyhow::Result<()> {
    produce_all_with(bootstrap, records, &Default::default()).await
}

/// [`produce_all`] with extra librdkafka producer properties (they win over
/// the defaults: large batches, idempotence).
pub async fn produce_all_with(
    bootstrap: &str,
    records: &[Record],
    properties: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("enable.idempotence", "true");
    for (k, v) in properties {
        client.set(k, v);
    }
    let producer: FutureProducer = client.create()?;
    let mut deliveries = Vec::with_capacity(records.len());
    for r in records {
        let mut record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.payload);
        if !r.headers.is_empty() {
            let headers = r.headers.iter().map(|(key, value)| Header { key: key.as_str(), value: value.as_deref() });
            record =
                record.headers(headers.fold(OwnedHeaders::new_with_capacity(r.headers.len()), OwnedHeaders::insert));
        }
        loop {
            match producer.send_result(record) {
                Ok(d) => break deliveries.push(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// A record read back from a topic.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    /// The record's timestamp (when it was produced, for Vigil's outputs).
    pub timestamp_ms: Option<i64>,
}

impl ReadRecord {
    fn of(m: &BorrowedMessage<'_>) -> ReadRecord {
        let headers = m.headers().map(|h| {
            h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
        });
        ReadRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp_ms: m.timestamp().to_millis(),
            headers: headers.map(Iterator::collect).unwrap_or_default(),
        }
    }
}

/// A client context for the reader: partition EOF is how it knows it is
/// done, not an error worth a log line.
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::forward_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !eof {
            tracing::warn!(%error, reason, "kafka reader error");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// Reads `topic` from the beginning to its current end.
pub fn read_all(bootstrap: &str, topic: &str, timeout: Duration) -> anyhow::Result<Vec<ReadRecord>> {
    read_from(bootstrap, &BTreeMap::new(), topic, &BTreeMap::new(), timeout)
}

/// Reads `topic` to its current end, each partition from the offset in
/// `from` (or its beginning). `properties` are passed to librdkafka (SASL,
/// TLS). Blocking: call it off the async runtime's worker threads.
pub fn read_from(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> anyhow::Result<Vec<ReadRecord>> {
    let mut out = Vec::new();
    let end = read_each(bootstrap, properties, topic, from, timeout, |m| {
        out.push(ReadRecord::of(m));
        ControlFlow::Continue(())
    })?;
    anyhow::ensure!(end, "{topic}: not read to its end within {timeout:?}");
    Ok(out)
}

/// Hands `each` every record of `topic` from the offsets in `from` (or the
/// beginning) to the end the topic had when asked, in offset order per
/// partition, without copying them. Returns whether it got to the end
/// within `budget` (and before `each` said stop); when it did not, what
/// `each` was handed stands, and a read on from the next offsets of those
/// records goes on where this one stopped.
/// Blocking: call it off the async runtime's worker threads.
pub fn read_each(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    budget: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> ControlFlow<()>,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + budget;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "vigil-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // A read back is a bulk read: large fetches, few round trips.
        .set("max.partition.fetch.bytes", "8388608");
    for (k, v) in properties {
        client.set(k, v);
    }
    let consumer: BaseConsumer<ReaderContext> = client.create_with_context(ReaderContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), budget)?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    // Partitions already read to their end are not fetched: a fetch of
    // one waits out `fetch.wait.max.ms` for records that do not come, and
    // restarts read three mostly empty topics.
    let mut at_end = HashSet::new();
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, budget)?;
        if high <= from.get(p).copied().unwrap_or(low) {
            at_end.insert(*p);
            continue;
        }
        let offset = from.get(p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
        list.add_partition_offset(topic, *p, offset)?;
    }
    if at_end.len() == partitions.len() {
        return Ok(true);
    }
    consumer.assign(&list)?;
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Ok(false);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if each(&m).is_break() => return Ok(false),
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => tracing::debug!(error = %e, "reader"),
            None => {}
        }
    }
    Ok(true)
}
